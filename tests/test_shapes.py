"""convscope.shapes: the size arithmetic against PyTorch's actual output sizes, the padding forms,
the formulas' strings, and the fixes a misfit suggests (each one must fit)."""

from __future__ import annotations

import re

import numpy as np
import pytest
torch = pytest.importorskip("torch")
import torch.nn.functional as tF
from hypothesis import assume, given, settings
from hypothesis import strategies as st

import convscope as cs
from convscope import shapes

BASE = settings.default.max_examples
# PyTorch warns that 'same' with an even kernel copies the input; that is its business, not ours
pytestmark = pytest.mark.filterwarnings("ignore:Using padding='same':UserWarning")


@settings(max_examples=BASE)
@given(st.integers(1, 12), st.integers(1, 5), st.integers(1, 4), st.integers(0, 3),
       st.integers(0, 3), st.integers(1, 3))
def test_conv_output_size_equals_torch(n: int, k: int, s: int, pb: int, pa: int, d: int) -> None:
    assume(n + pb + pa >= d * (k - 1) + 1)
    x = torch.zeros(1, 1, 1, n)
    ref = tF.conv2d(tF.pad(x, (pb, pa)), torch.zeros(1, 1, 1, k), stride=s, dilation=d).shape[-1]
    assert shapes.conv_output_size(n, k, s, (pb, pa), d) == ref
    if pb == pa:
        assert shapes.conv_output_size(n, k, s, pb, d) == ref
    fits = (n + pb + pa - d * (k - 1) - 1) % s == 0
    if fits:
        assert shapes.conv_output_size(n, k, s, (pb, pa), d, fit="error") == ref
    else:
        with pytest.raises(cs.ShapeError, match="is not a whole number"):
            shapes.conv_output_size(n, k, s, (pb, pa), d, fit="error")


@settings(max_examples=BASE)
@given(st.integers(1, 12), st.integers(1, 5), st.integers(1, 4), st.integers(0, 2),
       st.integers(1, 3), st.booleans())
