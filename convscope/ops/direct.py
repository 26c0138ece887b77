"""The convolution computed directly, no columns and no GEMM: the compiled kernels of
:mod:`.jit_direct` on channels-last memory, the batch split over convscope's threads
(:mod:`.threads`).

Forward: y = the kernel on x (N, H, W, C) as it is, channels-last (the previous layer's output
already is; else one copy), the zero padding by bounds in the kernel (no padded copy).
Backward: dW by its own kernel, over :data:`DW_PARTS` runs of the batch summed in order (so dW
does not depend on the thread count); dx = the forward kernel again, at stride 1 on dY with the
filters flipped and their channel axes swapped, w'[c, k, i, j] = w[k, c, kH-1-i, kW-1-j], and
padding F - 1 - P.  At stride S, dx[S·u + a, S·v + b] takes only the taps i ≡ a + P (mod S),
j ≡ b + P: each of the S² phases (a, b) of dx is a stride-1 convolution of dY with those taps,
written straight into its rows and columns of dx (sub-pixel convolution: no multiplications by
the zeros a dilated dY would hold).

Measured against the im2col path with 64 images, forward + backward, in one process, each path
back to back: 32 -> 32 channels 3×3 at 16×16, 16 vs 23 ms.  Where :func:`fits` says no, or the
kernels are off: :mod:`.conv`'s im2col path, the reference the tests hold this to.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from .. import workspace
from . import jit, jit_direct
from .jit_direct import B, KB, STRIDES
from .norm import channel_sum
from .threads import count_for, run, split, take

Array = Any
DW_PARTS = 4  # runs of the batch whose weight gradients are summed (fixed: see above)
_FLOATS = (np.dtype(np.float32), np.dtype(np.float64))
# 6 -> 16 5x5 forward, direct against wide columns: 64 images at 12x12 or 14x14 (6400 output
# positions or fewer) 0.97-1.41 ms against 0.92-0.99; 256 (16384 and 25600) 2.35 and 3.70
# against 2.69 and 4.38.  In training, outside own_cores, the wide columns stay (forward +
# backward at 12x12 ran 1.4x slower with the forward direct); inside, their GEMM has one core:
# LeNet-5's step, 14x14, forward 1.37 -> 0.91 ms direct, the backward by im2col 2.76 -> 2.54.
# (Its dx by direct_lanes and dW by this module's kernel: 1.9 + 1.1 ms, slower.)
# That backward by im2col in 2 halves of the batch on our 2 threads: 2.67 -> 1.81 ms (4: 1.94)
IM2COL_PARTS = 2
FEW_CHANNELS_FROM = 2**14


def fits(c: int, k: int, stride: tuple, dilation: tuple, groups: int, mode: str, out_w: int,
         inference: int = 0, held: bool = False) -> bool:
    """Whether a convolution runs here: stride 1 or 2 both ways, no dilation or groups, zero
    padding, a multiple of 16 filters (the register block), at least B output columns, and a
    multiple of 16 input channels (so that dx runs here too), or at most 4 (an image's, whose dx
    a network seldom needs: where it does, the im2col path computes the backward), or any
    number below 16 (LeNet-5's 6): for a call with no backward to come where ``inference`` (its
    N·OH·OW output positions) is at least :data:`FEW_CHANNELS_FROM`, else where ``held``
    (an :func:`.threads.own_cores` block of 2 or more threads holds the cores, so BLAS is on
    one; the backward by im2col)."""
    few = inference >= FEW_CHANNELS_FROM if inference else held
    return (stride[0] == stride[1] and stride[0] in STRIDES and dilation == (1, 1)
            and groups == 1 and mode == "zeros" and k % KB == 0 and out_w >= B
            and (c % KB == 0 or c <= 4 or (c < KB and few)))


def input_grad_fits(c: int, w: int, stride: tuple) -> bool:
    """Whether dx runs here too (the forward kernel with C filters): C a multiple of 16, and at
    least B columns in each of dx's phases; else the im2col path computes the backward."""
    return c % KB == 0 and w // stride[1] >= B


