"""The lecture's arithmetic for any network: a walk through every layer in the lecture's terms.

For the lecture's network (32×32×3 -> CONV six 5×5×3 -> RELU -> CONV ten 5×5×6 -> ...)::

    >>> print(net.explain())                                       # doctest: +SKIP
    [0] CONV: 6 filters 5×5×3, stride 1, pad 0: (32 − 5 + 2·0) / 1 + 1 = 28 → 28×28×6;
        weights 5·5·3·6 = 450, biases 6
    ...

Sizes are written height × width × depth (the lecture's 32×32×3); arrays stay (C, H, W).  Every
number comes from :mod:`convscope.shapes` (``size_formula``, ``conv_output_shape``, ``unseen``,
...): nothing here recomputes the size formula.

The sentence about each layer is the layer's own: its ``explain(input_shape, ctx)`` hook returns
a :class:`Told` (kind, text, ...), in the layer's file; this module walks the model, calling the
hooks with an :class:`ExplainContext`, and adds up the totals.  A container's hook walks its own
layers with ``ctx.walk`` (their steps are labelled '3.0', '3.1', ... inside block 3).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, replace
from typing import Any, Iterator, Sequence

import numpy as np

from .. import shapes as S
from ..errors import ShapeError
from ..words import Axis, fit_words, minus, nbytes_text, volume

Shape = tuple[int, ...]

__all__ = ["Step", "Told", "ExplainContext", "Explanation", "SizeAnswer", "explain",
           "explain_size", "volume", "nbytes_text"]


# ---------------------------------------------------------------------------------------------
# what a hook says, and one step of the walk


@dataclass(frozen=True)
class Step:
    """One layer of the walk: its shapes, the lecture's sentence about it, and its costs.

    ``fits`` is False where a stride does not fit (the size formula is not a whole number).
    Byte counts are per image; ``workspace_bytes`` is the im2col patch matrix of a conv layer.
    ``index`` is the layer's position in its container, ``label`` its place in the model ('3',
    or '3.1' for the second layer inside block 3); a container's ``steps`` are its layers' steps
    and its numbers their totals.
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
    label: str = ""
    steps: tuple["Step", ...] = ()

    def leaves(self) -> Iterator["Step"]:
        """This step, or the steps inside it (depth first) when it is a container."""
        if not self.steps:
            yield self
        for s in self.steps:
            yield from s.leaves()


@dataclass(frozen=True)
class Told:
    """What a layer's ``explain`` hook says about it on one per-image input shape.

    ``kind`` names it in the lecture's words ('CONV', 'RELU'); ``text`` is the sentence, its first
    line the headline.  ``output_shape`` and ``macs`` left None are asked from the layer
    (``output_shape``, ``macs``); a hook gives them where the layer itself would raise (a
    ``fit='error'`` layer on a misfit).  ``workspace_bytes``: the im2col patch matrix of one image;
    ``fits`` False where a stride does not fit, ``problem`` then says what it drops; ``steps``: a
    container's layers, walked with ``ctx.walk``; ``activation_bytes`` left None is the output's
    size (a container: its layers' sum; a layer that keeps no new array: 0).
    """

    kind: str
    text: str
    output_shape: Shape | None = None
    macs: int | None = None
    workspace_bytes: int = 0
    fits: bool = True
    problem: str = ""
    steps: tuple[Step, ...] = ()
    activation_bytes: int | None = None


_FIT_ERROR_NOTE = "\nthis layer was built with fit='error', so it raises on this input"


class _Labelled(ShapeError):
    """A ShapeError already prefixed with the layer's label (enclosing blocks add nothing)."""


