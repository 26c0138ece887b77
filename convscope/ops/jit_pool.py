"""Compiled 2x2 max pooling at stride 2 (numba, optional; see :mod:`.jit`): one sweep each way.

The NumPy path (:mod:`.pool`) takes four whole-array passes for the maximum, four more for one
boolean mask per tap and four multiplies backward.  Here the forward reads each window once and
writes y and the winning tap's index (one byte per output), the backward writes dx once, dy or 0.
On 64×32×32×32, forward+backward: NumPy 8.9 ms channels-first, 12.0 channels-last; these 2.2
and 1.7 ms (PyTorch 10.5 ms in the bench).

Only the lecture's pool, 2x2 windows at stride 2 with no padding or dilation (the LeNet and
CIFAR nets'), is compiled: a general window, its size and stride read at run time, ran 3-10x
slower than this one, no faster than NumPy.  Branches are the cost: a running
``if v > best or v != v`` over random data mispredicts half its comparisons (8 ms here), so the
index is taken without branches, as the first tap equal to the maximum.  Which input wins is
PyTorch's CPU rule: the first maximum, and a window holding NaN picks its last NaN (y NaN).
Arrays come in memory order, (N·C, H, W) or (N, H, W, C); windows are never past the edge
(floor mode): a last odd row or column is not read, and its gradient is 0.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .. import workspace
from . import jit
from .layout import empty

Array = Any


def maxpool2_forward_mhw(x: Array, y: Array, idx: Array) -> None:
    """y[a, i, j] = max of x[a, 2i:2i+2, 2j:2j+2], idx[a, i, j] = its tap 2p + q, for x (M, H, W)
    and y, idx (M, OH, OW)."""
    m = x.shape[0]
    oh, ow = y.shape[1], y.shape[2]
    for a in range(m):
        for i in range(oh):
            for j in range(ow):
                v0, v1 = x[a, 2 * i, 2 * j], x[a, 2 * i, 2 * j + 1]
                v2, v3 = x[a, 2 * i + 1, 2 * j], x[a, 2 * i + 1, 2 * j + 1]
                y[a, i, j], idx[a, i, j] = _winner(v0, v1, v2, v3)


def maxpool2_forward_nhwc(x: Array, y: Array, idx: Array) -> None:
    """:func:`maxpool2_forward_mhw` on channels-last memory x (N, H, W, C), y and idx
    (N, OH, OW, C): the innermost loop runs over the C channels of one pixel."""
    n, c = x.shape[0], x.shape[3]
    oh, ow = y.shape[1], y.shape[2]
    for a in range(n):
        for i in range(oh):
            for j in range(ow):
                for k in range(c):
                    v0, v1 = x[a, 2 * i, 2 * j, k], x[a, 2 * i, 2 * j + 1, k]
                    v2, v3 = x[a, 2 * i + 1, 2 * j, k], x[a, 2 * i + 1, 2 * j + 1, k]
                    y[a, i, j, k], idx[a, i, j, k] = _winner(v0, v1, v2, v3)


def _winner(v0: Any, v1: Any, v2: Any, v3: Any) -> tuple[Any, Any]:
    """(max, index of the first tap equal to it); with a NaN among them (NaN, the last NaN's)."""
    b = max(max(v0, v1), max(v2, v3))
    win = np.uint8(3)
    win = np.uint8(2) if v2 == b else win  # selects, not branches
    win = np.uint8(1) if v1 == b else win
    win = np.uint8(0) if v0 == b else win
    if (v0 != v0) | (v1 != v1) | (v2 != v2) | (v3 != v3):  # NaN: rare, so well predicted
        b = v0 + v1 + v2 + v3
        win = np.uint8(3 if v3 != v3 else (2 if v2 != v2 else (1 if v1 != v1 else 0)))
    return b, win


def maxpool2_backward_mhw(dy: Array, idx: Array, dx: Array) -> None:
    """dx[a, 2i + p, 2j + q] = dy[a, i, j] where tap 2p + q won, else 0, for dy, idx (M, OH, OW)
    and dx (M, H, W); row by row, so that dx is written in memory order."""
    m, oh, ow = dy.shape
    for a in range(m):
        for i in range(oh):
            for p in range(2):
                for j in range(ow):
                    g, t = dy[a, i, j], idx[a, i, j]
                    dx[a, 2 * i + p, 2 * j] = g if t == 2 * p else 0
                    dx[a, 2 * i + p, 2 * j + 1] = g if t == 2 * p + 1 else 0


def maxpool2_backward_nhwc(dy: Array, idx: Array, dx: Array) -> None:
    """:func:`maxpool2_backward_mhw` on channels-last memory dy, idx (N, OH, OW, C) and
    dx (N, H, W, C)."""
    n, oh, ow, c = dy.shape
    for a in range(n):
        for i in range(oh):
            for p in range(2):
                for j in range(ow):
                    for q in range(2):
                        for k in range(c):
                            dx[a, 2 * i + p, 2 * j + q, k] = (dy[a, i, j, k]
                                                              if idx[a, i, j, k] == 2 * p + q
                                                              else 0)


jit.register(maxpool2_forward_mhw, maxpool2_forward_nhwc, maxpool2_backward_mhw,
             maxpool2_backward_nhwc, helpers=(_winner,))


def _memory_view(a: Array, order: str | None = None) -> tuple[str, Array] | None:
    """('mhw', the (N·C, H, W) view) or ('nhwc', the (N, H, W, C) view) of a 4-D NumPy array,
    the first that is C-contiguous (or the ``order`` asked for), not empty; None otherwise (the
    NumPy path takes it)."""
    if type(a) is not np.ndarray or a.ndim != 4 or not a.size:
        return None
    n, c, h, w = a.shape
    if a.flags.c_contiguous and order in (None, "mhw"):
        return "mhw", a.reshape(n * c, h, w)
    nhwc = a.transpose(0, 2, 3, 1)
    return ("nhwc", nhwc) if nhwc.flags.c_contiguous and order in (None, "nhwc") else None


def maxpool_forward(x: Array, kernel: tuple, stride: tuple, pads: tuple, dilation: tuple,
                    y: Array) -> tuple | None:
    """Write y (N, C, OH, OW), in x's layout, by the kernel; return the backward's cache (idx,
    layout, x's shape, the compiled kernels: backward runs them even if they are turned off in
    between), or None where they do not apply (not turned on, another window, another layout,
    a window past the edge)."""
    k = jit.kernels()
    n, c, h, w = x.shape
    if (k is None or tuple(kernel) != (2, 2) or tuple(stride) != (2, 2) or tuple(dilation) != (1, 1)
            or pads != ((0, 0), (0, 0)) or y.shape[2:] != (h // 2, w // 2)):
        return None
    xs = _memory_view(x)
    ys = None if xs is None else _memory_view(y, xs[0])
    if ys is None:
        return None
    idx = workspace.empty(ys[1].shape, np.uint8)
    (k.maxpool2_forward_mhw if xs[0] == "mhw" else k.maxpool2_forward_nhwc)(xs[1], ys[1], idx)
    return idx, xs[0], x.shape, k


def maxpool_backward(dy: Array, cache: tuple) -> Array:
    """dx (N, C, H, W) in the forward input's layout, from dy (N, C, OH, OW) and the cache of
    :func:`maxpool_forward`; dy is copied into that layout first if it is not in it."""
    idx, order, shape, k = cache
    n, c, h, w = shape
    dx = empty(shape, np, dy.dtype, order == "nhwc")
    if order == "mhw":
        dyv = np.ascontiguousarray(dy).reshape(idx.shape)
        dxv = dx.reshape(n * c, h, w)
        k.maxpool2_backward_mhw(dyv, idx, dxv)
        dxv[:, 2 * (h // 2):] = 0  # an odd last row or column: no window reads it
        dxv[:, :, 2 * (w // 2):] = 0
    else:
        dyv = np.ascontiguousarray(dy.transpose(0, 2, 3, 1))
        dxv = dx.transpose(0, 2, 3, 1)
        k.maxpool2_backward_nhwc(dyv, idx, dxv)
        dxv[:, 2 * (h // 2):] = 0
        dxv[:, :, 2 * (w // 2):] = 0
    return dx
