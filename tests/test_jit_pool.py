"""The compiled 2x2 max pool (convscope/ops/jit_pool.py) against the NumPy path and PyTorch.

The kernels' Python source runs here without numba; compiled, they are checked over
hypothesis-drawn shapes (odd sides included), layouts and dtypes, on values with ties and NaN,
where the winner rule shows: the NumPy path they replace stays the reference.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from convscope.ops import jit, jit_pool, pool

needs_numba = pytest.mark.skipif(not jit.available(), reason="numba is not installed")
WINDOW = ((2, 2), (2, 2), ((0, 0), (0, 0)), (1, 1))


def _values(rng, shape, layout, dtype, nan=0.1):
    """Small integers (many ties), a share of them NaN, in channels-first or -last memory."""
    x = rng.integers(-2, 3, shape).astype(dtype)
    x[rng.random(shape) < nan] = np.nan
    if layout == "channels_last":
        x = np.ascontiguousarray(x.transpose(0, 2, 3, 1)).transpose(0, 3, 1, 2)
    return x


def _run(x, dy, on: bool):
    jit.enable(on)
    out_hw = (x.shape[2] // 2, x.shape[3] // 2)
    y, cache = pool.maxpool2d_forward(x, *WINDOW, out_hw)
    dx = pool.maxpool2d_backward(dy, cache)
    jit.enable(False)
    return y, dx, cache


@pytest.mark.parametrize("layout", ["channels_first", "channels_last"])
def test_the_kernels_python_source_equals_the_numpy_path(layout):
    rng = np.random.default_rng(0)
    x = _values(rng, (2, 3, 5, 4), layout, np.float64)
    dy = rng.standard_normal((2, 3, 2, 2))
    y_ref, dx_ref, _ = _run(x, dy, on=False)
    if layout == "channels_first":
        xv, yv = x.reshape(6, 5, 4), np.empty((6, 2, 2))
        idx, dxv = np.empty(yv.shape, np.uint8), np.zeros((6, 5, 4))
        jit_pool.maxpool2_forward_mhw(xv, yv, idx)
        jit_pool.maxpool2_backward_mhw(dy.reshape(6, 2, 2), idx, dxv)
        y, dx = yv.reshape(y_ref.shape), dxv.reshape(x.shape)
    else:
        xv, yv = x.transpose(0, 2, 3, 1), np.empty((2, 2, 2, 3))
        idx, dxv = np.empty(yv.shape, np.uint8), np.zeros((2, 5, 4, 3))
        jit_pool.maxpool2_forward_nhwc(xv, yv, idx)
        jit_pool.maxpool2_backward_nhwc(np.ascontiguousarray(dy.transpose(0, 2, 3, 1)), idx, dxv)
        y, dx = yv.transpose(0, 3, 1, 2), dxv.transpose(0, 3, 1, 2)
    np.testing.assert_array_equal(y, y_ref)
    np.testing.assert_array_equal(dx, dx_ref)


@needs_numba
@settings(max_examples=40, deadline=None)
@given(n=st.integers(1, 4), c=st.integers(1, 9), h=st.integers(2, 9), w=st.integers(2, 9),
       layout=st.sampled_from(["channels_first", "channels_last"]),
       dtype=st.sampled_from([np.float32, np.float64]), nan=st.sampled_from([0.0, 0.2]),
       seed=st.integers(0, 2**16))
def test_compiled_kernels_equal_the_numpy_path(n, c, h, w, layout, dtype, nan, seed):
    rng = np.random.default_rng(seed)
    x = _values(rng, (n, c, h, w), layout, dtype, nan)
    dy = rng.standard_normal((n, c, h // 2, w // 2)).astype(dtype)
    y_ref, dx_ref, cache_ref = _run(x, dy, on=False)
    y, dx, cache = _run(x, dy, on=True)
    assert cache[0] == "compiled" and not isinstance(cache_ref[0], str)
    for got, ref in ((y, y_ref), (dx, dx_ref)):
        assert got.dtype == ref.dtype and got.strides == ref.strides  # the same memory layout
        np.testing.assert_array_equal(got, ref)  # each dx is one dy or 0: exact


@needs_numba
@pytest.mark.parametrize("layout", ["channels_first", "channels_last"])
def test_compiled_kernels_match_torch_max_pool_with_ties_and_nan(layout):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(1)
    x = _values(rng, (3, 4, 7, 6), layout, np.float64, nan=0.15)
    dy = rng.standard_normal((3, 4, 3, 3))
    y, dx, _ = _run(x, dy, on=True)
    tx = torch.tensor(np.ascontiguousarray(x), requires_grad=True)
    ty = torch.nn.functional.max_pool2d(tx, 2)
    ty.backward(torch.tensor(dy))
    np.testing.assert_array_equal(y, ty.detach().numpy())
    np.testing.assert_array_equal(dx, tx.grad.numpy())


@needs_numba
@pytest.mark.parametrize("window, taken", [
    (WINDOW, True),
    (((3, 3), (2, 2), ((0, 0), (0, 0)), (1, 1)), False),
    (((2, 2), (1, 1), ((0, 0), (0, 0)), (1, 1)), False),
    (((2, 2), (2, 2), ((1, 1), (1, 1)), (1, 1)), False),
])
def test_only_the_2x2_stride_2_pool_is_compiled(window, taken):
    from convscope.shapes import conv_output_shape

    x = _values(np.random.default_rng(2), (2, 3, 6, 6), "channels_first", np.float32, 0.0)
    out_hw = conv_output_shape((6, 6), window[0], window[1], window[2], window[3])
    with jit.turned_on():
        y, cache = pool.maxpool2d_forward(x, *window, out_hw)
    assert isinstance(cache[0], str) == taken
    y_ref, _ = pool.maxpool2d_forward(x, *window, out_hw)
    np.testing.assert_array_equal(y, y_ref)


@needs_numba
def test_backward_runs_the_compiled_kernels_after_they_are_turned_off():
    rng = np.random.default_rng(4)
    x = _values(rng, (2, 5, 4, 4), "channels_last", np.float32, 0.0)
    dy = rng.standard_normal((2, 5, 2, 2)).astype(np.float32)
    with jit.turned_on():
        _, cache = pool.maxpool2d_forward(x, *WINDOW, (2, 2))
    np.testing.assert_array_equal(pool.maxpool2d_backward(dy, cache), _run(x, dy, on=False)[1])
