"""The lecture's numbers (CS231n lecture 5, /work/shared/lecture.md) as tests, each checked both in
the arithmetic (convscope.shapes) and on real arrays through the layers."""

from __future__ import annotations

import numpy as np
import pytest

import convscope as cs
from convscope.shapes import conv_output_size, same_padding, size_formula


def test_one_filter_position_is_a_75_number_dot_product_plus_bias() -> None:
    """A 5x5x3 filter at one position computes w·x + b over 5·5·3 = 75 numbers."""
    rng = np.random.default_rng(0)
    conv = cs.Conv2D(3, 6, 5, dtype=np.float64, init="torch", seed=0)
    x = rng.standard_normal((1, 3, 32, 32))
    y = conv.forward(x)
    w, b = conv.params["weight"], conv.params["bias"]
    for k, i, j in [(0, 0, 0), (5, 27, 27), (2, 10, 3)]:
        patch = x[0, :, i:i + 5, j:j + 5]
        assert patch.size == 75
        assert y[0, k, i, j] == pytest.approx(w[k].ravel() @ patch.ravel() + b[k], rel=1e-12)


def test_six_5x5x3_filters_turn_32x32x3_into_28x28x6_with_456_parameters() -> None:
    conv = cs.Conv2D(3, 6, 5)
    y = conv.forward(np.zeros((2, 3, 32, 32), np.float32))
    assert y.shape == (2, 6, 28, 28)  # six activation maps of 28x28
    assert conv.output_shape((3, 32, 32)) == (6, 28, 28)
    assert conv.params["weight"].shape == (6, 3, 5, 5)
    assert conv.params["weight"].size == 5 * 5 * 3 * 6 == 450
    assert conv.params["bias"].size == 6
    assert conv.param_count() == 456
    assert conv.param_formula() == "5·5·3·6 + 6 = 456"
    assert size_formula(32, 5) == "(32 - 5) / 1 + 1 = 28"


@pytest.mark.parametrize("stride, side", [(1, 5), (2, 3)])
def test_7x7_input_3x3_filter(stride: int, side: int) -> None:
    """(N - F) / S + 1: 7x7 with 3x3 gives 5x5 at stride 1 and 3x3 at stride 2."""
    assert conv_output_size(7, 3, stride) == (7 - 3) // stride + 1 == side
    assert conv_output_size(7, 3, stride, fit="error") == side
    conv = cs.Conv2D(1, 1, 3, stride=stride, fit="error")
    assert conv.forward(np.zeros((1, 1, 7, 7), np.float32)).shape == (1, 1, side, side)


def test_7x7_input_3x3_filter_stride_3_does_not_fit() -> None:
    message = "(7 - 3) / 3 + 1 = 2.33"
    fixes = "stride 1 or 2 fits, or pad by 1"
    with pytest.raises(cs.ShapeError) as err:
        conv_output_size(7, 3, stride=3, fit="error")
    assert message in str(err.value) and fixes in str(err.value)
    conv = cs.Conv2D(1, 1, 3, stride=3, fit="error")
    with pytest.raises(cs.ShapeError) as err:
        conv.forward(np.zeros((1, 1, 7, 7), np.float32))
    text = str(err.value)
    assert message in text and fixes in text and "Conv2D" in text and "7x7" in text
    with pytest.raises(cs.ShapeError, match=r"\(7 - 3\) / 3 \+ 1 = 2\.33"):
        cs.Sequential(cs.Conv2D(1, 1, 3, stride=3, fit="error"), input_shape=(1, 7, 7))
    # the suggested fixes do fit, and PyTorch's rule (fit="floor") drops the last column
    assert conv_output_size(7, 3, 1, fit="error") == 5
    assert conv_output_size(7, 3, 2, fit="error") == 3
    assert conv_output_size(7, 3, 3, padding=1, fit="error") == 3
    assert conv_output_size(7, 3, 3) == 2


def test_padding_1_keeps_7x7() -> None:
    """(7 - 3 + 2·1) / 1 + 1 = 7: zero padding keeps the picture from shrinking."""
    assert size_formula(7, 3, 1, (1, 1)) == "(7 - 3 + 2·1) / 1 + 1 = 7"
    conv = cs.Conv2D(1, 1, 3, padding=1, dtype=np.float64, seed=0)
    x = np.random.default_rng(1).standard_normal((1, 1, 7, 7))
    y = conv.forward(x)
    assert y.shape == (1, 1, 7, 7)
    # the border output sees zeros outside: the corner uses only the 2x2 inner part of the filter
    w, b = conv.params["weight"][0, 0], conv.params["bias"][0]
    assert y[0, 0, 0, 0] == pytest.approx(np.sum(w[1:, 1:] * x[0, 0, :2, :2]) + b)


