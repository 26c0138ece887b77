"""The convolution's reading path (convscope.ops.conv_reference) against the fast path and torch.

The plain-loop backward equals the fast path's gradients (float64, rtol 1e-10) and torch's over
hypothesis-drawn configurations (stride, padding on each side in every mode, dilation, groups,
non-square, both memory layouts, channels-last output); the loops pass float64 central finite
differences; the lecture's numbers come out of the loops.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from convscope.ops import conv, conv_reference as ref
from convscope.ops.padding import PAD_MODES
from convscope.shapes import conv_output_shape
from finite_diff import numeric_grad

BASE = settings.default.max_examples
RTOL, ATOL = 1e-10, 1e-12
MODES = tuple(PAD_MODES)


@st.composite
def conv_cases(draw: st.DrawFn) -> dict[str, Any]:
    """A small convolution: every option the layer takes, sizes that keep the loops quick."""
    groups = draw(st.sampled_from([1, 1, 2, 3]))
    cin = groups * draw(st.integers(1, 3))
    cout = groups * draw(st.integers(1, 3)) if draw(st.integers(0, 4)) else 18  # 18: channels-last out
    k = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    stride = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    dilation = (draw(st.integers(1, 2)), draw(st.integers(1, 2)))
    pads = ((draw(st.integers(0, 2)), draw(st.integers(0, 2))),
            (draw(st.integers(0, 2)), draw(st.integers(0, 2))))
    mode = draw(st.sampled_from(("zeros",) + MODES))
    hw = []
    for (pb, pa), kk, d in zip(pads, k, dilation):
        # reflect needs pad <= side - 1, circular pad <= side; the filter must fit the padded side
        low = max(1, d * (kk - 1) + 1 - pb - pa, max(pb, pa) + 1 if mode != "zeros" else 1)
        hw.append(draw(st.integers(low, low + 4)))
    return dict(n=draw(st.integers(1, 2)), cin=cin, cout=cout,
                k=k, stride=stride, dilation=dilation, pads=pads, mode=mode, groups=groups,
                hw=tuple(hw), bias=draw(st.booleans()), channels_last=draw(st.booleans()),
                seed=draw(st.integers(0, 2**31 - 1)))


def arrays(case: dict[str, Any]) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, np.ndarray]:
    """x, w, b (or None) and an upstream gradient dy for a case, float64."""
    rng = np.random.default_rng(case["seed"])
    x = rng.standard_normal((case["n"], case["cin"]) + case["hw"])
    if case["channels_last"]:  # the same values in (N, H, W, C) memory
        x = np.ascontiguousarray(x.transpose(0, 2, 3, 1)).transpose(0, 3, 1, 2)
    w = rng.standard_normal((case["cout"], case["cin"] // case["groups"]) + case["k"])
    b = rng.standard_normal(case["cout"]) if case["bias"] else None
    oh, ow = out_hw(case)
    dy = rng.standard_normal((case["n"], case["cout"], oh, ow))
    return x, w, b, dy


def out_hw(case: dict[str, Any]) -> tuple[int, int]:
    return conv_output_shape(case["hw"], case["k"], case["stride"], case["pads"], case["dilation"])


def loops(case: dict[str, Any], x: np.ndarray, w: np.ndarray, b: np.ndarray | None,
          dy: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """y, dx, dw, db from the plain loops."""
    opts = (case["stride"], case["pads"], case["dilation"], case["groups"], case["mode"])
    y = ref.conv2d_forward_loops(x, w, b, *opts)
    dx, dw, db = ref.conv2d_backward_loops(dy, x, w, *opts)
    return y, dx, dw, db


def close(got: np.ndarray, want: np.ndarray, what: str) -> None:
    assert got.shape == want.shape, f"{what}: shape {got.shape} != {want.shape}"
    np.testing.assert_allclose(got, want, rtol=RTOL, atol=ATOL, err_msg=what)


@settings(max_examples=2 * BASE, deadline=None)
@given(conv_cases())
def test_loops_equal_the_fast_path_and_the_textbook_gemm(case: dict[str, Any]) -> None:
    x, w, b, dy = arrays(case)
    y, dx, dw, db = loops(case, x, w, b, dy)
    args = (case["stride"], case["pads"], case["dilation"], case["groups"], out_hw(case), case["mode"])
    y_fast, cache = conv.conv2d_forward(x, w, b, *args)
    dx_fast, dw_fast, db_fast = conv.conv2d_backward(dy, w, cache, True, True)
    close(y_fast, y, "fast y")
    close(dx_fast, dx, "fast dx")
    close(dw_fast, dw, "fast dw")
    close(db_fast, db, "fast db")
    y_gemm, cache = ref.conv2d_forward_simple(x, w, b, *args)
    dx_gemm, dw_gemm, db_gemm = ref.conv2d_backward_simple(dy, w, cache)
    for got, want, what in ((y_gemm, y, "y"), (dx_gemm, dx, "dx"), (dw_gemm, dw, "dw"),
                            (db_gemm, db, "db")):
        close(got, want, f"textbook im2col {what}")


@settings(max_examples=BASE, deadline=None)
@given(conv_cases())
def test_loops_equal_torch(case: dict[str, Any]) -> None:
    torch = pytest.importorskip("torch")
    x, w, b, dy = arrays(case)
    y, dx, dw, db = loops(case, x, w, b, dy)
    xt = torch.tensor(np.ascontiguousarray(x), requires_grad=True)
    wt = torch.tensor(w, requires_grad=True)
    bt = torch.tensor(b if b is not None else np.zeros(case["cout"]), requires_grad=True)
    (t, bo), (l, r) = case["pads"]
    xpad = torch.nn.functional.pad(xt, (l, r, t, bo), mode=PAD_MODES[case["mode"]].torch)
    yt = torch.nn.functional.conv2d(xpad, wt, bt, case["stride"], 0, case["dilation"],
                                    case["groups"])
    (yt * torch.tensor(dy)).sum().backward()
    close(y, yt.detach().numpy(), "torch y")
    close(dx, xt.grad.numpy(), "torch dx")
    close(dw, wt.grad.numpy(), "torch dw")
    close(db, bt.grad.numpy(), "torch db")


@pytest.mark.parametrize("case", [
    dict(stride=(1, 1), pads=((1, 1), (1, 1)), dilation=(1, 1), groups=1, mode="zeros"),
    dict(stride=(2, 1), pads=((2, 0), (1, 2)), dilation=(1, 2), groups=2, mode="reflect"),
    dict(stride=(1, 2), pads=((1, 2), (2, 1)), dilation=(2, 1), groups=1, mode="replicate"),
    dict(stride=(2, 2), pads=((2, 1), (0, 3)), dilation=(1, 1), groups=2, mode="circular"),
], ids=lambda c: c["mode"])
def test_loops_pass_finite_differences(case: dict[str, Any]) -> None:
    """L = sum(y · g): the loop backward's dx, dw, db against central differences (float64)."""
    rng = np.random.default_rng(7)
    x = rng.standard_normal((2, 4, 5, 4))
    w = rng.standard_normal((4, 4 // case["groups"], 3, 2))
    b = rng.standard_normal(4)
    opts = (case["stride"], case["pads"], case["dilation"], case["groups"], case["mode"])
    g = rng.standard_normal(ref.conv2d_forward_loops(x, w, b, *opts).shape)
    dx, dw, db = ref.conv2d_backward_loops(g, x, w, *opts)

    def loss() -> float:
        return float(np.sum(ref.conv2d_forward_loops(x, w, b, *opts) * g))

    for analytic, a, what in ((dx, x, "dx"), (dw, w, "dw"), (db, b, "db")):
        numeric = numeric_grad(loss, a)
        assert np.abs(numeric).max() > 1e-3, f"{what}: the check is vacuous (gradient 0)"
        err = np.abs(analytic - numeric).max() / np.abs(numeric).max()
        assert err < 1e-8, f"{what}: relative error {err:.2e}"


@pytest.mark.parametrize("stride, side, coverage", [
    (1, 5, [1, 2, 3, 3, 3, 2, 1]),  # how many 3-wide windows cover each of the 7 pixels
    (2, 3, [1, 1, 2, 1, 2, 1, 1]),
])
def test_lecture_7x7_input_3x3_filter(stride: int, side: int, coverage: list[int]) -> None:
    """7x7 input, 3x3 filter: (7 - 3) / 1 + 1 = 5 at stride 1, (7 - 3) / 2 + 1 = 3 at stride 2.
    All ones: every output is the 9-term dot product 9 (+ bias 1), and the gradient of their sum
    reaches each pixel once per window covering it."""
    x, w, b = np.ones((1, 1, 7, 7)), np.ones((1, 1, 3, 3)), np.ones(1)
    y = ref.conv2d_forward_loops(x, w, b, stride=(stride, stride))
    assert y.shape == (1, 1, side, side)
    np.testing.assert_array_equal(y, np.full(y.shape, 10.0))
    dx, dw, db = ref.conv2d_backward_loops(np.ones(y.shape), x, w, stride=(stride, stride))
    np.testing.assert_array_equal(dx[0, 0], np.outer(coverage, coverage))
    np.testing.assert_array_equal(dw, np.full(w.shape, side * side))  # each tap saw side² ones
    np.testing.assert_array_equal(db, [side * side])


def test_lecture_32x32x3_with_six_5x5x3_filters() -> None:
    """32x32x3 with six 5x5x3 filters -> 28x28x6, from 5·5·3·6 = 450 weights and 6 biases."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((1, 3, 32, 32))
    w, b = rng.standard_normal((6, 3, 5, 5)), rng.standard_normal(6)
    y = ref.conv2d_forward_loops(x, w, b)
    assert y.shape == (1, 6, 28, 28)
    # one output by hand: the dot product of filter 4 with the patch at row 10, column 3
    assert y[0, 4, 10, 3] == pytest.approx(np.sum(w[4] * x[0, :, 10:15, 3:8]) + b[4], rel=1e-12)
    dx, dw, db = ref.conv2d_backward_loops(np.ones(y.shape), x, w)
    assert dx.shape == x.shape and dw.size + db.size == 450 + 6
