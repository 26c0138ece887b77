"""The convolution as chunked im2col + one GEMM per chunk: the engine's fast path.

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

import functools
from dataclasses import dataclass
from typing import Any

from .. import workspace
from ..runtime import xp_of
from ..shapes import Pads, Pair
from . import jit, jit_conv
from .col2im import input_grad_chunk
from .conv_rows import backward_rows, forward_rows
from .conv_rows import strided as _strided, zero_border as _zero_border
from .layout import channels_innermost
from .padding import PADDING_MODES, pad2d, unpad2d  # PADDING_MODES: the modes `mode` takes

Array = Any
SMALL_C = 6  # channels-first columns for channels-first inputs with at most this many channels
WIDE_K = 16  # channels-last output from this many filters on (fewer: channels-first output)
# Row-flat columns (ops/conv_rows.py) for channels-first columns at stride 1 with channels-first
# output (fewer than WIDE_K filters), unless the compiled kernels are on: by NumPy's copies 5x5
# filters on 3 or 6 channels ran 1.2-1.3x faster forward+backward (with a channels-last output
# the extra copies lost, 1.2x slower), but plain columns by the compiled copies (ops/jit_conv.py)
# beat both (3 -> 6 at 32x32, batch 64, forward+backward: rows 11.6 ms, 10.4 with the kernels;
# columns 13.2 by NumPy's copies, 7.8 by the kernels).  False: im2col everywhere (the tests
# run both).
ROWS = True
# The input gradient at stride 1 as a convolution of dY with the flipped filters
# (_input_grad_transposed) where the layer has no more filters than input channels (K <= C)
# or at least WIDE_K input channels; False: col2im everywhere (the tests run both).
TRANSPOSED = True


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
        ow = self.padded_hw[1] if self.rows else ow
        return workspace.chunk_size(self.n, oh * ow * self.width * itemsize)


def make_plan(x: Array, w: Array, bias: bool, stride: Pair, pads: Pads, dilation: Pair,
              groups: int, out_hw: Pair, mode: str) -> Plan:
    """The layout for x (N, C, H, W) and w (K, C/G, kH, kW)."""
    c = x.shape[1]
    channels_first = c == 1 or (c <= SMALL_C and not channels_innermost(x))
    return _plan(tuple(x.shape), tuple(w.shape), bool(bias), tuple(stride), pads,
                 tuple(dilation), groups, tuple(out_hw), mode, channels_first,
                 ROWS and channels_first and tuple(stride) == (1, 1)
                 and w.shape[0] < WIDE_K and jit.kernels() is None)


@functools.lru_cache(maxsize=256)
def _plan(x_shape: tuple, w_shape: tuple, bias: bool, stride: Pair, pads: Pads, dilation: Pair,
          groups: int, out_hw: Pair, mode: str, channels_first: bool, rows: bool) -> Plan:
    n, c, h, wd = x_shape
    k, _, kh, kw = w_shape
    return Plan(n, c, h, wd, k, kh, kw, stride, dilation, pads, out_hw, groups, mode,
                channels_first, bias and groups == 1, k >= WIDE_K, rows)


# ---------------------------------------------------------------------------------------------
# columns


def _padded_source(x: Array, p: Plan) -> Array | None:
    """The whole padded input for the non-zero padding modes, else None (zero padding is written
    chunk by chunk into a reused buffer)."""
    if p.mode == "zeros" or p.pads == ((0, 0), (0, 0)):
        return None
    return pad2d(x, p.pads, p.mode)


def _chunk_source(x: Array, full: Array | None, n0: int, n1: int, p: Plan) -> Array:
    """Images n0:n1 of the padded input, (n, C, Hp, Wp) channels-first or (n, Hp, Wp, C)."""
    if full is not None:
        src = full[n0:n1]
        return src if p.channels_first else src.transpose(0, 2, 3, 1)
    xc = x[n0:n1]
    if p.pads == ((0, 0), (0, 0)):
        return xc if p.channels_first else xc.transpose(0, 2, 3, 1)
    xp = xp_of(x)
    (t, b), (l, r) = p.pads
    hp, wp = p.padded_hw
    if p.channels_first:
        buf = workspace.buffer("xpad", (n1 - n0, p.c, hp, wp), x.dtype, xp)
        _zero_border(buf, 2, t, b, l, r)
        buf[:, :, t:t + p.h, l:l + p.w] = xc
    else:
        buf = workspace.buffer("xpad", (n1 - n0, hp, wp, p.c), x.dtype, xp)
        _zero_border(buf, 1, t, b, l, r)
        buf[:, t:t + p.h, l:l + p.w, :] = xc.transpose(0, 2, 3, 1)
    return buf


def _columns(src: Array, p: Plan) -> Array:
    """Copy the windows of ``src`` into the reused columns buffer and return the buffer.

    channels-last: (n·OH·OW, width), each row (G, kH, kW, C/G) then the 1 of the bias column;
    channels-first: (width, n·OH·OW), rows (G, C/G, kH, kW) then a row of ones.
    """
    xp = xp_of(src)
    oh, ow = p.out_hw
    (sh, sw), (dh, dw) = p.stride, p.dilation
    nc, m = src.shape[0], src.shape[0] * oh * ow
    if p.channels_first:
        s_n, s_c, s_h, s_w = src.strides
        view = _strided(src, (p.c, p.kh, p.kw, nc, oh, ow),
                        (s_c, dh * s_h, dw * s_w, s_n, sh * s_h, sw * s_w))
        buf = workspace.buffer("cols", (p.width, m), src.dtype, xp)
        buf[:p.width - p.bias_col].reshape(view.shape)[...] = view
        if p.bias_col:
            buf[-1] = 1
        return buf
    g, cg = p.groups, p.c // p.groups
    s_n, s_h, s_w, s_c = src.strides
    view = _strided(src, (nc, oh, ow, g, p.kh, p.kw, cg),
                    (s_n, sh * s_h, sw * s_w, cg * s_c, dh * s_h, dw * s_w, s_c))
    buf = workspace.buffer("cols", (m, p.width), src.dtype, xp)
    e = buf.itemsize
    d = p.width
    target = _strided(buf, view.shape, (oh * ow * d * e, ow * d * e, d * e, p.depth * e,
                                        p.kw * cg * e, cg * e, e))
    target[...] = view
    if p.bias_col:
        buf[:, -1] = 1
    return buf


def _chunk_columns(x: Array, full: Array | None, n0: int, n1: int, p: Plan) -> Array:
    """The columns of images n0:n1 in the reused buffer: :func:`_columns` of the padded chunk,
    or channels-first at stride 1 the compiled copy where the kernels are on (:mod:`.jit_conv`)."""
    src = _chunk_source(x, full, n0, n1, p)
    if p.channels_first:
        buf = workspace.buffer("cols", (p.width, src.shape[0] * p.out_hw[0] * p.out_hw[1]),
                               x.dtype, xp_of(x))
        if jit_conv.columns(src, p, buf):
            if p.bias_col:
                buf[-1] = 1
            return buf
    return _columns(src, p)


def _group(buf: Array, p: Plan, gi: int, with_bias: bool) -> Array:
    """Group gi's (M, depth) matrix of a columns buffer, with the ones column if asked."""
    lo, hi = gi * p.depth, (gi + 1) * p.depth + (with_bias and p.bias_col)
    return buf[lo:hi].T if p.channels_first else buf[:, lo:hi]


