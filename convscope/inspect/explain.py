"""The lecture's arithmetic for any network: a walk through every layer in the lecture's terms.

For the lecture's network (32×32×3 -> CONV six 5×5×3 -> RELU -> CONV ten 5×5×6 -> ...)::

    >>> print(net.explain())                                       # doctest: +SKIP
    [0] CONV: 6 filters 5×5×3, stride 1, pad 0: (32 − 5 + 2·0) / 1 + 1 = 28 → 28×28×6;
        weights 5·5·3·6 = 450, biases 6
    ...

Sizes are written height × width × depth (the lecture's 32×32×3); arrays stay (C, H, W).  Every number
comes from :mod:`convscope.shapes` (``size_formula``, ``conv_output_shape``, ``unseen``, ...):
nothing here recomputes the size formula.
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from .. import shapes as S
from ..errors import ShapeError
from ..layers import (AvgPool2D, BatchNorm1D, BatchNorm2D, Conv2D, Dropout, Flatten,
                     GlobalAvgPool2D, Layer, LeakyReLU, Linear, MaxPool2D, ReLU, Sigmoid, Tanh)

Shape = tuple[int, ...]

__all__ = ["Step", "Explanation", "SizeAnswer", "explain", "explain_size", "volume",
           "nbytes_text"]


# ---------------------------------------------------------------------------------------------
# words and numbers


def volume(shape: Sequence[int]) -> str:
    """A per-image shape as the lecture writes it: (C, H, W) -> 'H×W×C'; (F,) -> 'F' ('1,440')."""
    shape = tuple(int(s) for s in shape)
    if len(shape) == 3:
        c, h, w = shape
        return f"{h}×{w}×{c}"
    if len(shape) == 1:
        return f"{shape[0]:,}"
    return "×".join(str(s) for s in shape)


def nbytes_text(n: float) -> str:
    """1234567 -> '1.2 MiB'."""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return ""


def _minus(formula: str) -> str:
    """The lecture's typography: a true minus sign in formulas from :mod:`convscope.shapes`."""
    return formula.replace(" - ", " − ")


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def _last(n: int, word: str) -> str:
    return f"the last {word}" if n == 1 else f"the last {n} {word}s"


# ---------------------------------------------------------------------------------------------
# one window axis (conv or pool) in words


@dataclass(frozen=True)
class _Axis:
    n: int
    k: int
    s: int
    p: tuple[int, int]
    d: int
    ceil: bool
    word: str  # 'column' (width) or 'row' (height)

    @property
    def formula(self) -> str:
        return _minus(S.size_formula(self.n, self.k, self.s, self.p, self.d, always_pad=True))

    @property
    def out(self) -> int:
        return S.conv_output_size(self.n, self.k, self.s, self.p, self.d, "floor", self.ceil)

    @property
    def exact(self) -> bool:
        """Whether (N − F + 2P) / S + 1 is a whole number."""
        try:
            S.conv_output_size(self.n, self.k, self.s, self.p, self.d, "error")
        except ShapeError:
            return False
        return True

    @property
    def unseen(self) -> int:
        return 0 if self.ceil else S.unseen(self.n, self.k, self.s, self.p, self.d)

    @property
    def gap(self) -> int:
        """Input cells between two windows when the stride is longer than the filter."""
        return max(0, self.s - S.effective_kernel(self.k, self.d))


def _axes(layer: Any, h: int, w: int) -> tuple[_Axis, _Axis]:
    ceil = bool(getattr(layer, "ceil_mode", False))
    return (_Axis(h, layer.kernel_size[0], layer.stride[0], layer.pads[0], layer.dilation[0], ceil,
                  "row"),
            _Axis(w, layer.kernel_size[1], layer.stride[1], layer.pads[1], layer.dilation[1], ceil,
                  "column"))


def _square(ah: _Axis, aw: _Axis) -> bool:
    return (ah.n, ah.k, ah.s, ah.p, ah.d) == (aw.n, aw.k, aw.s, aw.p, aw.d)


def _pad_words(pads: tuple[tuple[int, int], tuple[int, int]], mode: str = "zeros") -> str:
    (t, b), (l, r) = pads
    if t == b == l == r:
        text = f"pad {t}"
    elif t == b and l == r:
        text = f"pad {t} (rows), {l} (columns)"
    else:
        text = f"pad top {t}, bottom {b}, left {l}, right {r}"
    return text + ("" if mode == "zeros" or pads == ((0, 0), (0, 0)) else f" ({mode})")