def usable(x: Array, w: Array) -> bool:
    """Whether the kernels may take these arrays: kernels on, NumPy, float32 or float64."""
    return (type(x) is np.ndarray and x.dtype in _FLOATS and w.dtype == x.dtype
            and jit.kernels() is not None)


def _nhwc(name: str, a: Array) -> Array:
    """a (N, C, H, W) as (N, H, W, C), C-contiguous: a view of channels-last memory, else a copy
    into the named scratch buffer.  (Not :func:`.layout.in_layout`, which keeps any view whose
    channels are innermost: the kernels' signatures need one run of memory.)"""
    t = a.transpose(0, 2, 3, 1)
    if t.flags.c_contiguous:
        return t
    buf = workspace.buffer(name, t.shape, a.dtype, np)
    buf[...] = t
    return buf


def _packed(w: Array, kb: int | None = None) -> Array:
    """w (K, C, kH, kW) -> (K/kb, kH, kW, C, kb): each block's kb filters side by side (None:
    the forward kernel's, :func:`.jit_direct.filter_block`)."""
    k, c, kh, kw = w.shape
    kb = kb or jit_direct.filter_block(k)
    return np.ascontiguousarray(w.reshape(k // kb, kb, c, kh, kw).transpose(0, 3, 4, 2, 1))


def _convolve(src: Array, wp: Array, bias: Array, top_left: tuple, out: Array, s: int) -> None:
    """out (N, OH, OW, K), a view with its last axis contiguous, = the forward kernel at stride
    s on src (N, H, W, C), zero-padded by top_left = (pt, pl) above and to the left; wp as
    :func:`_packed` gives it."""
    n, oh, ow, k = out.shape
    kb, b = jit_direct.forward_block(k)  # as wp was packed
    take()  # the cores, where an on_demand own_cores block waits for this
    if n and oh:  # (N, OH, OW, K/kb, kb): a view, whatever out's first three strides
        y5 = np.lib.stride_tricks.as_strided(out, (n, oh, ow, k // kb, kb),
                                             out.strides[:3] + (kb * out.itemsize, out.itemsize))
        run(jit_direct.kernel(jit_direct.forward_name(kb, b, s), src.dtype),  # rows n·OH + oh
            [(src, wp, bias, y5, *top_left, t0, t1)
             for t0, t1 in split(n * oh, count_for(out.size * wp[0].size // kb))])


def forward(x: Array, w: Array, b: Array | None, stride: tuple, pads: tuple, out_hw: tuple
            ) -> Array:
    """y (N, K, OH, OW) = x ⋆ w + b in channels-last memory, for x (N, C, H, W) in any layout
    and w (K, C, kH, kW) that :func:`fits` and :func:`usable` accept."""
    bias = np.zeros(w.shape[0], w.dtype) if b is None else np.ascontiguousarray(b, w.dtype)
    y = workspace.empty((x.shape[0], w.shape[0], *out_hw), x.dtype, np, channels_last=True)
    _convolve(_nhwc("direct_x", x), _packed(w), bias, (pads[0][0], pads[1][0]),
              y.transpose(0, 2, 3, 1), stride[0])
    return y


def _input_grad(dyl: Array, w: Array, s: int, pads: tuple, hw: tuple) -> Array:
    """dx (N, C, H, W) in channels-last memory from dyl (N, OH, OW, K), phase by phase."""
    _, c, kh, kw = w.shape
    dx = workspace.empty((dyl.shape[0], c, *hw), dyl.dtype, np, channels_last=True)
    dxl = dx.transpose(0, 2, 3, 1)
    zero = np.zeros(c, w.dtype)
    (pt, _), (pl, _) = pads
    for a in range(s):
        i0 = (a + pt) % s  # the taps that reach rows S·u + a: i0, i0 + s, ...
        for b in range(s):
            j0 = (b + pl) % s
            phase = dxl[:, a::s, b::s]
            taps = w[:, :, i0::s, j0::s]
            if not taps.size:  # no tap reaches this phase (a 1x1 filter at stride 2)
                phase[...] = 0
                continue
            mh, mw = taps.shape[2:]
            wt = _packed(taps[:, :, ::-1, ::-1].transpose(1, 0, 2, 3))
            _convolve(dyl, wt, zero, (mh - 1 - (a + pt - i0) // s, mw - 1 - (b + pl - j0) // s),
                      phase, 1)
    return dx


def summed_runs(kernel: Any, before: tuple, after: tuple, shape: tuple, dtype: Any, n: int,
                work: int) -> Array:
    """Σ, in order, over :data:`DW_PARTS` fixed runs n0:n1 of the batch's n images, of the
    part ``kernel(*before, part, *after, n0, n1)`` adds into its own zeroed ``shape`` array,
    the runs over :func:`.threads.count_for` (``work``) threads: a weight gradient that does
    not depend on the thread count."""
    runs = split(n, DW_PARTS)
    parts = [np.zeros(shape, dtype) for _ in runs]
    if n:
        take()  # the cores, where an on_demand own_cores block waits for this
        run(kernel, [(*before, part, *after, n0, n1) for part, (n0, n1) in zip(parts, runs)],
            count_for(work))
    total = parts[0]
    for part in parts[1:]:
        total += part
    return total


def backward(dy: Array, x: Array, w: Array, stride: tuple, pads: tuple, need_bias: bool,
             need_dx: bool) -> tuple[Array | None, Array, Array | None]:
    """(dx, dw, db) of :func:`forward` for dy (N, K, OH, OW) in any layout: dx (N, C, H, W) in
    channels-last memory (None unless ``need_dx``; needs :func:`input_grad_fits`), dw (K, C,
    kH, kW), db (K,) (None unless ``need_bias``)."""
    n, k, oh, ow = dy.shape
    _, c, kh, kw = w.shape
    s = stride[0]
    dyl = _nhwc("direct_dy", dy)
    dx = _input_grad(dyl, w, s, pads, x.shape[2:]) if need_dx else None
    xl = _nhwc("direct_x", x)
    kb = jit_direct.filter_block(k)
    dy5 = dyl.reshape(n, oh, ow, k // kb, kb)
    name = jit_direct.weight_grad_name(kb, jit_direct.channel_block(c), s)
    dwp = summed_runs(jit_direct.kernel(name, w.dtype), (xl, dy5), (pads[0][0], pads[1][0]),
                      (k // kb, kh, kw, c, kb), w.dtype, n, dy.size * c * kh * kw)
    dw = np.ascontiguousarray(dwp.transpose(0, 4, 3, 1, 2).reshape(k, c, kh, kw))
    return dx, dw, (channel_sum(dy) if need_bias else None)


def im2col_backward(backward_fn: Any, dy: Array, w: Array, cache: tuple, need_bias: bool
                    ) -> tuple[Array, Array, Array | None]:
    """(dx, dw, db) by the im2col path (``backward_fn``, :func:`.conv.conv2d_backward`, on the
    plain plan in ``cache``) where this module ran the forward but dx does not fit its kernel
    (LeNet-5's 6 -> 16): the batch in :data:`IM2COL_PARTS` fixed runs over convscope's
    threads, BLAS on one thread in each, dW summed in order (so it does not depend on the thread
    count).  Why: inside :func:`.threads.own_cores` BLAS has one core, and this backward was the
    largest part of LeNet-5's step (2.9 of 8 ms)."""
    x, full, _, p = cache
    runs = split(p.n, IM2COL_PARTS)
    out: list = [None] * len(runs)

    def part(i: int, n0: int, n1: int) -> None:
        sub = (x[n0:n1], None if full is None else full[n0:n1], None,
               dataclasses.replace(p, n=n1 - n0))
        out[i] = backward_fn(dy[n0:n1], w, sub, False, True)

    run(part, [(i, n0, n1) for i, (n0, n1) in enumerate(runs)], count_for(dy.size * p.depth))
    first = out[0][0]
    dx = workspace.empty(x.shape, first.dtype, np, first.transpose(0, 2, 3, 1).flags.c_contiguous)
    dw = out[0][1].copy()
    for (n0, n1), (dxi, dwi, _) in zip(runs, out):
        dx[n0:n1] = dxi
    for _, dwi, _ in out[1:]:
        dw += dwi
    return dx, dw, (channel_sum(dy) if need_bias else None)
