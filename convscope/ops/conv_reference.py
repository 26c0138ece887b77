"""The lecture's convolution written to be read, in reading order; the fast path is tested
against it.

1. The sliding filter as plain loops, :func:`conv2d_forward_loops` and
   :func:`conv2d_backward_loops`: each output is one dot product w·x + b of a filter with the
   F·F·D input patch under it; backward sends each output's gradient back along the same
   products, to the bias, the weights and the inputs that made it.  Slow and obvious.
2. The textbook im2col + one GEMM (CS231n; Deep Learning from Scratch), :func:`im2col`,
   :func:`conv2d_forward_simple` and :func:`conv2d_backward_simple`: the patches become the
   columns of one matrix, so all positions and all filters are one matrix multiply; backward is
   two more and :func:`col2im`.
3. Then the fast path that layers run, :func:`convscope.ops.conv.conv2d_forward` and
   ``conv2d_backward``: the same GEMMs, chunk by chunk through reused buffers, channels-last.

Shapes: x (N, C, H, W), w (K, C/G, kH, kW), b (K,), y and dy (N, K, OH, OW).  Stride S, padding
``pads`` ((top, bottom), (left, right)) filled by ``padding_mode``, dilation D, G groups: filter
f sees only the C/G input channels of its group f // (K/G).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..runtime import xp_of
from ..shapes import Pads, Pair, conv_output_shape
from .padding import pad2d, unpad2d
from .windows import window

Array = Any
NO_PADS: Pads = ((0, 0), (0, 0))


# ---------------------------------------------------------------------------------------------
# 1. the sliding filter as loops (NumPy only, for teaching; never used in training)


def conv2d_forward_loops(x: np.ndarray, w: np.ndarray, b: np.ndarray | None = None,
                         stride: Pair = (1, 1), pads: Pads = NO_PADS, dilation: Pair = (1, 1),
                         groups: int = 1, padding_mode: str = "zeros") -> np.ndarray:
    """x (N, C, H, W), w (K, C/G, kH, kW) -> (N, K, OH, OW), one dot product w·x + b per position:

    y[n, f, i, j] = sum over (c, u, v) of w[f, c, u, v] · xpad[n, g·C/G + c, S·i + D·u, S·j + D·v] + b[f]
    """
    n, c, h, wd = x.shape
    k, cg, kh, kw = w.shape
    oh, ow = conv_output_shape((h, wd), (kh, kw), stride, pads, dilation)
    xpad = pad2d(x, pads, padding_mode)
    y = np.zeros((n, k, oh, ow), dtype=x.dtype)
    per_group = k // groups
    for img in range(n):
        for f in range(k):  # each filter ...
            g = f // per_group  # ... sees only its group's input channels
            for i in range(oh):  # ... slides down
                for j in range(ow):  # ... and right
                    top, left = i * stride[0], j * stride[1]
                    patch = xpad[img, g * cg:(g + 1) * cg,
                                 top:top + dilation[0] * (kh - 1) + 1:dilation[0],
                                 left:left + dilation[1] * (kw - 1) + 1:dilation[1]]
                    y[img, f, i, j] = np.sum(patch * w[f]) + (0 if b is None else b[f])
    return y


conv2d = conv2d_forward_loops  # its name in convscope.naive


def _source(p: int, before: int, n: int, mode: str) -> int | None:
    """The input pixel that padded pixel p copies along one axis (``before`` pad pixels, then n
    input pixels), or None for zero padding."""
    i = p - before
    if 0 <= i < n:
        return i
    if mode == "zeros":
        return None
    if mode == "replicate":  # the edge pixel
        return min(max(i, 0), n - 1)
    if mode == "circular":  # the image wraps around
        return i % n
    return -i if i < 0 else 2 * (n - 1) - i  # reflect: mirrored about the edge pixel


def conv2d_backward_loops(dy: np.ndarray, x: np.ndarray, w: np.ndarray, stride: Pair = (1, 1),
                          pads: Pads = NO_PADS, dilation: Pair = (1, 1), groups: int = 1,
                          padding_mode: str = "zeros"
                          ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Gradients (dx, dw, db) of :func:`conv2d_forward_loops` for dy (N, K, OH, OW).

    Output y[n, f, i, j] was w[f] · patch + b[f], so its gradient g = dy[n, f, i, j] adds
    g to db[f], g · patch to dw[f], and g · w[f] to the patch's pixels of the padded input:

        db[f]        += g
        dw[f]        += g · xpad[n, group, S·i + D·(0..kH-1), S·j + D·(0..kW-1)]
        dxpad[patch] += g · w[f]

    Each padded pixel is a copy of one input pixel (zeros: of none), so its gradient goes back
    to that pixel: dx[n, c, src(r), src(q)] += dxpad[n, c, r, q].
    """
    n, c, h, wd = x.shape
    k, cg, kh, kw = w.shape
    xpad = pad2d(x, pads, padding_mode)
    dxpad = np.zeros_like(xpad)
    dw = np.zeros_like(w)
    db = np.zeros(k, dtype=dy.dtype)
    per_group = k // groups
    for img in range(n):
        for f in range(k):
            g = f // per_group
            chans = slice(g * cg, (g + 1) * cg)
            for i in range(dy.shape[2]):
                for j in range(dy.shape[3]):
                    top, left = i * stride[0], j * stride[1]
                    rows = slice(top, top + dilation[0] * (kh - 1) + 1, dilation[0])
                    cols = slice(left, left + dilation[1] * (kw - 1) + 1, dilation[1])
                    grad = dy[img, f, i, j]
                    db[f] += grad
                    dw[f] += grad * xpad[img, chans, rows, cols]
                    dxpad[img, chans, rows, cols] += grad * w[f]
    dx = np.zeros_like(x)
    (t, _), (l, _) = pads
    for r in range(xpad.shape[2]):
        src_r = _source(r, t, h, padding_mode)
        for q in range(xpad.shape[3]):
            src_q = _source(q, l, wd, padding_mode)
            if src_r is not None and src_q is not None:
                dx[:, :, src_r, src_q] += dxpad[:, :, r, q]
    return dx, dw, db


