"""Sequential: layers in a row (CONV -> RELU -> CONV -> RELU -> POOL -> ... -> FC), a container
(``children()``; parameters, multiply-adds, explain and summary recurse into nested blocks), and
state dicts keyed as in PyTorch ('0.weight', ...).

The summary table lives in :mod:`convscope.inspect.summary` (``Summary`` and ``SummaryRow`` are
re-exported here: ``convscope.model.Summary`` keeps working).
"""

from __future__ import annotations

from typing import Any, Iterator, Mapping, Sequence

import numpy as np

from ..ops.threads import own_cores
from ..runtime import device_of, no_grad, to_device, xp_of
from ..errors import ShapeError
from ..init import make_rng
from ..inspect.explain import ExplainContext, Explanation, Told
from ..inspect.explain import explain as explain_model
from ..inspect.summary import Summary, SummaryRow, summarize
from ..words import plural, volume
from .base import Array, Layer, Shape
from .registry import lookup, register_layer, require_kind

__all__ = ["Sequential", "Summary", "SummaryRow"]


@register_layer("sequential", torch=("Sequential",))
class Sequential(Layer):
    """Layers applied in order: forward left to right, backward right to left.

    ``input_shape=(C, H, W)`` (per image) builds the layers at once: in_channels / in_features
    left as None are inferred, shapes are checked, ``summary()`` works.  ``seed`` makes the
    initial weights reproducible.
    """

    # -- traits --
    input_grad_optional = True  # backward(dy, input_grad=False) lets its first layer skip dx

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

    def children(self) -> list[tuple[str, Layer]]:
        """Its layers with their state-dict prefixes: [('0', conv), ('1', relu), ...]."""
        return [(str(i), layer) for i, layer in enumerate(self.layers)]

    def build(self, input_shape: Shape, rng: np.random.Generator | None = None) -> Shape:
        shape = tuple(int(s) for s in input_shape)
        self.input_shape = shape
        for i, layer in enumerate(self.layers):
            try:
                shape = layer.build(shape, rng)
            except ShapeError as e:
                raise ShapeError(f"layer {i}: {e}") from None
        return shape

    # -- memory --
    def build_virtual(self, input_shape: Shape) -> Shape:
        """build() with every layer's parameters as placeholders (Layer.build_virtual)."""
        shape = tuple(int(s) for s in input_shape)
        self.input_shape = shape
        for i, layer in enumerate(self.layers):
            try:
                shape = layer.build_virtual(shape)
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
        self._forget()  # the last pass's caches: in a step, CIFAR-style 38.7 -> 35.0 MiB pooled
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

        ``input_grad=False`` returns None and lets a first layer with the ``input_grad_optional``
        trait (Conv2D, Linear, a nested Sequential) skip its input gradient, which nothing in
        training uses (PyTorch skips it too: inputs need no grad).
        """
        if not self.layers:
            return dy if input_grad else None
        for layer in reversed(self.layers[1:]):
            dy = layer.backward(dy)
        first = self.layers[0]
        if input_grad:
            return first.backward(dy)
        if first.input_grad_optional:
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

    # -- device --
    def to(self, device: Any) -> "Sequential":
        """Every layer's parameters, gradients and buffers to ``device`` (Layer.to, through
        children()); returns self: ``net = Sequential(...).to("cuda")``."""
        super().to(device)
        return self

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

    @property  # type: ignore[override]
    def dtype(self) -> np.dtype:
        """The model's float dtype: that of its parameters (or float buffers), float32 when it has
        none.  Inputs are cast to it (a first Flatten or ReLU has no dtype of its own)."""
        for v in (*self.params.values(), *self.buffers.values()):
            if np.dtype(v.dtype).kind == "f":
                return np.dtype(v.dtype)
        return np.dtype(np.float32)

    # -- the lecture's arithmetic: recurse into the layers --------------------------------------
    def param_formula(self) -> str:
        """Its layers' parameter counts added up ('456 + 1,510 = 1,966'); a single layer's own
        formula; '' when none has parameters."""
        counted = [(layer, layer.param_count()) for layer in self.layers if layer.param_count()]
        if not counted:
            return ""
        if len(counted) == 1:
            return counted[0][0].param_formula() or f"{counted[0][1]:,}"
        return " + ".join(f"{n:,}" for _, n in counted) + f" = {self.param_count():,}"

    def macs(self, input_shape: Shape) -> int:
        """Multiply-adds per image: the sum over its layers, each on the shape flowing into it."""
        shape, total = tuple(input_shape), 0
        for layer in self.layers:
            total += layer.macs(shape)
            shape = layer.output_shape(shape)
        return total

    # -- inference -----------------------------------------------------------------------------
    def predict(self, x: Array, batch_size: int = 256) -> Array:
        """Outputs for x in evaluation mode, ``batch_size`` images at a time; keeps no caches.
        Each batch goes to the model's device; the outputs come back to x's.  The cores go to
        convscope's threads from the first direct convolution on, as in training
        (:func:`convscope.ops.threads.own_cores`)."""
        if batch_size < 1:
            raise ValueError(f"predict: batch_size must be >= 1, got {batch_size}")
        was_training = self.training
        self.eval()
        try:
            with no_grad(), own_cores(on_demand=True):
                starts = range(0, len(x), batch_size) or [0]  # no images: an empty (0, ...) result
                here = self.device
                outs = [self.forward(to_device(x[i:i + batch_size], here)) for i in starts]
        finally:
            self.train(was_training)
        return to_device(xp_of(outs[0]).concatenate(outs), device_of(x))

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

    # -- the table and the walk ---------------------------------------------------------------
    def summary(self, input_shape: Shape | None = None) -> Summary:
        """Per layer: output shape, parameters with their formula, multiply-adds, activations;
        a nested block's layers under its row of totals (see :mod:`convscope.inspect.summary`)."""
        return summarize(self, tuple(input_shape or self._need_input_shape()))

    # -- explain --
    def explain(self, input_shape: Shape | None = None, ctx: ExplainContext | bool | None = None,
                *, strict: bool = False) -> Explanation | Told:
        """``net.explain()``: the lecture's walk through every layer, an :class:`Explanation`
        (see :func:`convscope.explain.explain`); ``print(net.explain())`` writes it out.  With
        ``strict`` a stride that does not fit raises.

        As the hook (``ctx`` the walk's context, for a block inside a model): the block's totals,
        its layers' steps labelled '3.0', '3.1', ... under it.
        """
        if not isinstance(ctx, ExplainContext):
            return explain_model(self, input_shape, strict or bool(ctx))
        shape = tuple(input_shape)
        steps = ctx.walk(self.children(), shape)
        out = steps[-1].output_shape if steps else shape
        if not steps:
            return ctx.told("BLOCK", f"BLOCK: no layers, the identity: {volume(shape)} → "
                            f"{volume(out)}", out, activation_bytes=0)
        span = (f"layer {steps[0].label}" if len(steps) == 1 else
                f"layers {steps[0].label} to {steps[-1].label}")
        params = self.param_count()
        text = (f"BLOCK: {plural(len(steps), 'layer')} in a row: {volume(shape)} → {volume(out)}; "
                f"{params:,} parameters, {sum(s.macs for s in steps):,} multiply-adds ({span} "
                "below)")
        return ctx.told("BLOCK", text, out, steps=steps)

    # -- ONNX --
    def to_onnx(self, g: Any, x: str, input_shape: Shape) -> str:
        """Its layers in order, each named '<prefix>.<child>' as in the state dict.  (No
        from_onnx: an imported graph comes back as one flat Sequential.)"""
        shape = tuple(input_shape)
        for name, layer in self.children():
            x = g.emit(name, layer, x, shape)
            shape = layer.output_shape(shape)
        return x

    # -- PyTorch --
    def to_torch(self, torch: Any) -> Any:
        """nn.Sequential of its children's modules, under the children's names."""
        module = torch.nn.Sequential()
        for name, layer in self.children():
            module.add_module(name, torch.child_module(name, layer))
        return module

    @classmethod
    def from_torch(cls, module: Any, torch: Any) -> Layer:
        return cls(*[torch.child_layer(name, child) for name, child in module.named_children()])

    # -- JSON --
    spec_keys = ("layers",)

    def to_spec(self) -> dict[str, Any]:
        """layers: each inner layer's entry (its kind's name and its own ``to_spec``)."""
        return {"layers": [{"type": require_kind(layer, "saved").name, **layer.to_spec()}
                           for layer in self.layers]}

    @classmethod
    def from_spec(cls, spec: Any, ctx: Any) -> Layer:
        """A nested block: ``{"type": "sequential", "layers": [...]}``."""
        layers = spec.get("layers")
        if not isinstance(layers, list) or not layers:
            raise spec.error(f"'layers' must be a non-empty list of layer dicts, got {layers!r}")
        return cls(*ctx.build(layers))

    @classmethod
    def example(cls, dtype: Any = np.float32) -> tuple[Layer, Shape]:
        """conv, tanh, flatten, fc (the kinds looked up: a container names no concrete layer)."""
        layers = (lookup("conv").cls(2, 3, 3, dtype=dtype, init="torch", seed=0),
                  lookup("tanh").cls(), lookup("flatten").cls(),
                  lookup("fc").cls(None, 4, dtype=dtype, init="torch", seed=1))
        return cls(*layers, input_shape=(2, 5, 5)), (2, 5, 5)

    def __repr__(self) -> str:
        inner = ",\n".join(f"  ({i}) {layer!r}" for i, layer in enumerate(self.layers))
        return f"Sequential(\n{inner}\n)"
