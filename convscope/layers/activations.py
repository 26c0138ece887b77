"""Element-wise nonlinearities.  Each backward is the local derivative times dy."""

from __future__ import annotations

import math
from typing import Any, ClassVar

from .. import workspace
from ..ops import jit_act
from ..ops.layout import is_channels_last as _channels_last
from ..runtime import grad_enabled, xp_of
from ..words import volume
from .base import Array, Layer, Shape
from .registry import register_layer

_ANY = (1, 2, 3, 4, 5)


def _elementwise(layer: Layer, kind: str, formula: str, input_shape: Shape, ctx: Any) -> Any:
    """'RELU: max(0, x) on each of the 4,704 numbers: 28×28×6 → 28×28×6; no parameters'."""
    out = layer.output_shape(input_shape)
    return ctx.told(kind, f"{formula} on each of the {math.prod(out):,} numbers: {volume(input_shape)} → "
                    f"{volume(out)}; no parameters", out)


class _Pointwise(Layer):
    """A parameterless function applied to each number: what it is in every format is data
    (``word``, ``formula``, ``onnx_op``, ``torch_module``); subclasses write forward/backward."""

    word: ClassVar[str]
    formula: ClassVar[str]
    onnx_op: ClassVar[str]
    torch_module: ClassVar[str]
    elementwise = True  # a conv or fc entry's "activation" key may name it

    def explain(self, input_shape: Shape, ctx: Any) -> Any:
        return _elementwise(self, self.word, f"{self.word}: {self.formula}", input_shape, ctx)

    def to_onnx(self, g: Any, x: str, input_shape: Shape) -> str:
        return g.node(self.onnx_op, [x])

    @classmethod
    def from_onnx(cls, node: Any, g: Any, input_shape: Shape) -> Layer:
        return cls()

    def to_torch(self, torch: Any) -> Any:
        return getattr(torch.nn, self.torch_module)()

    @classmethod
    def from_torch(cls, module: Any, torch: Any) -> Layer:
        return cls()

    @classmethod
    def example(cls, dtype: Any = None) -> tuple[Layer, Shape]:
        return cls(), (2, 3, 4)


@register_layer("relu", onnx_ops=("Relu",), torch=("ReLU",))
class ReLU(_Pointwise):
    """max(0, x); gradient 1 where x > 0 (or NaN), else 0.  Any shape.

    Keeps only that mask (1 byte per value) for backward, not y itself.  With the compiled
    kernels on, one sweep each way (:mod:`~convscope.ops.jit_act`).
    """

    word, formula, onnx_op, torch_module = "RELU", "max(0, x)", "Relu", "ReLU"

    def forward(self, x: Array) -> Array:
        self._check(x, _ANY, "(N, ...)")
        xp = xp_of(x)
        if not grad_enabled():
            y = xp.maximum(x, 0, out=workspace.empty(x.shape, x.dtype, xp, _channels_last(x)))
            return self._keep(None, y)
        compiled = jit_act.relu_forward(x)
        if compiled is not None:
            return self._keep(compiled[1], compiled[0])
        cl = _channels_last(x)
        y = xp.maximum(x, 0, out=workspace.empty(x.shape, x.dtype, xp, cl))
        # the gradient passes where y != 0: x > 0, and NaN (as in PyTorch)
        return self._keep(xp.not_equal(y, 0, out=workspace.empty(x.shape, bool, xp, cl)), y)

    def backward(self, dy: Array) -> Array:
        mask = self._take(dy)
        dx = jit_act.relu_backward(dy, mask)
        if dx is not None:
            return dx
        xp = xp_of(dy)
        out = workspace.empty(mask.shape, dy.dtype, xp, _channels_last(mask))  # forward's layout
        return xp.multiply(dy, mask, out=out)


