"""The fully connected (FC) layer, Flatten in front of it, and Dropout."""

from __future__ import annotations

from typing import Any

import numpy as np

from .. import init as inits
from .. import workspace
from ..runtime import xp_of
from ..errors import ShapeError
from ..shapes import linear_param_formula
from ..words import minus, volume
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

    # -- explain --
    def explain(self, input_shape: Shape, ctx: Any) -> Any:
        """'FLATTEN: 12×12×10 → 1,440 numbers in a row; no parameters'."""
        out = self.output_shape(input_shape)
        return ctx.told("FLATTEN", f"FLATTEN: {volume(input_shape)} → {out[0]:,} numbers in a row; "
                        "no parameters", out)

    # -- ONNX --
    def to_onnx(self, g: Any, x: str, input_shape: Shape) -> str:
        return g.node("Flatten", [x], axis=1)

    @classmethod
    def from_onnx(cls, node: Any, g: Any, input_shape: Shape) -> Layer:
        """Flatten with axis 1, or Reshape to (N, -1) (also written (0, -1) or (-1, C·H·W))."""
        if node.op_type == "Reshape":
            target = [int(v) for v in g.const(node, 1, "Reshape shape")]
            flat = int(np.prod(input_shape))
            if len(target) != 2 or target[0] not in (0, -1) or target[1] not in (-1, flat) \
                    or target == [-1, -1]:
                raise ValueError(f"Reshape to {target}: only flattening to (N, -1) is supported")
            return cls()
        axis = int(g.attrs(node).get("axis", 1))
        if axis != 1:
            raise ValueError(f"Flatten axis {axis}: only axis 1 (keep the batch axis) is "
                             "supported")
        return cls()

    # -- PyTorch --
    def to_torch(self, torch: Any) -> Any:
        return torch.nn.Flatten()

    @classmethod
    def from_torch(cls, module: Any, torch: Any) -> Layer:
        if module.start_dim != 1 or module.end_dim != -1:
            raise torch.unsupported(module, f"start_dim={module.start_dim}, "
                                            f"end_dim={module.end_dim}; only Flatten(1, -1) is")
        return cls()

    # -- JSON --
    @classmethod
    def example(cls, dtype: Any = None) -> tuple[Layer, Shape]:
        return cls(), (2, 3, 3)


