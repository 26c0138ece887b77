"""The compiled ReLU (convscope/ops/jit_act.py) against the NumPy path and PyTorch.

The kernels' Python source runs here without numba; compiled, they are checked over
hypothesis-drawn shapes, memory layouts and dtypes, on values with NaN, ±0 and ±inf: the NumPy
path they replace stays the reference, bit for bit, and so does the layout of what they give.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import convscope as cs
from convscope.ops import jit, jit_act
from convscope.ops.layout import is_channels_last

needs_numba = pytest.mark.skipif(not jit.available(), reason="numba is not installed")
SPECIAL = np.array([np.nan, 0.0, -0.0, np.inf, -np.inf, 1e-30, -1e-30])


def _values(rng, shape, dtype, layout):
    """Normal values with a share of SPECIAL ones, in C order, channels-last memory (4-D) or a
    strided view (neither: the NumPy path's)."""
    x = rng.standard_normal(shape)
    pick = rng.random(shape) < 0.3
    x[pick] = rng.choice(SPECIAL, int(pick.sum()))
    x = x.astype(dtype)
    if layout == "channels_last":
        x = np.ascontiguousarray(x.transpose(0, 2, 3, 1)).transpose(0, 3, 1, 2)
    elif layout == "strided":
        x = np.repeat(x, 2, axis=-1)[..., ::2]
    return x


def _layer_run(x, dy, on: bool):
    """(y, mask, dx) of one ReLU layer forward and backward, the kernels on or off."""
    jit.enable(on)
    relu = cs.ReLU()
    y = relu.forward(x)
    mask = relu._cache
    dx = relu.backward(dy)
    jit.enable(False)
    return y, mask, dx


def test_the_kernels_python_source_equals_the_numpy_path():
    x = np.concatenate([SPECIAL, np.linspace(-2, 2, 9)])
    dy = np.arange(1.0, len(x) + 1)
    y, mask, dx = np.empty_like(x), np.empty(x.shape, np.uint8), np.empty_like(x)
    jit_act.relu_forward_flat(x, y, mask)
    jit_act.relu_backward_flat(dy, mask, dx)
    y_ref, mask_ref, dx_ref = _layer_run(x, dy, on=False)
    np.testing.assert_array_equal(y, y_ref)
    np.testing.assert_array_equal(mask.astype(bool), mask_ref)
    np.testing.assert_array_equal(dx, dx_ref)
    assert np.isnan(y[0]) and dx[0] == dy[0]  # NaN passes forward and backward
    assert not mask[1:3].any() and (dx[1:3] == 0).all()  # ±0 does not


@needs_numba
@settings(max_examples=60, deadline=None)
@given(shape=st.lists(st.integers(1, 7), min_size=1, max_size=5).map(tuple),
       layout=st.sampled_from(["c_order", "channels_last", "strided"]),
       dtype=st.sampled_from([np.float32, np.float64]),
       dy_layout=st.sampled_from(["same", "c_order"]), seed=st.integers(0, 2**16))
def test_compiled_kernels_equal_the_numpy_path(shape, layout, dtype, dy_layout, seed):
    if layout == "channels_last" and len(shape) != 4:
        layout = "c_order"
    rng = np.random.default_rng(seed)
    x = _values(rng, shape, dtype, layout)
    dy = rng.standard_normal(shape).astype(dtype)  # finite: inf · 0 would be NaN in both
    if dy_layout == "same" and layout == "channels_last":
        dy = np.ascontiguousarray(dy.transpose(0, 2, 3, 1)).transpose(0, 3, 1, 2)
    with jit.turned_on():
        taken = jit_act.relu_forward(x) is not None
    assert taken or layout == "strided"  # a strided view takes either path, and must agree
    y_ref, mask_ref, dx_ref = _layer_run(x, dy, on=False)
    y, mask, dx = _layer_run(x, dy, on=True)
    for got, ref in ((y, y_ref), (mask, mask_ref), (dx, dx_ref)):
        assert got.dtype == ref.dtype and got.shape == ref.shape
        np.testing.assert_array_equal(got, ref)
        assert is_channels_last(got) == is_channels_last(ref)


@needs_numba
def test_the_kernels_take_channels_last_memory_and_keep_it():
    rng = np.random.default_rng(1)
    x = _values(rng, (2, 5, 3, 4), np.float32, "channels_last")
    with jit.turned_on():
        y, mask = jit_act.relu_forward(x)
        assert is_channels_last(y) and is_channels_last(mask)
        assert jit_act.relu_backward(np.ones_like(y), mask) is not None  # dy in y's layout
        assert jit_act.relu_backward(np.ones(y.shape, np.float32), mask) is None  # C order
        assert jit_act.relu_backward(np.ones(y.shape, np.int64), mask) is None


@needs_numba
def test_a_mask_made_compiled_serves_the_numpy_backward():
    rng = np.random.default_rng(2)
    x = _values(rng, (3, 4, 5, 6), np.float64, "c_order")
    dy = rng.standard_normal(x.shape)
    relu = cs.ReLU()
    with jit.turned_on():
        relu.forward(x)
    dx = relu.backward(dy)  # the kernels are off now
    np.testing.assert_array_equal(dx, _layer_run(x, dy, on=False)[2])


@needs_numba
@settings(max_examples=20, deadline=None)
@given(n=st.integers(1, 3), c=st.integers(1, 6), h=st.integers(1, 6), w=st.integers(1, 6),
       layout=st.sampled_from(["c_order", "channels_last"]), seed=st.integers(0, 2**16))
def test_compiled_relu_matches_torch(n, c, h, w, layout, seed):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, c, h, w))
    x[rng.random(x.shape) < 0.2] = 0.0
    if layout == "channels_last":
        x = np.ascontiguousarray(x.transpose(0, 2, 3, 1)).transpose(0, 3, 1, 2)
    dy = rng.standard_normal(x.shape)
    y, _, dx = _layer_run(x, dy, on=True)
    tx = torch.tensor(np.ascontiguousarray(x), requires_grad=True)
    ty = torch.relu(tx)
    ty.backward(torch.tensor(dy))
    np.testing.assert_array_equal(y, ty.detach().numpy())
    np.testing.assert_array_equal(dx, tx.grad.numpy())
