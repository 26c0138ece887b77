"""The direct convolution for few filters (convscope/ops/direct_lanes.py and its kernels in
jit_direct.py) against PyTorch, the im2col path and finite differences.

The kernels' Python source runs here without numba, through the module's own packing; compiled,
the whole path (forward, dx, dW, db through ops.conv) is checked over hypothesis-drawn sizes,
paddings, filter counts, memory layouts and dtypes, each drawn case asserted to have run on the
lanes so that none passes by falling back.  And: float64 finite differences through a network,
what :func:`fits` refuses, and predict on convscope's threads (the thread-count independence
is in test_direct.py).
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import convscope as cs
from convscope.ops import direct_lanes as DL, jit, jit_direct, threads
from test_direct import _channels_last, _out_hw, _run, _torch_conv, check_gradients

torch = pytest.importorskip("torch")
needs_numba = pytest.mark.skipif(not jit.available(), reason="numba is not installed")
FEW = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 12, 14, 15]  # the filter counts block() splits


def test_block_and_lanes_choose_what_the_kernels_take():
    for k in range(1, 40):
        m = DL.block(k)
        if m:
            assert k % m == 0 and m <= jit_direct.LANE_FILTERS and (m >= 3 or m == k)
            assert all(k % bigger for bigger in range(m + 1, jit_direct.LANE_FILTERS + 1))
    assert [k for k in range(1, DL.MAX_K) if not DL.block(k)] == [11, 13]
    assert DL.block(6) == 6 and DL.block(12) == 6 and DL.block(16) == 8 and DL.block(9) == 3
    for m in range(1, jit_direct.LANE_FILTERS + 1):
        for ow in range(8, 40):
            p = DL.lanes(m, ow, DL.FORWARD_SUMS)
            assert p in jit_direct.LANES and p <= ow and p // 8 * m <= DL.FORWARD_SUMS
    assert DL.lanes(6, 28, DL.FORWARD_SUMS) == 16 and DL.lanes(3, 32, DL.FORWARD_SUMS) == 32
    assert DL.lanes(3, 31, DL.FORWARD_SUMS) == 16 and DL.lanes(6, 7, DL.FORWARD_SUMS) == 0


@pytest.mark.parametrize("stride, dilation, groups, mode, k, pads, out_w", [
    ((2, 2), (1, 1), 1, "zeros", 6, ((0, 0), (0, 0)), 8),
    ((1, 1), (2, 2), 1, "zeros", 6, ((0, 0), (0, 0)), 8),
    ((1, 1), (1, 1), 2, "zeros", 6, ((0, 0), (0, 0)), 8),
    ((1, 1), (1, 1), 1, "reflect", 6, ((1, 1), (1, 1)), 8),
    ((1, 1), (1, 1), 1, "zeros", 16, ((0, 0), (0, 0)), 8),
    ((1, 1), (1, 1), 1, "zeros", 11, ((0, 0), (0, 0)), 8),
    ((1, 1), (1, 1), 1, "zeros", 6, ((0, 0), (0, 0)), 7),
    ((1, 1), (1, 1), 1, "zeros", 6, ((3, 0), (0, 0)), 8)])
def test_fits_refuses_what_the_kernels_do_not_compute(stride, dilation, groups, mode, k, pads,
                                                      out_w):
    assert not DL.fits(3, k, (3, 3), stride, dilation, groups, mode, pads, out_w)
    for k in FEW:
        assert DL.fits(3, k, (3, 3), (1, 1), (1, 1), 1, "zeros", ((2, 2), (0, 1)), 8)
    assert DL.input_grad_fits(6, 8, (1, 1)) and not DL.input_grad_fits(6, 7, (1, 1))
    assert not DL.input_grad_fits(13, 8, (1, 1))


# ---------------------------------------------------------------------------------------------
# the kernels' Python source, no numba


@pytest.mark.parametrize("n, c, k, h, wd, f, pads", [(2, 1, 6, 4, 9, 3, ((1, 1), (1, 1))),
                                                     (1, 3, 3, 3, 12, 2, ((0, 1), (1, 0))),
                                                     (2, 2, 8, 3, 8, 1, ((0, 0), (0, 0))),
                                                     (1, 6, 2, 5, 17, 3, ((2, 0), (0, 2)))])
def test_the_kernels_python_source_gives_the_convolution_and_its_gradients(monkeypatch, n, c, k,
                                                                           h, wd, f, pads):
    monkeypatch.setattr(jit_direct, "kernel", lambda name, dtype: jit_direct.source_kernel(name))
    rng = np.random.default_rng(c + k)
    x = rng.standard_normal((n, c, h, wd))
    w = rng.standard_normal((k, c, f, f))
    b = rng.standard_normal(k)
    out_hw = _out_hw(x, w, pads)
    dy = rng.standard_normal((n, k, *out_hw))
    y = DL.forward(x, w, b, (1, 1), pads, out_hw)
    dx, dw, db = DL.backward(dy, x, w, (1, 1), pads, True, DL.input_grad_fits(c, wd, (1, 1)))
    ty, tdx, tdw, tdb = _torch_conv(x, w, b, pads, dy)
    for got, want in ((y, ty), (dw, tdw), (db, tdb)) + (((dx, tdx),) if dx is not None else ()):
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)


# ---------------------------------------------------------------------------------------------
# compiled, through ops.conv


@needs_numba
@settings(max_examples=30, deadline=None)
@given(n=st.integers(1, 4), c=st.sampled_from([1, 2, 3, 6, 16]), k=st.sampled_from(FEW),
       h=st.integers(1, 9), wd=st.integers(8, 20), f=st.integers(1, 5), data=st.data(),
       dtype=st.sampled_from([np.float32, np.float64]), last=st.booleans(),
       need_dx=st.booleans())
def test_lanes_equal_im2col_and_torch(n, c, k, h, wd, f, data, dtype, last, need_dx):
    pads = tuple(tuple(data.draw(st.integers(0, f - 1)) for _ in range(2)) for _ in range(2))
    wd += f - 1  # at least 8 output columns
    out_hw = tuple(d + sum(p) - f + 1 for d, p in zip((h, wd), pads))
    if out_hw[0] < 1:
        return
    rng = np.random.default_rng([n, c, k, h, wd, f])
    x = rng.standard_normal((n, c, h, wd)).astype(dtype)
    x = _channels_last(x) if last else x
    w = (rng.standard_normal((k, c, f, f)) / np.sqrt(c * f * f)).astype(dtype)
    b = rng.standard_normal(k).astype(dtype)
    dy = rng.standard_normal((n, k, *out_hw)).astype(dtype)
    dy = _channels_last(dy) if data.draw(st.booleans()) else dy  # any layout the next layer gives
    p, y, dx, dw, db = _run(x, w, b, pads, dy, need_dx)
    assert p.direct == "lanes"  # every condition of fits holds by the draw
    _, y0, dx0, dw0, db0 = _run(x, w, b, pads, dy, need_dx, use_direct=False)
    ty, tdx, tdw, tdb = _torch_conv(x.astype(np.float64), w.astype(np.float64),
                                    b.astype(np.float64), pads, dy.astype(np.float64))
    tol = dict(rtol=1e-4, atol=1e-4) if dtype == np.float32 else dict(rtol=1e-10, atol=1e-10)
    for got, ref, want in ((y, y0, ty), (dw, dw0, tdw), (db, db0, tdb)) + (
            ((dx, dx0, tdx),) if need_dx else ()):
        np.testing.assert_allclose(got, want, **tol)
        np.testing.assert_allclose(got, ref, **tol)
    assert (dx is None) == (not need_dx)
    assert y.dtype == dtype and dw.dtype == dtype


@needs_numba
def test_a_dx_the_lanes_cannot_take_falls_back_to_im2col():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((2, 13, 6, 9))  # 13 channels: no block for dx's 13 filters
    w = rng.standard_normal((6, 13, 3, 3)) / 10
    b = rng.standard_normal(6)
    pads = ((1, 1), (1, 1))
    dy = rng.standard_normal((2, 6, 6, 9))
    p, y, dx, dw, db = _run(x, w, b, pads, dy)
    assert p.direct == "lanes" and not DL.input_grad_fits(13, 9, (1, 1))
    for got, want in zip((y, dx, dw, db), _torch_conv(x, w, b, pads, dy)):
        np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-10)


@needs_numba
def test_lanes_gradients_match_finite_differences_in_float64():
    f64 = dict(dtype=np.float64)
    net = cs.Sequential(cs.Conv2D(None, 6, 3, padding=1, **f64), cs.ReLU(),
                        cs.Conv2D(None, 3, 5, padding=(2, 1), **f64), cs.Flatten(),
                        cs.Linear(None, 3, **f64), input_shape=(2, 4, 10), seed=2)
    check_gradients(net, np.random.default_rng(4).standard_normal((2, 2, 4, 10)),
                    {0: "lanes", 2: "lanes"})


@needs_numba
def test_predict_runs_on_convscopes_threads_and_gives_blas_its_threads_back(monkeypatch):
    blas = threads._blas()
    net = cs.Sequential(cs.Conv2D(None, 6, 5, padding=2), cs.ReLU(), cs.MaxPool2D(2),
                        cs.Conv2D(None, 16, 5), cs.ReLU(), cs.Flatten(), cs.Linear(None, 10),
                        input_shape=(1, 28, 28), seed=0)
    x = np.random.default_rng(0).random((70, 1, 28, 28), dtype=np.float32)
    before = None if blas is None else blas.num_threads
    taken, real = [], threads._claim

    def claim() -> None:  # BLAS's count once the first direct conv has taken the cores
        real()
        taken.append(None if blas is None else blas.num_threads)

    monkeypatch.setattr(threads, "_claim", claim)
    with jit.turned_on():
        got = net.predict(x, batch_size=32)
    assert len(taken) == 1  # once, for all three batches
    assert blas is None or (set(taken) == {1} and blas.num_threads == before)
    want = net.predict(x, batch_size=32)  # kernels off: im2col
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


def test_small_work_stays_on_one_thread():
    with threads.own_cores(2):
        assert threads.count_for(0) == 1 and threads.count_for(threads.SPLIT_WORK) == 1
        assert threads.count_for(10 * threads.SPLIT_WORK) == 2
