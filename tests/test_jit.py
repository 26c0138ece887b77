"""The compiled batch-norm kernels (convscope/ops/jit.py) against the NumPy path and PyTorch.

The kernels' Python source runs here without numba (small arrays), so their sums are checked on
every machine; compiled, they are checked over hypothesis-drawn shapes, layouts and dtypes, and
the NumPy path they replace stays the reference.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from convscope.ops import jit, norm

needs_numba = pytest.mark.skipif(not jit.available(), reason="numba is not installed")


def _batch(rng, shape, layout, dtype):
    """x (N, C, H, W) in channels-first or channels-last memory, or (N, C)."""
    x = (rng.standard_normal(shape) * 3 + 1).astype(dtype)
    if layout == "channels_last":
        x = np.ascontiguousarray(x.transpose(0, 2, 3, 1)).transpose(0, 3, 1, 2)
    return x


def _run(x, gamma, beta, dy, on: bool):
    """Forward and both backwards (batch statistics and running ones) with the kernels on/off."""
    jit.enable(on)
    y, cache, mean, var = norm.batchnorm_train_forward(x, gamma, beta, 1e-5)
    out = {"y": np.array(y), "mean": mean, "var": var, "strides": y.strides}
    for stats in (True, False):
        dx, dg, db = norm.batchnorm_backward(dy, cache, stats)
        out |= {f"dx{stats}": np.array(dx), f"dgamma{stats}": dg, f"dbeta{stats}": db}
    jit.enable(False)
    return out


def _python_kernels_run(x, gamma, beta, dy):
    """The kernels' own Python source (no numba) on a view of x, as norm.py calls them."""
    kind, xv = norm._channel_views(x)
    _, dyv = norm._channel_views(dy)
    y, dx = np.empty_like(xv), np.empty_like(xv)
    unused = np.empty_like(xv)  # x̂ is not written where gamma is given: recomputed from x
    c = xv.shape[1]
    stats, sums, m, mi = np.zeros((2, c)), np.zeros((2, c)), len(xv), np.empty((2, c))
    if kind == "nci":
        jit.bn_forward_nci(xv, gamma, beta, 1e-5, True, unused, y, stats, mi, 0, xv.shape[1])
    else:  # the two sweeps that bn_forward runs
        shift = xv[0].copy()
        jit.col_shifted_sums_mc(xv, shift, stats)
        s1, s2 = stats / m
        stats[:] = shift + s1, s2 - s1 * s1
        mi[:] = stats[0], 1 / np.sqrt(stats[1] + 1e-5)
        jit.normalise_mc(xv, mi[0], mi[1], gamma, beta, True, unused, y)
    scale = gamma * (1 / np.sqrt(stats[1] + 1e-5)).astype(x.dtype)
    if kind == "nci":
        jit.bn_backward_nci(dyv, xv, mi[0], mi[1], scale, True, dx, sums, 0, dyv.shape[1])
    else:
        jit.col_grad_sums_mc(dyv, xv, mi[0], mi[1], sums)
        jit.input_grad_mc(dyv, xv, mi[0], mi[1], sums[0] / m, sums[1] / m, scale, True, dx)
    return y, stats, dx, sums


