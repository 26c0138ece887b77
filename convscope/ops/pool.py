"""Max and average pooling over kH x kW windows, NCHW, in the input's memory layout.

Both are kH·kW whole-array operations on the strided tap views of the padded input
(:mod:`convscope.ops.windows`), never a loop over pixels; their backward passes spread each
tap's gradient back onto its view.  Sizes follow PyTorch, ceil_mode included: a window that
reaches past the padding is filled (never wins a max, never counted in an average).
"""

from __future__ import annotations

from typing import Any

from ..runtime import xp_of
from ..shapes import Pads, Pair
from . import jit_pool
from .layout import empty, in_layout, is_channels_last
from .padding import pad_keep_layout
from .windows import tap_views

Array = Any


def _pool_pads(hw: Pair, kernel: Pair, stride: Pair, pads: Pads, dilation: Pair, out_hw: Pair) -> Pads:
    """Padding plus what a ceil_mode window reaches past the padded input (filled, never counted)."""
    extra = [max(0, (o - 1) * s + d * (k - 1) + 1 - (n + p[0] + p[1]))
             for n, k, s, p, d, o in zip(hw, kernel, stride, pads, dilation, out_hw)]
    return (pads[0][0], pads[0][1] + extra[0]), (pads[1][0], pads[1][1] + extra[1])


def _first_max_masks(taps: list[Array], y: Array) -> list[Array]:
    """One boolean mask per tap, True where that tap is the window's first maximum (PyTorch's
    rule); a window holding NaN (y is NaN there) picks its last NaN, as PyTorch's CPU kernel."""
    xp = xp_of(y)
    masks: list[Array] = []
    taken = None
    cl = is_channels_last(y)
    for tap in taps:
        m = xp.equal(tap, y, out=empty(y.shape, xp, bool, cl))
        if taken is None:
            taken = empty(y.shape, xp, bool, cl)
            taken[...] = m
        else:
            xp.greater(m, taken, out=m)  # m and not taken
            xp.logical_or(taken, m, out=taken)
        masks.append(m)
    if not taken.all():  # only NaN windows match no tap
        left = ~taken
        for t in reversed(range(len(taps))):
            hit = xp.isnan(taps[t]) & left
            masks[t] |= hit
            left &= ~hit
    return masks


def _spread(parts: list[Array], like: Array, channels_last: bool, padded_shape: tuple[int, ...],
            full: Pads, kernel: Pair, stride: Pair, dilation: Pair, out_hw: Pair) -> Array:
    """Backward of :func:`tap_views`: tap t's gradient ``parts[t](out)`` (a function writing it into
    ``out``) goes back to its strided view of the padded input; returns the unpadded (N, C, H, W),
    of ``like``'s dtype, channels-last in memory if asked (as the forward input was).

    Windows that do not overlap are written directly (no zero fill when they tile the input);
    overlapping ones are added."""
    xp = xp_of(like)
    dsrc = empty(padded_shape, xp, like.dtype, channels_last)
    views = tap_views(dsrc, kernel, stride, dilation, out_hw)
    spans = [d * (k - 1) + 1 for k, d in zip(kernel, dilation)]
    disjoint = all(s >= e for s, e in zip(stride, spans))
    tiled = disjoint and all(d == 1 and s == k and o * s == n for s, k, d, o, n
                             in zip(stride, kernel, dilation, out_hw, padded_shape[2:]))
    if not tiled:
        dsrc[...] = 0
    tmp = None if disjoint else xp.empty(views[0].shape, dtype=like.dtype)
    for view, part in zip(views, parts):
        if disjoint:
            part(view)
        else:
            part(tmp)
            view += tmp
    if full == ((0, 0), (0, 0)):
        return dsrc
    (t, b), (l, r) = full
    return dsrc[:, :, t:padded_shape[2] - b, l:padded_shape[3] - r]


