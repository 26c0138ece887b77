"""The lecture's arithmetic as plain functions: output sizes, padding, parameter counts.

Output side of a convolution or pooling window (CS231n, lecture 5):

    out = (N - F_eff + P_before + P_after) / S + 1,      F_eff = D·(F - 1) + 1

with N the input side, F the filter side, D the dilation, P the zero padding and S the stride.
A 7x7 input with a 3x3 filter gives 5x5 at stride 1, 3x3 at stride 2, and at stride 3
(7 - 3) / 3 + 1 = 2.33: the stride does not fit.  ``fit="floor"`` drops what the stride does not
reach (PyTorch's rule); ``fit="error"`` raises :class:`ShapeError` with that arithmetic.

Every layer computes its sizes through these functions; nothing recomputes the formula elsewhere.
"""

from __future__ import annotations

from typing import Sequence, Union

from .errors import ShapeError

Pair = tuple[int, int]
IntOrPair = Union[int, Sequence[int]]
Pads = tuple[Pair, Pair]  # ((top, bottom), (left, right))
FITS = ("floor", "error")


def _is_int(v: object) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) or type(v).__name__ in ("int64", "int32")


def pair(value: IntOrPair, name: str, minimum: int = 1) -> Pair:
    """``3`` -> ``(3, 3)``; ``(3, 5)`` stays; anything else, or a value below ``minimum``, raises."""
    if _is_int(value):
        out = (int(value), int(value))  # type: ignore[arg-type]
    elif isinstance(value, (tuple, list)) and len(value) == 2 and all(_is_int(v) for v in value):
        out = (int(value[0]), int(value[1]))
    else:
        raise ValueError(f"{name} must be an int or a pair of ints, got {value!r}")
    if min(out) < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value!r}")
    return out


def effective_kernel(kernel_size: int, dilation: int = 1) -> int:
    """Side of the input a dilated filter spans: D·(F - 1) + 1."""
    return dilation * (kernel_size - 1) + 1


def same_padding(kernel_size: int, dilation: int = 1) -> Pair:
    """Zero padding (before, after) that keeps the size at stride 1: P = D·(F - 1) / 2.

    F=3 -> (1, 1), F=5 -> (2, 2), F=7 -> (3, 3); an even filter pads one more after (PyTorch's rule).
    """
    total = dilation * (kernel_size - 1)
    return total // 2, total - total // 2


def check_fit(fit: str) -> str:
    """Validate the ``fit`` option."""
    if fit not in FITS:
        raise ValueError(f"fit must be one of {FITS}, got {fit!r}")
    return fit


def normalize_padding(padding: object, kernel_size: Pair, dilation: Pair = (1, 1),
                      stride: Pair = (1, 1)) -> Pads:
    """Padding as ``((top, bottom), (left, right))`` from an int, a pair, 'same' or 'valid'.

    ``((t, b), (l, r))`` is accepted as is, for asymmetric padding.
    """
    if padding == "valid":
        return (0, 0), (0, 0)
    if padding == "same":
        if stride != (1, 1):
            raise ValueError(f"padding='same' keeps the size only at stride 1, got stride {stride}; "
                             "give the padding as numbers instead")
        return (same_padding(kernel_size[0], dilation[0]), same_padding(kernel_size[1], dilation[1]))
    if isinstance(padding, str):
        raise ValueError(f"padding must be an int, a pair, 'same' or 'valid', got {padding!r}")
    if (isinstance(padding, (tuple, list)) and len(padding) == 2
            and all(isinstance(p, (tuple, list)) for p in padding)):
        pads = (pair(tuple(padding[0]), "padding", 0), pair(tuple(padding[1]), "padding", 0))
        return pads
    ph, pw = pair(padding, "padding", minimum=0)  # type: ignore[arg-type]
    return (ph, ph), (pw, pw)


def _fmt(v: float) -> str:
    return f"{v:g}" if float(v).is_integer() else f"{v:.2f}"


def size_formula(n: int, kernel_size: int, stride: int = 1, padding: Pair = (0, 0),
                 dilation: int = 1, always_pad: bool = False) -> str:
    """The lecture's formula filled in: ``(7 - 3 + 2·1) / 1 + 1 = 7``.

    A zero padding is left out unless ``always_pad``: ``(32 - 5 + 2·0) / 1 + 1 = 28``.
    """
    f = effective_kernel(kernel_size, dilation)
    pb, pa = padding
    pad = "" if pb == pa == 0 and not always_pad else (
        f" + 2·{pb}" if pb == pa else f" + {pb} + {pa}")
    value = (n - f + pb + pa) / stride + 1
    return f"({n} - {f}{pad}) / {stride} + 1 = {_fmt(value)}"


