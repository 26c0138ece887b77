"""The layer protocol every convscope layer follows.

``y = layer.forward(x)`` keeps what the backward pass needs; ``dx = layer.backward(dy)`` returns
the gradient wrt the input and *adds* the gradients wrt the parameters into ``layer.grads`` (as
PyTorch accumulates ``.grad``; :meth:`zero_grad` clears them).  ``params``, ``grads`` and
``buffers`` are dicts named as in PyTorch's state_dict.  Shapes without the batch axis
("per-image shapes") drive :meth:`build` and :meth:`output_shape`.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..backend import grad_enabled, xp_of
from ..errors import ShapeError

Array = Any
Shape = tuple[int, ...]
FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


def float_dtype(dtype: Any) -> np.dtype:
    """float32 or float64, or a clear error."""
    dt = np.dtype(dtype)
    if dt not in FLOAT_DTYPES:
        raise TypeError(f"dtype must be float32 or float64, got {dt}")
    return dt


def positive_int(value: Any, name: str, owner: str) -> int:
    """An int >= 1, or a ValueError naming the layer and the value."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{owner}: {name} must be a positive int, got {value!r}")
    return int(value)


class Layer:
    """Base class: no parameters, identity shapes.  Subclasses override forward/backward."""

    dtype: np.dtype | None = None  # set by layers with parameters

    def __init__(self) -> None:
        self.params: dict[str, Array] = {}
        self.grads: dict[str, Array] = {}
        self.buffers: dict[str, Array] = {}
        self.training = True
        self._cache: Any = None
        self._out_shape: tuple[int, ...] | None = None

    # -- the protocol -------------------------------------------------------------------------
    def forward(self, x: Array) -> Array:
        raise NotImplementedError

    def backward(self, dy: Array) -> Array:
        raise NotImplementedError

    def __call__(self, x: Array) -> Array:
        return self.forward(x)

    def train(self, mode: bool = True) -> "Layer":
        """Training mode (dropout drops, batch norm uses batch statistics); returns self."""
        self.training = mode
        return self

    def eval(self) -> "Layer":
        """Evaluation mode: dropout is the identity, batch norm uses its running statistics."""
        return self.train(False)

    def parameters(self) -> list[tuple[str, Array, Array]]:
        """(name, parameter, gradient) triples, for optimisers."""
        grads = self.grads
        return [(k, v, grads[k]) for k, v in self.params.items()]

    def zero_grad(self) -> None:
        """Set every gradient to zero (backward adds into them)."""
        for g in self.grads.values():
            g[...] = 0

    # -- shapes and the summary --------------------------------------------------------------
    def build(self, input_shape: Shape, rng: np.random.Generator | None = None) -> Shape:
        """Create parameters for a per-image ``input_shape`` if needed; return the output shape.

        With ``rng``, (re)initialise the parameters from it (reproducible models).
        """
        return self.output_shape(input_shape)

    def output_shape(self, input_shape: Shape) -> Shape:
        """Per-image output shape for a per-image input shape; raises ShapeError if it does not fit."""
        return tuple(input_shape)

    def param_count(self) -> int:
        return int(sum(p.size for p in self.params.values()))

    def param_formula(self) -> str:
        """The parameter count with its formula, e.g. ``5·5·3·6 + 6 = 456`` ('' when none)."""
        return ""

    def macs(self, input_shape: Shape) -> int:
        """Multiply-adds per image."""
        return 0

    # -- helpers for subclasses ----------------------------------------------------------------
    @property
    def name(self) -> str:
        return type(self).__name__

    def _check(self, x: Array, ranks: tuple[int, ...], layout: str) -> None:
        """Raise a clear error for a non-array, a wrong rank or a wrong dtype."""
        if not hasattr(x, "ndim") or not hasattr(x, "dtype"):
            raise TypeError(f"{self!r}: expected an array of shape {layout}, got {type(x).__name__}")
        if x.ndim not in ranks:
            hint = "; add the batch axis with x[None]" if x.ndim + 1 in ranks else ""
            raise ShapeError(f"{self!r}: expected a {ranks[0]}-D input {layout}, "
                             f"got shape {tuple(x.shape)}{hint}")
        if x.dtype not in FLOAT_DTYPES:
            raise TypeError(f"{self!r}: expected a float32 or float64 input, got {x.dtype}; "
                            "convert with x.astype(np.float32)")
        if self.dtype is not None and x.dtype != self.dtype:
            raise TypeError(f"{self!r}: input is {x.dtype} but the layer's parameters are "
                            f"{self.dtype}; convert with x.astype(np.{self.dtype}) or build the "
                            f"layer with dtype=np.{x.dtype}")

    def _keep(self, cache: Any, y: Array) -> Array:
        """Remember what backward needs (not under no_grad); return y."""
        if grad_enabled():
            self._cache, self._out_shape = cache, tuple(y.shape)
        else:
            self._cache, self._out_shape = None, None
        return y

    def _take(self, dy: Array) -> Any:
        """The forward cache, after checking dy has the output's shape."""
        if self._out_shape is None:
            raise RuntimeError(f"{self!r}: backward() needs a forward() first (outside no_grad())")
        if tuple(dy.shape) != self._out_shape:
            raise ShapeError(f"{self!r}: backward got dy of shape {tuple(dy.shape)}, "
                             f"the forward output was {self._out_shape}")
        return self._cache

    def _add_grad(self, name: str, value: Array) -> None:
        g = self.grads[name]
        xp_of(g).add(g, value, out=g)

    def _set_params(self, **arrays: Array) -> None:
        self.params = dict(arrays)
        self.grads = {k: xp_of(v).zeros_like(v) for k, v in arrays.items()}

    def __repr__(self) -> str:
        return f"{self.name}()"
