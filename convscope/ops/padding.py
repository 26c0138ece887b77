"""Padding an (N, C, H, W) batch on H and W, its gradient, and the padding modes' names.

The four modes, each pixel p of the padded border a copy of one input pixel (or zero):
zeros (0), reflect (mirrored about the edge pixel, which is not repeated), replicate (the edge
pixel), circular (the image wraps around).  :data:`PAD_MODES` is the one table of what NumPy,
ONNX and PyTorch call them.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from ..runtime import xp_of
from ..shapes import Pads, Pair
from .layout import empty, is_channels_last

Array = Any


class PadModeNames(NamedTuple):
    """One padding mode's name in each library."""

    numpy: str  # np.pad(mode=)
    onnx: str  # the Pad operator's mode attribute
    torch: str  # torch.nn.functional.pad(mode=); nn.Conv2d(padding_mode=) takes convscope's name


PAD_MODES: dict[str, PadModeNames] = {
    "zeros": PadModeNames("constant", "constant", "constant"),
    "reflect": PadModeNames("reflect", "reflect", "reflect"),
    "replicate": PadModeNames("edge", "edge", "replicate"),
    "circular": PadModeNames("wrap", "wrap", "circular"),
}
PADDING_MODES = tuple(PAD_MODES)  # Conv2D's padding_mode values


def padding_mode_from(library: str, name: str) -> str:
    """convscope's mode for a library's name of it, e.g. ("onnx", "edge") -> "replicate"."""
    if library not in PadModeNames._fields:
        raise ValueError(f"library must be one of {', '.join(PadModeNames._fields)}, got {library!r}")
    names = {getattr(m, library): mode for mode, m in PAD_MODES.items()}
    if name not in names:
        raise ValueError(f"{library} padding mode {name!r} has no convscope equivalent; "
                         f"supported: {', '.join(names)}")
    return names[name]


def pad2d(x: Array, pads: Pads, mode: str = "zeros", value: float = 0.0) -> Array:
    """(N, C, H, W) -> (N, C, H + t + b, W + l + r), filled by ``mode`` (zeros/reflect/replicate/circular)."""
    if pads == ((0, 0), (0, 0)):
        return x
    xp = xp_of(x)
    width = ((0, 0), (0, 0), tuple(pads[0]), tuple(pads[1]))
    if mode == "zeros":
        return xp.pad(x, width, mode="constant", constant_values=value)
    return xp.pad(x, width, mode=PAD_MODES[mode].numpy)


def _fold_axis(g: Array, axis: int, before: int, after: int, n: int, mode: str) -> Array:
    """Gradient of padding one axis: the border copies add back onto the pixels they copied."""
    xp = xp_of(g)
    g = xp.moveaxis(g, axis, -1)
    out = g[..., before:before + n].copy()
    lo, hi = g[..., :before], g[..., before + n:]
    if mode == "circular":  # the left pad copies the last `before` pixels, the right the first
        out[..., n - before:] += lo
        out[..., :after] += hi
    elif mode == "replicate":  # every pad pixel copies the edge pixel
        out[..., 0] += lo.sum(-1)
        out[..., n - 1] += hi.sum(-1)
    elif mode == "reflect":  # pad pixel i mirrors x[before - i]; right pad j mirrors x[n - 2 - j]
        out[..., 1:before + 1] += lo[..., ::-1]
        out[..., n - 1 - after:n - 1] += hi[..., ::-1]
    return xp.moveaxis(out, -1, axis)


def unpad2d(g: Array, pads: Pads, hw: Pair, mode: str = "zeros") -> Array:
    """Backward of :func:`pad2d`: (N, C, Hp, Wp) gradient -> (N, C, H, W)."""
    (t, b), (l, r) = pads
    if mode == "zeros":
        return g[:, :, t:t + hw[0], l:l + hw[1]]
    g = _fold_axis(g, 2, t, b, hw[0], mode)
    return _fold_axis(g, 3, l, r, hw[1], mode)


def pad_keep_layout(x: Array, pads: Pads, value: float) -> Array:
    """Constant padding like :func:`pad2d`, keeping x's memory layout (channels-last stays so)."""
    if pads == ((0, 0), (0, 0)):
        return x
    (t, b), (l, r) = pads
    n, c, h, w = x.shape
    out = empty((n, c, h + t + b, w + l + r), xp_of(x), x.dtype, is_channels_last(x))
    out[...] = value
    out[:, :, t:t + h, l:l + w] = x
    return out
