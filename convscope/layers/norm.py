"""Batch normalisation: normalise each channel by its batch statistics, then scale and shift.

Training uses the batch's mean and (biased) variance and updates running estimates
(running = (1 - momentum)·running + momentum·batch, the variance unbiased, as PyTorch does);
evaluation uses the running estimates.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..ops import norm as F
from ..runtime import xp_of
from ..errors import ShapeError
from ..words import minus, volume
from .base import Array, Layer, Shape, float_dtype, positive_int, virtual_array
from .registry import register_layer


class _BatchNorm(Layer):
    ranks: tuple[int, ...] = ()
    layout = ""

    # -- distributed --
    #: None, or a synchroniser (``convscope.distributed.SyncBN``, set by ``--sync-bn``) whose
    #: ``stats(x)`` gives the statistics of the global batch over every worker and whose
    #: ``backward(dy, cache)`` the matching gradients.  Not part of the model's file.
    sync: Any = None

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

    # -- memory --
    def build_virtual(self, input_shape: Shape) -> Shape:
        """build() with placeholder weight, bias, running_mean, running_var (C,)."""
        if self.num_features is None and len(input_shape) >= 1:
            c = self.num_features = int(input_shape[0])
            if self.affine:
                self._set_virtual(weight=(c,), bias=(c,))
            if self.track_running_stats:
                self.buffers = {"running_mean": virtual_array((c,), self.dtype),
                                "running_var": virtual_array((c,), self.dtype),
                                "num_batches_tracked": virtual_array((), np.int64)}
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
        sync = self.sync if self.training else None  # --sync-bn (see "-- distributed --")
        if sync is None and x.shape[0] == 0 and self.track_running_stats:
            batch_stats = False  # an empty batch (a worker's empty slice): nothing to measure
        if batch_stats:
            m = x.size // x.shape[1]
            if sync is not None:  # the global batch's statistics, over every worker
                mean, var, m = sync.stats(x)
            if self.training and m < 2:
                raise ShapeError(f"{self!r}: training needs more than one value per channel to "
                                 f"compute a variance, got input shape {tuple(x.shape)}")
            if sync is None:  # statistics and normalisation in one go: x - mean computed once
                y, cache, mean, var = F.batchnorm_train_forward(
                    x, self.params.get("weight"), self.params.get("bias"), self.eps)
            if self.training and self.track_running_stats:
                self._update_running(mean, var * (m / (m - 1)))
            if sync is None:
                return self._keep((cache, batch_stats, sync), y)
        else:
            mean, var = self.buffers["running_mean"], self.buffers["running_var"]
        y, cache = F.batchnorm_forward(x, mean, var, self.params.get("weight"),
                                       self.params.get("bias"), self.eps)
        return self._keep((cache, batch_stats, sync), y)

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
        cache, batch_stats, sync = self._take(dy)
        if sync is not None:
            dx, dgamma, dbeta = sync.backward(dy, cache)
        else:
            dx, dgamma, dbeta = F.batchnorm_backward(dy, cache, batch_stats)
        if self.affine:
            self._add_grad("weight", dgamma)
            self._add_grad("bias", dbeta)
        return dx

    def param_formula(self) -> str:
        return f"2·{self._built()} = {2 * self._built()}" if self.affine else ""

    # -- explain --
    def explain(self, input_shape: Shape, ctx: Any) -> Any:
        """'BATCHNORM: (x − mean) / √(var + ε)·γ + β per channel: ...; 2·16 = 32 parameters (γ, β)'."""
        out = self.output_shape(input_shape)
        count = (f"{minus(self.param_formula())} parameters (γ, β)" if self.affine
                 else "no parameters")
        return ctx.told("BATCHNORM", "BATCHNORM: (x − mean) / √(var + ε)·γ + β per channel: "
                        f"{volume(input_shape)} → {volume(out)}; {count}"
                        + ("; running mean and variance kept" if self.track_running_stats else ""),
                        out)

    # -- ONNX --
    def to_onnx(self, g: Any, x: str, input_shape: Shape) -> str:
        """BatchNormalization with the running statistics (γ = 1, β = 0 without affine)."""
        if not self.track_running_stats:
            raise ValueError(f"{self!r}: track_running_stats=False normalises with the batch's "
                             "own statistics even at inference; ONNX BatchNormalization needs "
                             "running statistics (build the layer with track_running_stats=True)")
        c, p, b = self._built(), self.params, self.buffers
        weight = p["weight"] if self.affine else np.ones(c)
        bias = p["bias"] if self.affine else np.zeros(c)
        inputs = [x, g.tensor("weight", weight), g.tensor("bias", bias),
                  g.tensor("running_mean", b["running_mean"]),
                  g.tensor("running_var", b["running_var"])]
        return g.node("BatchNormalization", inputs, epsilon=float(self.eps))

    @classmethod
    def from_onnx(cls, node: Any, g: Any, input_shape: Shape) -> Layer | None:
        """BatchNormalization in inference mode; None when the input's rank is the other
        kind's (BatchNorm2D reads (C, H, W), BatchNorm1D (C,) and (C, L))."""
        if len(input_shape) + 1 not in cls.ranks:
            return None
        a = g.attrs(node)
        if a.get("training_mode", 0):
            raise ValueError("BatchNormalization with training_mode=1 is not an inference graph")
        if any(g.output_used(node, i) for i in range(1, len(node.output))):
            raise ValueError("BatchNormalization's running-statistics outputs are used")
        names = ("weight", "bias", "running_mean", "running_var")
        arrays = {k: g.const(node, j + 1, f"BatchNormalization {k}") for j, k in enumerate(names)}
        layer = cls(len(arrays["running_mean"]), g.f32(a.get("epsilon", 1e-5)), dtype=g.dtype)
        return g.fill(layer, arrays)

    # -- PyTorch --
    def to_torch(self, torch: Any) -> Any:
        module = torch.nn.BatchNorm2d if self.ranks == (4,) else torch.nn.BatchNorm1d
        return module(self._built(), self.eps, self.momentum, self.affine,
                      self.track_running_stats, dtype=torch.dtype_of(self))

    @classmethod
    def from_torch(cls, module: Any, torch: Any) -> Layer:
        return cls(module.num_features, module.eps, module.momentum, module.affine,
                   module.track_running_stats, dtype=torch.np_dtype(module))

    # -- JSON --
    spec_keys = ("eps", "momentum", "affine", "track_running_stats")

    def to_spec(self) -> dict[str, Any]:
        """eps, momentum (null: a cumulative average), affine, track_running_stats."""
        momentum = None if self.momentum is None else float(self.momentum)
        return {"eps": self.eps, "momentum": momentum, "affine": self.affine,
                "track_running_stats": self.track_running_stats}

    @classmethod
    def from_spec(cls, spec: Any, ctx: Any) -> Layer:
        """``batchnorm`` is 2-D after a volume and 1-D after fc; ``batchnorm1d`` always 1-D."""
        if cls is BatchNorm2D and len(ctx.shape) != 3:
            cls = BatchNorm1D
        momentum = (None if spec.has("momentum") and spec.get("momentum") is None
                    else spec.float("momentum", default=0.1, high=1.0))
        return cls(None, spec.float("eps", default=1e-5), momentum, spec.bool("affine", True),
                   spec.bool("track_running_stats", True), dtype=ctx.dtype)

    def __repr__(self) -> str:
        return f"{self.name}({self.num_features})"


@register_layer("batchnorm", aliases=("bn", "batchnorm2d"), onnx_ops=("BatchNormalization",),
                torch=("BatchNorm2d",))
class BatchNorm2D(_BatchNorm):
    """Per-channel batch norm of (N, C, H, W); statistics over N, H and W."""

    ranks = (4,)
    layout = "(N, C, H, W)"

    # -- JSON --
    @classmethod
    def example(cls, dtype: Any = np.float32) -> tuple[Layer, Shape]:
        return cls(2, dtype=dtype), (2, 3, 3)


@register_layer("batchnorm1d", onnx_ops=("BatchNormalization",), torch=("BatchNorm1d",))
class BatchNorm1D(_BatchNorm):
    """Per-feature batch norm of (N, C) or (N, C, L); statistics over N (and L)."""

    ranks = (2, 3)
    layout = "(N, C) or (N, C, L)"

    # -- JSON --
    @classmethod
    def example(cls, dtype: Any = np.float32) -> tuple[Layer, Shape]:
        return cls(3, momentum=None, dtype=dtype), (3,)
