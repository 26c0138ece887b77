"""Memory layout of (N, C, H, W) arrays: channels-first (NCHW memory) or channels-last (an NCHW
view of NHWC memory, as PyTorch's channels_last tensors), and arrays made in either layout.

A convolution with many filters returns channels-last memory; the layers after it keep that
layout rather than pay a transpose (see :mod:`convscope.ops.conv`).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .. import workspace
from ..runtime import xp_of

Array = Any


def channels_innermost(x: Array) -> bool:
    """Whether x (N, C, H, W) has its channels innermost in memory (also true when C = 1)."""
    s = x.strides
    return abs(s[1]) <= abs(s[3]) and abs(s[1]) <= abs(s[2])


def is_channels_last(x: Array) -> bool:
    """Whether x is 4-D (N, C, H, W) with C > 1 and its channels innermost in memory: the
    layout that arrays made from x should keep (any other array: False)."""
    return x.ndim == 4 and x.shape[1] > 1 and channels_innermost(x)


def empty(shape: tuple[int, ...], xp: Any, dtype: Any, channels_last: bool) -> Array:
    """An uninitialised (N, C, H, W) array, channels-last in memory or not, recycled when a
    free one of that shape exists (:func:`convscope.workspace.empty`)."""
    return workspace.empty(shape, dtype, xp, channels_last)


def in_layout(a: Array, channels_last: bool) -> Array:
    """a (N, C, H, W) itself if its memory is already in that layout, else a copy that is."""
    if a.shape[1] == 1 or is_channels_last(a) == channels_last and (
            channels_last or a.flags.c_contiguous):
        return a
    out = empty(a.shape, xp_of(a), a.dtype, channels_last)
    out[...] = a
    return out


def like(x: Array, dtype: Any = None) -> Array:
    """An uninitialised array shaped as x, in x's memory layout (4-D channels-last stays so),
    recycled when a free one exists."""
    cl = is_channels_last(x)
    return workspace.empty(x.shape, x.dtype if dtype is None else dtype, xp_of(x), cl)


WIDE_ROW = 1 << 16  # numbers per row of the per-channel view at most (one image's, if smaller)


def per_channel(op: str, a: Array, v: Array, out: Array) -> Array:
    """out = op(a, v[c]) for a (N, C, ...) and v (C,), ``op`` a ufunc's name ("add", ...).

    Channels-last memory is taken as rows of whole images, H·W·C numbers (or rows of W·C), with
    v tiled along the row: NumPy then runs its inner loop over a row, where broadcasting v over
    (N, C, H, W) runs it over the C channels of one pixel (3-4x slower at 16-32 channels).
    ``out`` may be ``a`` (in place)."""
    xp = xp_of(a)
    if (type(a) is np.ndarray and type(out) is np.ndarray and a.ndim == 4 and a.shape[1] > 1
            and out.shape == a.shape):
        n, c, h, w = a.shape
        nhwc, onhwc = a.transpose(0, 2, 3, 1), out.transpose(0, 2, 3, 1)
        if nhwc.flags.c_contiguous and onhwc.flags.c_contiguous and a.size:
            reps = h * w if h * w * c <= WIDE_ROW else w
            row = xp.tile(v.astype(a.dtype, copy=False), reps)
            getattr(xp, op)(nhwc.reshape(-1, row.size), row, out=onhwc.reshape(-1, row.size))
            return out
    getattr(xp, op)(a, v.reshape((1, -1) + (1,) * (a.ndim - 2)), out=out)
    return out