@dataclass(frozen=True)
class ExplainContext:
    """What the walk hands each layer's ``explain`` hook.

    ``itemsize``: bytes per number of the model's dtype; ``label``: the layer's place in the model
    ('3', '3.1'); ``strict``: a stride that does not fit raises.  ``told(...)`` makes the
    :class:`Told` a hook returns; ``generic`` is the default hook's sentence; ``misfit_note`` runs
    a windowed layer's own shape checks; ``walk`` explains a container's layers.
    """

    itemsize: int = 4
    label: str = ""
    strict: bool = False

    told = Told

    def generic(self, layer: Any, input_shape: Shape) -> Told:
        """'SWISH: Swish(): 28×28×6 → 28×28×6; no parameters' for a layer without its own hook."""
        out = tuple(layer.output_shape(input_shape))
        params = layer.param_count()
        return Told(layer.name.upper(), f"{layer!r}: {volume(input_shape)} → {volume(out)}; "
                    + (f"{params:,} parameters" if params else "no parameters"), out)

    def misfit_note(self, layer: Any, input_shape: Shape) -> str:
        """Run the layer's own shape checks: '' when they pass; when only its ``fit='error'``
        objects (a stride that does not fit), the note saying it raises on this input.  Other
        problems (channels, windows of padding only) raise."""
        try:
            layer.output_shape(input_shape)
            return ""
        except ShapeError:
            if getattr(layer, "fit", "floor") != "error":
                raise
        lenient = copy.copy(layer)
        lenient.fit = "floor"
        lenient.output_shape(input_shape)
        return _FIT_ERROR_NOTE

    def walk(self, children: Sequence[tuple[str, Any]], input_shape: Shape) -> tuple[Step, ...]:
        """The steps of ``children`` ((name, layer) pairs, as ``Layer.children()`` gives them)
        applied in a row to ``input_shape``, labelled under this context's label."""
        shape = tuple(int(s) for s in input_shape)
        steps = []
        for i, (name, layer) in enumerate(children):
            label = f"{self.label}.{name}" if self.label else str(name)
            try:
                step = _step(i, label, layer, shape, replace(self, label=label))
            except _Labelled:
                raise
            except ShapeError as e:
                raise _Labelled(f"layer {label}: {e}") from None
            if self.strict and not step.steps and not step.fits:
                raise _Labelled(f"layer {label} {step.layer}: input {volume(shape)}: {step.problem}")
            steps.append(step)
            shape = step.output_shape
        return tuple(steps)


def _step(i: int, label: str, layer: Any, shape: Shape, ctx: ExplainContext) -> Step:
    told = layer.explain(shape, ctx)
    if not isinstance(told, Told):
        raise TypeError(f"{layer.name}.explain(input_shape, ctx) must return ctx.told(kind, text, "
                        f"...), got {type(told).__name__}")
    out = tuple(told.output_shape if told.output_shape is not None else layer.output_shape(shape))
    if told.steps:  # a container: the totals of its layers
        macs = sum(s.macs for s in told.steps) if told.macs is None else told.macs
        act = sum(s.activation_bytes for s in told.steps)
        work = max([told.workspace_bytes] + [s.workspace_bytes for s in told.steps])
        fits = told.fits and all(s.fits for s in told.steps)
    else:
        macs = layer.macs(shape) if told.macs is None else told.macs
        act = int(np.prod(out)) * ctx.itemsize
        work, fits = told.workspace_bytes, told.fits
    act = act if told.activation_bytes is None else told.activation_bytes
    return Step(i, told.kind, repr(layer), tuple(shape), out, told.text, layer.param_count(),
                int(macs), act, work, fits, told.problem, label, tuple(told.steps))


# ---------------------------------------------------------------------------------------------
# the walk


