"""The fast paths of issue 6 against PyTorch and against the textbook im2col they replaced.

Covers what the general parity tests do not aim at: every memory layout of the input and of the
upstream gradient (channels-first, channels-last, strided, reversed), both column layouts and
both output layouts of the convolution, the ones column that carries the bias, col2im clipped to
the image (padding wider than the filter included), chunking of the batch over a small
workspace, max-pool ties and NaN, the ReLU mask, ``input_grad=False``, recycled arrays never
reused while someone holds them, in-place optimisers, and float32 staying float32 everywhere.
"""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import numpy as np
import pytest
torch = pytest.importorskip("torch")
import torch.nn.functional as tF
from hypothesis import given, settings
from hypothesis import strategies as st

import convscope as cs
from convscope import conv_gemm, functional as F, workspace
from convscope.shapes import conv_output_shape

BASE = settings.default.max_examples
LAYOUTS = ("nchw", "channels_last", "strided", "reversed")


def arrange(a: np.ndarray, layout: str) -> np.ndarray:
    """The same values as a (N, C, H, W) in another memory layout."""
    if layout == "channels_last":
        return np.ascontiguousarray(a.transpose(0, 2, 3, 1)).transpose(0, 3, 1, 2)
    if layout == "strided":  # every other column of a wider array
        wide = np.zeros(a.shape[:3] + (2 * a.shape[3],), a.dtype)
        wide[..., ::2] = a
        return wide[..., ::2]
    if layout == "reversed":  # negative strides on H and W
        return np.ascontiguousarray(a[:, :, ::-1, ::-1])[:, :, ::-1, ::-1]
    return np.ascontiguousarray(a)


def close(ours: Any, ref: Any, dtype: Any, what: str) -> None:
    if isinstance(ref, torch.Tensor):
        ref = ref.detach().numpy()
    ours = np.asarray(ours)
    assert ours.dtype == np.dtype(dtype), f"{what}: dtype {ours.dtype}, expected {np.dtype(dtype)}"
    assert ours.shape == ref.shape, f"{what}: shape {ours.shape} vs {ref.shape}"
    scale = max(1.0, float(np.abs(ref).max())) if ref.size else 1.0
    rtol, atol = (1e-4, 1e-5 * scale) if np.dtype(dtype) == np.float32 else (1e-10, 1e-12 * scale)
    np.testing.assert_allclose(ours, ref, rtol=rtol, atol=atol, err_msg=what)


# ---------------------------------------------------------------------------------------------
# convolution


@st.composite
def conv_cases(draw: st.DrawFn) -> dict:
    groups = draw(st.sampled_from([1, 1, 1, 2]))
    cin = groups * draw(st.sampled_from([1, 2, 3, 5, 8]))
    cout = groups * draw(st.sampled_from([1, 2, 5, 8, 16]))  # 16 and up: channels-last output
    k = (draw(st.integers(1, 5)), draw(st.integers(1, 5)))
    stride = draw(st.sampled_from([(1, 1), (1, 1), (2, 2), (1, 2), (3, 1)]))
    dilation = draw(st.sampled_from([(1, 1), (1, 1), (2, 1), (2, 2)]))
    # padding up to beyond the filter's span, to reach the col2im fallback at stride 1
    pads = ((draw(st.integers(0, 4)), draw(st.integers(0, 4))),
            (draw(st.integers(0, 4)), draw(st.integers(0, 4))))
    mode = draw(st.sampled_from(["zeros", "zeros", "reflect", "replicate", "circular"]))
    hw = []
    for (pb, pa), kk, d in zip(pads, k, dilation):
        low = max(1, d * (kk - 1) + 1 - pb - pa, max(pb, pa) + 1 if mode != "zeros" else 1)
        hw.append(draw(st.integers(low, low + 6)))
    return dict(n=draw(st.integers(1, 9)), cin=cin, cout=cout, k=k, stride=stride, pads=pads,
                dilation=dilation, groups=groups, mode=mode, bias=draw(st.booleans()),
                hw=tuple(hw), x_layout=draw(st.sampled_from(LAYOUTS)),
                dy_layout=draw(st.sampled_from(LAYOUTS)), seed=draw(st.integers(0, 2**31)))