@register_layer("leakyrelu", aliases=("leaky_relu",), onnx_ops=("LeakyRelu",), torch=("LeakyReLU",))
class LeakyReLU(Layer):
    """x if x > 0 else a·x (a = negative_slope, 0.01 as in PyTorch)."""

    def __init__(self, negative_slope: float = 0.01) -> None:
        super().__init__()
        self.negative_slope = float(negative_slope)

    def forward(self, x: Array) -> Array:
        self._check(x, _ANY, "(N, ...)")
        pos = x > 0
        return self._keep(pos, xp_of(x).where(pos, x, x * self.negative_slope))

    def backward(self, dy: Array) -> Array:
        pos = self._take(dy)
        return xp_of(dy).where(pos, dy, dy * self.negative_slope)

    # -- explain --
    def explain(self, input_shape: Shape, ctx: Any) -> Any:
        return _elementwise(self, "RELU", f"LEAKY RELU: x if x > 0 else {self.negative_slope:g}·x",
                            input_shape, ctx)

    # -- ONNX --
    def to_onnx(self, g: Any, x: str, input_shape: Shape) -> str:
        return g.node("LeakyRelu", [x], alpha=float(self.negative_slope))

    @classmethod
    def from_onnx(cls, node: Any, g: Any, input_shape: Shape) -> Layer:
        return cls(g.f32(g.attrs(node).get("alpha", 0.01)))

    # -- PyTorch --
    def to_torch(self, torch: Any) -> Any:
        return torch.nn.LeakyReLU(self.negative_slope)

    @classmethod
    def from_torch(cls, module: Any, torch: Any) -> Layer:
        return cls(module.negative_slope)

    # -- JSON --
    elementwise = True  # a conv or fc entry's "activation" key may name it
    spec_keys = ("slope",)

    def to_spec(self) -> dict[str, Any]:
        """slope: the negative slope a."""
        return {"slope": self.negative_slope}

    @classmethod
    def from_spec(cls, spec: Any, ctx: Any) -> Layer:
        return cls(spec.float("slope", default=0.01))

    @classmethod
    def example(cls, dtype: Any = None) -> tuple[Layer, Shape]:
        return cls(0.2), (2, 3, 4)

    def __repr__(self) -> str:
        return f"LeakyReLU({self.negative_slope})"


@register_layer("sigmoid", onnx_ops=("Sigmoid",), torch=("Sigmoid",))
class Sigmoid(_Pointwise):
    """s = 1 / (1 + e^-x); ds/dx = s·(1 - s).  Written stably for large |x|."""

    word, formula, onnx_op, torch_module = "SIGMOID", "1 / (1 + e^−x)", "Sigmoid", "Sigmoid"

    def forward(self, x: Array) -> Array:
        self._check(x, _ANY, "(N, ...)")
        xp = xp_of(x)
        e = xp.exp(-xp.abs(x))  # never overflows
        y = xp.where(x >= 0, 1 / (1 + e), e / (1 + e))
        return self._keep(y, y)

    def backward(self, dy: Array) -> Array:
        y = self._take(dy)
        return dy * y * (1 - y)


@register_layer("tanh", onnx_ops=("Tanh",), torch=("Tanh",))
class Tanh(_Pointwise):
    """tanh(x); d/dx = 1 - tanh(x)^2."""

    word, formula, onnx_op, torch_module = "TANH", "tanh(x)", "Tanh", "Tanh"

    def forward(self, x: Array) -> Array:
        self._check(x, _ANY, "(N, ...)")
        y = xp_of(x).tanh(x)
        return self._keep(y, y)

    def backward(self, dy: Array) -> Array:
        y = self._take(dy)
        return dy * (1 - y * y)


@register_layer("relu6", onnx_ops=("Clip",), torch=("ReLU6",))
class ReLU6(Layer):
    """min(max(0, x), 6) (MobileNet's); gradient 1 where 0 < x < 6 (or NaN), else 0, as
    PyTorch's hardtanh(x, 0, 6).  Any shape."""

    def forward(self, x: Array) -> Array:
        self._check(x, _ANY, "(N, ...)")
        xp = xp_of(x)
        y = xp.clip(x, 0, 6)
        if not grad_enabled():
            return self._keep(None, y)
        # the gradient passes unless x <= 0 or x >= 6 (so NaN passes it, as in PyTorch)
        return self._keep(~((x <= 0) | (x >= 6)), y)

    def backward(self, dy: Array) -> Array:
        mask = self._take(dy)
        return dy * mask

    # -- explain --
    def explain(self, input_shape: Shape, ctx: Any) -> Any:
        return _elementwise(self, "RELU", "RELU6: min(max(0, x), 6)", input_shape, ctx)

    # -- ONNX --
    def to_onnx(self, g: Any, x: str, input_shape: Shape) -> str:
        """Clip with inputs min 0 and max 6 (opset 11 on)."""
        return g.node("Clip", [x, g.tensor("min", 0.0), g.tensor("max", 6.0)])

    @classmethod
    def from_onnx(cls, node: Any, g: Any, input_shape: Shape) -> Layer | None:
        """Clip(0, 6), its bounds as inputs (opset 11 on) or attributes (older); another Clip is
        not a ReLU6 (None)."""
        a = g.attrs(node)
        low = g.const(node, 1, "Clip min", required=False) if len(node.input) > 1 else a.get("min")
        high = g.const(node, 2, "Clip max", required=False) if len(node.input) > 2 else a.get("max")
        if low is None or high is None or float(low) != 0.0 or float(high) != 6.0:
            return None
        return cls()

    # -- PyTorch --
    def to_torch(self, torch: Any) -> Any:
        return torch.nn.ReLU6()

    @classmethod
    def from_torch(cls, module: Any, torch: Any) -> Layer:
        return cls()

    # -- JSON --
    elementwise = True  # a conv or fc entry's "activation" key may name it

    @classmethod
    def example(cls, dtype: Any = None) -> tuple[Layer, Shape]:
        return cls(), (2, 3, 4)