def _weight_matrix(w: Array, b: Array | None, p: Plan) -> Array:
    """Filters as (G, K/G, depth [+ 1]), depth ordered as the columns, the bias last."""
    xp = xp_of(w)
    g = p.groups
    wm = w if p.channels_first else w.transpose(0, 2, 3, 1)
    wm = xp.ascontiguousarray(wm).reshape(g, p.k // g, p.depth)
    if p.bias_col:
        wm = xp.concatenate([wm, b.reshape(1, p.k, 1).astype(w.dtype, copy=False)], axis=2)
    return wm


# ---------------------------------------------------------------------------------------------
# forward


def conv2d_forward(x: Array, w: Array, b: Array | None, stride: Pair, pads: Pads, dilation: Pair,
                 groups: int, out_hw: Pair, mode: str = "zeros") -> tuple[Array, tuple]:
    """y[n, k] = sum over (c, i, j) of w[k, c, i, j] · xpad[n, c, s·oh + d·i, s·ow + d·j] + b[k].

    x (N, C, H, W) in any memory layout, w (K, C/G, kH, kW), b (K,) or None -> y (N, K, OH, OW),
    in channels-last memory from 16 filters on, else channels-first (the pooling after a conv
    with few filters runs faster on it; the GEMM's (K, n·OH·OW) result is copied into place).
    One GEMM per chunk either way.  The cache holds x itself, not the columns.
    """
    xp = xp_of(x)
    p = make_plan(x, w, b is not None, stride, pads, dilation, groups, out_hw, mode)
    oh, ow = p.out_hw
    npos = oh * ow
    g, kg = p.groups, p.k // p.groups
    full = _padded_source(x, p)
    wm = _weight_matrix(w, b, p)
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
            buf = _chunk_columns(x, full, n0, n1, p)
            if not p.out_channels_last:  # (K, m) from one GEMM, then one copy into (n, K, OH·OW)
                yt = workspace.buffer("yt", (p.k, (n1 - n0) * npos), x.dtype, xp)
            for gi in range(g):
                a = _group(buf, p, gi, True)  # (m, depth [+ 1])
                if p.out_channels_last:
                    xp.matmul(a, wm[gi].T, out=y2[n0 * npos:n1 * npos, gi * kg:(gi + 1) * kg])
                else:
                    xp.matmul(wm[gi], a.T, out=yt[gi * kg:(gi + 1) * kg])
            if not p.out_channels_last:
                y3[n0:n1] = yt.reshape(p.k, n1 - n0, npos).transpose(1, 0, 2)
    if b is not None and not p.bias_col:
        y += b.reshape(1, p.k, 1, 1) if not p.out_channels_last else b
    return (y.transpose(0, 3, 1, 2) if p.out_channels_last else y), (x, full, wm, p)


# ---------------------------------------------------------------------------------------------
# backward


def _dy_matrix(dy: Array) -> Array:
    """dY as a (K, N·OH·OW) matrix: a view when dy is channels-last or (K, N, OH, OW) in memory,
    else a copy into (K, N, OH, OW) (runs of OH·OW numbers: a cheap transpose)."""
    n, k, oh, ow = dy.shape
    knhw = dy.transpose(1, 0, 2, 3)
    if knhw.flags.c_contiguous:
        return knhw.reshape(k, n * oh * ow)
    nhwk = dy.transpose(0, 2, 3, 1)
    if nhwk.flags.c_contiguous:
        return nhwk.reshape(n * oh * ow, k).T
    out = workspace.empty((k, n, oh, ow), dy.dtype, xp_of(dy))
    out[...] = knhw
    return out.reshape(k, n * oh * ow)


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


def _input_grad_transposed(dy: Array, w: Array, p: Plan, pads: Pads, out_hw: Pair) -> Array:
    """dx (N, C, out_hw) = dY ⋆ flip(W)ᵀ: the forward path run on dY with w'[c, k, i, j] =
    w[k, c, kH-1-i, kW-1-j] (its im2col copies C·kH·kW-wide rows once; col2im's kH·kW strided
    adds of C-wide runs were 3x slower on 16-32 channels)."""
    wt = xp_of(w).ascontiguousarray(w.transpose(1, 0, 2, 3)[:, :, ::-1, ::-1])
    return conv2d_forward(dy, wt, None, (1, 1), pads, p.dilation, 1, out_hw)[0]


def conv2d_backward(dy: Array, w: Array, cache: tuple, need_bias: bool = True,
                  need_dx: bool = True) -> tuple[Array | None, Array, Array | None]:
    """Gradients (dx, dw, db) of :func:`conv2d_forward` for dy (N, K, OH, OW) in any layout.

    dx (N, C, H, W) in the layout the forward path gives a C-filter output (channels-last from
    16 on); None unless ``need_dx``.  Chunk by chunk: rebuild cols, dW += dYᵀ cols (the bias
    gradient comes out of the ones column).  dx at stride 1: a convolution of dY with the
    flipped filters (:func:`_input_grad_transposed`); otherwise dcols = dY W and col2im, chunk
    by chunk.
    """
    x, full, wm, p = cache
    xp = xp_of(dy)
    npos = p.out_hw[0] * p.out_hw[1]
    g, kg = p.groups, p.k // p.groups
    dyt = None if p.rows else _dy_matrix(dy)  # (K, M)
    nc = p.chunk(dy.dtype.itemsize)
    starts = range(0, p.n, nc or 1)  # an empty batch: no chunk, dW = 0
    dx = dxfull = None
    tpads = _transposed_pads(p) if need_dx else None
    col2im = need_dx and tpads is None  # dx chunk by chunk, with dW
    if col2im:
        dx = workspace.empty((p.n, p.c, p.h, p.w), dy.dtype, xp, not p.channels_first)
        if full is not None:  # the padding's gradient folds back onto the image at the end
            dxfull = workspace.empty(full.shape, dy.dtype, xp, not p.channels_first)
        target, offset = (dx, (p.pads[0][0], p.pads[1][0])) if full is None else (dxfull, (0, 0))
    if p.rows:
        dwm = backward_rows(dy, x, full, wm, p, target if col2im else None, starts, nc)
    else:
        dwm, dwg = xp.zeros_like(wm), xp.empty_like(wm[0])
        for n0 in starts:
            n1 = min(p.n, n0 + nc)
            buf = _chunk_columns(x, full, n0, n1, p)
            cols_t = dyt[:, n0 * npos:n1 * npos]
            for gi in range(g):
                xp.matmul(cols_t[gi * kg:(gi + 1) * kg], _group(buf, p, gi, True), out=dwg)
                dwm[gi] += dwg
            if col2im:
                target[n0:n1] = 0
                input_grad_chunk(cols_t, wm, p, target[n0:n1], offset)  # reuses the columns buffer
    if dxfull is not None:
        dx[...] = unpad2d(dxfull, p.pads, (p.h, p.w), p.mode)
    if tpads is not None:
        if full is None:
            dx = _input_grad_transposed(dy, w, p, tpads, (p.h, p.w))
        else:  # the padded dx, then its padding folded back onto the image
            dx = unpad2d(_input_grad_transposed(dy, w, p, tpads, p.padded_hw), p.pads,
                         (p.h, p.w), p.mode)

    db = None
    if p.bias_col:
        db = dwm[0, :, -1].copy() if need_bias else None
        dwm = dwm[:, :, :-1]
    elif need_bias:
        db = dy.sum(axis=(0, 2, 3))
    if p.channels_first:
        dw = dwm.reshape(w.shape)
    else:
        dw = dwm.reshape(p.k, p.kh, p.kw, p.c // g).transpose(0, 3, 1, 2)
    return dx, dw, db


conv_forward, conv_backward = conv2d_forward, conv2d_backward  # their names in conv_gemm