@pytest.mark.parametrize("f, p", [(3, 1), (5, 2), (7, 3)])
def test_same_padding_keeps_the_size(f: int, p: int) -> None:
    """Stride 1 with P = (F - 1) / 2 keeps the size: F=3 -> P=1, F=5 -> P=2, F=7 -> P=3."""
    assert same_padding(f) == (p, p) == ((f - 1) // 2, (f - 1) // 2)
    x = np.zeros((1, 2, 9, 8), np.float32)
    for padding in ("same", p):
        conv = cs.Conv2D(2, 4, f, padding=padding)
        assert conv.pads == ((p, p), (p, p))
        assert conv.forward(x).shape == (1, 4, 9, 8)


def test_stacked_32x32x3_to_28x28x6_to_24x24x10() -> None:
    net = cs.Sequential(cs.Conv2D(3, 6, 5), cs.ReLU(), cs.Conv2D(6, 10, 5), cs.ReLU(),
                        input_shape=(3, 32, 32), seed=0)
    assert net.shapes() == [(3, 32, 32), (6, 28, 28), (6, 28, 28), (10, 24, 24), (10, 24, 24)]
    assert net.forward(np.ones((2, 3, 32, 32), np.float32)).shape == (2, 10, 24, 24)
    assert net[2].param_formula() == "5·5·6·10 + 10 = 1510"


def test_in_channels_inferred_from_the_input_volume() -> None:
    net = cs.Sequential(cs.Conv2D(None, 6, 5), cs.Conv2D(None, 10, 5), input_shape=(3, 32, 32))
    assert net[0].params["weight"].shape == (6, 3, 5, 5)
    assert net[1].params["weight"].shape == (10, 6, 5, 5)


def test_1x1_convolution_reduces_depth() -> None:
    """56x56x64 with 32 1x1 filters -> 56x56x32: a 64-number dot product at every pixel."""
    conv = cs.Conv2D(64, 32, 1, dtype=np.float64, seed=0)
    assert conv.output_shape((64, 56, 56)) == (32, 56, 56)
    assert conv.param_formula() == f"1·1·64·32 + 32 = {64 * 32 + 32}"
    x = np.random.default_rng(2).standard_normal((1, 64, 56, 56))
    y = conv.forward(x)
    assert y.shape == (1, 32, 56, 56)
    w = conv.params["weight"][:, :, 0, 0]
    np.testing.assert_allclose(y, np.einsum("kc,nchw->nkhw", w, x), rtol=1e-12, atol=1e-12)


def test_2x2_pool_at_stride_2_halves_each_side_and_has_no_parameters() -> None:
    for cls in (cs.MaxPool2D, cs.AvgPool2D):
        pool = cls(2, 2)
        assert pool.output_shape((6, 28, 28)) == (6, 14, 14)
        assert pool.param_count() == 0 and pool.params == {}
        x = np.arange(16, dtype=np.float32).reshape(1, 1, 4, 4)
        y = pool.forward(x)
        assert y.shape == (1, 1, 2, 2)
    np.testing.assert_array_equal(cs.MaxPool2D(2).forward(x)[0, 0], [[5, 7], [13, 15]])
    np.testing.assert_array_equal(cs.AvgPool2D(2).forward(x)[0, 0], [[2.5, 4.5], [10.5, 12.5]])


def test_summary_rows_and_totals_equal_the_hand_computed_numbers() -> None:
    """The README network: every row's shape, parameter count, formula and multiply-adds."""
    net = cs.Sequential(cs.Conv2D(3, 6, 5), cs.ReLU(), cs.Conv2D(6, 10, 5), cs.ReLU(),
                        cs.MaxPool2D(2), cs.Flatten(), cs.Linear(None, 10),
                        input_shape=(3, 32, 32), seed=0)
    s = net.summary()
    conv1 = (5 * 5 * 3 * 6 + 6, 28 * 28 * 6 * (5 * 5 * 3))  # params, one dot product per output
    conv2 = (5 * 5 * 6 * 10 + 10, 24 * 24 * 10 * (5 * 5 * 6))
    fc = (1440 * 10 + 10, 1440 * 10)
    expected = [
        ((6, 28, 28), *conv1, "5·5·3·6 + 6 = 456"),
        ((6, 28, 28), 0, 0, ""),
        ((10, 24, 24), *conv2, "5·5·6·10 + 10 = 1510"),
        ((10, 24, 24), 0, 0, ""),
        ((10, 12, 12), 0, 0, ""),
        ((1440,), 0, 0, ""),
        ((10,), *fc, "1440·10 + 10 = 14410"),
    ]
    assert len(s.rows) == len(expected)
    for row, (shape, params, macs, formula) in zip(s.rows, expected):
        got = (row.output_shape, row.params, row.macs, row.formula)
        assert got == (shape, params, macs, formula)
        assert row.activation_bytes == int(np.prod(shape)) * 4  # float32
    assert s.total_params == conv1[0] + conv2[0] + fc[0] == sum(p.size for p in net.params.values())
    assert s.total_macs == conv1[1] + conv2[1] + fc[1]
    text = str(s)
    assert "5·5·3·6 + 6 = 456" in text and f"{s.total_params:,}" in text
    assert f"{s.total_macs:,}" in text