def _same_words(ah: _Axis, aw: _Axis) -> str:
    """'same: P = (F − 1) / 2 = (5 − 1) / 2 = 2, keeps 32×32' where the padding keeps the size."""
    keeps = all(a.s == 1 and a.p == S.same_padding(a.k, a.d) and a.p != (0, 0) for a in (ah, aw))
    if not keeps:
        return ""
    if (ah.k, ah.d) == (aw.k, aw.d):
        return f" (same: {_minus(S.same_padding_formula(aw.k, aw.d))} keeps {ah.n}×{aw.n})"
    return (f" (same: height {_minus(S.same_padding_formula(ah.k, ah.d))}, width "
            f"{_minus(S.same_padding_formula(aw.k, aw.d))}, keeps {ah.n}×{aw.n})")


def _formula_words(ah: _Axis, aw: _Axis) -> str:
    if _square(ah, aw):
        return aw.formula
    return f"height {ah.formula}, width {aw.formula}"


_AXIS_NAMES = {"column": "width", "row": "height"}


def _fit_words(ah: _Axis, aw: _Axis) -> tuple[str, bool]:
    """What a stride that does not fit drops, and what would fit; ('', True) when it fits."""
    bad = [a for a in (ah, aw) if not a.ceil and not a.exact]
    notes = []
    if bad:
        if _square(ah, aw):
            which, lost_axes = f"stride {aw.s}", [aw, ah]
            fixes = S.fit_suggestions(aw.n, aw.k, aw.s, aw.p, aw.d)
        else:
            which = " and ".join(f"the {_AXIS_NAMES[a.word]} stride {a.s}" for a in bad)
            lost_axes = bad
            fixes = "; ".join(f"{_AXIS_NAMES[a.word]}: {S.fit_suggestions(a.n, a.k, a.s, a.p, a.d)}"
                              for a in bad)
        lost = [_last(a.unseen, a.word) for a in lost_axes if a.unseen]
        if lost:
            verb = "is" if len(lost) == 1 and not lost[0].endswith("s") else "are"
            what = f"{' and '.join(lost)} of the input {verb} never seen"
        else:
            what = "only padding is left over, every input pixel is seen"
        notes.append(f"{which} does not fit: {what}; {fixes}")
    elif any(a.ceil and not a.exact for a in (aw, ah)):
        notes.append("ceil_mode keeps a last partial window")
    gaps = [a for a in (aw, ah) if a.gap]
    if gaps:
        a = gaps[0]
        notes.append(f"stride {a.s} is longer than the {S.effective_kernel(a.k, a.d)}-wide window: "
                     f"{_plural(a.gap, a.word)} in every {a.s} "
                     f"{'lies' if a.gap == 1 else 'lie'} between windows, never seen")
    return "; ".join(notes), not bad


# ---------------------------------------------------------------------------------------------
# the walk


@dataclass(frozen=True)
class Step:
    """One layer of the walk: its shapes, the lecture's sentence about it, and its costs.

    ``fits`` is False where a stride does not fit (the size formula is not a whole number).
    Byte counts are per image; ``workspace_bytes`` is the im2col patch matrix of a conv layer.
    """

    index: int
    kind: str
    layer: str
    input_shape: Shape
    output_shape: Shape
    text: str
    params: int
    macs: int
    activation_bytes: int
    workspace_bytes: int
    fits: bool
    problem: str = ""


