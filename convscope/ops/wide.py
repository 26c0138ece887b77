"""Wide columns: P side-by-side output positions per row of ``cols``, for convs with few filters.

A stride-1 conv with few filters is a narrow GEMM: (M, kH·kW·C) @ (kH·kW·C, K) with K = 16
output columns ran at 27 GFLOP/s against 136 for a square GEMM (the BLAS packs the tall
``cols`` once more than it computes on it).  P neighbours along a row read one window of
kH × (P + kW - 1) pixels, so one row of ``cols`` can serve all P of them::

    cols'[(n, oh, ob), (i, j', c)] = xpad[n, oh + i, P·ob + j', c]          j' < P + kW - 1
    W'[(q, k), (i, j', c)]         = w[k, c, i, j' - q]   (0 where j' - q is not a tap)
    Y (n·OH·OW, K) memory          = cols' (M / P, kH·(P + kW - 1)·C) @ W'ᵀ (…, P·K)

The product is the (N, OH, OW, K) channels-last output itself.  The GEMM is P times wider and
does (P + kW - 1) / kW times the multiplications (the zeros of W'), and ``cols'`` is
(P + kW - 1) / (P·kW) of the plain columns.  Forward, batch 64: a ResNet's 16 -> 16 3x3 conv at
32x32 14.8 ms by plain columns, 11.2 at P = 2, 10.4 at P = 4; 32 -> 32 at 16x16 6.9, 6.0 at P =
2, 6.6 at P = 4; 64 -> 64 at 8x8 4.8, 5.0 at P = 2.  So P·K is kept to at most 96
(:func:`pixels`).  Channels-first inputs of few channels take them too, copied channels-last
first, where the wide copy's runs of (P + kW - 1)·C numbers are no shorter than the plain
channels-first columns' runs of OW: LeNet-5's 6 -> 16 5x5 conv at batch 256, forward, went from
6.5-9.4 to 3.9-5.0 ms (P = 5, runs of 54 against 10); a 3 -> 32 3x3 at 32x32 (runs of 12
against 32) ran 1.1x slower and keeps plain columns.

Only from 16 filters on, whose output the plain plan makes channels-last too: the input
gradient runs on the plain plan (``Plan.base``) as before.  With 6 filters the wide output
turns channels-last where it was channels-first, and LeNet-5's step, whose pooling and next
conv then ran on the other layout, went from 14 to 23 ms.

The weight gradient from wide columns folds back by :func:`fold` (tap (i, j) of neighbour q
is column j' = q + j): dW'ᵀ = dY' (M / P, P·K)ᵀ @ cols', dY' the channels-last dY's view (6 ->
16 5x5 at batch 256 without the input gradient 6.5 -> 4.4 ms, 11.1 -> 6.3 by NumPy's copies);
and where the input gradient is the convolution of dY with the flipped filters, whose columns
are wide in turn, dW'ᵀ = X' (M / P, P·C)ᵀ @ dY's cols'.
"""

from __future__ import annotations

from typing import Any

from .. import workspace
from ..runtime import xp_of
from .conv_rows import strided

Array = Any
GEMM_WIDTH = 96  # P·K at most: the widest the GEMM is made
# Output positions (N·OH·OW) from which wide columns pay for their fixed costs (W', a copy):
# forward, below it, LeNet-5's 6 -> 16 conv at 800 positions ran 1.12x slower wide, at 1600
# 0.93x; a 32 -> 32 at 512 1.08x, 1024 1.02x, 2048 0.93x; 16 -> 16 at 1024 already 0.89x.
MIN_POSITIONS = 1024


def pixels(k: int, kw: int, ow: int, positions: int = MIN_POSITIONS) -> int:
    """P, the output positions per row of the columns, for K filters of width kW on rows of OW
    positions: the largest divisor of OW with P·K <= GEMM_WIDTH (1: plain columns; 1x1
    filters, whose windows do not overlap, always; and below MIN_POSITIONS output positions
    in all)."""
    if kw < 2 or positions < MIN_POSITIONS:
        return 1
    return max(p for p in range(1, max(1, GEMM_WIDTH // k) + 1) if ow % p == 0)


def span(p: Any) -> int:
    """P + kW - 1: the window width that P neighbours read."""
    return p.wide + p.kw - 1


def width(p: Any) -> int:
    """Columns of the wide ``cols'``, the ones column of the bias included."""
    return p.kh * span(p) * p.c + p.bias_col


def columns(src: Array, p: Any) -> Array:
    """The wide columns (n·OH·OW / P, width) of a padded channels-last chunk src (n, Hp, Wp, C),
    in the reused columns buffer (the last column ones where the bias rides along)."""
    xp = xp_of(src)
    oh, ow = p.out_hw
    nb, j = ow // p.wide, span(p)
    s_n, s_h, s_w, s_c = src.strides
    view = strided(src, (src.shape[0], oh, nb, p.kh, j, p.c),
                   (s_n, s_h, p.wide * s_w, s_h, s_w, s_c))
    d = width(p)
    buf = workspace.buffer("cols", (src.shape[0] * oh * nb, d), src.dtype, xp)
    e = buf.itemsize
    target = strided(buf, view.shape, (oh * nb * d * e, nb * d * e, d * e, j * p.c * e,
                                        p.c * e, e))
    target[...] = view
    if p.bias_col:
        buf[:, -1] = 1
    return buf


def weight_matrix(w: Array, b: Array | None, p: Any) -> Array:
    """W' (P·K, width): row (q, k) holds filter k under neighbour q's taps, then its bias."""
    xp = xp_of(w)
    j = span(p)
    wt = xp.zeros((p.wide, p.k, p.kh, j, p.c), w.dtype)
    taps = w.transpose(0, 2, 3, 1)  # (K, kH, kW, C)
    for q in range(p.wide):
        wt[q, :, :, q:q + p.kw] = taps
    wt = wt.reshape(p.wide * p.k, p.kh * j * p.c)
    if p.bias_col:
        bias = xp.tile(b.astype(w.dtype, copy=False), p.wide).reshape(-1, 1)
        wt = xp.concatenate([wt, bias], axis=1)
    return wt


def fold(r: Array, p: Any, channels: int) -> Array:
    """Σ over neighbours q of r (P·A, kH·(P + kW - 1)·B) reshaped (P, A, kH, span, B), taken
    at columns q..q + kW: the (A, kH, kW, B) sums of the plain columns' GEMM; A = ``channels``."""
    j = span(p)
    r = r.reshape(p.wide, channels, p.kh, j, -1)
    out = r[0, :, :, :p.kw].copy()
    for q in range(1, p.wide):
        out += r[q, :, :, q:q + p.kw]
    return out
