"""Element-wise nonlinearities.  Each backward is the local derivative times dy."""

from __future__ import annotations

from .. import workspace
from ..runtime import grad_enabled, xp_of
from .base import Array, Layer
from .registry import register_layer


def _channels_last(x: Array) -> bool:
    """Whether a 4-D x keeps its channels innermost in memory (its copies should too)."""
    s = x.strides
    return x.ndim == 4 and x.shape[1] > 1 and abs(s[1]) <= min(abs(s[2]), abs(s[3]))

_ANY = (1, 2, 3, 4, 5)


@register_layer("relu", onnx_ops=("Relu",), torch=("ReLU",))
class ReLU(Layer):
    """max(0, x); gradient 1 where x > 0 (or NaN), else 0.  Any shape.

    Keeps only that mask (1 byte per value) for backward, not y itself.
    """

    def forward(self, x: Array) -> Array:
        self._check(x, _ANY, "(N, ...)")
        xp = xp_of(x)
        cl = _channels_last(x)
        y = xp.maximum(x, 0, out=workspace.empty(x.shape, x.dtype, xp, cl))
        if not grad_enabled():
            return self._keep(None, y)
        # the gradient passes where y != 0: x > 0, and NaN (as in PyTorch)
        return self._keep(xp.not_equal(y, 0, out=workspace.empty(x.shape, bool, xp, cl)), y)

    def backward(self, dy: Array) -> Array:
        mask = self._take(dy)
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

    def __repr__(self) -> str:
        return f"LeakyReLU({self.negative_slope})"


@register_layer("sigmoid", onnx_ops=("Sigmoid",), torch=("Sigmoid",))
class Sigmoid(Layer):
    """s = 1 / (1 + e^-x); ds/dx = s·(1 - s).  Written stably for large |x|."""

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
class Tanh(Layer):
    """tanh(x); d/dx = 1 - tanh(x)^2."""

    def forward(self, x: Array) -> Array:
        self._check(x, _ANY, "(N, ...)")
        y = xp_of(x).tanh(x)
        return self._keep(y, y)

    def backward(self, dy: Array) -> Array:
        y = self._take(dy)
        return dy * (1 - y * y)