@dataclass(frozen=True)
class Explanation:
    """The walk through a network; ``str()`` writes it out, one layer per paragraph.

    ``steps`` are the model's layers; a block's inner steps are in its ``Step.steps`` and in
    :meth:`leaves`.
    """

    input_shape: Shape
    steps: tuple[Step, ...]
    itemsize: int
    dtype: str

    def leaves(self) -> list[Step]:
        """Every layer that is not a container, depth first ('0', '1', '3.0', '3.1', ...)."""
        return [leaf for s in self.steps for leaf in s.leaves()]

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
        """Steps whose stride does not fit (inside blocks too)."""
        return [s for s in self.leaves() if not s.fits]

    def __str__(self) -> str:
        n_in = int(np.prod(self.input_shape))
        out = [f"input {volume(self.input_shape)} = {n_in:,} numbers "
               f"({nbytes_text(n_in * self.itemsize)} as {self.dtype}); sizes are height×width×depth"]
        out.extend(_paragraphs(self.steps, ""))
        with_params = [s for s in self.steps if s.params]
        parts = " + ".join(f"{s.params:,}" for s in with_params)
        total = f"{self.total_params:,}"
        out.append(f"total: {total} parameters" + (f" = {parts}" if len(with_params) > 1 else "")
                   + f" ({nbytes_text(self.total_params * self.itemsize)} as {self.dtype})")
        out.append(f"per image: {self.total_macs:,} multiply-adds; activations "
                   f"{nbytes_text(self.activation_bytes)} (every layer's output, kept for the backward "
                   "pass)")
        if self.workspace_bytes:
            big = max(self.leaves(), key=lambda s: s.workspace_bytes)
            out.append(f"im2col workspace: up to {nbytes_text(self.workspace_bytes)} per image "
                       f"(layer {big.label or big.index}), times the batch size")
        if self.misfits:
            out.append(f"does not fit: layer{'s' if len(self.misfits) > 1 else ''} "
                       + ", ".join(s.label or str(s.index) for s in self.misfits) + " (see above)")
        return "\n".join(out)

    __repr__ = __str__


def _paragraphs(steps: Sequence[Step], indent: str) -> list[str]:
    out = []
    for s in steps:
        lines = s.text.split("\n")
        out.append(f"{indent}[{s.label or s.index}] {lines[0]}")
        out.extend(f"{indent}    {line}" for line in lines[1:])
        out.extend(_paragraphs(s.steps, indent + "    "))
    return out


def explain(model: Any, input_shape: Sequence[int] | None = None, strict: bool = False) -> Explanation:
    """The lecture's walk through ``model`` (a :class:`~convscope.Sequential` or a single layer).

    ``input_shape`` is per image (C, H, W) (default: the model's).  With ``strict``, a stride that
    does not fit raises :class:`ShapeError` naming the layer and what it drops.  Byte counts use
    the model's ``dtype``.
    """
    shape = input_shape if input_shape is not None else getattr(model, "input_shape", None)
    if shape is None:
        raise ShapeError("explain: the model has no input_shape; pass one, e.g. "
                         "input_shape=(3, 32, 32) (C, H, W), or --input 32x32x3")
    shape = tuple(int(s) for s in shape)
    if not shape or min(shape) < 1:
        raise ShapeError(f"explain: input_shape must be positive sizes (C, H, W), got {shape}")
    dtype = np.dtype(getattr(model, "dtype", None) or np.float32)
    # a Sequential is walked through its layers; any other layer (a block too) is one step
    children = model.children() if getattr(model, "layers", None) is not None else [("0", model)]
    try:
        steps = ExplainContext(dtype.itemsize, "", strict).walk(children, shape)
    except _Labelled as e:
        raise ShapeError(str(e)) from None
    return Explanation(shape, steps, dtype.itemsize, dtype.name)


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
        head += f" (same: {minus(S.same_padding_formula(kernel_size, dilation))})"
    lines = [head + ": output side = (N − F + 2P) / S + 1"]
    strides = [int(stride)] if stride is not None else list(range(1, f_eff + 1))
    all_fit = True
    for s in strides:
        a = Axis(n, kernel_size, s, pads, dilation, False, "column")
        b = Axis(n, kernel_size, s, pads, dilation, False, "row")
        fit, fits = fit_words(b, a)
        all_fit &= fits
        line = f"stride {s}: {a.formula}"
        line += f" → {a.out}×{a.out}" if fits else f" → {a.out}×{a.out} (floored): {fit}"
        if fits and fit:
            line += f"; {fit}"
        lines.append(line)
    if padding != "same" and pads != S.same_padding(kernel_size, dilation):
        same = S.same_padding(kernel_size, dilation)
        keep = Axis(n, kernel_size, 1, same, dilation, False, "column")
        lines.append(f"keeping the size takes stride 1 and same padding, "
                     f"{minus(S.same_padding_formula(kernel_size, dilation))}: {keep.formula}")
    return SizeAnswer("\n".join(lines), all_fit)
