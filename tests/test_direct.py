"""The direct convolution (convscope/ops/direct.py, jit_direct.py) against the im2col path,
PyTorch and finite differences.

The kernels' Python source runs here without numba, on small sizes; compiled, the whole path
(forward, dx, dW, db through ops.conv) is checked over hypothesis-drawn sizes, paddings, memory
layouts and dtypes against the im2col path it replaces and against torch; each drawn case is
asserted to have run direct, so none passes by falling back.  And: float64 finite differences,
results that do not depend on the thread count, and what own_cores does to BLAS's threads.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import convscope as cs
from convscope.ops import conv as C, direct, jit, jit_direct, threads
from finite_diff import numeric_grad

torch = pytest.importorskip("torch")
needs_numba = pytest.mark.skipif(not jit.available(), reason="numba is not installed")


def _channels_last(a: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(a.transpose(0, 2, 3, 1)).transpose(0, 3, 1, 2)


def _torch_conv(x, w, b, pads, dy, s=1):
    """y, dx, dw, db by torch, zero padding ((t, b), (l, r)) applied first."""
    xt = torch.from_numpy(np.ascontiguousarray(x)).requires_grad_()
    wt = torch.from_numpy(w).requires_grad_()
    bt = torch.from_numpy(b).requires_grad_()
    (t, bo), (l, r) = pads
    y = torch.nn.functional.conv2d(torch.nn.functional.pad(xt, (l, r, t, bo)), wt, bt, stride=s)
    y.backward(torch.from_numpy(np.ascontiguousarray(dy)))
    return y.detach().numpy(), xt.grad.numpy(), wt.grad.numpy(), bt.grad.numpy()


def _out_hw(x, w, pads, s=1):
    return tuple((x.shape[2 + a] + sum(pads[a]) - w.shape[2 + a]) // s + 1 for a in (0, 1))


def _run(x, w, b, pads, dy, need_dx=True, on=True, use_direct=True, s=1):
    """(plan, y, dx, dw, db) through ops.conv, the kernels on or off, direct allowed or not."""
    before = C.DIRECT
    C.DIRECT = use_direct
    try:
        with jit.turned_on(on):
            out_hw = _out_hw(x, w, pads, s)
            p = C.make_plan(x, w, True, (s, s), pads, (1, 1), 1, out_hw, "zeros")
            y, cache = C.conv2d_forward(x, w, b, (s, s), pads, (1, 1), 1, out_hw)
            dx, dw, db = C.conv2d_backward(dy, w, cache, True, need_dx)
            return p, np.array(y), None if dx is None else np.array(dx), dw, db
    finally:
        C.DIRECT = before


# ---------------------------------------------------------------------------------------------
# the kernels' Python source, no numba


def _windows(xl, pads, f, s, out_hw):
    """x zero-padded, channels-last, and the (N, OH, OW, C) window under tap (i, j)."""
    (t, bo), (l, r) = pads
    xp = np.pad(xl, ((0, 0), (t, bo), (l, r), (0, 0)))
    return lambda i, j: xp[:, i:i + s * (out_hw[0] - 1) + 1:s, j:j + s * (out_hw[1] - 1) + 1:s]


@pytest.mark.parametrize("c, h, wd, f, pads, s", [(3, 5, 6, 3, ((1, 1), (1, 1)), 1),
                                                   (2, 4, 7, 2, ((1, 0), (0, 1)), 1),
                                                   (5, 6, 4, 3, ((0, 0), (2, 2)), 1),
                                                   (4, 9, 11, 3, ((1, 1), (1, 1)), 2),
                                                   (6, 8, 12, 1, ((0, 0), (0, 0)), 2)])
@pytest.mark.parametrize("kb, pos", jit_direct.BLOCKS)
def test_the_kernels_python_source_gives_the_convolution_and_its_weight_gradient(c, h, wd, f,
                                                                                  pads, s, kb,
                                                                                  pos):
    rng = np.random.default_rng(c)
    n, k = 2, kb
    xl = rng.standard_normal((n, h, wd, c))
    w = rng.standard_normal((k, c, f, f))
    b = rng.standard_normal(k)
    out_hw = ((h + sum(pads[0]) - f) // s + 1, (wd + sum(pads[1]) - f) // s + 1)
    win = _windows(xl, pads, f, s, out_hw)
    y5 = np.empty((n, *out_hw, 1, k))
    jit_direct.source_kernel(jit_direct.forward_name(kb, pos, s))(
        xl, direct._packed(w, kb), b, y5, pads[0][0], pads[1][0], 0, n * out_hw[0])
    want_y = b + sum(win(i, j) @ w[:, :, i, j].T for i in range(f) for j in range(f))
    np.testing.assert_allclose(y5.reshape(n, *out_hw, k), want_y, rtol=1e-12, atol=1e-12)
    dy = rng.standard_normal((n, *out_hw, k))
    want = np.stack([np.stack([np.einsum("nhwc,nhwk->kc", win(i, j), dy) for j in range(f)], -1)
                     for i in range(f)], -2)
    for cb in range(1, jit_direct.CB + 1):
        if c % cb:
            continue
        dwp = np.zeros((1, f, f, c, k))
        jit_direct.source_kernel(jit_direct.weight_grad_name(kb, cb, s))(
            xl, dy.reshape(n, *out_hw, 1, k), dwp, pads[0][0], pads[1][0], 0, n)
        np.testing.assert_allclose(dwp.transpose(0, 4, 3, 1, 2).reshape(k, c, f, f), want,
                                   rtol=1e-12, atol=1e-12)


def test_channel_block_divides_the_channels():
    for c in range(1, 70):
        cb = jit_direct.channel_block(c)
        assert c % cb == 0 and 1 <= cb <= jit_direct.CB
        assert all(c % bigger for bigger in range(cb + 1, jit_direct.CB + 1))


# ---------------------------------------------------------------------------------------------
# compiled, through ops.conv


@needs_numba
@settings(max_examples=25, deadline=None)
@given(n=st.integers(1, 5), c=st.sampled_from([1, 3, 4, 16, 32]), k=st.sampled_from([16, 32, 48]),
       h=st.integers(1, 9), wd=st.integers(1, 11), f=st.integers(1, 5), data=st.data(),
       dtype=st.sampled_from([np.float32, np.float64]), last=st.booleans(),
       need_dx=st.booleans(), s=st.sampled_from([1, 2]), wide=st.booleans())
def test_direct_equals_im2col_and_torch(n, c, k, h, wd, f, data, dtype, last, need_dx, s, wide):
    """The blocks of both kinds of CPU (16 filters x 4 positions; 32 x 2 where the filters
    allow, else 16 x 2) on every machine: ``wide`` sets :data:`.jit_direct.WIDE` for the
    draw."""
    before, jit_direct.WIDE = jit_direct.WIDE, wide
    try:
        _direct_equals_im2col_and_torch(n, c, k, h, wd, f, data, dtype, last, need_dx, s)
    finally:
        jit_direct.WIDE = before


def _direct_equals_im2col_and_torch(n, c, k, h, wd, f, data, dtype, last, need_dx, s):
    pads = tuple(tuple(data.draw(st.integers(0, f)) for _ in range(2)) for _ in range(2))
    out_hw = tuple((d + sum(p) - f) // s + 1 for d, p in zip((h, wd + s * 3), pads))
    wd += s * 3  # enough columns out for most draws
    if min(out_hw) < 1:
        return
    rng = np.random.default_rng([n, c, k, h, wd, f])
    x = rng.standard_normal((n, c, h, wd)).astype(dtype)
    x = _channels_last(x) if last else x
    w = (rng.standard_normal((k, c, f, f)) / np.sqrt(c * f * f)).astype(dtype)
    b = rng.standard_normal(k).astype(dtype)
    dy = rng.standard_normal((n, k, *out_hw)).astype(dtype)
    p, y, dx, dw, db = _run(x, w, b, pads, dy, need_dx, s=s)
    assert (p.direct == "blocks") == (out_hw[1] >= jit_direct.B)  # all else holds by the draw
    _, y0, dx0, dw0, db0 = _run(x, w, b, pads, dy, need_dx, use_direct=False, s=s)
    ty, tdx, tdw, tdb = _torch_conv(x.astype(np.float64), w.astype(np.float64),
                                    b.astype(np.float64), pads, dy.astype(np.float64), s)
    tol = dict(rtol=1e-4, atol=1e-4) if dtype == np.float32 else dict(rtol=1e-10, atol=1e-10)
    for got, ref, want in ((y, y0, ty), (dw, dw0, tdw), (db, db0, tdb)) + (
            ((dx, dx0, tdx),) if need_dx else ()):
        np.testing.assert_allclose(got, want, **tol)
        np.testing.assert_allclose(got, ref, **tol)
    assert (dx is None) == (not need_dx)
    if p.direct:
        assert y.dtype == dtype and dw.dtype == dtype
        assert np.array_equal(_run(x, w, b, pads, dy, need_dx, s=s)[1], y)  # the same again


@needs_numba
def test_the_direct_output_is_channels_last_and_a_small_c_dx_falls_back_to_im2col():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 3, 8, 8)).astype(np.float32)  # an image batch, channels-first
    w = rng.standard_normal((16, 3, 3, 3)).astype(np.float32)
    b = np.zeros(16, np.float32)
    pads = ((1, 1), (1, 1))
    with jit.turned_on():
        y, cache = C.conv2d_forward(x, w, b, (1, 1), pads, (1, 1), 1, (8, 8))
        assert cache[-1].direct and y.transpose(0, 2, 3, 1).flags.c_contiguous
        dy = rng.standard_normal(y.shape).astype(np.float32)
        dx, dw, db = C.conv2d_backward(dy, w, cache, True, True)  # C = 3: dx by im2col
    _, tdx, tdw, tdb = _torch_conv(x, w, b, pads, dy)
    np.testing.assert_allclose(dx, tdx, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(dw, tdw, rtol=1e-4, atol=1e-3)


@pytest.mark.parametrize("stride, dilation, groups, mode, k, out_w", [
    ((3, 3), (1, 1), 1, "zeros", 16, 8), ((2, 1), (1, 1), 1, "zeros", 16, 8),
    ((1, 1), (2, 2), 1, "zeros", 16, 8), ((1, 1), (1, 1), 2, "zeros", 16, 8),
    ((1, 1), (1, 1), 1, "reflect", 16, 8), ((1, 1), (1, 1), 1, "zeros", 8, 8),
    ((1, 1), (1, 1), 1, "zeros", 16, 3)])
def test_fits_refuses_what_the_kernels_do_not_compute(stride, dilation, groups, mode, k, out_w):
    assert not direct.fits(16, k, stride, dilation, groups, mode, out_w)
    for s in (1, 2):
        for c in (1, 3, 4, 16, 32):
            assert direct.fits(c, 16, (s, s), (1, 1), 1, "zeros", 4)
    for c in (5, 6, 8, 15):  # in training only where the cores are held (BLAS on one thread);
        assert not direct.fits(c, 16, (1, 1), (1, 1), 1, "zeros", 8)  # with no dx to come, from
        assert direct.fits(c, 16, (1, 1), (1, 1), 1, "zeros", 8, 0, True)  # enough positions
        assert direct.fits(c, 16, (1, 1), (1, 1), 1, "zeros", 8, direct.FEW_CHANNELS_FROM)
        assert not direct.fits(c, 16, (1, 1), (1, 1), 1, "zeros", 8, direct.FEW_CHANNELS_FROM - 1)
        assert not direct.input_grad_fits(c, 8, (1, 1))
    for c in (24, 40):
        assert not direct.fits(c, 16, (1, 1), (1, 1), 1, "zeros", 8, 10**6)
    assert direct.input_grad_fits(16, 8, (2, 2)) and not direct.input_grad_fits(16, 7, (2, 2))
    assert not direct.input_grad_fits(8, 8, (1, 1))


def check_gradients(net: cs.Sequential, x: np.ndarray, kinds: dict[int, str]) -> None:
    """dW of the conv layers ``kinds`` names (all of ``net``'s) and dx of ``net`` (float64,
    kernels on) against central differences of its cross-entropy, each of those layers
    asserted to run on the direct path of its kind."""
    labels = np.arange(len(x)) % 3
    loss_fn = cs.CrossEntropyLoss()

    def loss() -> float:
        return float(loss_fn.forward(net.forward(x), labels))

    with jit.turned_on():
        seen, real = [], C.make_plan  # the plans of the convs' forwards, in order
        C.make_plan = lambda *a: seen.append(real(*a).direct) or real(*a)
        try:
            net.forward(x)
        finally:
            C.make_plan = real
        assert seen == list(kinds.values())
        net.zero_grad()
        loss()
        dx = net.backward(loss_fn.backward())
        for i in kinds:
            np.testing.assert_allclose(net.layers[i].grads["weight"],
                                       numeric_grad(loss, net.layers[i].params["weight"]),
                                       rtol=1e-6, atol=1e-9)
        np.testing.assert_allclose(dx, numeric_grad(loss, x), rtol=1e-6, atol=1e-9)


@needs_numba
def test_direct_gradients_match_finite_differences_in_float64():
    f64 = dict(dtype=np.float64)
    net = cs.Sequential(cs.Conv2D(None, 16, 3, padding=1, **f64), cs.ReLU(),
                        cs.Conv2D(None, 16, 3, padding=1, **f64), cs.Flatten(),
                        cs.Linear(None, 3, **f64), input_shape=(16, 5, 6), seed=1)
    check_gradients(net, np.random.default_rng(3).standard_normal((2, 16, 5, 6)),
                    {0: "blocks", 2: "blocks"})


# ---------------------------------------------------------------------------------------------
# threads


@needs_numba
@pytest.mark.parametrize("c, k, h, wd, f, pad, last", [(32, 32, 6, 7, 3, 1, True),  # blocks
                                                       (3, 6, 11, 30, 5, 2, False)])  # lanes
def test_results_do_not_depend_on_the_thread_count(c, k, h, wd, f, pad, last):
    rng = np.random.default_rng(5)
    x = rng.standard_normal((9, c, h, wd)).astype(np.float32)
    x = _channels_last(x) if last else x
    w = rng.standard_normal((k, c, f, f)).astype(np.float32)
    b = rng.standard_normal(k).astype(np.float32)
    pads = ((pad, pad), (pad, pad))
    dy = rng.standard_normal((9, k, *_out_hw(x, w, pads))).astype(np.float32)
    outs = []
    for t in (1, 2, 3):
        with threads.own_cores(t):
            assert threads.threads() == t
            outs.append(_run(x, w, b, pads, dy))
    assert outs[0][0].direct == ("blocks" if k % 16 == 0 else "lanes")
    assert outs[0][2] is not None  # dx too
    for other in outs[1:]:
        for a, bb in zip(outs[0][1:], other[1:]):
            assert np.array_equal(a, bb)


def test_own_cores_gives_blas_one_thread_and_restores_it():
    blas = threads._blas()
    if blas is None:
        pytest.skip("threadpoolctl sees no BLAS")
    before = blas.num_threads
    with threads.own_cores(3):
        assert threads.threads() == 3 and blas.num_threads == 1
    assert blas.num_threads == before and threads.threads() == max(1, before)
    with threads.own_cores(2, on_demand=True):
        assert blas.num_threads == before  # no direct convolution yet
        threads.run(lambda: None, [()])
        assert blas.num_threads == before and threads.owned() == 1  # a run alone takes nothing
        threads.take()
        assert blas.num_threads == 1 and threads.threads() == 2 == threads.owned()
    assert blas.num_threads == before and threads.owned() == 1


def test_own_cores_in_another_thread_leaves_blas_to_the_main_thread():
    import threading

    blas = threads._blas()
    if blas is None:
        pytest.skip("threadpoolctl sees no BLAS")
    before = blas.num_threads
    inside, leave = threading.Event(), threading.Event()
    seen = {}

    def other() -> None:
        with threads.own_cores(2):
            seen["other"] = threads.threads()
            inside.set()
            leave.wait(10)

    t = threading.Thread(target=other)
    with threads.own_cores(3):
        t.start()
        inside.wait(10)
        assert threads.threads() == 3 and seen["other"] == 2 and blas.num_threads == 1
    assert blas.num_threads == before  # the other thread's block did not take BLAS's count
    leave.set()
    t.join(10)
    assert blas.num_threads == before and threads.threads() == max(1, before)


def test_run_calls_every_part_once_in_order_per_thread():
    seen = []
    with threads.own_cores(2):
        threads.run(lambda i: seen.append(i), [(i,) for i in range(7)])
    assert sorted(seen) == list(range(7))
    assert threads.split(10, 4) == [(0, 2), (2, 5), (5, 7), (7, 10)]
    assert threads.split(2, 4) == [(0, 1), (1, 2)] and threads.split(0, 3) == [(0, 0)]


@needs_numba
@pytest.mark.parametrize("c, k, h, wd, f, pad", [(16, 32, 9, 10, 3, 1), (32, 16, 8, 9, 1, 0),
                                                  (16, 16, 8, 11, 2, 0), (16, 48, 11, 12, 5, 2),
                                                  (32, 16, 10, 8, 3, (0, 2))])
def test_stride_two_input_gradient_by_phases(c, k, h, wd, f, pad):
    pads = ((pad, pad), (pad, pad)) if isinstance(pad, int) else (pad, pad[::-1])
    rng = np.random.default_rng(c + k + f)
    x = _channels_last(rng.standard_normal((3, c, h, wd)))
    w = rng.standard_normal((k, c, f, f)) / np.sqrt(c * f * f)
    b = rng.standard_normal(k)
    dy = rng.standard_normal((3, k, *_out_hw(x, w, pads, 2)))
    p, y, dx, dw, db = _run(x, w, b, pads, dy, s=2)
    assert p.direct and direct.input_grad_fits(c, wd, (2, 2))
    for got, want in zip((y, dx, dw, db), _torch_conv(x, w, b, pads, dy, 2)):
        np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-10)


@needs_numba
@pytest.mark.parametrize("last", [False, True])
def test_batch_norm_and_relu_split_over_threads_give_the_same_numbers(last):
    rng = np.random.default_rng(7)
    shape = (8, 16, 32, 32)  # 131072 numbers: above jit.SPLIT_FROM
    x = rng.standard_normal(shape).astype(np.float32) * 3 + 1
    dy = rng.standard_normal(shape).astype(np.float32)
    x, dy = (_channels_last(x), _channels_last(dy)) if last else (x, dy)
    outs = []
    for t in (1, 2, 3):
        with jit.turned_on(), threads.own_cores(t):
            assert threads.owned() == t
            bn, relu = cs.BatchNorm2D(16), cs.ReLU()
            y = bn.forward(x)
            r = relu.forward(y)
            outs.append([np.array(a) for a in (y, r, relu.backward(dy), bn.backward(dy),
                                               bn.grads["weight"], bn.grads["bias"])])
    with jit.turned_on(False):
        bn, relu = cs.BatchNorm2D(16), cs.ReLU()
        y = bn.forward(x)
        ref = [y, relu.forward(y), relu.backward(dy), bn.backward(dy), bn.grads["weight"],
               bn.grads["bias"]]
    for other in outs[1:]:
        for a, b in zip(outs[0], other):
            assert np.array_equal(a, b)
    for a, b in zip(outs[0], ref):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=2e-3)


@needs_numba
def test_fewer_than_16_channels_run_direct_where_blas_has_one_core_or_no_backward_follows():
    from convscope.ops.threads import own_cores

    w = np.zeros((16, 6, 5, 5), np.float32)  # LeNet-5's second conv
    args = (True, (1, 1), ((0, 0), (0, 0)), (1, 1), 1, (10, 10), "zeros")
    big, small = np.zeros((256, 6, 14, 14), np.float32), np.zeros((64, 6, 14, 14), np.float32)
    with jit.turned_on():
        assert C.make_plan(big, w, *args).direct == ""  # training, BLAS's threads: wide columns
        for on_demand in (False, True):  # the cores held, or to be taken by this conv
            with own_cores(2, on_demand=on_demand):
                assert C.make_plan(small, w, *args).direct == "blocks"
        with own_cores(1):
            assert C.make_plan(small, w, *args).direct == ""  # no second core for the kernels
        with cs.no_grad():
            assert C.make_plan(big, w, *args).direct == "blocks"
            assert C.make_plan(small, w, *args).direct == ""  # 6400 positions: columns


@needs_numba
@pytest.mark.parametrize("pad", [0, 2])
def test_a_lenet_conv_in_a_training_step_runs_direct_and_its_gradients_match_torch(pad):
    """6 -> 16 5x5 inside own_cores(2), as in Trainer.fit: the forward by the direct kernel,
    dx, dW and db by im2col from the direct forward's cache."""
    from convscope.ops.threads import own_cores

    rng = np.random.default_rng(11)
    x = rng.standard_normal((5, 6, 14, 14)).astype(np.float32)
    w = rng.standard_normal((16, 6, 5, 5)).astype(np.float32)
    b = rng.standard_normal(16).astype(np.float32)
    pads = ((pad, pad), (pad, pad))
    dy = rng.standard_normal((5, 16) + _out_hw(x, w, pads)).astype(np.float32)
    with own_cores(2):
        p, y, dx, dw, db = _run(x, w, b, pads, dy)
    assert p.direct == "blocks"
    ty, tdx, tdw, tdb = _torch_conv(x, w, b, pads, dy)
    for got, ref in ((y, ty), (dx, tdx), (dw, tdw), (db, tdb)):
        np.testing.assert_allclose(got, ref, rtol=1e-4, atol=2e-3)


