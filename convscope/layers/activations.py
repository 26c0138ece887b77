"""Element-wise nonlinearities.  Each backward is the local derivative times dy."""

from __future__ import annotations

from ..backend import xp_of
from .base import Array, Layer

_ANY = (1, 2, 3, 4, 5)


class ReLU(Layer):
    """max(0, x); gradient 1 where x > 0, else 0.  Any shape."""

    def forward(self, x: Array) -> Array:
        self._check(x, _ANY, "(N, ...)")
        y = xp_of(x).maximum(x, 0)
        return self._keep(y, y)  # y > 0 exactly where x > 0

    def backward(self, dy: Array) -> Array:
        y = self._take(dy)
        return dy * (y > 0)


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


class Tanh(Layer):
    """tanh(x); d/dx = 1 - tanh(x)^2."""

    def forward(self, x: Array) -> Array:
        self._check(x, _ANY, "(N, ...)")
        y = xp_of(x).tanh(x)
        return self._keep(y, y)

    def backward(self, dy: Array) -> Array:
        y = self._take(dy)
        return dy * (1 - y * y)
