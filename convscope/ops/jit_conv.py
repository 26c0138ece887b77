"""Compiled copies of the convolution (numba, optional; see :mod:`.jit`): channels-first im2col
and col2im at stride 1, channels-last col2im.

NumPy copies a strided view run by run, and adds slice by slice: fast where the runs are long,
slow where they are short.

* **Channels-first columns** at stride 1 (few input channels, :mod:`.conv`): each (c, i, j)
  row of colsᵀ is runs of OW numbers, 10 for a 5×5 filter on 14×14.  NumPy's copy of that view
  took 0.8-1.2 ms for LeNet-5's second conv at batch 64, this loop 0.55 (3 channels at 32×32:
  2.0 and 1.5 ms; 3 -> 32 3×3 with padding 1: 0.9 and 0.5).  The loop is the plainest one on
  purpose: the same loop with the stride, dilation or padding read at run time ran 1.4-2.5x
  slower than NumPy's copy, so those stay NumPy's, and the zero padding is the padded chunk's.
* **Channels-first col2im** at stride 1: kH·kW adds of runs of OW numbers (25 of 10 numbers
  for LeNet-5's second conv: 2.7 ms at batch 64) become one loop, 0.7 ms.
* **Channels-last col2im** (strides and groups): kH·kW adds of runs of C numbers become one
  loop that reads dcols once, in memory order.  The input gradient of a stride-2 3×3 conv,
  16 -> 32 channels at 32×32 and batch 64: 24 -> 14 ms.

Tried and dropped: im2col of channels-last inputs as a loop (NumPy's copy of C-long runs runs
near memory speed, 2-3x faster than a loop).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .. import workspace
from . import jit

Array = Any


def columns_channels_first(src: Array, kh: int, kw: int, oh: int, ow: int, out: Array) -> None:
    """out[(c·kH + i)·kW + j, (a·OH + r)·OW + b] = src[a, c, r + i, b + j]: the stride-1 columns
    of the padded images src (n, C, Hp, Wp) into out (C·kH·kW [+ more rows], n·OH·OW)."""
    n, nch = src.shape[0], src.shape[1]
    for c in range(nch):
        for i in range(kh):
            for j in range(kw):
                row = out[(c * kh + i) * kw + j]
                for a in range(n):
                    for r in range(oh):
                        run = src[a, c, r + i]
                        base = (a * oh + r) * ow
                        for b in range(ow):
                            row[base + b] = run[b + j]


def col2im_channels_first(d6: Array, dst: Array) -> None:
    """dst[a, c, r + i, b + j] += d6[c, i, j, a, r, b]: the stride-1 col2im of channels-first
    columns d6 (C, kH, kW, n, OH, OW) into the padded input gradient dst (n, C, Hp, Wp)."""
    nch, kh, kw, n, oh, ow = d6.shape
    for a in range(n):  # image by image: its dst planes stay in the nearest cache
        for c in range(nch):
            for i in range(kh):
                for j in range(kw):
                    for r in range(oh):
                        run = d6[c, i, j, a, r]
                        row = dst[a, c, r + i]
                        for b in range(ow):
                            row[b + j] += run[b]


def col2im_channels_last(d6: Array, rlo: Array, rhi: Array, rst: Array, clo: Array,
                         chi: Array, cst: Array, sh: int, sw: int, c0: int, dst: Array) -> None:
    """dst[n, rst[i] + (a - rlo[i])·sh, cst[j] + (b - clo[j])·sw, c0 + k] += d6[n, a, b, i, j, k]
    for the outputs rlo[i] <= a < rhi[i], clo[j] <= b < chi[j] that each tap reaches inside
    the target; d6 (nc, OH, OW, kH, kW, C/G) of one group, dst (nc, T_h, T_w, C)."""
    nc, oh, ow, kh, kw, cg = d6.shape
    for n in range(nc):
        for a in range(oh):
            for i in range(kh):
                if a < rlo[i] or a >= rhi[i]:
                    continue
                r = rst[i] + (a - rlo[i]) * sh
                for b in range(ow):
                    for j in range(kw):
                        if b < clo[j] or b >= chi[j]:
                            continue
                        s = cst[j] + (b - clo[j]) * sw
                        for k in range(cg):
                            dst[n, r, s, c0 + k] += d6[n, a, b, i, j, k]


jit.register(columns_channels_first, col2im_channels_first, col2im_channels_last)


def columns(src: Array, p: Any, out: Array) -> bool:
    """Channels-first stride-1 columns of the padded images src (n, C, Hp, Wp) into ``out``
    (C·kH·kW [+ the ones row], n·OH·OW); returns False, doing nothing, where the kernels are off,
    the plan has strides or dilation, or the arrays are not NumPy's."""
    k = jit.kernels()
    if (k is None or p.stride != (1, 1) or p.dilation != (1, 1) or type(src) is not np.ndarray
            or type(out) is not np.ndarray):
        return False
    k.columns_channels_first(src, p.kh, p.kw, p.out_hw[0], p.out_hw[1], out)
    return True


def _bounds(ranges: list) -> tuple[Array, Array, Array]:
    """(first output, end output, first target index) per tap of :func:`.col2im.tap_ranges`;
    a tap that lands in the padding only gets an empty range."""
    lo, hi, st = (np.zeros(len(ranges), np.int64) for _ in range(3))
    for t, r in enumerate(ranges):
        if r is not None:
            lo[t], hi[t], st[t] = r[0].start, r[0].stop, r[1].start
    return lo, hi, st


def col2im(d6: Array, rows: list, cols: list, stride: tuple, dst: Array, c0: int) -> bool:
    """Add one group's channels-last columns d6 (nc, OH, OW, kH, kW, C/G) into channels c0.. of
    dst (nc, T_h, T_w, C), channels-last, by the compiled loop; returns False, doing nothing,
    where the kernels are off or the arrays are not NumPy's and C-contiguous."""
    k = jit.kernels()
    if (k is None or type(d6) is not np.ndarray or type(dst) is not np.ndarray
            or not d6.flags.c_contiguous or not dst.flags.c_contiguous or d6.dtype != dst.dtype):
        return False
    k.col2im_channels_last(d6, *_bounds(rows), *_bounds(cols), stride[0], stride[1], c0, dst)
    return True


def col2im_first(d6: Array, p: Any, target: Array, offset: tuple) -> bool:
    """Add channels-first columns d6 (C, kH, kW, nc, OH, OW) of a stride-1 plan ``p`` into
    ``target`` (nc, C, T_h, T_w), zeroed, whose pixel (0, 0) is ``offset`` in the padded input:
    straight into it when it is the whole padded grid, else into a zeroed padded buffer whose
    interior is then copied (what lands in the zero padding is dropped).  Returns False, doing
    nothing, where the kernels are off, the plan has strides or dilation, or the arrays are not
    NumPy's."""
    k = jit.kernels()
    if (k is None or p.stride != (1, 1) or p.dilation != (1, 1) or type(d6) is not np.ndarray
            or type(target) is not np.ndarray or d6.dtype != target.dtype):
        return False
    hp, wp = p.padded_hw
    if offset == (0, 0) and target.shape[2:] == (hp, wp):
        k.col2im_channels_first(d6, target)
        return True
    pad = workspace.buffer("dxpad", (target.shape[0], p.c, hp, wp), d6.dtype, np)
    pad[...] = 0
    k.col2im_channels_first(d6, pad)
    (t, l), (th, tw) = offset, target.shape[2:]
    target[...] = pad[:, :, t:t + th, l:l + tw]
    return True