@register_layer("fc", aliases=("dense", "linear"), onnx_ops=("Gemm", "MatMul"), torch=("Linear",))
class Linear(Layer):
    """y = x Wᵀ + b: (N, in_features) -> (N, out_features); ``weight`` (out, in), ``bias`` (out,).

    ``in_features=None`` is inferred from the input shape given to :class:`Sequential`.
    """

    # -- traits --
    input_grad_optional = True  # backward(dy, input_grad=False) skips dx

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

    # -- memory --
    def build_virtual(self, input_shape: Shape) -> Shape:
        """build() with placeholder weight (out, in) and bias (out,)."""
        if len(input_shape) != 1:
            raise ShapeError(f"{self!r}: needs a flat per-image shape (features,), got "
                             f"{tuple(input_shape)}; put a Flatten() before it")
        if self.in_features is None:
            self.in_features = int(input_shape[0])
            self._set_virtual(weight=(self.out_features, self.in_features),
                              **({"bias": (self.out_features,)} if self.use_bias else {}))
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

    # -- explain --
    def explain(self, input_shape: Shape, ctx: Any) -> Any:
        """'FC: 1,440 → 10: weights 1440·10 = 14400, biases 10 (14,410 parameters); ...'."""
        out = self.output_shape(input_shape)
        n_in, n_out = self.in_features, self.out_features
        weights = minus(linear_param_formula(n_in, n_out, False))
        return ctx.told("FC", f"FC: {n_in:,} → {n_out:,}: weights {weights}, biases "
                        f"{n_out if self.use_bias else 0} ({self.param_count():,} parameters); "
                        f"{n_in * n_out:,} multiply-adds", out)

    # -- ONNX --
    def to_onnx(self, g: Any, x: str, input_shape: Shape) -> str:
        """Gemm with transB = 1: y = x Wᵀ + b."""
        inputs = [x, g.tensor("weight", self.params["weight"])]
        if self.use_bias:
            inputs.append(g.tensor("bias", self.params["bias"]))
        return g.node("Gemm", inputs, transB=1)

    @classmethod
    def from_onnx(cls, node: Any, g: Any, input_shape: Shape) -> Layer:
        """Gemm (transA = 0; alpha and beta folded into W and b), or MatMul with a constant
        (in, out) B, its bias the Add after it (the reader folds that in as a third input)."""
        if node.op_type == "MatMul":
            b = g.const(node, 1, "MatMul B")
            if b.ndim != 2:
                raise ValueError(f"MatMul with a {b.ndim}-D B: only (in, out) matrices are "
                                 "supported")
            c = g.const(node, 2, "Add bias", required=False)
            layer = cls(b.shape[0], b.shape[1], c is not None, dtype=g.dtype, seed=0)
            arrays = {"weight": b.T}
            if c is not None:
                arrays["bias"] = np.broadcast_to(c.reshape(-1), (b.shape[1],))
            return g.fill(layer, arrays)
        a = g.attrs(node)
        if a.get("transA", 0):
            raise ValueError("Gemm with transA=1 is not supported")
        b = g.const(node, 1, "Gemm B")
        c = g.const(node, 2, "Gemm C", required=False)
        w = b if a.get("transB", 0) else b.T
        alpha, beta = float(a.get("alpha", 1.0)), float(a.get("beta", 1.0))
        if alpha != 1.0:
            w = w * alpha
        out = w.shape[0]
        layer = cls(w.shape[1], out, c is not None, dtype=g.dtype, seed=0)
        arrays = {"weight": w}
        if c is not None:
            if c.size not in (1, out):
                raise ValueError(f"Gemm C of shape {c.shape} does not broadcast to ({out},)")
            bias = c.reshape(-1) * beta if beta != 1.0 else c.reshape(-1)
            arrays["bias"] = np.broadcast_to(bias, (out,))
        return g.fill(layer, arrays)

    # -- PyTorch --
    def to_torch(self, torch: Any) -> Any:
        return torch.nn.Linear(self._built(), self.out_features, self.use_bias,
                               dtype=torch.dtype_of(self))

    @classmethod
    def from_torch(cls, module: Any, torch: Any) -> Layer:
        return cls(module.in_features, module.out_features, module.bias is not None,
                   dtype=torch.np_dtype(module), seed=0)

    # -- JSON --
    spec_keys = ("units", "num_neurons", "bias", "activation")

    def to_spec(self) -> dict[str, Any]:
        """units, bias."""
        return {"units": self.out_features, "bias": self.use_bias}

    @classmethod
    def from_spec(cls, spec: Any, ctx: Any) -> list[Layer]:
        """A Flatten first when a volume flows in, the layer (``"units": "classes"``: the number
        of classes; ConvNetJS' ``softmax`` entry: ``num_classes``), then its ``activation``."""
        units = spec.get("units", "num_neurons", "num_classes",
                         default="classes" if spec.type == "softmax" else None)
        if units == "classes":
            if ctx.classes is None:
                raise spec.error("'classes' needs the number of classes, which is not known here")
            units = ctx.classes
        if isinstance(units, bool) or not isinstance(units, int) or units < 1:
            raise spec.error(f"'units' must be a positive int or \"classes\", got {units!r}")
        flat: list[Layer] = [Flatten()] if len(ctx.shape) != 1 else []
        return [*flat, cls(None, units, spec.bool("bias", True), dtype=ctx.dtype),
                *spec.activation(ctx)]

    @classmethod
    def example(cls, dtype: Any = np.float32) -> tuple[Layer, Shape]:
        return cls(6, 4, dtype=dtype, init="torch", seed=0), (6,)

    def __repr__(self) -> str:
        return f"Linear({self.in_features}, {self.out_features}{'' if self.use_bias else ', bias=False'})"