@dataclass(frozen=True)
class Explanation:
    """The walk through a network; ``str()`` writes it out, one layer per paragraph."""

    input_shape: Shape
    steps: tuple[Step, ...]
    itemsize: int
    dtype: str

    @property
    def total_params(self) -> int:
        return sum(s.params for s in self.steps)

    @property
    def total_macs(self) -> int:
        return sum(s.macs for s in self.steps)

    @property
    def activation_bytes(self) -> int:
        """All layer outputs of one image (what training keeps for the backward pass)."""
        return sum(s.activation_bytes for s in self.steps)

    @property
    def workspace_bytes(self) -> int:
        """The largest im2col patch matrix of one image (convs run one at a time)."""
        return max((s.workspace_bytes for s in self.steps), default=0)

    @property
    def misfits(self) -> list[Step]:
        """Steps whose stride does not fit."""
        return [s for s in self.steps if not s.fits]

    def __str__(self) -> str:
        n_in = int(np.prod(self.input_shape))
        out = [f"input {volume(self.input_shape)} = {n_in:,} numbers "
               f"({nbytes_text(n_in * self.itemsize)} as {self.dtype}); sizes are height×width×depth"]
        for s in self.steps:
            lines = s.text.split("\n")
            out.append(f"[{s.index}] {lines[0]}")
            out.extend(f"    {line}" for line in lines[1:])
        with_params = [s for s in self.steps if s.params]
        parts = " + ".join(f"{s.params:,}" for s in with_params)
        total = f"{self.total_params:,}"
        out.append(f"total: {total} parameters" + (f" = {parts}" if len(with_params) > 1 else "")
                   + f" ({nbytes_text(self.total_params * self.itemsize)} as {self.dtype})")
        out.append(f"per image: {self.total_macs:,} multiply-adds; activations "
                   f"{nbytes_text(self.activation_bytes)} (every layer's output, kept for the backward "
                   "pass)")
        if self.workspace_bytes:
            big = max(self.steps, key=lambda s: s.workspace_bytes)
            out.append(f"im2col workspace: up to {nbytes_text(self.workspace_bytes)} per image "
                       f"(layer {big.index}), times the batch size")
        if self.misfits:
            out.append(f"does not fit: layer{'s' if len(self.misfits) > 1 else ''} "
                       + ", ".join(str(s.index) for s in self.misfits) + " (see above)")
        return "\n".join(out)

    __repr__ = __str__


def _conv_text(layer: Conv2D, shape: Shape, itemsize: int) -> tuple[str, Shape, int, int, bool, str]:
    c, h, w = shape
    ah, aw = _axes(layer, h, w)
    out = (layer.out_channels, ah.out, aw.out)
    kh, kw = layer.kernel_size
    depth = c // layer.groups
    head = f"CONV: {_plural(layer.out_channels, 'filter')} {kh}×{kw}×{depth}"
    if layer.groups > 1:
        head += f" (groups {layer.groups}: each filter sees {depth} of the {c} channels)"
    stride = layer.stride[1] if layer.stride[0] == layer.stride[1] else f"{layer.stride[0]}×{layer.stride[1]}"
    head += f", stride {stride}, {_pad_words(layer.pads, layer.padding_mode)}"
    if layer.dilation != (1, 1):
        head += (f", dilation {layer.dilation[1] if layer.dilation[0] == layer.dilation[1] else layer.dilation}"
                 f" (spans {S.effective_kernel(kh, layer.dilation[0])}×{S.effective_kernel(kw, layer.dilation[1])})")
    head += _same_words(ah, aw)
    fit, fits = _fit_words(ah, aw)
    weights = _minus(S.conv_param_formula(c, layer.out_channels, layer.kernel_size, layer.groups, False))
    params = S.conv_param_count(c, layer.out_channels, layer.kernel_size, layer.groups, layer.use_bias)
    line = f"{head}: {_formula_words(ah, aw)} → {volume(out)}"
    line += "" if fits else " (floored, as PyTorch does)"
    line += (f"; weights {weights}, biases {layer.out_channels if layer.use_bias else 0} "
             f"({params:,} parameters)")
    if fit:
        line += f"\n{fit}"
    macs = S.conv_macs((ah.out, aw.out), c, layer.out_channels, layer.kernel_size, layer.groups)
    n_out = int(np.prod(out))
    line += (f"\neach of the {aw.out}·{ah.out}·{layer.out_channels} = {n_out:,} outputs is a "
             f"{kh * kw * depth}-number dot product w·x + b: {macs:,} multiply-adds")
    rows, cols = c * kh * kw, ah.out * aw.out
    workspace = rows * cols * itemsize
    line += (f"\nim2col: the patches as a {rows:,} × {cols:,} matrix, {rows * cols:,} numbers "
             f"({nbytes_text(workspace)})")
    return line, out, macs, workspace, fits, f"{_formula_words(ah, aw)}: {fit}"


def _pool_text(layer: Any, shape: Shape) -> tuple[str, Shape, bool, str]:
    c, h, w = shape
    ah, aw = _axes(layer, h, w)
    out = (c, ah.out, aw.out)
    kh, kw = layer.kernel_size
    kind = "max" if isinstance(layer, MaxPool2D) else "average"
    stride = layer.stride[1] if layer.stride[0] == layer.stride[1] else f"{layer.stride[0]}×{layer.stride[1]}"
    head = f"POOL: {kind} {kh}×{kw}, stride {stride}, {_pad_words(layer.pads)}"
    if layer.dilation != (1, 1):
        head += f", dilation {layer.dilation}"
    fit, fits = _fit_words(ah, aw)
    line = f"{head}: {_formula_words(ah, aw)} → {volume(out)}"
    line += "" if fits else " (floored, as PyTorch does)"
    if fit:
        line += f"\n{fit}"
    line += f"\neach of the {c} maps on its own; no parameters"
    return line, out, fits, f"{_formula_words(ah, aw)}: {fit}"


