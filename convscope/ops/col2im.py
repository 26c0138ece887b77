"""col2im: the input gradient of a convolution as kH·kW strided slice-adds of dcols = dY W.

The fallback of :mod:`convscope.ops.conv` for strides, groups and padding beyond the filter's
reach (at stride 1 it computes dx as a convolution of dY with the flipped filters instead).
Every add is clipped to the image: gradients that land in the zero padding are dropped.
"""

from __future__ import annotations

from typing import Any

from .. import workspace
from ..runtime import xp_of
from ..shapes import Pair
from . import jit_conv

Array = Any


def tap_ranges(out: int, taps: int, stride: int, dilation: int, offset: int, size: int
                ) -> list[tuple[slice, slice] | None]:
    """For each tap i along one axis: (output slice, target slice) of the outputs whose input
    o·stride + i·dilation - offset lands inside [0, size); None when none does (padding only)."""
    ranges = []
    for i in range(taps):
        a = i * dilation - offset  # output o reads input o·stride + a
        lo = max(0, -(a // stride))  # ceil(-a / stride)
        hi = min(out, (size - 1 - a) // stride + 1)
        if hi <= lo:
            ranges.append(None)
            continue
        start = lo * stride + a
        ranges.append((slice(lo, hi), slice(start, start + (hi - lo - 1) * stride + 1, stride)))
    return ranges


def input_grad_chunk(dyt: Array, wm: Array, p: Any, target: Array, offset: Pair) -> None:
    """Add one chunk's input gradient into ``target`` (nc, C, T_h, T_w), zeroed by the caller,
    whose pixel (0, 0) is (offset) in the padded input; dY of the chunk is a (K, nc·OH·OW)
    matrix.  Gradients that land in the padding are dropped (zero padding), so the target is
    dx itself, or the padded dx for the other padding modes.  ``p``: the call's
    :class:`convscope.ops.conv.Plan`.

    dcols = dY W in one GEMM per group, then col2im: kH·kW strided slice-adds (never
    np.add.at), or one compiled loop (:mod:`.jit_conv`: channels-last columns, and channels-first
    ones at stride 1) where the kernels are on.  (Computing dcols tap by tap, kH·kW GEMMs, made
    the adds faster on an idle machine but each GEMM a point where the two BLAS threads wait for
    each other: on a machine shared with other work that cost 10x.)
    """
    xp = xp_of(dyt)
    dtype = dyt.dtype
    nc = target.shape[0]
    oh, ow = p.out_hw
    g, kg, cg = p.groups, p.k // p.groups, p.c // p.groups
    m = nc * oh * ow
    rows = tap_ranges(oh, p.kh, p.stride[0], p.dilation[0], offset[0], target.shape[2])
    cols = tap_ranges(ow, p.kw, p.stride[1], p.dilation[1], offset[1], target.shape[3])
    if p.channels_first:
        dcols = workspace.buffer("cols", (g, p.depth, m), dtype, xp)
        for gi in range(g):
            xp.matmul(wm[gi, :, :p.depth].T, dyt[gi * kg:(gi + 1) * kg], out=dcols[gi])
        d6 = dcols.reshape(p.c, p.kh, p.kw, nc, oh, ow)
        if jit_conv.col2im_first(d6, p, target, offset):
            return
        dst = target.transpose(1, 0, 2, 3)  # (C, nc, T_h, T_w)
        for i, r in enumerate(rows):
            for j, c in enumerate(cols):
                if r is not None and c is not None:
                    dst[:, :, r[1], c[1]] += d6[:, i, j, :, r[0], c[0]]
        return
    dcols = workspace.buffer("cols", (m, p.depth), dtype, xp)
    d6 = dcols.reshape(nc, oh, ow, p.kh, p.kw, cg)
    dst = target.transpose(0, 2, 3, 1)  # (nc, T_h, T_w, C)
    for gi in range(g):
        xp.matmul(dyt[gi * kg:(gi + 1) * kg].T, wm[gi, :, :p.depth], out=dcols)
        if jit_conv.col2im(d6, rows, cols, p.stride, dst, gi * cg):
            continue
        chans = slice(gi * cg, (gi + 1) * cg)
        for i, r in enumerate(rows):
            for j, c in enumerate(cols):
                if r is not None and c is not None:
                    dst[:, r[1], c[1], chans] += d6[:, r[0], c[0], i, j]
