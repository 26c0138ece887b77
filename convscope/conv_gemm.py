"""The convolution as chunked im2col + one GEMM per chunk: the engine's fast path.

Every output number is a dot product of F·F·D inputs with one filter (the lecture's w·x + b).  Lay
the F·F·D inputs under each output position out as one row of a matrix ``cols`` (M = N·OH·OW rows,
F·F·D columns) and all positions and all filters are one matrix multiply::

    Y (M, K)       = cols (M, F·F·D) @ Wᵀ (F·F·D, K)      forward
    dW (K, F·F·D)  = dYᵀ (K, M) @ cols                     backward, weights
    dx             = col2im(dY @ W)                        backward, input (stride > 1)
    dx             = full convolution of dY with the flipped filters   (stride 1)

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
* ``cols`` is not kept for the backward pass (it is often the largest array of a step); backward
  rebuilds it from the input, chunk by chunk.  The layer keeps a reference to its input, as
  PyTorch does, so an input changed in place before backward changes the weight gradient.
* At stride 1 the input gradient is itself a convolution (of dY, zero-padded, with the filters
  flipped and transposed): one more im2col + GEMM, no scatter.  Otherwise col2im is F·F strided
  slice-adds, never ``np.add.at``.

The array module comes from the input (NumPy or CuPy).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from . import workspace
from .backend import xp_of
from .shapes import Pads, Pair

Array = Any
SMALL_C = 4  # channels-first columns for channels-first inputs with at most this many channels


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
        return workspace.chunk_size(self.n, oh * ow * self.width * itemsize)


def _is_channels_last(x: Array) -> bool:
    """Whether x (N, C, H, W) has its channels innermost in memory (a channels-last view)."""
    s = x.strides
    return abs(s[1]) <= abs(s[3]) and abs(s[1]) <= abs(s[2])


def make_plan(x: Array, w: Array, bias: bool, stride: Pair, pads: Pads, dilation: Pair,
              groups: int, out_hw: Pair, mode: str) -> Plan:
    """The layout for x (N, C, H, W) and w (K, C/G, kH, kW)."""
    n, c, h, wd = x.shape
    k, _, kh, kw = w.shape
    channels_first = c == 1 or (c <= SMALL_C and not _is_channels_last(x))
    return Plan(n, c, h, wd, k, kh, kw, tuple(stride), tuple(dilation), pads, tuple(out_hw),
                groups, mode, channels_first, bool(bias) and groups == 1)


# ---------------------------------------------------------------------------------------------
# columns


def _padded_source(x: Array, p: Plan) -> Array | None:
    """The whole padded input for the non-zero padding modes, else None (zero padding is written
    chunk by chunk into a reused buffer)."""
    if p.mode == "zeros" or p.pads == ((0, 0), (0, 0)):
        return None
    from .functional import pad2d  # noqa: PLC0415 - functional imports this module

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


def _zero_border(buf: Array, hax: int, t: int, b: int, l: int, r: int) -> None:
    """Zero the padding rows and columns of a padded buffer (H on axis hax, W on hax + 1)."""
    lead = (slice(None),) * hax
    hp, wp = buf.shape[hax], buf.shape[hax + 1]
    for lo, hi in ((0, t), (hp - b, hp)):
        if hi > lo:
            buf[lead + (slice(lo, hi),)] = 0
    for lo, hi in ((0, l), (wp - r, wp)):
        if hi > lo:
            buf[lead + (slice(None), slice(lo, hi))] = 0


def _columns(src: Array, p: Plan) -> Array:
    """Copy the windows of ``src`` into the reused columns buffer and return the buffer.

    channels-last: (n·OH·OW, width), each row (G, kH, kW, C/G) then the 1 of the bias column;
    channels-first: (width, n·OH·OW), rows (G, C/G, kH, kW) then a row of ones.
    """
    xp = xp_of(src)
    oh, ow = p.out_hw
    (sh, sw), (dh, dw) = p.stride, p.dilation
    nc, m = src.shape[0], src.shape[0] * oh * ow
    as_strided = xp.lib.stride_tricks.as_strided
    if p.channels_first:
        s_n, s_c, s_h, s_w = src.strides
        view = as_strided(src, (p.c, p.kh, p.kw, nc, oh, ow),
                          (s_c, dh * s_h, dw * s_w, s_n, sh * s_h, sw * s_w))
        buf = workspace.buffer("cols", (p.width, m), src.dtype, xp)
        buf[:p.width - p.bias_col].reshape(view.shape)[...] = view
        if p.bias_col:
            buf[-1] = 1
        return buf
    g, cg = p.groups, p.c // p.groups
    s_n, s_h, s_w, s_c = src.strides
    view = as_strided(src, (nc, oh, ow, g, p.kh, p.kw, cg),
                      (s_n, sh * s_h, sw * s_w, cg * s_c, dh * s_h, dw * s_w, s_c))
    buf = workspace.buffer("cols", (m, p.width), src.dtype, xp)
    e = buf.itemsize
    d = p.width
    target = as_strided(buf, view.shape, (oh * ow * d * e, ow * d * e, d * e, p.depth * e,
                                          p.kw * cg * e, cg * e, e))
    target[...] = view
    if p.bias_col:
        buf[:, -1] = 1
    return buf


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
        wm = xp.concatenate([wm, b.reshape(1, p.k, 1).astype(w.dtype)], axis=2)
    return wm


# ---------------------------------------------------------------------------------------------
# forward


def conv_forward(x: Array, w: Array, b: Array | None, stride: Pair, pads: Pads, dilation: Pair,
                 groups: int, out_hw: Pair, mode: str = "zeros") -> tuple[Array, tuple]:
    """y[n, k] = sum over (c, i, j) of w[k, c, i, j] · xpad[n, c, s·oh + d·i, s·ow + d·j] + b[k].

    x (N, C, H, W) in any memory layout, w (K, C/G, kH, kW), b (K,) or None -> y (N, K, OH, OW),
    a view of channels-last memory.  The cache holds x itself, not the columns.
    """
    xp = xp_of(x)
    p = make_plan(x, w, b is not None, stride, pads, dilation, groups, out_hw, mode)
    oh, ow = p.out_hw
    g, kg = p.groups, p.k // p.groups
    full = _padded_source(x, p)
    wm = _weight_matrix(w, b, p)
    y = xp.empty((p.n, oh, ow, p.k), dtype=x.dtype)
    y2 = y.reshape(p.n * oh * ow, p.k)
    nc = p.chunk(x.dtype.itemsize)
    for n0 in range(0, p.n, nc):
        n1 = min(p.n, n0 + nc)
        buf = _columns(_chunk_source(x, full, n0, n1, p), p)
        rows = y2[n0 * oh * ow:n1 * oh * ow]
        for gi in range(g):
            out = rows if g == 1 else rows[:, gi * kg:(gi + 1) * kg]
            xp.matmul(_group(buf, p, gi, True), wm[gi].T, out=out)
    if b is not None and not p.bias_col:
        y2 += b
    return y.transpose(0, 3, 1, 2), (x, full, wm, p)


# ---------------------------------------------------------------------------------------------
# backward


def _col2im(buf: Array, p: Plan, nc: int, dtype: Any) -> Array:
    """Backward of :func:`_columns` (dcols in ``buf``) into a zeroed padded buffer, by kH·kW
    strided slice-adds; returns (nc, C, Hp, Wp)."""
    xp = xp_of(buf)
    oh, ow = p.out_hw
    (sh, sw), (dh, dw) = p.stride, p.dilation
    hp, wp = p.padded_hw
    hs = [slice(i * dh, i * dh + sh * (oh - 1) + 1, sh) for i in range(p.kh)]
    ws = [slice(j * dw, j * dw + sw * (ow - 1) + 1, sw) for j in range(p.kw)]
    cdepth = p.c * p.kh * p.kw
    if p.channels_first:
        d6 = buf[:cdepth].reshape(p.c, p.kh, p.kw, nc, oh, ow)
        dx = workspace.buffer("dxpad", (p.c, nc, hp, wp), dtype, xp)
        dx[...] = 0
        for i in range(p.kh):
            for j in range(p.kw):
                dx[:, :, hs[i], ws[j]] += d6[:, i, j]
        return dx.transpose(1, 0, 2, 3)
    g, cg = p.groups, p.c // p.groups
    d7 = buf[:, :cdepth].reshape(nc, oh, ow, g, p.kh, p.kw, cg)
    dx = workspace.buffer("dxpad", (nc, hp, wp, g, cg), dtype, xp)
    dx[...] = 0
    for i in range(p.kh):
        for j in range(p.kw):
            dx[:, hs[i], ws[j]] += d7[:, :, :, :, i, j]
    return dx.reshape(nc, hp, wp, p.c).transpose(0, 3, 1, 2)


def _transposed_pads(p: Plan, full: bool) -> Pads | None:
    """Zero padding of dY that makes dx (or the padded dx if ``full``) a stride-1 convolution of
    dY with the flipped filters; None when the layer's padding exceeds the filter's span."""
    out = []
    for (before, after), k, d in zip(p.pads, (p.kh, p.kw), p.dilation):
        span = d * (k - 1)
        pair = (span, span) if full else (span - before, span - after)
        if min(pair) < 0:
            return None
        out.append(pair)
    return out[0], out[1]


def _input_grad_by_conv(dy: Array, w: Array, p: Plan) -> Array | None:
    """dx at stride 1 as a convolution: dxpad[u, v, c] = sum over (i, j, k) of
    dY[u - d·i, v - d·j, k] · w[k, c, i, j], i.e. dY correlated with w flipped in (i, j) and
    transposed in (k, c).  None when it does not apply (then col2im does the work)."""
    if p.stride != (1, 1) or p.channels_first:
        return None
    full = p.mode != "zeros"
    pads = _transposed_pads(p, full)
    if pads is None:
        return None
    g, kg, cg = p.groups, p.k // p.groups, p.c // p.groups
    wt = w.reshape(g, kg, cg, p.kh, p.kw).transpose(0, 2, 1, 3, 4)[..., ::-1, ::-1]
    wt = wt.reshape(p.c, kg, p.kh, p.kw)
    out_hw = p.padded_hw if full else (p.h, p.w)
    dx, _ = conv_forward(dy, wt, None, (1, 1), pads, p.dilation, g, out_hw)
    if full:
        from .functional import unpad2d  # noqa: PLC0415 - functional imports this module

        return unpad2d(dx, p.pads, (p.h, p.w), p.mode)
    return dx


def conv_backward(dy: Array, w: Array, cache: tuple, need_bias: bool = True,
                  need_dx: bool = True) -> tuple[Array | None, Array, Array | None]:
    """Gradients (dx, dw, db) of :func:`conv_forward` for dy (N, K, OH, OW) in any layout.

    dx (N, C, H, W), often a view of channels-last memory; None unless ``need_dx``.
    """
    x, full, wm, p = cache
    xp = xp_of(dy)
    oh, ow = p.out_hw
    g, kg = p.groups, p.k // p.groups
    dyl = dy.transpose(0, 2, 3, 1)  # (N, OH, OW, K)
    if not dyl.flags.c_contiguous:
        dyl = xp.ascontiguousarray(dyl)
    dy2 = dyl.reshape(p.n * oh * ow, p.k)

    # weights (and the bias through the ones column): dW = dYᵀ cols, chunk by chunk
    dwm = xp.empty_like(wm)
    nc = p.chunk(dy.dtype.itemsize)
    part = xp.empty_like(wm[0]) if nc < p.n else None
    dx = by_conv = None
    if need_dx:
        by_conv = _input_grad_by_conv(dyl.transpose(0, 3, 1, 2), w, p)
        if by_conv is None:
            dx = xp.empty((p.n, p.c, p.h, p.w), dtype=dy.dtype) if p.channels_first else \
                xp.empty((p.n, p.h, p.w, p.c), dtype=dy.dtype).transpose(0, 3, 1, 2)
            dxfull = None if full is None else xp.empty(full.shape, dtype=dy.dtype)
    for n0 in range(0, p.n, nc):
        n1 = min(p.n, n0 + nc)
        buf = _columns(_chunk_source(x, full, n0, n1, p), p)
        rows = dy2[n0 * oh * ow:n1 * oh * ow]
        for gi in range(g):
            dyg = rows if g == 1 else rows[:, gi * kg:(gi + 1) * kg]
            a = _group(buf, p, gi, True)
            if n0 == 0:
                xp.matmul(dyg.T, a, out=dwm[gi])
            else:
                xp.matmul(dyg.T, a, out=part)
                dwm[gi] += part
        if dx is None:
            continue
        for gi in range(g):  # dcols = dY W into the columns buffer (cols is done with)
            dyg = rows if g == 1 else rows[:, gi * kg:(gi + 1) * kg]
            xp.matmul(dyg, wm[gi, :, :p.depth], out=_group(buf, p, gi, False))
        dpad = _col2im(buf, p, n1 - n0, dy.dtype)
        if dxfull is not None:
            dxfull[n0:n1] = dpad
        else:
            (t, _), (l, _) = p.pads
            dx[n0:n1] = dpad[:, :, t:t + p.h, l:l + p.w]
    if dx is not None and dxfull is not None:
        from .functional import unpad2d  # noqa: PLC0415 - functional imports this module

        dx[...] = unpad2d(dxfull, p.pads, (p.h, p.w), p.mode)
    if by_conv is not None:
        dx = by_conv

    db = None
    if p.bias_col:
        db = dwm[0, :, -1].copy() if need_bias else None
        dwm = dwm[:, :, :-1]
    elif need_bias:
        db = dyl.reshape(p.n, oh * ow, p.k).sum(axis=1).sum(axis=0)
    if p.channels_first:
        dw = dwm.reshape(w.shape)
    else:
        dw = dwm.reshape(p.k, p.kh, p.kw, p.c // g).transpose(0, 3, 1, 2)
    return dx, dw, db