def maxpool2d_forward(x: Array, kernel: Pair, stride: Pair, pads: Pads, dilation: Pair,
                      out_hw: Pair, keep: bool = True) -> tuple[Array, tuple | None]:
    """y[n, c, oh, ow] = max of the kH x kW window at (s·oh, s·ow); padding is -inf (never wins).

    x (N, C, H, W) -> y (N, C, OH, OW) in x's memory layout: a running np.maximum over the kH·kW
    strided views (no stacked copy).  With ``keep``, the cache holds one boolean mask per tap
    marking each window's first maximum (1 byte per output per tap).  With the compiled kernels
    turned on (:mod:`.jit_pool`): one sweep, and the cache holds the winning tap's index.
    """
    xp = xp_of(x)
    y = empty(x.shape[:2] + tuple(out_hw), xp, x.dtype, is_channels_last(x))
    compiled = jit_pool.maxpool_forward(x, kernel, stride, pads, dilation, y)
    if compiled is not None:
        return y, (("compiled", compiled) if keep else None)
    full = _pool_pads(x.shape[2:], kernel, stride, pads, dilation, out_hw)
    src = pad_keep_layout(x, full, -xp.inf)
    taps = tap_views(src, kernel, stride, dilation, out_hw)
    if len(taps) == 1:
        y[...] = taps[0]
    else:
        xp.maximum(taps[0], taps[1], out=y)
        for tap in taps[2:]:
            xp.maximum(y, tap, out=y)
    if not keep:
        return y, None
    return y, (_first_max_masks(taps, y), is_channels_last(x), src.shape, full, kernel, stride,
               dilation, out_hw)


def maxpool2d_backward(dy: Array, cache: tuple) -> Array:
    """The gradient flows to the one input that won each window: dx = sum over taps of
    mask_t · dy, placed at tap t's positions."""
    xp = xp_of(dy)
    if isinstance(cache[0], str):  # ("compiled", the kernel's cache)
        return jit_pool.maxpool_backward(dy, cache[1])
    masks, channels_last, padded_shape, full, kernel, stride, dilation, out_hw = cache
    dy = in_layout(dy, channels_last)  # one copy beats kH·kW multiplies across layouts
    parts = [lambda out, m=m: xp.multiply(dy, m, out=out) for m in masks]
    return _spread(parts, dy, channels_last, padded_shape, full, kernel, stride, dilation, out_hw)


def avgpool_divisor(hw: Pair, kernel: Pair, stride: Pair, pads: Pads, out_hw: Pair,
                    count_include_pad: bool, xp: Any, dtype: Any) -> Array:
    """Window sizes (OH, OW) to divide by: padding counts (PyTorch's default) unless told not to;
    the part of a ceil_mode window past the padding never counts."""
    sizes = []
    for n, k, s, p, o in zip(hw, kernel, stride, pads, out_hw):
        start = xp.arange(o) * s - p[0]
        end = xp.minimum(start + k, n + p[1])
        if not count_include_pad:
            start, end = xp.maximum(start, 0), xp.minimum(end, n)
        sizes.append((end - start).astype(dtype))
    return sizes[0][:, None] * sizes[1][None, :]


def avgpool2d_forward(x: Array, kernel: Pair, stride: Pair, pads: Pads, out_hw: Pair,
                      count_include_pad: bool = True) -> tuple[Array, tuple]:
    """y[n, c, oh, ow] = sum of the window / its size: x (N, C, H, W) -> y (N, C, OH, OW)."""
    xp = xp_of(x)
    one = (1, 1)
    full = _pool_pads(x.shape[2:], kernel, stride, pads, one, out_hw)
    src = pad_keep_layout(x, full, 0.0)
    taps = tap_views(src, kernel, stride, one, out_hw)
    y = taps[0] + taps[1] if len(taps) > 1 else taps[0].copy(order="K")
    for tap in taps[2:]:
        y += tap
    div = avgpool_divisor(x.shape[2:], kernel, stride, pads, out_hw, count_include_pad, xp, x.dtype)
    y /= div
    return y, (div, is_channels_last(x), src.shape, full, kernel, stride, out_hw)


def avgpool2d_backward(dy: Array, cache: tuple) -> Array:
    """Each input in a window gets dy / window size."""
    xp = xp_of(dy)
    div, channels_last, padded_shape, full, kernel, stride, out_hw = cache
    g = in_layout(dy, channels_last) / div
    parts = [lambda out: xp.copyto(out, g)] * (kernel[0] * kernel[1])
    return _spread(parts, dy, channels_last, padded_shape, full, kernel, stride, (1, 1), out_hw)