# ---------------------------------------------------------------------------------------------
# 2. the textbook im2col + one GEMM (NumPy or CuPy)


def im2col(xpad: Array, kernel: Pair, stride: Pair, dilation: Pair, out_hw: Pair) -> Array:
    """(N, C, Hp, Wp) -> columns (C, kH, kW, N, OH, OW): one column per output position.

    F·F strided copies (:func:`convscope.ops.windows.window`), never a loop over pixels."""
    xp = xp_of(xpad)
    n, c = xpad.shape[:2]
    cols = xp.empty((c, kernel[0], kernel[1], n, out_hw[0], out_hw[1]), dtype=xpad.dtype)
    for i in range(kernel[0]):
        for j in range(kernel[1]):
            hs, ws = window(i, j, stride, dilation, out_hw)
            cols[:, i, j] = xpad[:, :, hs, ws].transpose(1, 0, 2, 3)
    return cols


def col2im(dcols: Array, padded_shape: tuple[int, ...], kernel: Pair, stride: Pair,
           dilation: Pair, out_hw: Pair) -> Array:
    """Backward of :func:`im2col`: columns (C, kH, kW, N, OH, OW) -> (N, C, Hp, Wp), overlaps summed."""
    xp = xp_of(dcols)
    dx = xp.zeros(padded_shape, dtype=dcols.dtype)
    for i in range(kernel[0]):
        for j in range(kernel[1]):
            hs, ws = window(i, j, stride, dilation, out_hw)
            dx[:, :, hs, ws] += dcols[:, i, j].transpose(1, 0, 2, 3)
    return dx


def conv2d_forward_simple(x: Array, w: Array, b: Array | None, stride: Pair, pads: Pads,
                          dilation: Pair, groups: int, out_hw: Pair, padding_mode: str = "zeros"
                          ) -> tuple[Array, tuple]:
    """Pad, im2col (C·kH·kW, N·OH·OW), one batched GEMM (G, K/G, C/G·kH·kW) @ cols, + b.

    x (N, C, H, W), w (K, C/G, kH, kW), b (K,) or None -> y (N, K, OH, OW), and the cache
    :func:`conv2d_backward_simple` needs (it keeps the columns).
    """
    xp = xp_of(x)
    n = x.shape[0]
    k, cg, kh, kw = w.shape
    xpad = pad2d(x, pads, padding_mode)
    cols = im2col(xpad, (kh, kw), stride, dilation, out_hw)
    w_mat = w.reshape(groups, k // groups, cg * kh * kw)
    y = xp.matmul(w_mat, cols.reshape(groups, cg * kh * kw, -1))  # (G, K/G, N·OH·OW)
    y = y.reshape(k, n, out_hw[0], out_hw[1]).transpose(1, 0, 2, 3)
    y = xp.ascontiguousarray(y)
    if b is not None:
        y += b.reshape(1, k, 1, 1)
    return y, (cols, w_mat, x.shape, xpad.shape, pads, stride, dilation, groups, out_hw, padding_mode)


def conv2d_backward_simple(dy: Array, w: Array, cache: tuple, need_bias: bool = True
                           ) -> tuple[Array, Array, Array | None]:
    """Gradients (dx, dw, db) of :func:`conv2d_forward_simple` for dy (N, K, OH, OW):
    dW = dY colsᵀ, db = sum of dY, dcols = Wᵀ dY, dx = unpad(col2im(dcols))."""
    xp = xp_of(dy)
    cols, w_mat, x_shape, xpad_shape, pads, stride, dilation, groups, out_hw, mode = cache
    k = dy.shape[1]
    dy_mat = xp.ascontiguousarray(dy.transpose(1, 0, 2, 3)).reshape(groups, k // groups, -1)
    cols_mat = cols.reshape(groups, -1, dy_mat.shape[-1])
    dw = xp.matmul(dy_mat, cols_mat.transpose(0, 2, 1)).reshape(w.shape)
    db = dy.sum(axis=(0, 2, 3)) if need_bias else None
    dcols = xp.matmul(w_mat.transpose(0, 2, 1), dy_mat).reshape(cols.shape)
    dxpad = col2im(dcols, xpad_shape, w.shape[2:], stride, dilation, out_hw)
    return unpad2d(dxpad, pads, x_shape[2:], mode), dw, db
