"""The convolution as chunked im2col + one GEMM per chunk: the engine's fast path.  (With the
compiled kernels on, where the sizes fit, a direct convolution instead, no columns, no GEMM:
16·n filters at stride 1 or 2 by :mod:`.direct`, fewer at stride 1 by :mod:`.direct_lanes`.)

Every output number is a dot product of F·F·D inputs with one filter (the lecture's w·x + b).  Lay
the F·F·D inputs under each output position out as one row of a matrix ``cols`` (M = N·OH·OW rows,
F·F·D columns) and all positions and all filters are one matrix multiply::

    Y (M, K)       = cols (M, F·F·D) @ Wᵀ (F·F·D, K)      forward
    dW (K, F·F·D)  = dYᵀ (K, M) @ cols                     backward, weights
    dcols (M, F·F·D) = dY (M, K) @ W,  dx = col2im(dcols) backward, input

How it is laid out, each choice measured on a 2-core AVX-512 machine with OpenBLAS (bench/):

* Rows of ``cols`` are output positions, columns (kH, kW, C): the tall, skinny GEMM runs near
  the BLAS ceiling, and Y comes out channels-last (N, OH, OW, K).  The layer returns it as an
  (N, K, OH, OW) view of that memory (as PyTorch's channels_last tensors do), so no transpose is
  ever copied and the next layer reads its input channels-last for free.
* ``cols`` is one strided view of the (padded) input copied once into a reused buffer
  (:mod:`convscope.workspace`); the batch goes through in chunks whose columns fit its budget.
* A column of ones after the F·F·D columns carries the bias: Y comes out of the GEMM with the
  bias added, and the same column gives db in the weight-gradient GEMM.
* Inputs with few channels stored channels-first (an image batch, C = 1 or 3) use channels-first
  columns ``colsᵀ`` (C·kH·kW, M): their copies run along image rows instead of 3-float channels.
  At stride 1 with fewer than 16 filters these columns are row-flat (:mod:`.conv_rows`): whole
  OH·Wp runs over the width-padded grid, and col2im is kH·kW adds of such runs.  With the
  compiled kernels on, stride-1 columns and their col2im are compiled loops instead
  (:mod:`.jit_conv`), faster than either NumPy layout.
* With 16-48 filters at stride 1 (no groups, no dilation, from 1024 output positions on) the
  forward's columns are wide (:mod:`.wide`): one row per P side-by-side output positions,
  kH·(P + kW - 1)·C numbers, and a GEMM P times wider.  The narrow (M, 145) @ (145, 16) GEMM
  of a ResNet's 16-channel conv ran at 27 GFLOP/s; at P = 4 the (M / 4, 289) @ (289, 64) one
  does twice the multiplications at 75 (forward 14.8 -> 10.4 ms at 32x32, batch 64).
  Alternating the plain and wide columns step by step: ResNet-20's step 0.85x the time,
  LeNet-5's inference at batch 256 0.74-0.79x, the CIFAR-style and LeNet-5 steps 0.93x and
  0.94-0.96x.  The weight gradient comes from wide columns too; the input gradient's col2im
  stays on the plain plan.
* ``cols`` is not kept for the backward pass (it is often the largest array of a step); backward
  rebuilds it from the input, chunk by chunk.  The layer keeps a reference to its input, as
  PyTorch does, so an input changed in place before backward changes the weight gradient.
* The input gradient at stride 1, where K <= C or C >= 16, is a convolution of dY with the
  flipped filters, through this same forward path: its im2col copies rows of K·kH·kW numbers.
  col2im, dcols = dY W then F·F strided slice-adds into dx, adds runs of only C numbers from
  C-wide rows: a ResNet's 16-channel 3x3 conv spent 3x longer there (the whole ResNet-14 step
  went from 920 to 640 ms), 16 -> 32 filters 1.7x.  col2im stays for K > C on fewer than 16
  channels (3 -> 32: fewer numbers to move, 2x faster), strides, groups and padding beyond the
  filter's reach (clipped to the image, never ``np.add.at``).
* Few BLAS calls: one GEMM per chunk and pass.  Each call is a point where BLAS's threads wait
  for each other, which costs little on an idle machine and a scheduler time slice on a busy one.

The array module comes from the input (NumPy or CuPy).  The same sums written to be read, and
the reference this path is tested against: :mod:`convscope.ops.conv_reference`.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .. import workspace
from ..runtime import grad_enabled, xp_of
from ..shapes import Pads, Pair
from . import direct, direct_lanes, jit, threads, wide
from .col2im import input_grad_chunk
from .columns import chunk_columns, columns_view, dy_matrix, padded_source, weight_matrix
from .conv_rows import backward_rows, forward_rows
from .layout import channels_innermost
from .norm import channel_sum
from .padding import PADDING_MODES, unpad2d  # PADDING_MODES: the modes `mode` takes

Array = Any
SMALL_C = 6  # channels-first columns for channels-first inputs with at most this many channels
WIDE_K = 16  # channels-last output from this many filters on (fewer: channels-first output)
# Row-flat columns (ops/conv_rows.py) for channels-first columns at stride 1 with fewer than
# WIDE_K filters, with the kernels off (by NumPy's copies 5x5 filters on 3 or 6 channels ran
# 1.2-1.3x faster forward+backward; the compiled copies of plain columns, ops/jit_conv.py, beat
# both: 3 -> 6 at 32x32, batch 64, 7.8 ms against 10.4).  False: im2col everywhere.
ROWS = True
# The input gradient at stride 1 as a convolution of dY with the flipped filters
# (_input_grad_transposed) where the layer has no more filters than input channels (K <= C)
# or at least WIDE_K input channels; False: col2im everywhere (the tests run both).
TRANSPOSED = True
# Wide columns (ops/wide.py) in the forward of stride-1 convs with 16-48 filters: P output
# positions per row of cols, a GEMM P times wider; False: plain columns everywhere.
WIDE = True
DIRECT = True  # direct convolutions where they fit, with the kernels on (see above); False: none
_DIRECT = {"blocks": direct, "lanes": direct_lanes}  # Plan.direct -> its module


@dataclass(frozen=True)
class Plan:
    """Sizes and layout of one convolution call."""

    n: int
    c: int
    h: int
    w: int
    k: int
    kh: int
    kw: int
    stride: Pair
    dilation: Pair
    pads: Pads
    out_hw: Pair
    groups: int
    mode: str
    channels_first: bool  # colsᵀ (C·kH·kW, M) instead of cols (M, kH·kW·C)
    bias_col: bool  # a column of ones carries the bias (groups == 1 with a bias)
    out_channels_last: bool  # y in (N, OH, OW, K) memory, else (N, K, OH, OW)
    rows: bool  # row-flat columns over the width-padded grid (ops/conv_rows.py)
    wide: int = 1  # output positions per row of cols (ops/wide.py); 1: plain columns
    base: Plan | None = None  # a wide plan's plain one, which its backward pass runs on
    direct: str = ""  # a compiled direct convolution, no columns: "blocks" (ops/direct.py),
    # "lanes" (ops/direct_lanes.py); "": im2col

    @property
    def padded_hw(self) -> Pair:
        (t, b), (l, r) = self.pads
        return self.h + t + b, self.w + l + r

    @property
    def depth(self) -> int:
        """F·F·D of one group: the length of each dot product."""
        return self.c // self.groups * self.kh * self.kw

    @property
    def width(self) -> int:
        """Columns of ``cols``: every group's F·F·D, plus the column of ones."""
        return self.c * self.kh * self.kw + self.bias_col

    def chunk(self, itemsize: int) -> int:
        """Images per chunk so that a chunk's columns fit the workspace budget."""
        oh, ow = self.out_hw
        if self.wide > 1:
            return workspace.chunk_size(self.n, oh * ow // self.wide * wide.width(self) * itemsize)
        ow = self.padded_hw[1] if self.rows else ow
        return workspace.chunk_size(self.n, oh * ow * self.width * itemsize)

    def narrow(self) -> Plan:
        """The plan with plain columns: this one, or the one a wide plan was made from."""
        return self.base or self


def make_plan(x: Array, w: Array, bias: bool, stride: Pair, pads: Pads, dilation: Pair,
              groups: int, out_hw: Pair, mode: str) -> Plan:
    """The layout for x (N, C, H, W) and w (K, C/G, kH, kW)."""
    c = x.shape[1]
    channels_first = c == 1 or (c <= SMALL_C and not channels_innermost(x))
    return _plan(tuple(x.shape), tuple(w.shape), bool(bias), tuple(stride), pads,
                 tuple(dilation), groups, tuple(out_hw), mode, channels_first,
                 ROWS and channels_first and tuple(stride) == (1, 1)
                 and w.shape[0] < WIDE_K and jit.kernels() is None, WIDE,
                 DIRECT and direct.usable(x, w), not grad_enabled(), threads.held() > 1)


@functools.lru_cache(maxsize=256)
def _plan(x_shape: tuple, w_shape: tuple, bias: bool, stride: Pair, pads: Pads, dilation: Pair,
          groups: int, out_hw: Pair, mode: str, channels_first: bool, rows: bool, widen: bool,
          use_direct: bool = False, inference: bool = False, held: bool = False) -> Plan:
    n, c, h, wd = x_shape
    k, _, kh, kw = w_shape
    base = Plan(n, c, h, wd, k, kh, kw, stride, dilation, pads, out_hw, groups, mode,
                channels_first, bias and groups == 1, k >= WIDE_K, rows)
    m = n * out_hw[0] * out_hw[1] if inference else 0  # output positions, no backward to come
    if use_direct and direct.fits(c, k, stride, dilation, groups, mode, out_hw[1], m, held):
        return dataclasses.replace(base, channels_first=False, out_channels_last=True,
                                   rows=False, bias_col=False, direct="blocks", base=base)
    if use_direct and direct_lanes.fits(c, k, (kh, kw), stride, dilation, groups, mode, pads,
                                        out_hw[1]):  # y channels-first, as base's
        return dataclasses.replace(base, rows=False, bias_col=False, direct="lanes", base=base)
    fits = widen and k >= WIDE_K and groups == 1 and stride == (1, 1) and dilation == (1, 1)
    p = wide.pixels(k, kw, out_hw[1], n * out_hw[0] * out_hw[1]) if fits else 1
    # from channels-first memory only where the wide copy's runs, (P + kW - 1)·C numbers, are
    # no shorter than the channels-first columns' (OW): 3 -> 32 3x3 at 32x32 (runs of 12
    # against 32) ran 1.1x slower, LeNet-5's 6 -> 16 5x5 (54 against 10) 1.7-1.9x faster
    if p == 1 or (channels_first and (p + kw - 1) * c < out_hw[1]):
        return base
    return dataclasses.replace(base, channels_first=False, out_channels_last=True, rows=False,
                               wide=p, base=base)


# ---------------------------------------------------------------------------------------------
# forward


def conv2d_forward(x: Array, w: Array, b: Array | None, stride: Pair, pads: Pads, dilation: Pair,
                 groups: int, out_hw: Pair, mode: str = "zeros",
                 hook: Callable[[Array, Plan, int, int], None] | None = None
                 ) -> tuple[Array, tuple]:
    """y[n, k] = sum over (c, i, j) of w[k, c, i, j] · xpad[n, c, s·oh + d·i, s·ow + d·j] + b[k].

    x (N, C, H, W) in any memory layout, w (K, C/G, kH, kW), b (K,) or None -> y (N, K, OH, OW),
    in channels-last memory from 16 filters on, else channels-first (the pooling after a conv
    with few filters runs faster on it; the GEMM's (K, n·OH·OW) result is copied into place).
    One GEMM per chunk either way.  The cache holds x itself, not the columns.  ``hook(buf, p,
    n0, n1)`` is called with each chunk's columns (not on the row-flat path).
    """
    xp = xp_of(x)
    p = make_plan(x, w, b is not None, stride, pads, dilation, groups, out_hw, mode)
    if p.direct and hook is None:  # no columns: a compiled direct convolution
        return _DIRECT[p.direct].forward(x, w, b, p.stride, p.pads, p.out_hw), (x, None, None, p)
    p = p.narrow() if p.direct else p
    oh, ow = p.out_hw
    npos = oh * ow
    g, kg = p.groups, p.k // p.groups
    full = padded_source(x, p)
    wm = weight_matrix(w, b, p)
    if p.out_channels_last:
        y = workspace.empty((p.n, oh, ow, p.k), x.dtype, xp)
        y2 = y.reshape(p.n * npos, p.k)
    else:
        y = workspace.empty((p.n, p.k, oh, ow), x.dtype, xp)
        y3 = y.reshape(p.n, p.k, npos)
    nc = p.chunk(x.dtype.itemsize)
    starts = range(0, p.n, nc or 1)  # an empty batch: no chunk
    if p.rows:  # stride 1, channels-first columns: the row-flat path
        forward_rows(x, full, wm, p, y, starts, nc)
    else:
        for n0 in starts:
            n1 = min(p.n, n0 + nc)
            buf = chunk_columns(x, full, n0, n1, p)
            if not p.out_channels_last:  # (K, m) from one GEMM, then one copy into (n, K, OH·OW)
                yt = workspace.buffer("yt", (p.k, (n1 - n0) * npos), x.dtype, xp)
            for gi in range(g):
                a = columns_view(buf, p, gi, True)  # (m, depth [+ 1])
                if p.wide > 1:  # (m / P, P·K): the same memory as (m, K)
                    xp.matmul(buf, wm[0].T, out=y2[n0 * npos:n1 * npos].reshape(-1, p.wide * p.k))
                elif p.out_channels_last:
                    xp.matmul(a, wm[gi].T, out=y2[n0 * npos:n1 * npos, gi * kg:(gi + 1) * kg])
                else:
                    xp.matmul(wm[gi], a.T, out=yt[gi * kg:(gi + 1) * kg])
            if not p.out_channels_last:
                y3[n0:n1] = yt.reshape(p.k, n1 - n0, npos).transpose(1, 0, 2)
            if hook is not None:
                hook(buf, p, n0, n1)
    if b is not None and not p.bias_col:
        y += b.reshape(1, p.k, 1, 1) if not p.out_channels_last else b
    return (y.transpose(0, 3, 1, 2) if p.out_channels_last else y), (x, full, wm, p)


# ---------------------------------------------------------------------------------------------
# backward


def _transposed_pads(p: Plan) -> Pads | None:
    """Padding of dY for the input gradient as a stride-1 convolution, or None where that does not
    apply (strides, groups, the row-flat path, padding wider than the filter's reach) or does
    not pay: its im2col copies K·kH·kW numbers per position where col2im adds C·kH·kW, in runs
    of C, so it runs for K <= C or C >= 16 (measured at batch 64, against col2im: 16 -> 16
    channels 3x faster, 16 -> 32 at 28×28 1.7x (50 -> 29 ms), 32 -> 64 and 64 -> 128 equal
    (±5%); 3 -> 32 2x slower).

    At stride 1, dx[h] = Σ_i dy[h + t - d·i] · w[i]: a correlation of dY with the flipped filters,
    dY padded by d·(kH - 1) - t above and d·(kH - 1) - b below gives H rows (Hp for the padded
    dx of the other padding modes, with t = b = 0)."""
    if (not TRANSPOSED or p.rows or p.stride != (1, 1) or p.groups != 1
            or min(p.kh, p.kw) < 2 or (p.k > p.c and p.c < WIDE_K)):
        return None
    (t, b), (l, r) = ((0, 0), (0, 0)) if p.mode != "zeros" else p.pads
    (dh, dw) = p.dilation
    pads = ((dh * (p.kh - 1) - t, dh * (p.kh - 1) - b), (dw * (p.kw - 1) - l, dw * (p.kw - 1) - r))
    return pads if min(min(pads[0]), min(pads[1])) >= 0 else None


def _input_grad_transposed(dy: Array, w: Array, p: Plan, pads: Pads, out_hw: Pair, src: Array
                           ) -> tuple[Array, Array | None]:
    """dx (N, C, out_hw) = dY ⋆ flip(W)ᵀ: the forward path run on dY with w'[c, k, i, j] =
    w[k, c, kH-1-i, kW-1-j] (its im2col copies C·kH·kW-wide rows once; col2im's kH·kW strided
    adds of C-wide runs were 3x slower on 16-32 channels); and dW from the same columns.

    dY's columns hold, for every input position m, the dY each tap of each filter reaches:
    col[m, (i', j', k)] = dY_pad[m + d·(i', j'), k] = dY[(h, w) + pads - d·(kH-1-i', ...)], so
    dW[k, c, i, j] = Σ_m src[m, c] · col[m, (kH-1-i, kW-1-j, k)]: one GEMM (C, m) @ (m, depth)
    per chunk, with no im2col of x (src, (N, C, out_hw): the input, or its padded copy).
    Returns (dx, dW), dW None where the columns were not all seen (the row-flat path)."""
    xp = xp_of(w)
    wt = xp.ascontiguousarray(w.transpose(1, 0, 2, 3)[:, :, ::-1, ::-1])
    seen: list[Any] = [0, None, None]  # images, sum of the GEMMs (C, depth), dY's plan

    def dw_part(buf: Array, pt: Plan, n0: int, n1: int) -> None:
        if pt.wide > 1:  # (P·C, m / P) @ the wide columns, folded at the end
            xm = src[n0:n1].transpose(0, 2, 3, 1).reshape(-1, pt.wide * p.c).T
            r = xm @ buf[:, :wide.width(pt) - pt.bias_col]
        else:
            xm = src[n0:n1].transpose(1, 0, 2, 3).reshape(p.c, -1)  # a view if channels-last
            r = xm @ columns_view(buf, pt, 0, False)
        seen[0] += n1 - n0
        seen[1] = r if seen[1] is None else xp.add(seen[1], r, out=seen[1])
        seen[2] = pt

    dx = conv2d_forward(dy, wt, None, (1, 1), pads, p.dilation, 1, out_hw, hook=dw_part)[0]
    if seen[0] != p.n:
        return dx, None
    r, pt = seen[1], seen[2]
    if pt.wide > 1:
        r = wide.fold(r, pt, p.c)  # (C, kH, kW, K): the plain columns' (i', j', k) order
    if pt.channels_first:  # columns (k, i', j')
        dw = r.reshape(p.c, p.k, p.kh, p.kw)[:, :, ::-1, ::-1].transpose(1, 0, 2, 3)
    else:  # (i', j', k)
        dw = r.reshape(p.c, p.kh, p.kw, p.k)[:, ::-1, ::-1, :].transpose(3, 0, 1, 2)
    return dx, xp.ascontiguousarray(dw)


def conv2d_backward(dy: Array, w: Array, cache: tuple, need_bias: bool = True,
                  need_dx: bool = True) -> tuple[Array | None, Array, Array | None]:
    """Gradients (dx, dw, db) of :func:`conv2d_forward` for dy (N, K, OH, OW) in any layout.

    dx (N, C, H, W) in the layout the forward path gives a C-filter output (channels-last from
    16 on); None unless ``need_dx``.  Chunk by chunk: rebuild cols, dW += dYᵀ cols (the bias
    gradient comes out of the ones column; after a wide forward, dW'ᵀ += dY'ᵀ cols' on the wide
    columns, folded, :mod:`.wide`).  dx at stride 1: a convolution of dY with the flipped filters
    (:func:`_input_grad_transposed`); otherwise dcols = dY W and col2im, chunk by chunk, on the
    plain plan.
    """
    x, full, wm, pw = cache
    if pw.direct:
        if not need_dx or _DIRECT[pw.direct].input_grad_fits(pw.c, pw.w, pw.stride):
            return _DIRECT[pw.direct].backward(dy, x, w, pw.stride, pw.pads, need_bias, need_dx)
        # dx by im2col where its kernel does not fit (few channels), on the plain plan, dw with it
        return direct.im2col_backward(conv2d_backward, dy, w, (x, full, None, pw.narrow()),
                                      need_bias)
    xp = xp_of(dy)
    p = pw.narrow()  # the backward runs on the plain plan, but for the wide columns of dW
    npos = p.out_hw[0] * p.out_hw[1]
    g, kg = p.groups, p.k // p.groups
    dx = dxfull = dw = None
    tpads = _transposed_pads(p) if need_dx and p.n else None
    if tpads is not None:  # dx, and dW from dY's columns
        if full is None:
            dx, dw = _input_grad_transposed(dy, w, p, tpads, (p.h, p.w), x)
        else:  # the padded dx, then its padding folded back onto the image
            dxp, dw = _input_grad_transposed(dy, w, p, tpads, p.padded_hw, full)
            dx = unpad2d(dxp, p.pads, (p.h, p.w), p.mode)
        if dw is not None:
            return dx, dw, (channel_sum(dy) if need_bias else None)
    col2im = need_dx and tpads is None  # dx chunk by chunk, with dW
    if wm is None or (pw.wide > 1 and col2im):  # the plain plan's filters (col2im's, or none
        wm = weight_matrix(w, xp.zeros(p.k, w.dtype) if p.bias_col else None, p)  # kept)
    # dY as (K, M), for the plain dW and for col2im: a copy unless dy is channels-last
    dyt = None if p.rows or (pw.wide > 1 and not col2im) else dy_matrix(dy)
    nc = p.chunk(dy.dtype.itemsize)
    starts = range(0, p.n, nc or 1)  # an empty batch: no chunk, dW = 0
    if col2im:
        dx = workspace.empty((p.n, p.c, p.h, p.w), dy.dtype, xp, not p.channels_first)
        if full is not None:  # the padding's gradient folds back onto the image at the end
            dxfull = workspace.empty(full.shape, dy.dtype, xp, not p.channels_first)
        target, offset = (dx, (p.pads[0][0], p.pads[1][0])) if full is None else (dxfull, (0, 0))
    if p.rows:
        dwm = backward_rows(dy, x, full, wm, p, target if col2im else None, starts, nc)
    else:
        if pw.wide > 1:  # dW'ᵀ = dY (m / P, P·K)ᵀ @ the forward's wide columns, folded below
            dwm = xp.zeros((pw.wide * p.k, wide.width(pw)), dy.dtype)
            dyw = dy.transpose(0, 2, 3, 1)  # (N, OH, OW, K): its rows are (m / P, P·K) runs
        else:
            dwm = xp.zeros_like(wm)
        dwg = xp.empty_like(dwm[0] if pw.wide == 1 else dwm)
        for n0 in starts:
            n1 = min(p.n, n0 + nc)
            cols_t = None if dyt is None else dyt[:, n0 * npos:n1 * npos]
            if pw.wide > 1:
                buf = chunk_columns(x, full, n0, n1, pw)
                xp.matmul(dyw[n0:n1].reshape(-1, pw.wide * p.k).T, buf, out=dwg)
                dwm += dwg
            else:
                buf = chunk_columns(x, full, n0, n1, p)
                for gi in range(g):
                    xp.matmul(cols_t[gi * kg:(gi + 1) * kg], columns_view(buf, p, gi, True),
                              out=dwg)
                    dwm[gi] += dwg
            if col2im:
                target[n0:n1] = 0
                input_grad_chunk(cols_t, wm, p, target[n0:n1], offset)  # reuses the columns buffer
    if dxfull is not None:
        dx[...] = unpad2d(dxfull, p.pads, (p.h, p.w), p.mode)
    if pw.wide > 1:  # (a wide plan is never row-flat: that is for fewer than 16 filters)
        d = wide.width(pw) - pw.bias_col
        dw = wide.fold(dwm[:, :d], pw, p.k).transpose(0, 3, 1, 2)  # (K, kH, kW, C) -> w's
        db = None
        if need_bias:
            db = (dwm[:, -1].reshape(pw.wide, p.k).sum(axis=0) if pw.bias_col
                  else channel_sum(dy))
        return dx, xp.ascontiguousarray(dw), db

    db = None
    if p.bias_col:
        db = dwm[0, :, -1].copy() if need_bias else None
        dwm = dwm[:, :, :-1]
    elif need_bias:
        db = channel_sum(dy)
    if p.channels_first:
        dw = dwm.reshape(w.shape)
    else:
        dw = dwm.reshape(p.k, p.kh, p.kw, p.c // g).transpose(0, 3, 1, 2)
    return dx, dw, db


conv_forward, conv_backward = conv2d_forward, conv2d_backward  # their names in conv_gemm