def test_pool_output_size_with_ceil_mode_equals_torch(n: int, k: int, s: int, p: int, d: int,
                                                      ceil_mode: bool) -> None:
    assume(p <= k // 2 and n + 2 * p >= d * (k - 1) + 1)
    x = torch.zeros(1, 1, 1, n)
    ref = tF.max_pool2d(x, (1, k), (1, s), (0, p), (1, d), ceil_mode).shape[-1]
    assert shapes.conv_output_size(n, k, s, p, d, ceil_mode=ceil_mode) == ref
    assert shapes.conv_output_shape((n, n), (k, k), (s, s), ((p, p), (p, p)), (d, d),
                                    ceil_mode=ceil_mode) == (ref, ref)


def _suggested(message: str) -> tuple[list[int], int, bool]:
    """(strides, extra padding, one side only) from '... stride 1 or 2 fits, or pad by 1 ...'."""
    strides_text = re.search(r"stride ([\d, or]+) fits", message)
    strides = [int(v) for v in re.findall(r"\d+", strides_text.group(1))] if strides_text else []
    pad = re.search(r"pad by (\d+)( more)?( on one side)?", message)
    assert pad, message
    return strides, int(pad.group(1)), bool(pad.group(3))


@settings(max_examples=BASE)
@given(st.integers(1, 30), st.integers(1, 7), st.integers(2, 5), st.integers(0, 3),
       st.integers(1, 2))
def test_every_suggested_fix_fits(n: int, k: int, s: int, p: int, d: int) -> None:
    assume(n + 2 * p >= d * (k - 1) + 1 and (n + 2 * p - d * (k - 1) - 1) % s)
    with pytest.raises(cs.ShapeError) as err:
        shapes.conv_output_size(n, k, s, p, d, fit="error")
    message = str(err.value)
    assert shapes.size_formula(n, k, s, (p, p), d) in message
    strides, extra, one_side = _suggested(message)
    assert strides and s not in strides
    for other in strides:
        shapes.conv_output_size(n, k, other, p, d, fit="error")
    pads = (p, p + extra) if one_side else (p + extra, p + extra)
    shapes.conv_output_size(n, k, s, pads, d, fit="error")


def test_effective_kernel_and_same_padding() -> None:
    assert [shapes.effective_kernel(3, d) for d in (1, 2, 3)] == [3, 5, 7]
    assert shapes.same_padding(4) == (1, 2)  # an even filter pads one more after, as PyTorch
    assert shapes.same_padding(3, dilation=2) == (2, 2)


@pytest.mark.parametrize("padding, expected", [
    (0, ((0, 0), (0, 0))),
    (2, ((2, 2), (2, 2))),
    ((1, 2), ((1, 1), (2, 2))),
    ("valid", ((0, 0), (0, 0))),
    ("same", ((1, 1), (2, 2))),
    (((1, 0), (0, 3)), ((1, 0), (0, 3))),
])
def test_normalize_padding_forms(padding: object, expected: tuple) -> None:
    assert shapes.normalize_padding(padding, (3, 5)) == expected


@settings(max_examples=BASE // 2)
@given(st.integers(1, 6), st.integers(1, 6), st.integers(1, 3), st.integers(1, 3),
       st.integers(3, 9), st.integers(3, 9))
def test_same_padding_matches_torch(kh: int, kw: int, dh: int, dw: int, h: int, w: int) -> None:
    """PyTorch's padding='same' (stride 1) and ours give the same output, even filters included."""
    assume(h >= dh * (kh - 1) // 2 + 1 and w >= dw * (kw - 1) // 2 + 1)
    rng = np.random.default_rng(h * 100 + w)
    conv = cs.Conv2D(2, 3, (kh, kw), padding="same", dilation=(dh, dw), dtype=np.float64, seed=0)
    x = rng.standard_normal((1, 2, h, w))
    ref = tF.conv2d(torch.tensor(x), torch.tensor(conv.params["weight"]),
                    torch.tensor(conv.params["bias"]), padding="same", dilation=(dh, dw))
    np.testing.assert_allclose(conv.forward(x), ref.numpy(), rtol=1e-10, atol=1e-12)


def test_size_formula_strings() -> None:
    assert shapes.size_formula(7, 3, 3) == "(7 - 3) / 3 + 1 = 2.33"
    assert shapes.size_formula(7, 3, 1, (1, 1)) == "(7 - 3 + 2·1) / 1 + 1 = 7"
    assert shapes.size_formula(8, 3, 2, (0, 1)) == "(8 - 3 + 0 + 1) / 2 + 1 = 4"
    assert shapes.size_formula(9, 3, 1, dilation=2) == "(9 - 5) / 1 + 1 = 5"  # F_eff = 2·(3-1)+1


def test_parameter_counts_and_formulas() -> None:
    assert shapes.conv_param_count(3, 6, (5, 5)) == 456
    assert shapes.conv_param_formula(3, 6, (5, 5)) == "5·5·3·6 + 6 = 456"
    assert shapes.conv_param_formula(3, 6, (5, 5), bias=False) == "5·5·3·6 = 450"
    assert shapes.conv_param_formula(4, 8, (3, 3), groups=4) == "3·3·1·8 + 8 = 80"
    assert shapes.linear_param_formula(400, 120) == "400·120 + 120 = 48120"
    assert shapes.conv_macs((28, 28), 3, 6, (5, 5)) == 28 * 28 * 6 * 75
    assert shapes.conv_macs((8, 8), 4, 8, (3, 3), groups=4) == 8 * 8 * 8 * 9


@settings(max_examples=BASE // 2)
@given(st.integers(1, 4), st.integers(1, 3), st.integers(1, 3), st.integers(1, 4),
       st.integers(1, 2), st.booleans())
def test_layer_param_counts_equal_torch(groups: int, a: int, b: int, k: int, s: int,
                                        bias: bool) -> None:
    conv = cs.Conv2D(groups * a, groups * b, k, s, groups=groups, bias=bias)
    ref = torch.nn.Conv2d(groups * a, groups * b, k, s, groups=groups, bias=bias)
    assert conv.param_count() == sum(p.numel() for p in ref.parameters())
    assert conv.param_formula().endswith(f"= {conv.param_count()}")
    assert conv.macs((groups * a, 9, 9)) == (ref(torch.zeros(1, groups * a, 9, 9)).numel()
                                             * a * k * k)