def _floor_check(layer: Layer, shape: Shape) -> bool:
    """Run the layer's own shape checks; True when only its ``fit='error'`` objects (a misfit)."""
    try:
        layer.output_shape(shape)
        return False
    except ShapeError:
        if getattr(layer, "fit", "floor") != "error":
            raise
    lenient = copy.copy(layer)
    lenient.fit = "floor"  # type: ignore[attr-defined]
    lenient.output_shape(shape)  # other problems (channels, windows of padding only) still raise
    return True


def _step(i: int, layer: Layer, shape: Shape, itemsize: int) -> Step:
    params, macs, workspace, fits, problem = layer.param_count(), 0, 0, True, ""
    if isinstance(layer, (Conv2D, MaxPool2D, AvgPool2D)) and len(shape) == 3:
        raises = _floor_check(layer, shape)
        if isinstance(layer, Conv2D):
            text, out, macs, workspace, fits, problem = _conv_text(layer, shape, itemsize)
            kind = "CONV"
        else:
            text, out, fits, problem = _pool_text(layer, shape)
            kind = "POOL"
        if raises:
            text += "\nthis layer was built with fit='error', so it raises on this input"
    else:
        out = tuple(layer.output_shape(shape))
        macs = layer.macs(shape)
        kind, text = _simple_text(layer, shape, out)
    n_out = int(np.prod(out))
    return Step(i, kind, repr(layer), tuple(shape), tuple(out), text, params, macs,
                n_out * itemsize, workspace, fits, problem)


def _simple_text(layer: Layer, shape: Shape, out: Shape) -> tuple[str, str]:
    size = f"{volume(shape)} → {volume(out)}"
    n = int(np.prod(out))
    if isinstance(layer, Linear):
        weights = _minus(S.linear_param_formula(layer.in_features, layer.out_features, False))
        return "FC", (f"FC: {layer.in_features:,} → {layer.out_features:,}: weights {weights}, biases "
                      f"{layer.out_features if layer.use_bias else 0} ({layer.param_count():,} "
                      f"parameters); {layer.in_features * layer.out_features:,} multiply-adds")
    if isinstance(layer, Flatten):
        return "FLATTEN", f"FLATTEN: {volume(shape)} → {n:,} numbers in a row; no parameters"
    if isinstance(layer, LeakyReLU):
        return "RELU", (f"LEAKY RELU: x if x > 0 else {layer.negative_slope:g}·x on each of the {n:,} "
                        f"numbers: {size}; no parameters")
    formulas = {ReLU: ("RELU", "max(0, x)"), Sigmoid: ("SIGMOID", "1 / (1 + e^−x)"),
                Tanh: ("TANH", "tanh(x)")}
    for cls, (kind, f) in formulas.items():
        if isinstance(layer, cls):
            return kind, f"{kind}: {f} on each of the {n:,} numbers: {size}; no parameters"
    if isinstance(layer, GlobalAvgPool2D):
        return "POOL", (f"POOL: global average of each {shape[1]}×{shape[2]} map: {size}; "
                        "no parameters")
    if isinstance(layer, Dropout):
        return "DROPOUT", (f"DROPOUT: p = {layer.p:g} zeroes numbers while training and scales the "
                           f"rest by 1/(1 − p); the identity when predicting: {size}")
    if isinstance(layer, (BatchNorm2D, BatchNorm1D)):
        count = (f"{_minus(layer.param_formula())} parameters (γ, β)" if layer.affine
                 else "no parameters")
        return "BATCHNORM", (f"BATCHNORM: (x − mean) / √(var + ε)·γ + β per channel: {size}; {count}"
                             + ("; running mean and variance kept" if layer.track_running_stats else ""))
    params = layer.param_count()
    return layer.name.upper(), f"{layer!r}: {size}; " + (f"{params:,} parameters" if params
                                                         else "no parameters")


