"""Sequential: layers in a row (CONV -> RELU -> CONV -> RELU -> POOL -> ... -> FC), its summary
table with the lecture's arithmetic, and state dicts keyed as in PyTorch ('0.weight', ...)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Iterator, Mapping, Sequence

import numpy as np

from ..runtime import no_grad, xp_of
from ..errors import ShapeError
from ..init import make_rng
from .base import Array, Layer, Shape
from .conv import Conv2D
from .linear import Linear
from .registry import register_layer

if TYPE_CHECKING:
    from ..inspect.explain import Explanation


@dataclass(frozen=True)
class SummaryRow:
    """One layer of a summary: its per-image output shape, parameters, multiply-adds, memory."""

    index: int
    layer: str
    output_shape: Shape
    params: int
    formula: str
    macs: int
    activation_bytes: int


def _size(nbytes: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if nbytes < 1024 or unit == "GiB":
            return f"{nbytes:.0f} {unit}" if unit == "B" else f"{nbytes:.1f} {unit}"
        nbytes /= 1024
    return ""


@dataclass(frozen=True)
class Summary:
    """The model table (Keras' summary, with the lecture's formulas); ``str()`` draws it."""

    input_shape: Shape
    rows: tuple[SummaryRow, ...]
    itemsize: int

    @property
    def total_params(self) -> int:
        return sum(r.params for r in self.rows)

    @property
    def total_macs(self) -> int:
        return sum(r.macs for r in self.rows)

    @property
    def activation_bytes(self) -> int:
        return sum(r.activation_bytes for r in self.rows)

    def __str__(self) -> str:
        head = ("#", "layer", "output", "params", "formula", "mult-adds", "activations")
        body = [(str(r.index), r.layer, "x".join(map(str, r.output_shape)), f"{r.params:,}",
                 r.formula, f"{r.macs:,}", _size(r.activation_bytes)) for r in self.rows]
        body.insert(0, ("", "input", "x".join(map(str, self.input_shape)), "", "", "",
                        _size(int(np.prod(self.input_shape)) * self.itemsize)))
        widths = [max(len(row[i]) for row in [head] + body) for i in range(len(head))]
        right = {3, 5, 6}

        def line(row: Sequence[str]) -> str:
            return "  ".join(c.rjust(w) if i in right else c.ljust(w)
                             for i, (c, w) in enumerate(zip(row, widths))).rstrip()

        rule = "-" * len(line(head))
        out = [line(head), rule] + [line(r) for r in body] + [rule]
        out.append(f"total: {self.total_params:,} parameters ({_size(self.total_params * self.itemsize)}),"
                   f" {self.total_macs:,} mult-adds and {_size(self.activation_bytes)} of "
                   "activations per image")
        return "\n".join(out)

    __repr__ = __str__


@register_layer("sequential", torch=("Sequential",))
class Sequential(Layer):
    """Layers applied in order: forward left to right, backward right to left.

    ``input_shape=(C, H, W)`` (per image) builds the layers at once: in_channels / in_features
    left as None are inferred, shapes are checked, ``summary()`` works.  ``seed`` makes the
    initial weights reproducible.
    """

    def __init__(self, *layers: Layer, input_shape: Sequence[int] | None = None,
                 seed: int | np.random.Generator | None = None) -> None:
        super().__init__()
        for i, layer in enumerate(layers):
            if not isinstance(layer, Layer):
                raise TypeError(f"Sequential: item {i} is a {type(layer).__name__}, not a layer")
        self.layers = list(layers)
        self.input_shape: Shape | None = None
        if input_shape is not None:
            self.build(tuple(input_shape), None if seed is None else make_rng(seed))
        elif seed is not None:
            rng = make_rng(seed)
            for layer in self.layers:
                if hasattr(layer, "reset_parameters") and layer.params:
                    layer.reset_parameters(rng)

    # -- structure -----------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.layers)

    def __iter__(self) -> Iterator[Layer]:
        return iter(self.layers)

    def __getitem__(self, i: int) -> Layer:
        return self.layers[i]

    def build(self, input_shape: Shape, rng: np.random.Generator | None = None) -> Shape:
        shape = tuple(int(s) for s in input_shape)
        self.input_shape = shape
        for i, layer in enumerate(self.layers):
            try:
                shape = layer.build(shape, rng)
            except ShapeError as e:
                raise ShapeError(f"layer {i}: {e}") from None
        return shape

    def output_shape(self, input_shape: Shape) -> Shape:
        shape = tuple(input_shape)
        for i, layer in enumerate(self.layers):
            try:
                shape = layer.output_shape(shape)
            except ShapeError as e:
                raise ShapeError(f"layer {i}: {e}") from None
        return shape

    def shapes(self, input_shape: Shape | None = None) -> list[Shape]:
        """Per-image shapes: the input, then each layer's output."""
        shape = tuple(input_shape or self._need_input_shape())
        out = [shape]
        for layer in self.layers:
            shape = layer.output_shape(shape)
            out.append(shape)
        return out

    def _need_input_shape(self) -> Shape:
        if self.input_shape is None:
            raise ShapeError("Sequential: no input_shape; build with Sequential(..., "
                             "input_shape=(C, H, W)) or pass one")
        return self.input_shape

    # -- the protocol --------------------------------------------------------------------------
    def forward(self, x: Array) -> Array:
        got = tuple(getattr(x, "shape", ())[1:])
        for i, layer in enumerate(self.layers):
            try:
                x = layer.forward(x)
            except ShapeError as e:
                built = self.input_shape
                note = (f" (the model was built for {built} per image, got {got})"
                        if built is not None and got and got != built else "")
                raise ShapeError(f"layer {i}: {e}{note}") from None
        return x

    def backward(self, dy: Array, input_grad: bool = True) -> Array | None:
        """Gradients of every layer, last to first; returns d loss / d input.

        ``input_grad=False`` returns None and lets a first Conv2D or Linear skip its input
        gradient, which nothing in training uses (PyTorch skips it too: inputs need no grad).
        """
        if not self.layers:
            return dy if input_grad else None
        for layer in reversed(self.layers[1:]):
            dy = layer.backward(dy)
        first = self.layers[0]
        if input_grad:
            return first.backward(dy)
        if isinstance(first, (Conv2D, Linear, Sequential)):
            first.backward(dy, input_grad=False)
        else:
            first.backward(dy)
        return None

    def train(self, mode: bool = True) -> "Sequential":
        self.training = mode
        for layer in self.layers:
            layer.train(mode)
        return self

    def zero_grad(self) -> None:
        for layer in self.layers:
            layer.zero_grad()

    @property  # type: ignore[override]
    def params(self) -> dict[str, Array]:
        """Every parameter, keyed '<layer index>.<name>' as in PyTorch; the arrays themselves."""
        return {f"{i}.{k}": v for i, layer in enumerate(self.layers) for k, v in layer.params.items()}

    @params.setter
    def params(self, value: dict) -> None:  # Layer.__init__ assigns {}; the layers hold the arrays
        pass

    @property  # type: ignore[override]
    def grads(self) -> dict[str, Array]:
        return {f"{i}.{k}": v for i, layer in enumerate(self.layers) for k, v in layer.grads.items()}

    @grads.setter
    def grads(self, value: dict) -> None:
        pass

    @property  # type: ignore[override]
    def buffers(self) -> dict[str, Array]:
        return {f"{i}.{k}": v for i, layer in enumerate(self.layers) for k, v in layer.buffers.items()}

    @buffers.setter
    def buffers(self, value: dict) -> None:
        pass

    # -- inference -----------------------------------------------------------------------------
    def predict(self, x: Array, batch_size: int = 256) -> Array:
        """Outputs for x in evaluation mode, ``batch_size`` images at a time; keeps no caches."""
        if batch_size < 1:
            raise ValueError(f"predict: batch_size must be >= 1, got {batch_size}")
        was_training = self.training
        self.eval()
        try:
            with no_grad():
                starts = range(0, len(x), batch_size) or [0]  # no images: an empty (0, ...) result
                outs = [self.forward(x[i:i + batch_size]) for i in starts]
        finally:
            self.train(was_training)
        return xp_of(x).concatenate(outs)

    # -- state ---------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Array]:
        """Parameters and buffers in PyTorch's order and keys ('0.weight', '0.bias', ...)."""
        out: dict[str, Array] = {}
        for i, layer in enumerate(self.layers):
            for k, v in list(layer.params.items()) + list(layer.buffers.items()):
                out[f"{i}.{k}"] = v
        return out

    def load_state_dict(self, state: Mapping[str, Any], strict: bool = True) -> None:
        """Copy arrays into the model (in place, cast to each parameter's dtype).

        Missing or unexpected keys (with ``strict``) and shape mismatches raise, naming the key.
        """
        own = self.state_dict()
        missing = [k for k in own if k not in state]
        unexpected = [k for k in state if k not in own]
        if strict and (missing or unexpected):
            raise KeyError(f"load_state_dict: missing keys {missing}, unexpected keys {unexpected}")
        for k, target in own.items():
            if k not in state:
                continue
            value = state[k]
            if tuple(np.shape(value)) != tuple(target.shape):
                raise ShapeError(f"load_state_dict: '{k}' has shape {tuple(np.shape(value))}, the "
                                 f"model needs {tuple(target.shape)}")
        for k, target in own.items():
            if k in state:
                xp_of(target).copyto(target, xp_of(target).asarray(state[k]), casting="unsafe")

    # -- the table -----------------------------------------------------------------------------
    def summary(self, input_shape: Shape | None = None) -> Summary:
        """Per layer: output shape, parameters with their formula, multiply-adds, activations."""
        shape = tuple(input_shape or self._need_input_shape())
        rows = []
        itemsize = next((p.dtype.itemsize for p in self.params.values()), 4)
        for i, layer in enumerate(self.layers):
            out = layer.output_shape(shape)
            rows.append(SummaryRow(i, repr(layer), out, layer.param_count(), layer.param_formula(),
                                   layer.macs(shape), int(np.prod(out)) * itemsize))
            shape = out
        return Summary(tuple(self._need_input_shape() if input_shape is None else input_shape),
                       tuple(rows), itemsize)

    def explain(self, input_shape: Shape | None = None, strict: bool = False) -> Explanation:
        """The lecture's walk through every layer (see :func:`convscope.explain.explain`);
        ``print(net.explain())`` writes it out."""
        from ..inspect.explain import explain  # noqa: PLC0415 - explain imports the layers

        return explain(self, input_shape, strict)

    def __repr__(self) -> str:
        inner = ",\n".join(f"  ({i}) {layer!r}" for i, layer in enumerate(self.layers))
        return f"Sequential(\n{inner}\n)"
