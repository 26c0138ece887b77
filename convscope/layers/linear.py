"""The fully connected (FC) layer, Flatten in front of it, and Dropout."""

from __future__ import annotations

from typing import Any

import numpy as np

from .. import init as inits
from .. import workspace
from ..runtime import xp_of
from ..errors import ShapeError
from ..shapes import linear_param_formula
from .base import Array, Layer, Shape, float_dtype, positive_int
from .registry import register_layer


@register_layer("flatten", onnx_ops=("Flatten", "Reshape"), torch=("Flatten",))
class Flatten(Layer):
    """(N, C, H, W) -> (N, C·H·W): the activation volume as one vector per image."""

    def output_shape(self, input_shape: Shape) -> Shape:
        return (int(np.prod(input_shape)),)

    def forward(self, x: Array) -> Array:
        self._check(x, (2, 3, 4, 5), "(N, ...)")
        flat = (x.shape[0], int(np.prod(x.shape[1:])))  # N may be 0
        if x.flags.c_contiguous:
            return self._keep(x.shape, x.reshape(flat))
        y = workspace.empty(flat, x.dtype, xp_of(x))  # e.g. channels-last: a copy in C order
        y.reshape(x.shape)[...] = x
        return self._keep(x.shape, y)

    def backward(self, dy: Array) -> Array:
        return dy.reshape(self._take(dy))


@register_layer("fc", aliases=("dense", "linear"), onnx_ops=("Gemm", "MatMul"), torch=("Linear",))
class Linear(Layer):
    """y = x Wᵀ + b: (N, in_features) -> (N, out_features); ``weight`` (out, in), ``bias`` (out,).

    ``in_features=None`` is inferred from the input shape given to :class:`Sequential`.
    """

    def __init__(self, in_features: int | None = None, out_features: int | None = None,
                 bias: bool = True, *, dtype: Any = np.float32, init: str = "kaiming",
                 seed: int | np.random.Generator | None = None) -> None:
        super().__init__()
        self.out_features = positive_int(out_features, "out_features", "Linear")
        self.use_bias = bool(bias)
        self.dtype = float_dtype(dtype)
        self.init = inits.check_scheme(init)
        self.in_features: int | None = None
        if in_features is not None:
            self.in_features = positive_int(in_features, "in_features", "Linear")
            self.reset_parameters(inits.make_rng(seed))

    def reset_parameters(self, rng: np.random.Generator) -> None:
        """Draw new weights (``init`` scheme) and biases."""
        arrays = {"weight": inits.weight((self.out_features, self.in_features), self.in_features,
                                         self.out_features, self.init, rng, self.dtype)}
        if self.use_bias:
            arrays["bias"] = inits.bias(self.out_features, self.in_features, self.init, rng, self.dtype)
        self._set_params(**arrays)

    def build(self, input_shape: Shape, rng: np.random.Generator | None = None) -> Shape:
        if len(input_shape) != 1:
            raise ShapeError(f"{self!r}: needs a flat per-image shape (features,), got "
                             f"{tuple(input_shape)}; put a Flatten() before it")
        if self.in_features is None:
            self.in_features = int(input_shape[0])
            self.reset_parameters(inits.make_rng(rng))
        elif rng is not None:
            self.reset_parameters(rng)
        return self.output_shape(input_shape)

    def _built(self) -> int:
        """in_features, or a clear error while it is not known yet."""
        if self.in_features is None:
            raise ShapeError(f"{self!r}: in_features is not known yet; give it, or an input_shape "
                             "to Sequential")
        return self.in_features

    def output_shape(self, input_shape: Shape) -> Shape:
        if tuple(input_shape) != (self._built(),):
            hint = "; put a Flatten() before it" if len(input_shape) > 1 else ""
            raise ShapeError(f"{self!r}: input has shape {tuple(input_shape)} per image, the layer "
                             f"needs ({self.in_features},){hint}")
        return (self.out_features,)

    def forward(self, x: Array) -> Array:
        if getattr(x, "ndim", 2) > 2:
            raise ShapeError(f"{self!r}: expected a 2-D input (N, {self.in_features}), got shape "
                             f"{tuple(x.shape)}; put a Flatten() before it")
        self._check(x, (2,), f"(N, {self.in_features})")
        self.output_shape(tuple(x.shape[1:]))
        xp = xp_of(x)
        w = self.params["weight"]
        y = xp.matmul(x, w.T, out=workspace.empty((x.shape[0], w.shape[0]), x.dtype, xp))
        if self.use_bias:
            y += self.params["bias"]
        return self._keep(x, y)

    def backward(self, dy: Array, input_grad: bool = True) -> Array | None:
        """dx = dy W;  dW = dyᵀ x;  db = sum of dy over the batch.  ``input_grad=False`` skips dx
        (returns None)."""
        x = self._take(dy)
        xp = xp_of(dy)
        w = self.params["weight"]
        self._add_grad("weight", xp.matmul(dy.T, x, out=workspace.empty(w.shape, w.dtype, xp)))
        if self.use_bias:
            self._add_grad("bias", dy.sum(axis=0))
        if not input_grad:
            return None
        return xp.matmul(dy, w, out=workspace.empty(x.shape, dy.dtype, xp))

    def param_formula(self) -> str:
        return linear_param_formula(self._built(), self.out_features, self.use_bias)

    def macs(self, input_shape: Shape) -> int:
        return self._built() * self.out_features

    def __repr__(self) -> str:
        return f"Linear({self.in_features}, {self.out_features}{'' if self.use_bias else ', bias=False'})"


@register_layer("dropout", onnx_ops=("Dropout",), torch=("Dropout",))
class Dropout(Layer):
    """Training: zero each value with probability p and scale the rest by 1/(1 - p), so the
    expected output equals the input (inverted dropout).  Evaluation: the identity."""

    def __init__(self, p: float = 0.5, seed: int | np.random.Generator | None = None) -> None:
        super().__init__()
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"Dropout: p must be in [0, 1], got {p!r}")
        self.p = float(p)
        self.rng = np.random.default_rng(seed) if not isinstance(seed, np.random.Generator) else seed

    def forward(self, x: Array) -> Array:
        self._check(x, (2, 3, 4, 5), "(N, ...)")
        if not self.training or self.p == 0.0:
            return self._keep(None, x)
        xp = xp_of(x)
        keep = self.rng.random(x.shape, dtype=x.dtype) >= self.p
        scale = xp.asarray(keep, dtype=x.dtype) * (0.0 if self.p == 1.0 else 1.0 / (1.0 - self.p))
        return self._keep(scale, x * scale)

    def backward(self, dy: Array) -> Array:
        scale = self._take(dy)
        return dy if scale is None else dy * scale

    def __repr__(self) -> str:
        return f"Dropout(p={self.p})"
