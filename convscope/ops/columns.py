"""The columns of a convolution: the padded chunk of the batch, im2col into the reused buffer,
and the filters laid out to match (see :mod:`convscope.ops.conv` for the layouts and why).

``p`` is the call's :class:`convscope.ops.conv.Plan`.
"""

from __future__ import annotations

from typing import Any

from .. import workspace
from ..runtime import xp_of
from . import jit_conv, wide
from .conv_rows import strided, zero_border
from .padding import pad2d

Array = Any


def padded_source(x: Array, p: Any) -> Array | None:
    """The whole padded input for the non-zero padding modes, else None (zero padding is written
    chunk by chunk into a reused buffer)."""
    if p.mode == "zeros" or p.pads == ((0, 0), (0, 0)):
        return None
    return pad2d(x, p.pads, p.mode)


def chunk_source(x: Array, full: Array | None, n0: int, n1: int, p: Any) -> Array:
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
        zero_border(buf, 2, t, b, l, r)
        buf[:, :, t:t + p.h, l:l + p.w] = xc
    else:
        buf = workspace.buffer("xpad", (n1 - n0, hp, wp, p.c), x.dtype, xp)
        zero_border(buf, 1, t, b, l, r)
        buf[:, t:t + p.h, l:l + p.w, :] = xc.transpose(0, 2, 3, 1)
    return buf


def columns(src: Array, p: Any) -> Array:
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
        view = strided(src, (p.c, p.kh, p.kw, nc, oh, ow),
                        (s_c, dh * s_h, dw * s_w, s_n, sh * s_h, sw * s_w))
        buf = workspace.buffer("cols", (p.width, m), src.dtype, xp)
        buf[:p.width - p.bias_col].reshape(view.shape)[...] = view
        if p.bias_col:
            buf[-1] = 1
        return buf
    g, cg = p.groups, p.c // p.groups
    s_n, s_h, s_w, s_c = src.strides
    view = strided(src, (nc, oh, ow, g, p.kh, p.kw, cg),
                    (s_n, sh * s_h, sw * s_w, cg * s_c, dh * s_h, dw * s_w, s_c))
    buf = workspace.buffer("cols", (m, p.width), src.dtype, xp)
    e = buf.itemsize
    d = p.width
    target = strided(buf, view.shape, (oh * ow * d * e, ow * d * e, d * e, p.depth * e,
                                        p.kw * cg * e, cg * e, e))
    target[...] = view
    if p.bias_col:
        buf[:, -1] = 1
    return buf


def chunk_columns(x: Array, full: Array | None, n0: int, n1: int, p: Any) -> Array:
    """The columns of images n0:n1 in the reused buffer: :func:`columns` of the padded chunk,
    or channels-first at stride 1 the compiled copy where the kernels are on (:mod:`.jit_conv`),
    or the wide columns of a wide plan (:mod:`.wide`)."""
    src = chunk_source(x, full, n0, n1, p)
    if p.wide > 1:
        if src.strides[-1] != src.itemsize:  # a channels-first input: copied channels-last first
            buf = workspace.buffer("xpad", src.shape, x.dtype, xp_of(x))
            buf[...] = src
            src = buf
        return wide.columns(src, p)
    if p.channels_first:
        buf = workspace.buffer("cols", (p.width, src.shape[0] * p.out_hw[0] * p.out_hw[1]),
                               x.dtype, xp_of(x))
        if jit_conv.columns(src, p, buf):
            if p.bias_col:
                buf[-1] = 1
            return buf
    return columns(src, p)


def columns_view(buf: Array, p: Any, gi: int, with_bias: bool) -> Array:
    """Group gi's (M, depth) matrix of a columns buffer, with the ones column if asked."""
    lo, hi = gi * p.depth, (gi + 1) * p.depth + (with_bias and p.bias_col)
    return buf[lo:hi].T if p.channels_first else buf[:, lo:hi]


def weight_matrix(w: Array, b: Array | None, p: Any) -> Array:
    """Filters as (G, K/G, depth [+ 1]), depth ordered as the columns, the bias last; for a
    wide plan (1, P·K, wide width) (:func:`.wide.weight_matrix`)."""
    xp = xp_of(w)
    if p.wide > 1:
        return wide.weight_matrix(w, b, p)[None]
    g = p.groups
    wm = w if p.channels_first else w.transpose(0, 2, 3, 1)
    wm = xp.ascontiguousarray(wm).reshape(g, p.k // g, p.depth)
    if p.bias_col:
        wm = xp.concatenate([wm, b.reshape(1, p.k, 1).astype(w.dtype, copy=False)], axis=2)
    return wm


def dy_matrix(dy: Array) -> Array:
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
