"""Memory layout of (N, C, H, W) arrays: channels-first (NCHW memory) or channels-last (an NCHW
view of NHWC memory, as PyTorch's channels_last tensors), and arrays made in either layout.

A convolution with many filters returns channels-last memory; the layers after it keep that
layout rather than pay a transpose (see :mod:`convscope.ops.conv`).
"""

from __future__ import annotations

from typing import Any

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