def torch_reference(cfg: dict, x: np.ndarray, w: np.ndarray, b: np.ndarray | None,
                    dy: np.ndarray) -> tuple[np.ndarray, ...]:
    xt = torch.tensor(np.array(x), requires_grad=True)
    wt = torch.tensor(w, requires_grad=True)
    bt = None if b is None else torch.tensor(b, requires_grad=True)
    (t, bo), (le, r) = cfg["pads"]
    mode = {"zeros": "constant"}.get(cfg["mode"], cfg["mode"])
    xp = tF.pad(xt, (le, r, t, bo), mode=mode) if (t, bo, le, r) != (0, 0, 0, 0) else xt
    y = tF.conv2d(xp, wt, bt, cfg["stride"], 0, cfg["dilation"], cfg["groups"])
    y.backward(torch.tensor(np.array(dy)))
    return (y.detach().numpy(), xt.grad.numpy(), wt.grad.numpy(),
            None if b is None else bt.grad.numpy())


def run_conv(cfg: dict, dtype: Any) -> None:
    rng = np.random.default_rng(cfg["seed"])
    n, (h, w_) = cfg["n"], cfg["hw"]
    x0 = rng.standard_normal((n, cfg["cin"], h, w_)).astype(dtype)
    w = rng.standard_normal((cfg["cout"], cfg["cin"] // cfg["groups"]) + cfg["k"]).astype(dtype)
    b = rng.standard_normal(cfg["cout"]).astype(dtype) if cfg["bias"] else None
    out_hw = conv_output_shape((h, w_), cfg["k"], cfg["stride"], cfg["pads"], cfg["dilation"])
    dy0 = rng.standard_normal((n, cfg["cout"]) + out_hw).astype(dtype)
    x, dy = arrange(x0, cfg["x_layout"]), arrange(dy0, cfg["dy_layout"])
    args = (cfg["stride"], cfg["pads"], cfg["dilation"], cfg["groups"], out_hw, cfg["mode"])
    y, cache = F.conv2d_forward(x, w, b, *args)
    dx, dw, db = F.conv2d_backward(dy, w, cache, cfg["bias"])
    ry, rdx, rdw, rdb = torch_reference(cfg, x0, w, b, dy0)
    close(y, ry, dtype, "forward")
    close(dx, rdx, dtype, "d input")
    close(dw, rdw, dtype, "d weight")
    if cfg["bias"]:
        close(db, rdb, dtype, "d bias")
    # the textbook path gives the same numbers
    ys, cache_s = F.conv2d_forward_simple(x0, w, b, *args)
    dxs, dws, _ = F.conv2d_backward_simple(dy0, w, cache_s, cfg["bias"])
    close(y, ys, dtype, "forward vs simple")
    close(dx, dxs, dtype, "d input vs simple")
    close(dw, dws, dtype, "d weight vs simple")
    # no input gradient: the same weight and bias gradients
    y2, cache2 = F.conv2d_forward(x, w, b, *args)
    none, dw2, db2 = F.conv2d_backward(dy, w, cache2, cfg["bias"], need_dx=False)
    assert none is None
    close(dw2, rdw, dtype, "d weight without dx")
    if cfg["bias"]:
        close(db2, rdb, dtype, "d bias without dx")


@settings(max_examples=BASE)
@given(conv_cases())
def test_conv_fast_path_float64_every_layout(cfg: dict) -> None:
    run_conv(cfg, np.float64)


@settings(max_examples=BASE // 2)
@given(conv_cases())
def test_conv_fast_path_float32_every_layout(cfg: dict) -> None:
    run_conv(cfg, np.float32)


@settings(max_examples=BASE // 4)
@given(conv_cases())
def test_conv_fast_path_in_chunks(cfg: dict) -> None:
    old = workspace.budget()
    workspace.set_budget(2**20)
    try:
        run_conv(dict(cfg, n=cfg["n"] * 16), np.float64)  # several images per chunk, and chunks
    finally:
        workspace.set_budget(old)


@pytest.mark.parametrize("cin,layout,first", [(1, "nchw", True), (3, "nchw", True),
                                              (3, "channels_last", False), (8, "nchw", False)])
def test_column_layout_follows_channels_and_memory(cin: int, layout: str, first: bool) -> None:
    """Few channels stored channels-first: columns along image rows; otherwise channels-last."""
    x = arrange(np.zeros((2, cin, 6, 6), np.float32), layout)
    plan = conv_gemm.make_plan(x, np.zeros((4, cin, 3, 3), np.float32), True, (1, 1),
                               ((1, 1), (1, 1)), (1, 1), 1, (6, 6), "zeros")
    assert plan.channels_first is first
    assert plan.bias_col and plan.width == cin * 9 + 1


def test_lecture_conv_on_a_chunked_batch_matches_torch(rng: np.random.Generator) -> None:
    """The lecture's six 5x5x3 filters on 40 images of 32x32x3 -> 28x28x6, over a 1 MiB budget
    (each image's columns take 784 · 76 · 4 = 238 KiB, so 4 images per chunk)."""
    old = workspace.budget()
    workspace.set_budget(2**20)
    try:
        layer = cs.Conv2D(3, 6, 5, seed=0)
        x = rng.standard_normal((40, 3, 32, 32)).astype(np.float32)
        y = layer.forward(x)
        assert workspace.nbytes() <= 2 * 2**20
    finally:
        workspace.set_budget(old)
    ref = tF.conv2d(torch.tensor(x), torch.tensor(layer.params["weight"]),
                    torch.tensor(layer.params["bias"]))
    assert y.shape == (40, 6, 28, 28)
    close(y, ref, np.float32, "forward")


# ---------------------------------------------------------------------------------------------
# the workspace


def test_chunks_fit_the_budget() -> None:
    old = workspace.budget()
    try:
        workspace.set_budget(16 * 2**20)
        assert workspace.chunk_size(64, 295 * 2**10) == 32  # 55 fit: 2 chunks of 32
        workspace.set_budget(4 * 2**20)
        assert workspace.chunk_size(64, 295 * 2**10) == 13  # 13 fit: 5 chunks of 13
        assert workspace.chunk_size(64, 64) == 64
        assert workspace.chunk_size(3, 100 * 2**20) == 1  # at least one image
        assert workspace.chunk_size(0, 10) == 1
    finally:
        workspace.set_budget(old)


def test_buffers_are_reused_and_grow_only_when_needed() -> None:
    a = workspace.buffer("test", (10, 10), np.float32, np)
    b = workspace.buffer("test", (5, 4), np.float32, np)
    assert np.shares_memory(a, b)
    c = workspace.buffer("test", (100, 100), np.float32, np)
    assert c.shape == (100, 100) and c.flags.c_contiguous
    assert not np.shares_memory(workspace.buffer("test", (4,), np.float64, np), c)


@pytest.mark.parametrize("bad", [0, 1000, 2.5, True, "16M"])
def test_budget_rejects_bad_values(bad: Any) -> None:
    with pytest.raises(ValueError, match=r"workspace budget must be an int of at least 1048576"):
        workspace.set_budget(bad)


# ---------------------------------------------------------------------------------------------
# pooling


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("kernel,stride,padding", [(2, 2, 0), (3, 3, 0), (3, 2, 1), (2, 1, 0),
                                                   ((2, 3), (2, 3), 0), (3, 3, 1)])
def test_max_pool_ties_go_to_the_first_maximum(layout: str, kernel: Any, stride: Any,
                                               padding: int) -> None:
    """Small integers make most windows hold their maximum twice: PyTorch's gradient goes to the
    first one in row-major order, and so must ours, in every memory layout."""
    rng = np.random.default_rng(7)
    x0 = rng.integers(0, 3, (3, 5, 11, 10)).astype(np.float64)
    pool = cs.MaxPool2D(kernel, stride, padding)
    x = arrange(x0, layout)
    y = pool.forward(x)
    dy0 = rng.standard_normal(y.shape)
    dx = pool.backward(arrange(dy0, layout))
    xt = torch.tensor(x0, requires_grad=True)
    yt = tF.max_pool2d(xt, kernel, stride, padding)
    yt.backward(torch.tensor(dy0))
    close(y, yt, np.float64, "forward")
    close(dx, xt.grad, np.float64, "d input")


def test_max_pool_nan_wins_like_torch() -> None:
    """NaN propagates; its window's gradient goes to the last NaN (PyTorch's CPU kernel)."""
    nan = np.nan
    x = np.array([[[[1, nan, 5, 2], [nan, 2, 1, 0], [0, 0, 3, 3], [nan, 0, 3, 1]]]])
    pool = cs.MaxPool2D(2)
    y = pool.forward(x)
    dx = pool.backward(np.ones_like(y))
    xt = torch.tensor(x, requires_grad=True)
    yt = tF.max_pool2d(xt, 2)
    yt.backward(torch.ones_like(yt))
    np.testing.assert_array_equal(y, yt.detach().numpy())
    np.testing.assert_array_equal(dx, xt.grad.numpy())


def test_max_pool_keeps_the_memory_layout() -> None:
    x = arrange(np.random.default_rng(0).standard_normal((2, 8, 8, 8)), "channels_last")
    pool = cs.MaxPool2D(2)
    y = pool.forward(x)
    dx = pool.backward(np.ones_like(y))
    for a in (y, dx):
        assert a.transpose(0, 2, 3, 1).flags.c_contiguous


@pytest.mark.parametrize("layout", LAYOUTS)
def test_avg_pool_every_layout(layout: str) -> None:
    rng = np.random.default_rng(3)
    x0 = rng.standard_normal((2, 4, 9, 9))
    for kernel, stride, pad, ceil in [(2, 2, 0, False), (3, 2, 1, True), (3, 3, 0, False)]:
        pool = cs.AvgPool2D(kernel, stride, pad, ceil_mode=ceil)
        y = pool.forward(arrange(x0, layout))
        dy0 = rng.standard_normal(y.shape)
        dx = pool.backward(arrange(dy0, layout))
        xt = torch.tensor(x0, requires_grad=True)
        yt = tF.avg_pool2d(xt, kernel, stride, pad, ceil)
        yt.backward(torch.tensor(dy0))
        close(y, yt, np.float64, "forward")
        close(dx, xt.grad, np.float64, "d input")


# ---------------------------------------------------------------------------------------------
# activations, Sequential, dtypes, imports


def test_relu_keeps_a_mask_not_the_output() -> None:
    x = np.array([[-1.0, 0.0, 2.0, np.nan]], np.float32)
    relu = cs.ReLU()
    y = relu.forward(x)
    assert relu._cache.dtype == np.bool_
    dx = relu.backward(np.ones_like(y))
    xt = torch.tensor(x, requires_grad=True)
    torch.relu(xt).backward(torch.ones(1, 4))
    np.testing.assert_array_equal(dx, xt.grad.numpy())
    with cs.no_grad():
        relu.forward(x)
    assert relu._cache is None


def test_backward_without_input_gradient_gives_the_same_weight_gradients() -> None:
    rng = np.random.default_rng(0)
    x = rng.standard_normal((4, 3, 12, 12)).astype(np.float32)
    for first in (cs.Conv2D(3, 4, 3), cs.MaxPool2D(2)):
        net = cs.Sequential(first, cs.ReLU(), cs.Flatten(), cs.Linear(None, 5),
                            input_shape=(3, 12, 12), seed=1)
        dy = rng.standard_normal((4, 5)).astype(np.float32)
        net.forward(x)
        dx = net.backward(dy)
        grads = {k: v.copy() for k, v in net.grads.items()}
        net.zero_grad()
        net.forward(x)
        assert net.backward(dy, input_grad=False) is None
        assert dx.shape == x.shape
        for k, v in net.grads.items():
            np.testing.assert_array_equal(v, grads[k], err_msg=k)


def test_float32_stays_float32_through_a_training_step() -> None:
    """No silent float64 anywhere: activations, gradients, parameters, optimiser state."""
    rng = np.random.default_rng(0)
    net = cs.Sequential(cs.Conv2D(None, 8, 3, padding=1), cs.BatchNorm2D(), cs.ReLU(),
                        cs.MaxPool2D(2), cs.Conv2D(None, 8, 3, stride=2), cs.LeakyReLU(),
                        cs.AvgPool2D(2, ceil_mode=True), cs.Flatten(), cs.Dropout(0.2, seed=0),
                        cs.Linear(None, 10), input_shape=(3, 16, 16), seed=0)
    x = rng.standard_normal((6, 3, 16, 16)).astype(np.float32)
    loss_fn = cs.CrossEntropyLoss(label_smoothing=0.1)
    for opt in (cs.SGD(net, lr=0.1, momentum=0.9, nesterov=True, weight_decay=1e-4),
                cs.Adam(net), cs.AdamW(net)):
        h = x
        for layer in net.layers:
            h = layer.forward(h)
            assert h.dtype == np.float32, repr(layer)
        loss = loss_fn.forward(h, rng.integers(0, 10, 6))
        assert loss.dtype == np.float32
        d = loss_fn.backward()
        for layer in reversed(net.layers):
            d = layer.backward(d)
            assert d.dtype == np.float32, repr(layer)
        opt.step()
        for name, p, g in opt.params:
            assert p.dtype == g.dtype == np.float32, name
        for name, state in opt.state.items():
            for slot, a in state.items():
                assert a.dtype == np.float32, f"{name}.{slot}"


def test_import_convscope_stays_light() -> None:
    """``import convscope`` loads NumPy and nothing heavy (the predict cold start needs it)."""
    code = ("import sys, convscope; heavy = ('torch', 'matplotlib', 'onnx', 'onnxruntime', "
            "'scipy', 'PIL', 'tqdm', 'safetensors', 'cupy', 'numba'); "
            "print(sorted({m.split('.')[0] for m in sys.modules} & set(heavy)))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.strip()
    assert out == "[]", f"import convscope also imported {out}"


# ---------------------------------------------------------------------------------------------
# recycled arrays


def test_outputs_kept_by_the_caller_are_never_recycled() -> None:
    """Steps recycle the arrays nobody holds; what a caller keeps (an output, a view of an
    activation, a gradient) stays as it was."""
    rng = np.random.default_rng(0)
    net = cs.Sequential(cs.Conv2D(None, 16, 3, padding=1), cs.ReLU(), cs.MaxPool2D(2),
                        cs.Conv2D(None, 16, 3, padding=1), cs.ReLU(), cs.MaxPool2D(2),
                        cs.Flatten(), cs.Linear(None, 3), input_shape=(3, 16, 16), seed=0)
    x = rng.standard_normal((32, 3, 16, 16)).astype(np.float32)
    kept = [net.layers[0].forward(x), net.layers[1].forward(net.layers[0].forward(x))[:, :2]]
    out = net.forward(x)
    dx = net.backward(np.ones_like(out))
    kept += [out, dx]
    copies = [k.copy() for k in kept]
    for _ in range(3):
        net.forward(rng.standard_normal(x.shape).astype(np.float32))
        net.backward(rng.standard_normal(out.shape).astype(np.float32))
    for k, c in zip(kept, copies):
        np.testing.assert_array_equal(k, c)


@pytest.mark.parametrize("kernels", [False, True])
def test_a_new_forward_recycles_the_last_passes_masks(kernels: bool) -> None:
    """A Sequential's forward drops every layer's cache first (Layer._forget), so the last
    pass's ReLU mask is reused in this one, not held beside a second: the pool stops growing
    after the first step."""
    from convscope.ops import jit

    rng = np.random.default_rng(0)
    net = cs.Sequential(cs.Conv2D(None, 16, 3, padding=1), cs.ReLU(), cs.MaxPool2D(2),
                        cs.Flatten(), cs.Linear(None, 3), input_shape=(3, 32, 32), seed=0)
    x = rng.standard_normal((16, 3, 32, 32)).astype(np.float32)  # masks of 256 KiB: pooled
    relu = net.layers[1]
    with jit.turned_on(kernels):
        out = net.forward(x)
        net.backward(np.ones_like(out))
        mask = relu._cache.__array_interface__["data"][0]  # (a view: its memory, not its id)
        before = workspace.pooled_nbytes()
        for _ in range(3):
            out = net.forward(x)
            net.backward(np.ones_like(out))
            assert relu._cache.__array_interface__["data"][0] == mask  # the same memory again
        assert workspace.pooled_nbytes() == before
        with cs.no_grad():
            net.forward(x)
        assert all(layer._cache is None for layer in net.layers)


def test_free_arrays_are_recycled_and_the_pool_is_bounded() -> None:
    a = workspace.empty((300, 300), np.float32)
    address = a.__array_interface__["data"][0]
    del a
    b = workspace.empty((300, 300), np.float32)
    assert b.__array_interface__["data"][0] == address  # the same memory again
    c = workspace.empty((300, 300), np.float32)  # b is held: a new array
    assert not np.shares_memory(b, c)
    cl = workspace.empty((2, 3, 100, 100), np.float32, channels_last=True)
    assert cl.shape == (2, 3, 100, 100) and cl.transpose(0, 2, 3, 1).flags.c_contiguous
    old = workspace.pool_limit()
    try:
        workspace.set_pool_limit(2**20)
        keep = [workspace.empty((512, 256), np.float32) for _ in range(5)]  # 512 KiB each
        assert workspace.pooled_nbytes() <= 2**20
        assert len({k.__array_interface__["data"][0] for k in keep}) == 5
    finally:
        workspace.set_pool_limit(old)


def test_a_full_pool_evicts_free_arrays_of_other_shapes() -> None:
    """Many shapes over a small limit: free arrays of the least recently used shapes make room
    (removed by identity), held ones stay, and the pool never exceeds its limit."""
    old = workspace.pool_limit()
    try:
        workspace.set_pool_limit(2**20)
        held = workspace.empty((256, 256), np.float32)  # 256 KiB, kept all along
        held[...] = 7
        second = workspace.empty((256, 256), np.float32)  # same shape, freed: evicted later,
        del second  # from behind a held array in its list
        for i in range(40):
            a = workspace.empty((128, 256 + 8 * i), np.float32)  # a new shape every time
            a[...] = i
            assert workspace.pooled_nbytes() <= 2**20
            del a
        assert (held == 7).all()
        assert not np.shares_memory(held, workspace.empty((256, 256), np.float32))
    finally:
        workspace.set_pool_limit(old)


@pytest.mark.parametrize("bad", [-1, 1.5, None])
def test_pool_limit_rejects_bad_values(bad: Any) -> None:
    with pytest.raises(ValueError, match="pool limit must be an int >= 0"):
        workspace.set_pool_limit(bad)


# ---------------------------------------------------------------------------------------------
# optimisers updating in place


@pytest.mark.parametrize("name,options", [
    ("SGD", dict(momentum=0.9, nesterov=True, weight_decay=0.1)),
    ("SGD", dict(momentum=0.9, dampening=0.3, weight_decay=0.1)),
    ("SGD", dict(momentum=0.5)), ("SGD", dict(weight_decay=0.2)), ("SGD", {}),
    ("Adam", dict(weight_decay=0.1)), ("Adam", {}), ("AdamW", dict(weight_decay=0.1))])
def test_in_place_optimisers_follow_torch(name: str, options: dict) -> None:
    """The scratch arrays of the in-place updates never alias what they still need: every
    combination of options steps as torch.optim does, on arrays large enough to be recycled."""
    rng = np.random.default_rng(5)
    p = rng.standard_normal((200, 150)).astype(np.float32)
    g = np.zeros_like(p)
    tp = torch.tensor(p.copy(), requires_grad=True)
    lr = 0.1 if name == "SGD" else 0.01
    opt = getattr(cs, name)([("w", p, g)], lr=lr, **options)
    topt = getattr(torch.optim, name)([tp], lr=lr, **options)
    for _ in range(4):
        g[...] = rng.standard_normal(p.shape).astype(np.float32)
        tp.grad = torch.tensor(g.copy())
        opt.step()
        topt.step()
    np.testing.assert_allclose(p, tp.detach().numpy(), rtol=1e-5, atol=1e-6)
