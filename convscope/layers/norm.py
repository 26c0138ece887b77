"""Batch normalisation: normalise each channel by its batch statistics, then scale and shift.

Training uses the batch's mean and (biased) variance and updates running estimates
(running = (1 - momentum)·running + momentum·batch, the variance unbiased, as PyTorch does);
evaluation uses the running estimates.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .. import functional as F
from ..runtime import xp_of
from ..errors import ShapeError
from .base import Array, Layer, Shape, float_dtype, positive_int
from .registry import register_layer


class _BatchNorm(Layer):
    ranks: tuple[int, ...] = ()
    layout = ""

    def __init__(self, num_features: int | None = None, eps: float = 1e-5,
                 momentum: float | None = 0.1, affine: bool = True,
                 track_running_stats: bool = True, *, dtype: Any = np.float32) -> None:
        super().__init__()
        self.eps = float(eps)
        self.momentum = momentum
        self.affine = bool(affine)
        self.track_running_stats = bool(track_running_stats)
        self.dtype = float_dtype(dtype)
        self.num_features: int | None = None
        if num_features is not None:
            self._create(positive_int(num_features, "num_features", self.name))

    def _create(self, c: int) -> None:
        self.num_features = c
        if self.affine:
            self._set_params(weight=np.ones(c, self.dtype), bias=np.zeros(c, self.dtype))
        if self.track_running_stats:
            self.buffers = {"running_mean": np.zeros(c, self.dtype),
                            "running_var": np.ones(c, self.dtype),
                            "num_batches_tracked": np.zeros((), np.int64)}

    def build(self, input_shape: Shape, rng: np.random.Generator | None = None) -> Shape:
        if self.num_features is None and len(input_shape) >= 1:
            self._create(int(input_shape[0]))
        return self.output_shape(input_shape)

    def _built(self) -> int:
        """num_features, or a clear error while it is not known yet."""
        if self.num_features is None:
            raise ShapeError(f"{self!r}: num_features is not known yet; give it, or an input_shape "
                             "to Sequential")
        return self.num_features

    def output_shape(self, input_shape: Shape) -> Shape:
        if len(input_shape) + 1 not in self.ranks or input_shape[0] != self._built():
            raise ShapeError(f"{self!r}: needs {self.layout} with C = {self.num_features}, got a "
                             f"per-image shape {tuple(input_shape)}")
        return tuple(input_shape)

    def forward(self, x: Array) -> Array:
        """Same shape out as in: y = (x - mean) / sqrt(var + eps) · weight + bias."""
        self._check(x, self.ranks, self.layout)
        self.output_shape(tuple(x.shape[1:]))
        batch_stats = self.training or not self.track_running_stats
        if batch_stats:
            m = x.size // x.shape[1]
            if self.training and m < 2:
                raise ShapeError(f"{self!r}: training needs more than one value per channel to "
                                 f"compute a variance, got input shape {tuple(x.shape)}")
            mean, var = F.batchnorm_stats(x)
            if self.training and self.track_running_stats:
                self._update_running(mean, var * (m / (m - 1)))
        else:
            mean, var = self.buffers["running_mean"], self.buffers["running_var"]
        y, cache = F.batchnorm_forward(x, mean, var, self.params.get("weight"),
                                       self.params.get("bias"), self.eps)
        return self._keep((cache, batch_stats), y)

    def _update_running(self, mean: Array, unbiased_var: Array) -> None:
        b = self.buffers
        b["num_batches_tracked"] += 1
        mom = 1.0 / float(b["num_batches_tracked"]) if self.momentum is None else self.momentum
        xp = xp_of(mean)
        for name, value in (("running_mean", mean), ("running_var", unbiased_var)):
            r = b[name]
            r *= 1 - mom
            xp.add(r, (mom * value).astype(r.dtype), out=r)

    def backward(self, dy: Array) -> Array:
        cache, batch_stats = self._take(dy)
        dx, dgamma, dbeta = F.batchnorm_backward(dy, cache, batch_stats)
        if self.affine:
            self._add_grad("weight", dgamma)
            self._add_grad("bias", dbeta)
        return dx

    def param_formula(self) -> str:
        return f"2·{self._built()} = {2 * self._built()}" if self.affine else ""

    def __repr__(self) -> str:
        return f"{self.name}({self.num_features})"


@register_layer("batchnorm", aliases=("bn", "batchnorm2d"), onnx_ops=("BatchNormalization",),
                torch=("BatchNorm2d",))
class BatchNorm2D(_BatchNorm):
    """Per-channel batch norm of (N, C, H, W); statistics over N, H and W."""

    ranks = (4,)
    layout = "(N, C, H, W)"


@register_layer("batchnorm1d", onnx_ops=("BatchNormalization",), torch=("BatchNorm1d",))
class BatchNorm1D(_BatchNorm):
    """Per-feature batch norm of (N, C) or (N, C, L); statistics over N (and L)."""

    ranks = (2, 3)
    layout = "(N, C) or (N, C, L)"