def explain(model: Any, input_shape: Sequence[int] | None = None, strict: bool = False) -> Explanation:
    """The lecture's walk through ``model`` (a :class:`~convscope.Sequential` or a single layer).

    ``input_shape`` is per image (C, H, W) (default: the model's).  With ``strict``, a stride that
    does not fit raises :class:`ShapeError` naming the layer and what it drops.
    """
    layers = list(getattr(model, "layers", [model]))
    shape = input_shape if input_shape is not None else getattr(model, "input_shape", None)
    if shape is None:
        raise ShapeError("explain: the model has no input_shape; pass one, e.g. "
                         "input_shape=(3, 32, 32) (C, H, W), or --input 32x32x3")
    shape = tuple(int(s) for s in shape)
    if not shape or min(shape) < 1:
        raise ShapeError(f"explain: input_shape must be positive sizes (C, H, W), got {shape}")
    params = [p for layer in layers for p in layer.params.values()]
    dtype = params[0].dtype if params else np.dtype(np.float32)
    steps = []
    for i, layer in enumerate(layers):
        try:
            step = _step(i, layer, shape, dtype.itemsize)
        except ShapeError as e:
            raise ShapeError(f"layer {i}: {e}") from None
        if strict and not step.fits:
            raise ShapeError(f"layer {i} {step.layer}: input {volume(shape)}: {step.problem}")
        steps.append(step)
        shape = step.output_shape
    in_shape = tuple(int(s) for s in (input_shape if input_shape is not None else model.input_shape))
    return Explanation(in_shape, tuple(steps), dtype.itemsize, dtype.name)


# ---------------------------------------------------------------------------------------------
# the lecture's question for bare numbers


@dataclass(frozen=True)
class SizeAnswer:
    """The answer to "N×N input, F×F filter, stride S, pad P: what comes out?"; ``str()`` says it."""

    text: str
    fits: bool

    def __str__(self) -> str:
        return self.text

    __repr__ = __str__


def explain_size(n: int, kernel_size: int, stride: int | None = None, padding: int | str = 0,
                 dilation: int = 1) -> SizeAnswer:
    """The lecture's formula for bare numbers: an N×N input, an F×F filter, stride S, pad P.

    ``stride=None`` lists strides 1..F (7, 3 -> 5, 3, and 2.33: stride 3 does not fit).
    ``padding='same'`` takes P = D·(F − 1) / 2.  A stride that does not fit is diagnosed: what is
    never seen, and the nearest strides and paddings that fit.
    """
    for name, v in (("input", n), ("filter", kernel_size), ("dilation", dilation)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
            raise ValueError(f"{name} must be a positive int, got {v!r}")
    if stride is not None and (isinstance(stride, bool) or not isinstance(stride, (int, np.integer))
                               or stride < 1):
        raise ValueError(f"stride must be a positive int, got {stride!r}")
    if padding == "same":
        pads = S.same_padding(kernel_size, dilation)
    elif isinstance(padding, (int, np.integer)) and not isinstance(padding, bool) and padding >= 0:
        pads = (int(padding), int(padding))
    else:
        raise ValueError(f"padding must be an int >= 0 or 'same', got {padding!r}")
    S.conv_output_size(n, kernel_size, 1, pads, dilation)  # a filter larger than the input raises
    f_eff = S.effective_kernel(kernel_size, dilation)
    head = f"N = {n}, F = {kernel_size}" + (f", dilation {dilation} (spans {f_eff})" if dilation > 1 else "")
    head += f", P = {pads[0] if pads[0] == pads[1] else pads}"
    if padding == "same":
        head += f" (same: {_minus(S.same_padding_formula(kernel_size, dilation))})"
    lines = [head + ": output side = (N − F + 2P) / S + 1"]
    strides = [int(stride)] if stride is not None else list(range(1, f_eff + 1))
    all_fit = True
    for s in strides:
        a = _Axis(n, kernel_size, s, pads, dilation, False, "column")
        b = _Axis(n, kernel_size, s, pads, dilation, False, "row")
        fit, fits = _fit_words(b, a)
        all_fit &= fits
        line = f"stride {s}: {a.formula}"
        line += f" → {a.out}×{a.out}" if fits else f" → {a.out}×{a.out} (floored): {fit}"
        if fits and fit:
            line += f"; {fit}"
        lines.append(line)
    if padding != "same" and pads != S.same_padding(kernel_size, dilation):
        same = S.same_padding(kernel_size, dilation)
        keep = _Axis(n, kernel_size, 1, same, dilation, False, "column")
        lines.append(f"keeping the size takes stride 1 and same padding, "
                     f"{_minus(S.same_padding_formula(kernel_size, dilation))}: {keep.formula}")
    return SizeAnswer("\n".join(lines), all_fit)
