"""The work measured: each case is a convscope function and its PyTorch twin on the same data.

Both get float32 NCHW input and the upstream gradient in the layout of their own output (what
the next layer would hand them).  PyTorch runs its defaults: ``torch.nn`` modules, autograd,
``torch.optim.SGD``, ``torch.inference_mode()`` for inference.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

import convscope as cs
from convscope.ops import jit
from convscope.ops.threads import own_cores

# (N, C_in, H, W, C_out, k, stride, pad) from the issue; the 224 one is forward only
CONV_SHAPES: tuple[tuple[int, ...], ...] = (
    (64, 3, 32, 32, 32, 3, 1, 1), (64, 32, 16, 16, 64, 3, 1, 1), (64, 1, 28, 28, 6, 5, 1, 0),
    (64, 6, 12, 12, 16, 5, 1, 0), (64, 3, 32, 32, 6, 5, 1, 0), (1, 3, 224, 224, 64, 7, 2, 3),
    (256, 64, 8, 8, 128, 3, 1, 1))
FORWARD_ONLY = {(1, 3, 224, 224, 64, 7, 2, 3)}
BIG_GFLOP = 0.5  # a conv whose forward is at least this many GFLOP must run near the GEMM ceiling


@dataclass
class Case:
    """One line of the table."""

    name: str
    group: str  # conv-fwd, conv-fwdbwd, layer, step, infer
    ours: Callable[[], Any]
    torch: Callable[[], Any]
    flops: float = 0.0  # per call, for GFLOP/s
    images: int = 0  # per call, for images/s
    gemm: Callable[[], Any] | None = None  # convscope's own GEMMs replayed alone (NumPy)
    gemm_flops: float = 0.0
    textbook: Callable[[], Any] | None = None  # the same work by the textbook im2col
    info: dict = field(default_factory=dict)


def _rand(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    return rng.standard_normal(shape, dtype=np.float32)


def _like(y: Any, values: np.ndarray) -> Any:
    """values in the memory layout of y (channels-last stays channels-last)."""
    out = np.empty_like(y)
    out[...] = values
    return out


def _where(t: np.ndarray) -> tuple:
    """(id of the array owning t's memory, its size in bytes, t's byte offset in it, t's shape,
    strides, dtype)."""
    root = t
    while isinstance(root.base, np.ndarray):
        root = root.base
    offset = t.__array_interface__["data"][0] - root.__array_interface__["data"][0]
    return id(root), root.nbytes, offset, t.shape, t.strides, t.dtype


def record_gemms(fn: Callable[[], Any]) -> list[tuple]:
    """Where the operands and outputs of every ``np.matmul`` call ``fn`` makes lie in memory."""
    calls: list[tuple] = []
    real = np.matmul

    def spy(a: Any, b: Any, out: Any = None, **kw: Any) -> Any:
        result = real(a, b, out=out, **kw)
        calls.append(tuple(_where(t) for t in (a, b, result)))
        return result

    np.matmul = spy
    try:
        fn()
    finally:
        np.matmul = real
    return calls


def replay(calls: list[tuple]) -> tuple[Callable[[], Any], float]:
    """The same matrix multiplies on stand-in memory laid out the same way (one buffer for each
    array the originals lived in, so reused workspaces are reused again): a convolution's GEMM
    time with nothing else.  Also returns their floating-point operations."""
    buffers: dict[int, np.ndarray] = {}
    operands, flops = [], 0.0
    for call in calls:
        views = []
        for root, nbytes, offset, shape, strides, dtype in call:
            if root not in buffers:
                buffers[root] = np.zeros(max(1, nbytes), np.uint8)  # zeros: no NaN, no denormals
            views.append(np.ndarray(shape, dtype, buffers[root], offset, strides))
        operands.append(views)
        flops += 2.0 * float(np.prod(call[2][3])) * call[0][3][-1]

    def run() -> None:
        for a, b, out in operands:
            np.matmul(a, b, out=out)

    return run, flops


def conv_cases(torch: Any, shape: tuple[int, ...], rng: np.random.Generator) -> list[Case]:
    """Forward, and forward+backward (input, weight and bias gradients), of one conv layer."""
    n, c, h, w, k, f, s, p = shape
    layer = cs.Conv2D(c, k, f, s, p, seed=0)
    tconv = torch.nn.Conv2d(c, k, f, s, p)
    with torch.no_grad():
        tconv.weight.copy_(torch.from_numpy(layer.params["weight"]))
        tconv.bias.copy_(torch.from_numpy(layer.params["bias"]))
    x = _rand(rng, (n, c, h, w))
    tx = torch.from_numpy(x.copy())
    _, oh, ow = layer.output_shape((c, h, w))
    macs = n * oh * ow * k * c * f * f

    def ours_fwd() -> Any:
        with cs.no_grad():
            return layer.forward(x)

    def torch_fwd() -> Any:
        with torch.no_grad():
            return tconv(tx)

    label = f"conv {n}x{c}x{h}x{w} -> {k} {f}x{f}" + (f" s{s}" if s > 1 else "") + \
        (f" p{p}" if p else "")
    gemm_fwd, gemm_fwd_flops = replay(record_gemms(ours_fwd))
    cases = [Case(label + " fwd", "conv-fwd", ours_fwd, torch_fwd, 2.0 * macs,
                  gemm=gemm_fwd if gemm_fwd_flops else None,  # none: a direct convolution
                  gemm_flops=gemm_fwd_flops, info={"shape": shape, "forward_gflop": 2e-9 * macs})]
    if shape in FORWARD_ONLY:
        return cases
    dy_values = _rand(rng, (n, k, oh, ow))
    dy = _like(layer.forward(x), dy_values)
    txg = tx.clone().requires_grad_(True)
    tdy = torch.from_numpy(dy_values.copy())

    def ours_fb() -> Any:
        layer.forward(x)
        return layer.backward(dy)

    def torch_fb() -> Any:
        txg.grad = None
        tconv(txg).backward(tdy)
        return txg.grad

    w, b = layer.params["weight"], layer.params["bias"]
    args = (layer.stride, layer.pads, layer.dilation, 1, (oh, ow))
    dy_nchw = np.ascontiguousarray(dy)

    def textbook_fb() -> Any:  # the engine's im2col before issue 6 (functional.*_simple)
        _, cache = cs.functional.conv2d_forward_simple(x, w, b, *args)
        return cs.functional.conv2d_backward_simple(dy_nchw, w, cache)

    gemm_all, gemm_all_flops = replay(record_gemms(ours_fb))
    cases.append(Case(label + " fwd+bwd", "conv-fwdbwd", ours_fb, torch_fb, 6.0 * macs,
                      gemm=gemm_all if gemm_all_flops else None, gemm_flops=gemm_all_flops,
                      textbook=textbook_fb,
                      info={"shape": shape, "forward_gflop": 2e-9 * macs}))
    return cases


def _fwd_bwd(name: str, layer: Any, x: np.ndarray, dy: np.ndarray, tlayer: Any, tx: Any,
             tdy: Any, kernels: bool = True, own: bool = False, **kw: Any) -> Case:
    """One layer's forward then backward of dy, against the torch layer's on tx (a leaf that
    requires grad); ``kernels=False``: convscope's NumPy path even where the compiled kernels
    (convscope.ops.jit) are on; ``own``: on convscope's threads, as in the training step of a
    network whose convolutions run direct (convscope/ops/threads.py)."""

    def ours() -> Any:
        with jit.turned_on(kernels and jit.kernels() is not None), \
                own_cores() if own and kernels else contextlib.nullcontext():
            layer.forward(x)
            return layer.backward(dy)

    def theirs() -> Any:
        tx.grad = None
        tlayer(tx).backward(tdy)
        return tx.grad

    return Case(name, "layer", ours, theirs, **kw)


def layer_cases(torch: Any, rng: np.random.Generator) -> list[Case]:
    """2x2 max-pool, batch norm (training; channels-first and channels-last memory; with the
    compiled kernels on, also by the NumPy path) and a fully connected layer, forward+backward."""
    x = _rand(rng, (64, 32, 32, 32))
    pool = cs.MaxPool2D(2)
    dy = _like(pool.forward(x), _rand(rng, (64, 32, 16, 16)))
    bdy = _rand(rng, x.shape)
    fx, fdy = _rand(rng, (256, 1024)), _rand(rng, (256, 1024))

    def leaf(a: np.ndarray, fmt: Any = None) -> Any:
        t = torch.from_numpy(np.ascontiguousarray(a))
        return (t if fmt is None else t.to(memory_format=fmt)).requires_grad_(True)

    def last(a: np.ndarray) -> np.ndarray:  # channels-last memory, as a ResNet's convs give it
        return np.ascontiguousarray(a.transpose(0, 2, 3, 1)).transpose(0, 3, 1, 2)

    cl = torch.channels_last
    out = [_fwd_bwd("max-pool 2x2 64x32x32x32 fwd+bwd", pool, x, dy, torch.nn.MaxPool2d(2),
                    leaf(x), torch.from_numpy(np.ascontiguousarray(dy)))]
    for kernels, suffix in ((True, ""), (False, ", NumPy path")):
        if not kernels and jit.kernels() is None:
            continue  # no compiled kernels: the first pair ran the NumPy path
        out += [_fwd_bwd(f"batch norm 64x32x32x32 fwd+bwd{suffix}", cs.BatchNorm2D(32), x, bdy,
                         torch.nn.BatchNorm2d(32), leaf(x), torch.from_numpy(bdy.copy()),
                         kernels=kernels, own=True, info={"kernels": kernels}),
                _fwd_bwd(f"batch norm 64x32x32x32 channels-last fwd+bwd{suffix}",
                         cs.BatchNorm2D(32), last(x), last(bdy), torch.nn.BatchNorm2d(32),
                         leaf(x, cl), torch.from_numpy(bdy.copy()).to(memory_format=cl),
                         kernels=kernels, own=True, info={"kernels": kernels})]
    out.append(_fwd_bwd("linear 256x1024 -> 1024 fwd+bwd", cs.Linear(1024, 1024, seed=0), fx,
                        fdy, torch.nn.Linear(1024, 1024), leaf(fx), torch.from_numpy(fdy.copy()),
                        flops=6.0 * 256 * 1024 * 1024))
    return out


# ---------------------------------------------------------------------------------------------
# networks


def _engine_net(name: str, shape: tuple[int, int, int]) -> cs.Sequential:
    """The net from engine layers (used if convscope.models is not there)."""
    if name == "lenet5":
        pad = max(0, (32 - min(shape[1:])) // 2)
        layers = [cs.Conv2D(None, 6, 5, padding=pad), cs.ReLU(), cs.MaxPool2D(2),
                  cs.Conv2D(None, 16, 5), cs.ReLU(), cs.MaxPool2D(2), cs.Flatten(),
                  cs.Linear(None, 120), cs.ReLU(), cs.Linear(None, 84), cs.ReLU(),
                  cs.Linear(None, 10)]
    else:
        layers = [cs.Conv2D(None, 32, 3, padding=1), cs.ReLU(), cs.MaxPool2D(2),
                  cs.Conv2D(None, 64, 3, padding=1), cs.ReLU(), cs.MaxPool2D(2), cs.Flatten(),
                  cs.Linear(None, 10)]
    return cs.Sequential(*layers, input_shape=shape, seed=0)


def build_net(name: str, shape: tuple[int, int, int]) -> cs.Sequential:
    """``lenet5``, ``cifar`` or ``resnet20`` from the presets of convscope.models (the first two
    also built here when that module is not there)."""
    try:
        from convscope.models import build_model
    except ImportError:
        return _engine_net(name, shape)
    return build_model(name, shape, 10, seed=0)


def torch_twin(torch: Any, net: cs.Sequential) -> Any:
    """The same network in torch.nn, same weights."""
    from convscope.interop import to_torch

    return to_torch(net)


NETS = {"lenet5": (1, 28, 28), "cifar": (3, 32, 32),
        "resnet20": (3, 32, 32)}  # He et al.'s CIFAR ResNet-20 (issue 10): Residual blocks, BN


def step_functions(torch: Any, name: str, batch: int = 64, seed: int = 0
                   ) -> tuple[Callable[[], Any], Callable[[], Any]]:
    """One training step each: zero the gradients, forward, cross-entropy, backward, SGD
    (momentum 0.9) update.  Neither computes the gradient wrt the input images."""
    rng = np.random.default_rng(seed)
    shape = NETS[name]
    net = build_net(name, shape)
    tnet = torch_twin(torch, net)
    x = rng.random((batch,) + shape, dtype=np.float32)
    y = rng.integers(0, 10, batch)
    loss_fn, opt = cs.CrossEntropyLoss(), cs.SGD(net, lr=0.01, momentum=0.9)
    tx, ty = torch.from_numpy(x.copy()), torch.from_numpy(y.copy())
    tloss, topt = torch.nn.CrossEntropyLoss(), torch.optim.SGD(tnet.parameters(), lr=0.01,
                                                               momentum=0.9)

    def ours() -> Any:  # the cores as convscope train shares them (convscope/ops/threads.py)
        with own_cores(on_demand=True):
            opt.zero_grad()
            loss = loss_fn.forward(net.forward(x), y)
            net.backward(loss_fn.backward(), input_grad=False)
            opt.step()
        return loss

    def theirs() -> Any:
        topt.zero_grad()
        loss = tloss(tnet(tx), ty)
        loss.backward()
        topt.step()
        return loss

    return ours, theirs


def step_cases(torch: Any) -> list[Case]:
    out = []
    for name, shape in NETS.items():
        ours, theirs = step_functions(torch, name)
        c, h, w = shape
        out.append(Case(f"train step {name} {h}x{w}x{c}, batch 64", "step", ours, theirs,
                        images=64, info={"net": name}))
    return out


def inference_cases(torch: Any, rng: np.random.Generator) -> list[Case]:
    """lenet5 on 28x28x1 in evaluation mode, batch 1 and 256."""
    net = build_net("lenet5", NETS["lenet5"]).eval()
    tnet = torch_twin(torch, net).eval()
    out = []
    for batch in (1, 256):
        x = rng.random((batch, 1, 28, 28), dtype=np.float32)
        tx = torch.from_numpy(x.copy())

        def ours(x: np.ndarray = x) -> Any:  # as Sequential.predict runs it
            with cs.no_grad(), own_cores(on_demand=True):
                return net.forward(x)

        def theirs(tx: Any = tx) -> Any:
            with torch.inference_mode():
                return tnet(tx)

        out.append(Case(f"inference lenet5, batch {batch}", "infer", ours, theirs, images=batch,
                        info={"batch": batch}))
    return out


def square_gemm(n: int = 2048) -> tuple[Callable[[], Any], float]:
    """NumPy float32 (n x n) @ (n x n): the machine's GEMM ceiling."""
    rng = np.random.default_rng(0)
    a, b = _rand(rng, (n, n)), _rand(rng, (n, n))
    c = np.empty((n, n), np.float32)
    return (lambda: np.matmul(a, b, out=c)), 2.0 * n ** 3