@pytest.mark.parametrize("layout", ["channels_first", "channels_last"])
def test_the_kernels_python_source_equals_the_numpy_path(layout):
    rng = np.random.default_rng(0)
    x = _batch(rng, (3, 4, 3, 5), layout, np.float64)
    dy = _batch(rng, (3, 4, 3, 5), layout, np.float64)
    gamma, beta = rng.standard_normal(4), rng.standard_normal(4)
    y, stats, dx, sums = _python_kernels_run(x, gamma, beta, dy)
    ref = _run(x, gamma, beta, dy, on=False)
    assert norm._channel_views(x)[0] == ("mc" if layout == "channels_last" else "nci")
    np.testing.assert_allclose(y, norm._channel_views(ref["y"])[1], rtol=0, atol=1e-12)
    np.testing.assert_allclose(stats, [ref["mean"], ref["var"]], rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(dx, norm._channel_views(ref["dxTrue"])[1], rtol=0, atol=1e-12)
    np.testing.assert_allclose(sums, [ref["dbetaTrue"], ref["dgammaTrue"]], rtol=1e-12,
                               atol=1e-12)


@needs_numba
@settings(max_examples=40, deadline=None)
@given(n=st.integers(1, 5), c=st.integers(1, 20), h=st.integers(1, 9), w=st.integers(1, 9),
       layout=st.sampled_from(["channels_first", "channels_last", "flat"]),
       dtype=st.sampled_from([np.float32, np.float64]), affine=st.booleans(),
       seed=st.integers(0, 2**16))
def test_compiled_kernels_equal_the_numpy_path(n, c, h, w, layout, dtype, affine, seed):
    rng = np.random.default_rng(seed)
    shape = (n, c) if layout == "flat" else (n, c, h, w)
    x = _batch(rng, shape, layout, dtype)
    dy = _batch(rng, shape, layout, dtype)
    gamma = rng.standard_normal(c).astype(dtype) if affine else None
    beta = rng.standard_normal(c).astype(dtype) if affine else None
    ref, got = _run(x, gamma, beta, dy, on=False), _run(x, gamma, beta, dy, on=True)
    tol = 1e-10 if dtype == np.float64 else 2e-4  # f32: the NumPy path sums in float32
    assert got["strides"] == ref["strides"]  # the same memory layout out
    for key in ref:
        if key != "strides":
            assert got[key].dtype == ref[key].dtype, key
            scale = 1 + np.abs(ref[key]).max(initial=0)
            np.testing.assert_allclose(got[key], ref[key], rtol=0, atol=tol * scale,
                                       err_msg=key)


@needs_numba
@pytest.mark.parametrize("layout", ["channels_first", "channels_last"])
def test_compiled_kernels_match_torch_batch_norm_float64(layout):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(3)
    x = _batch(rng, (6, 5, 7, 4), layout, np.float64)
    dy = rng.standard_normal(x.shape)
    gamma, beta = rng.standard_normal(5), rng.standard_normal(5)
    got = _run(x, gamma, beta, dy, on=True)
    tx = torch.tensor(np.ascontiguousarray(x), requires_grad=True)
    tg = torch.tensor(gamma, requires_grad=True)
    tb = torch.tensor(beta, requires_grad=True)
    ty = torch.nn.functional.batch_norm(tx, None, None, tg, tb, training=True, eps=1e-5)
    ty.backward(torch.tensor(dy))
    np.testing.assert_allclose(got["y"], ty.detach().numpy(), rtol=0, atol=1e-10)
    np.testing.assert_allclose(got["dxTrue"], tx.grad.numpy(), rtol=0, atol=1e-10)
    np.testing.assert_allclose(got["dgammaTrue"], tg.grad.numpy(), rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(got["dbetaTrue"], tb.grad.numpy(), rtol=1e-10, atol=1e-10)


@needs_numba
def test_the_kernel_path_is_taken_only_when_on(monkeypatch):
    calls, real = [], jit.bn_forward
    monkeypatch.setattr(jit, "bn_forward", lambda *a: calls.append(a[0]) or real(*a))
    x = _batch(np.random.default_rng(0), (2, 3, 4, 4), "channels_last", np.float32)
    y0 = np.array(norm.batchnorm_train_forward(x, None, None, 1e-5)[0])
    assert calls == []
    with jit.turned_on() as on:
        assert on and jit.kernels() is not None
        y1 = np.array(norm.batchnorm_train_forward(x, None, None, 1e-5)[0])
    assert calls == ["mc"]
    np.testing.assert_allclose(y1, y0, rtol=0, atol=1e-5)
    assert jit.kernels() is None  # turned_on restored the state before it


def test_numba_missing_or_switched_off_leaves_the_numpy_path(monkeypatch):
    monkeypatch.setattr(jit, "available", lambda: False)
    assert jit.enable() is False and jit.kernels() is None
    monkeypatch.undo()
    monkeypatch.setenv("CONVSCOPE_JIT", "0")
    with jit.turned_on() as on:
        assert on is False and jit.kernels() is None


@needs_numba
@pytest.mark.parametrize("wanted", [True, False])
def test_the_trainer_turns_the_kernels_on_while_it_trains(wanted):
    from convscope.models import build_model
    from convscope.train import TrainConfig, Trainer

    seen = []

    class Spy:
        def on_batch_end(self, trainer, info):
            seen.append(jit.kernels() is not None)

    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (16, 1, 8, 8), dtype=np.uint8)
    y = rng.integers(0, 3, 16)
    net = build_model([{"type": "conv", "filters": 4, "size": 3, "pad": 1},
                       {"type": "batchnorm"}, {"type": "relu"}, {"type": "gap"},
                       {"type": "fc", "units": 3}], (1, 8, 8), 3, seed=0)
    Trainer(net, TrainConfig(epochs=1, batch_size=8, seed=0), callbacks=[Spy()],
            jit=wanted).fit(x, y)
    assert seen == [wanted, wanted]
    assert jit.kernels() is None


@needs_numba
@pytest.mark.parametrize("layout", ["channels_first", "channels_last", "flat"])
def test_one_sweep_statistics_keep_the_variance_of_a_far_off_mean(layout):
    """Shifted sums: with a mean of 10⁴ and a spread of 0.03, E[x²] - mean² in float64 is off
    by 2-5·10⁻⁵ of the variance; the kernels' one sweep stays within 10⁻⁹."""
    rng = np.random.default_rng(5)
    shape = (64, 3) if layout == "flat" else (4, 3, 5, 6)
    x = _batch(rng, shape, layout, np.float64) * 1e-2 + 1e4
    got = _run(x, None, None, x, on=True)
    axes = (0,) if layout == "flat" else (0, 2, 3)
    np.testing.assert_allclose(got["var"], x.var(axis=axes), rtol=1e-9)
    np.testing.assert_allclose(got["mean"], x.mean(axis=axes), rtol=1e-14)


@needs_numba
@pytest.mark.parametrize("layout", ["channels_first", "channels_last"])
def test_a_backward_after_the_kernels_are_turned_off_recomputes_xhat(layout):
    """The compiled forward keeps x, not x̂ (it never writes x̂ where gamma is given); a backward
    by the NumPy path then recomputes x̂ from x and the forward's (mean, 1/std)."""
    rng = np.random.default_rng(6)
    x = _batch(rng, (3, 4, 5, 6), layout, np.float64)
    dy = _batch(rng, x.shape, layout, np.float64)
    gamma, beta = rng.standard_normal(4), rng.standard_normal(4)
    with jit.turned_on():
        y, cache, _, _ = norm.batchnorm_train_forward(x, gamma, beta, 1e-5)
    assert cache[0] is x and len(cache) == 4
    got = norm.batchnorm_backward(dy, cache, True)
    ref = _run(x, gamma, beta, dy, on=False)
    np.testing.assert_allclose(y, ref["y"], rtol=0, atol=1e-12)
    for a, key in zip(got, ("dxTrue", "dgammaTrue", "dbetaTrue")):
        np.testing.assert_allclose(a, ref[key], rtol=1e-12, atol=1e-12, err_msg=key)


@needs_numba
def test_channels_last_sums_in_float32_blocks_stay_exact_and_thread_free():
    """A bench-sized float32 batch (65536 rows of 32 channels, far more than one block of
    jit.SUM_ROWS): statistics within 1e-6 of float64 NumPy's, gradients within 2e-4 of the
    NumPy path, and the same bits on 1 and 2 threads."""
    from convscope.ops.threads import own_cores

    rng = np.random.default_rng(7)
    x = _batch(rng, (64, 32, 32, 32), "channels_last", np.float32) + 5
    dy = _batch(rng, x.shape, "channels_last", np.float32)
    gamma, beta = rng.standard_normal(32).astype(np.float32), np.zeros(32, np.float32)
    runs = []
    for threads in (1, 2):
        with own_cores(threads):
            runs.append(_run(x, gamma, beta, dy, on=True))
    for key in runs[0]:
        np.testing.assert_array_equal(runs[0][key], runs[1][key], err_msg=key)
    x64 = x.astype(np.float64)
    np.testing.assert_allclose(runs[0]["mean"], x64.mean(axis=(0, 2, 3)), rtol=1e-6)
    np.testing.assert_allclose(runs[0]["var"], x64.var(axis=(0, 2, 3)), rtol=1e-6)
    ref = _run(x, gamma, beta, dy, on=False)
    for key in ("y", "dxTrue", "dgammaTrue", "dbetaTrue"):
        scale = 1 + np.abs(ref[key]).max()
        np.testing.assert_allclose(runs[0][key], ref[key], rtol=0, atol=2e-4 * scale, err_msg=key)