@needs_numba
@pytest.mark.parametrize("n", [1, 7])
def test_the_lenet_convs_im2col_backward_in_halves_does_not_depend_on_the_thread_count(n):
    """The backward of a direct 6 -> 16 forward runs by im2col in IM2COL_PARTS runs of the batch
    over our threads: the same numbers on 2 and 3 threads, and the one-pass im2col backward's
    (the runs' dW summed in order, so equal to rounding)."""
    from convscope.ops import conv

    rng = np.random.default_rng(12)
    x = rng.standard_normal((n, 6, 14, 14)).astype(np.float32)
    w = rng.standard_normal((16, 6, 5, 5)).astype(np.float32)
    b = rng.standard_normal(16).astype(np.float32)
    pads = ((2, 2), (2, 2))
    dy = rng.standard_normal((n, 16, 14, 14)).astype(np.float32)
    outs = []
    for t in (2, 3):
        with threads.own_cores(t):
            outs.append(_run(x, w, b, pads, dy))
            assert outs[-1][0].direct == "blocks"
            _, cache = conv.conv2d_forward(x, w, b, (1, 1), pads, (1, 1), 1, (14, 14))
            one = conv.conv2d_backward(dy, w, (*cache[:2], None, cache[3].narrow()))  # one pass
    for a, bb in zip(outs[0][2:], outs[1][2:]):
        assert np.array_equal(a, bb)
    for got, ref in zip(outs[0][2:], one):
        np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-4)