def _join(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " or " + items[-1]


def _fixes(n: int, kernel_size: int, stride: int, padding: Pair, dilation: int) -> str:
    """What would fit instead: strides up to the filter size, and the nearest extra padding."""
    f = effective_kernel(kernel_size, dilation)
    span = n + padding[0] + padding[1] - f
    strides = [str(s) for s in range(1, f + 1) if s != stride and span % s == 0]
    parts = [f"stride {_join(strides)} fits"] if strides else []
    more = "" if padding == (0, 0) else " more"
    extra = next((p for p in range(1, stride + 1) if (span + 2 * p) % stride == 0), None)
    if extra is not None:
        parts.append(f"pad by {extra}{more}")
    else:
        parts.append(f"pad by {stride - span % stride}{more} on one side")
    return ", or ".join(parts)


def _check_window(n: int, kernel_size: int, padding: Pair, dilation: int, what: str) -> None:
    f = effective_kernel(kernel_size, dilation)
    padded = n + padding[0] + padding[1]
    if padded < f:
        dil = f" (dilation {dilation} spans {f})" if dilation != 1 else ""
        got = f"input {n}" + (f" padded to {padded}" if padded != n else "")
        raise ShapeError(f"{what}: {got} is smaller than the filter "
                         f"{kernel_size}{dil}; the input needs at least {f - padding[0] - padding[1]}"
                         f" or a padding of {(f - n + 1) // 2} on each side")


def _out(n: int, kernel_size: int, stride: int, padding: Pair, dilation: int,
         ceil_mode: bool) -> tuple[int, bool]:
    """(output side, whether the stride fits exactly)."""
    span = n + padding[0] + padding[1] - effective_kernel(kernel_size, dilation)
    q, r = divmod(span, stride)
    out = q + 1
    if ceil_mode and r:
        out += 1
        if (out - 1) * stride >= n + padding[0]:  # the last window must start inside input+pad
            out -= 1
    return out, r == 0


def conv_output_size(n: int, kernel_size: int, stride: int = 1, padding: int | Pair = 0,
                     dilation: int = 1, fit: str = "floor", ceil_mode: bool = False) -> int:
    """Output side (N - F_eff + 2P) / S + 1 along one axis.

    >>> conv_output_size(7, 3, stride=2)
    3
    ``fit="error"`` raises :class:`ShapeError` where the stride does not fit; ``ceil_mode`` keeps a
    last partial window (pooling).
    """
    check_fit(fit)
    for name, v, lo in (("input size", n, 1), ("kernel_size", kernel_size, 1),
                        ("stride", stride, 1), ("dilation", dilation, 1)):
        if not _is_int(v) or v < lo:
            raise ValueError(f"{name} must be an int >= {lo}, got {v!r}")
    pads = (padding, padding) if _is_int(padding) else tuple(padding)  # type: ignore[arg-type]
    if min(pads) < 0:
        raise ValueError(f"padding must be >= 0, got {padding!r}")
    _check_window(n, kernel_size, pads, dilation, "conv")  # type: ignore[arg-type]
    out, exact = _out(n, kernel_size, stride, pads, dilation, ceil_mode)  # type: ignore[arg-type]
    if not exact and fit == "error" and not ceil_mode:
        raise ShapeError(f"input {n}, filter {kernel_size}, stride {stride}: "
                         f"{size_formula(n, kernel_size, stride, pads, dilation)} is not a whole "
                         f"number; {_fixes(n, kernel_size, stride, pads, dilation)}")  # type: ignore[arg-type]
    return out


def conv_output_shape(hw: Pair, kernel_size: Pair, stride: Pair = (1, 1),
                      padding: Pads = ((0, 0), (0, 0)), dilation: Pair = (1, 1), fit: str = "floor",
                      ceil_mode: bool = False, what: str = "Conv2D") -> Pair:
    """Output (height, width) of a 2-D window; the message of a misfit describes both axes.

    E.g. "7x7 input, 3x3 filter, stride 3: (7 - 3) / 3 + 1 = 2.33 is not a whole number;
    stride 1 or 2 fits, or pad by 1".
    """
    check_fit(fit)
    outs, bad = [], []
    for axis, name in enumerate(("height", "width")):
        n, k, s, p, d = hw[axis], kernel_size[axis], stride[axis], padding[axis], dilation[axis]
        _check_window(n, k, p, d, f"{what} {name}")
        out, exact = _out(n, k, s, p, d, ceil_mode)
        outs.append(out)
        if not exact and fit == "error" and not ceil_mode:
            bad.append(axis)
    if bad:
        square = (hw[0] == hw[1] and kernel_size[0] == kernel_size[1] and stride[0] == stride[1]
                  and padding[0] == padding[1] and dilation[0] == dilation[1])
        axes = [0] if square else bad
        lines = []
        for axis in axes:
            n, k, s, p, d = hw[axis], kernel_size[axis], stride[axis], padding[axis], dilation[axis]
            if square:
                head = f"{n}x{n} input, {k}x{k} filter, stride {s}"
            else:
                head = f"{('height', 'width')[axis]}: input {n}, filter {k}, stride {s}"
            head += "" if p == (0, 0) else f", pad {p[0] if p[0] == p[1] else p}"
            head += "" if d == 1 else f", dilation {d}"
            lines.append(f"{head}: {size_formula(n, k, s, p, d)} is not a whole number; "
                         f"{_fixes(n, k, s, p, d)}")
        raise ShapeError(f"{what}: " + "; ".join(lines))
    return outs[0], outs[1]


def conv_weight_count(in_channels: int, out_channels: int, kernel_size: Pair, groups: int = 1) -> int:
    """F·F·D·K: the weights of a conv layer (D = in_channels / groups)."""
    return kernel_size[0] * kernel_size[1] * (in_channels // groups) * out_channels


def conv_param_count(in_channels: int, out_channels: int, kernel_size: Pair, groups: int = 1,
                     bias: bool = True) -> int:
    """Weights plus K biases: 5·5·3·6 + 6 = 456."""
    return conv_weight_count(in_channels, out_channels, kernel_size, groups) + (out_channels if bias else 0)


def conv_param_formula(in_channels: int, out_channels: int, kernel_size: Pair, groups: int = 1,
                       bias: bool = True) -> str:
    """The count with its formula: ``5·5·3·6 + 6 = 456``."""
    kh, kw = kernel_size
    text = f"{kh}·{kw}·{in_channels // groups}·{out_channels}"
    if bias:
        text += f" + {out_channels}"
    return f"{text} = {conv_param_count(in_channels, out_channels, kernel_size, groups, bias)}"


def linear_param_count(in_features: int, out_features: int, bias: bool = True) -> int:
    """in·out weights plus out biases."""
    return in_features * out_features + (out_features if bias else 0)


def linear_param_formula(in_features: int, out_features: int, bias: bool = True) -> str:
    """``400·120 + 120 = 48120``."""
    text = f"{in_features}·{out_features}" + (f" + {out_features}" if bias else "")
    return f"{text} = {linear_param_count(in_features, out_features, bias)}"


def conv_macs(out_hw: Pair, in_channels: int, out_channels: int, kernel_size: Pair,
              groups: int = 1) -> int:
    """Multiply-adds per image: one F·F·D dot product per output number."""
    return out_hw[0] * out_hw[1] * out_channels * (in_channels // groups) * kernel_size[0] * kernel_size[1]


# -- what a fit means, in words (used by convscope.explain) ------------------------------------


def unseen(n: int, kernel_size: int, stride: int = 1, padding: Pair = (0, 0),
           dilation: int = 1) -> int:
    """Input rows (or columns) after the last window: never seen when the stride does not fit.

    7 wide, filter 3, stride 3: the windows cover 0-2 and 3-5, so 1 (column 6) is never seen.
    Padding after the last window is not counted.
    """
    span = n + padding[0] + padding[1] - effective_kernel(kernel_size, dilation)
    return max(0, span % stride - padding[1])


def fit_suggestions(n: int, kernel_size: int, stride: int, padding: Pair = (0, 0),
                    dilation: int = 1) -> str:
    """The nearest strides and paddings that fit, e.g. ``stride 1 or 2 fits, or pad by 1``."""
    return _fixes(n, kernel_size, stride, padding, dilation)


def same_padding_formula(kernel_size: int, dilation: int = 1) -> str:
    """How 'same' padding is found: ``P = (F - 1) / 2 = (3 - 1) / 2 = 1``.

    With dilation ``P = D·(F - 1) / 2``; an even filter splits it, e.g. ``(4 - 1) / 2 = 1 + 2``.
    """
    before, after = same_padding(kernel_size, dilation)
    d = "" if dilation == 1 else f"{dilation}·"
    value = str(before) if before == after else f"{before} + {after}"
    return f"P = {'D·' if dilation != 1 else ''}(F - 1) / 2 = {d}({kernel_size} - 1) / 2 = {value}"
