"""Row-flat columns: the convolution of few channels-first channels at stride 1, shifted rows.

At stride 1, filter tap (i, j) of every output position in image row oh is the input row
oh + d·i read from column d·j on: one run of Wp numbers of the padded input (N, C, Hp, Wp), and
a run of OH·Wp numbers for the whole image when the windows are let wrap into the next row.  So
the columns are taken over the *width-padded* grid of positions (oh, w'), w' < Wp instead of
ow < OW::

    cols[(c, i, j), (n, oh, w')] = xpad_flat[n, c, (oh + dh·i)·Wp + w' + dw·j]

each (c, i, j, n) row one contiguous copy of OH·Wp numbers, where im2col copies runs of OW
(8 numbers for a 12x12 image and a 5x5 filter: 4x slower).  The positions w' >= OW are wrapped
garbage: the forward drops them; the backward puts dY = 0 there, so they add nothing to dW and
only zeros to dx.  The price is a GEMM Wp / OW times wider (1.14 for 32x32 and 5x5, 1.5 for
12x12), paid back by the copy and by the input gradient: col2im becomes kH·kW adds of whole
OH·Wp runs into the flat padded dx, where im2col's col2im adds runs of OW.

The helpers :func:`strided` and :func:`zero_border` are shared with :mod:`convscope.ops.conv`.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from .. import workspace
from ..runtime import xp_of

Array = Any


def strided(a: Array, shape: tuple[int, ...], strides: tuple[int, ...], offset: int = 0) -> Array:
    """A strided view of a from element ``offset`` on (NumPy's as_strided is ten times slower on
    a C-contiguous NumPy array: small batches spend their time in such overheads)."""
    if type(a) is np.ndarray and a.flags.c_contiguous:
        return np.ndarray(shape, a.dtype, a, offset * a.itemsize, strides)
    src = a if offset == 0 else a.reshape(-1)[offset:]  # offsets only into flat buffers
    return xp_of(a).lib.stride_tricks.as_strided(src, shape, strides)


def zero_border(buf: Array, hax: int, t: int, b: int, l: int, r: int) -> None:
    """Zero the padding rows and columns of a padded buffer (H on axis hax, W on hax + 1)."""
    lead = (slice(None),) * hax
    hp, wp = buf.shape[hax], buf.shape[hax + 1]
    for lo, hi in ((0, t), (hp - b, hp)):
        if hi > lo:
            buf[lead + (slice(lo, hi),)] = 0
    for lo, hi in ((0, l), (wp - r, wp)):
        if hi > lo:
            buf[lead + (slice(None), slice(lo, hi))] = 0


def slack(p: Any) -> int:
    """Numbers read past the last image by the wrapped windows of the last row."""
    return p.dilation[1] * (p.kw - 1)


def padded_rows(x: Array, full: Array | None, n0: int, n1: int, p: Any) -> Array:
    """Images n0:n1 padded, flat (nc·C·Hp·Wp + slack) in a reused buffer (the slack zeroed)."""
    xp = xp_of(x)
    nc = n1 - n0
    (t, b), (l, r) = p.pads
    hp, wp = p.padded_hw
    size = nc * p.c * hp * wp
    flat = workspace.buffer("xrows", (size + slack(p),), x.dtype, xp)
    img = flat[:size].reshape(nc, p.c, hp, wp)
    if full is not None:
        img[...] = full[n0:n1]
    else:
        zero_border(img, 2, t, b, l, r)
        img[:, :, t:t + p.h, l:l + p.w] = x[n0:n1]
    flat[size:] = 0
    return flat


def row_columns(flat: Array, nc: int, p: Any) -> Array:
    """The (width, nc·OH·Wp) columns of :func:`padded_rows` (rows (c, i, j), then the ones)."""
    hp, wp = p.padded_hw
    oh = p.out_hw[0]
    (dh, dw), e = p.dilation, flat.itemsize
    view = strided(flat, (p.c, p.kh, p.kw, nc, oh * wp),
                   (hp * wp * e, dh * wp * e, dw * e, p.c * hp * wp * e, e))
    buf = workspace.buffer("cols", (p.width, nc * oh * wp), flat.dtype, xp_of(flat))
    buf[:p.width - p.bias_col].reshape(view.shape)[...] = view
    if p.bias_col:
        buf[-1] = 1
    return buf


def forward_rows(x: Array, full: Array | None, wm: Array, p: Any, y: Array,
                 starts: Sequence[int], nc: int) -> None:
    """y from the row-flat columns, for the chunks of ``nc`` images from ``starts``: one GEMM
    per group, then the first OW of every Wp positions copied into y, (N, OH, OW, K) memory if
    ``p.out_channels_last`` (the GEMM (nc·OH·Wp, width) @ (width, K)), else (N, K, OH, OW)
    ((K, width) @ (width, nc·OH·Wp))."""
    xp = xp_of(x)
    oh, ow = p.out_hw
    wp = p.padded_hw[1]
    g, kg = p.groups, p.k // p.groups
    for n0 in starts:
        n1 = min(p.n, n0 + nc)
        m = (n1 - n0) * oh * wp
        buf = row_columns(padded_rows(x, full, n0, n1, p), n1 - n0, p)
        cl = p.out_channels_last
        yt = workspace.buffer("yt", (m, p.k) if cl else (p.k, m), x.dtype, xp)
        for gi in range(g):
            lo, hi = gi * p.depth, (gi + 1) * p.depth + p.bias_col
            ks = slice(gi * kg, (gi + 1) * kg)
            if cl:
                xp.matmul(buf[lo:hi].T, wm[gi].T, out=yt[:, ks])
            else:
                xp.matmul(wm[gi], buf[lo:hi], out=yt[ks])
        if cl:
            y[n0:n1] = yt.reshape(n1 - n0, oh, wp, p.k)[:, :, :ow]
        else:
            y[n0:n1] = yt.reshape(p.k, n1 - n0, oh, wp)[..., :ow].transpose(1, 0, 2, 3)


def backward_rows(dy: Array, x: Array, full: Array | None, wm: Array, p: Any,
                  target: Array | None, starts: Sequence[int], nc: int) -> Array:
    """dW (G, K/G, width) of the chunks of ``nc`` images from ``starts``, returned; with
    ``target`` (N, C, H, W) their input gradient (or (N, C, Hp, Wp) the padded one, for the
    non-zero padding modes) written into it.

    Chunk by chunk: dY into a (K, nc, OH, Wp) buffer, zero past OW; dW += dY colsᵀ; dcols =
    Wᵀ dY; kH·kW adds of (C, nc, OH·Wp) runs into the flat padded dx; its interior to target.
    """
    xp = xp_of(dy)
    dtype = dy.dtype
    oh, ow = p.out_hw
    hp, wp = p.padded_hw
    (t, _), (l, _) = p.pads
    (dh, dw), e = p.dilation, np.dtype(dtype).itemsize
    g, kg = p.groups, p.k // p.groups
    dwm = xp.zeros_like(wm)
    part = xp.empty_like(wm[0])
    for n0 in starts:
        n1 = min(p.n, n0 + nc)
        c_n = n1 - n0
        m = c_n * oh * wp
        buf = row_columns(padded_rows(x, full, n0, n1, p), c_n, p)
        dyw = workspace.buffer("dyrows", (p.k, c_n, oh, wp), dtype, xp)
        dyw[..., ow:] = 0
        dyw[..., :ow] = dy[n0:n1].transpose(1, 0, 2, 3)
        dy2 = dyw.reshape(p.k, m)
        for gi in range(g):
            lo, hi = gi * p.depth, (gi + 1) * p.depth + p.bias_col
            xp.matmul(dy2[gi * kg:(gi + 1) * kg], buf[lo:hi].T, out=part)
            dwm[gi] += part
        if target is None:
            continue
        dcols = workspace.buffer("cols", (p.c * p.kh * p.kw, m), dtype, xp)
        cg = p.c // g
        for gi in range(g):
            rows = slice(gi * cg * p.kh * p.kw, (gi + 1) * cg * p.kh * p.kw)
            xp.matmul(wm[gi, :, :p.depth].T, dy2[gi * kg:(gi + 1) * kg], out=dcols[rows])
        size = c_n * p.c * hp * wp
        dflat = workspace.buffer("dxrows", (size + slack(p),), dtype, xp)
        dflat[...] = 0
        d5 = dcols.reshape(p.c, p.kh, p.kw, c_n, oh * wp)
        for i in range(p.kh):
            for j in range(p.kw):
                dst = strided(dflat, (p.c, c_n, oh * wp), (hp * wp * e, p.c * hp * wp * e, e),
                              dh * i * wp + dw * j)
                dst += d5[:, i, j]
        dimg = dflat[:size].reshape(c_n, p.c, hp, wp)
        if target.shape[2:] == (hp, wp):
            target[n0:n1] = dimg
        else:
            target[n0:n1] = dimg[:, :, t:t + p.h, l:l + p.w]
    return dwm