@register_layer("dropout", onnx_ops=("Dropout",), torch=("Dropout",))
class Dropout(Layer):
    """Training: zero each value with probability p and scale the rest by 1/(1 - p), so the
    expected output equals the input (inverted dropout).  Evaluation: the identity."""

    # -- traits --
    identity_at_inference = True  # eval(): the identity (viz skips it)
    stochastic = True  # draws masks: the trainer seeds and checkpoints it (rng_state hooks)

    # -- distributed --
    #: None, or (start, stop, total): this worker holds rows start:stop of a global batch of
    #: ``total`` (set by data-parallel training); the mask is drawn for the whole global batch
    #: and sliced, so it does not depend on the number of workers.
    shard: tuple[int, int, int] | None = None

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
        rng = self.rng if xp is np else self._device_rng(xp)  # a device draws its own mask
        if self.shard is None:
            keep = rng.random(x.shape, dtype=x.dtype) >= self.p
        else:
            start, stop, total = self.shard
            if stop - start != x.shape[0]:
                raise ShapeError(f"{self!r}: shard {start}:{stop} of a global batch of {total} "
                                 f"holds {stop - start} images, the input {x.shape[0]}")
            mask = rng.random((total,) + tuple(x.shape[1:]), dtype=x.dtype)
            keep = mask[start:stop] >= self.p
        scale = xp.asarray(keep, dtype=x.dtype) * (0.0 if self.p == 1.0 else 1.0 / (1.0 - self.p))
        return self._keep(scale, x * scale)

    def backward(self, dy: Array) -> Array:
        scale = self._take(dy)
        return dy if scale is None else dy * scale

    # -- device --
    def _device_rng(self, xp: Any) -> Any:
        """The device's ``xp.random.default_rng``, seeded once from :attr:`rng` (one draw): the
        mask is drawn where the input is, no copy per step; the CPU path uses :attr:`rng`."""
        held = vars(self).get("_device_gen")
        if held is None or held[0] is not xp:
            held = self._device_gen = (xp, xp.random.default_rng(int(self.rng.integers(2 ** 63))))
        return held[1]

    def _moved_to(self, device: Any) -> None:
        vars(self).pop("_device_gen", None)  # a new device: a new generator, seeded from rng

    # -- training state --
    def rng_state(self) -> dict[str, Any]:
        """The mask generator's ``bit_generator.state`` (a dict of ints), for checkpoints."""
        return self.rng.bit_generator.state

    def set_rng_state(self, state: dict[str, Any]) -> None:
        """A new generator in ``state`` (what :meth:`rng_state` gave): masks continue from
        there; a generator shared with other code is left alone."""
        kind = getattr(np.random, str(state.get("bit_generator")), None)
        if not (isinstance(kind, type) and issubclass(kind, np.random.BitGenerator)):
            raise ValueError(f"{self!r}: unknown bit generator {state.get('bit_generator')!r}")
        bits = kind()
        bits.state = state
        self.rng = np.random.Generator(bits)
        vars(self).pop("_device_gen", None)  # a device re-seeds from the restored generator

    # -- explain --
    def explain(self, input_shape: Shape, ctx: Any) -> Any:
        """'DROPOUT: p = 0.3 zeroes numbers while training ...; the identity when predicting'."""
        out = self.output_shape(input_shape)
        return ctx.told("DROPOUT", f"DROPOUT: p = {self.p:g} zeroes numbers while training and "
                        "scales the rest by 1/(1 − p); the identity when predicting: "
                        f"{volume(input_shape)} → {volume(out)}", out)

    # -- ONNX --
    def to_onnx(self, g: Any, x: str, input_shape: Shape) -> str:
        """Dropout with its ratio as an input: the identity at inference."""
        return g.node("Dropout", [x, g.tensor("ratio", self.p)])

    @classmethod
    def from_onnx(cls, node: Any, g: Any, input_shape: Shape) -> Layer:
        training = g.const(node, 2, "Dropout training_mode", required=False)
        if training is not None and bool(np.asarray(training).reshape(-1)[0]):
            raise ValueError("Dropout with training_mode=True is not an inference graph")
        if g.output_used(node, 1):
            raise ValueError("Dropout's mask output is used")
        ratio = g.const(node, 1, "Dropout ratio", required=False)
        if ratio is None:
            return cls(0.5)
        ratio = np.asarray(ratio).reshape(-1)[0]
        return cls(g.f32(ratio) if ratio.dtype == np.float32 else float(ratio))

    # -- PyTorch --
    def to_torch(self, torch: Any) -> Any:
        return torch.nn.Dropout(self.p)

    @classmethod
    def from_torch(cls, module: Any, torch: Any) -> Layer:
        return cls(module.p)

    # -- JSON --
    spec_keys = ("p", "drop_prob")

    def to_spec(self) -> dict[str, Any]:
        """p."""
        return {"p": self.p}

    @classmethod
    def from_spec(cls, spec: Any, ctx: Any) -> Layer:
        """Its random generator is seeded from ``ctx.rng`` (a seeded model drops the same)."""
        p = spec.float("p", "drop_prob", default=0.5, high=1.0)
        return cls(p, seed=int(ctx.rng.integers(2 ** 63)))

    @classmethod
    def example(cls, dtype: Any = None) -> tuple[Layer, Shape]:
        return cls(0.3, seed=0), (6,)

    def __repr__(self) -> str:
        return f"Dropout(p={self.p})"
