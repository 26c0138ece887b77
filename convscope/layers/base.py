"""The layer protocol every convscope layer follows.

``y = layer.forward(x)`` keeps what the backward pass needs; ``dx = layer.backward(dy)`` returns
the gradient wrt the input and *adds* the gradients wrt the parameters into ``layer.grads`` (as
PyTorch accumulates ``.grad``; :meth:`zero_grad` clears them).  ``params``, ``grads`` and
``buffers`` are dicts named as in PyTorch's state_dict.  Shapes without the batch axis
("per-image shapes") drive :meth:`build` and :meth:`output_shape`.

What a layer is in every format lives with the layer, as hooks with defaults here (Keras'
``get_config``, PyTorch's ``symbolic``): ``to_spec``/``from_spec`` (the JSON architecture entry),
``explain`` (the lecture's sentence), ``param_formula``/``macs``, ``to_onnx``/``from_onnx``,
``to_torch``/``from_torch``, ``build_virtual``/``adopt`` (placeholder weights: shapes and costs
before anything is allocated, then a file's arrays), and traits.  The kind's name and the ONNX operators and torch classes
it reads are declared with ``@register_layer`` (layers/registry.py).  Optional libraries are
handed to the hooks (``g`` wraps the onnx graph API, ``torch`` is the torch module); a layer never
imports them.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from ..runtime import Device, device_of, get_device, grad_enabled, to_device, xp_of
from ..errors import ShapeError, UnsupportedLayer

Array = Any
Shape = tuple[int, ...]
FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


def float_dtype(dtype: Any) -> np.dtype:
    """float32 or float64, or a clear error."""
    dt = np.dtype(dtype)
    if dt not in FLOAT_DTYPES:
        raise TypeError(f"dtype must be float32 or float64, got {dt}")
    return dt


def virtual_array(shape: Shape, dtype: Any) -> np.ndarray:
    """A read-only array of ``shape`` and ``dtype`` that holds no memory: one zero seen through
    zero strides (``np.broadcast_to``); its ``shape``, ``size`` and ``dtype`` are real."""
    return np.broadcast_to(np.zeros((), dtype), tuple(int(s) for s in shape))


def positive_int(value: Any, name: str, owner: str) -> int:
    """An int >= 1, or a ValueError naming the layer and the value."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{owner}: {name} must be a positive int, got {value!r}")
    return int(value)


class Layer:
    """Base class: no parameters, identity shapes.  Subclasses override forward/backward."""

    dtype: np.dtype | None = None  # set by layers with parameters

    #: The registered kind's name (set by ``@register_layer``; None: not registered).
    kind_name: ClassVar[str | None] = None
    #: Keys its JSON architecture entry takes, besides "type" (the reader rejects others).
    spec_keys: ClassVar[tuple[str, ...]] = ()
    #: Traits the inspectors and the trainer ask instead of checking types.
    shows_filters: ClassVar[bool] = False          # has filters to draw (viz, report, explorer)
    identity_at_inference: ClassVar[bool] = False  # eval() makes it the identity (dropout)
    stochastic: ClassVar[bool] = False             # draws random numbers: rng_state/set_rng_state
    input_grad_optional: ClassVar[bool] = False    # backward(dy, input_grad=False) skips dx
    elementwise: ClassVar[bool] = False            # acts on each number alone: a JSON "activation"

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

    # -- device --
    def to(self, device: "str | Device") -> "Layer":
        """Move the parameters, gradients and buffers, and those of every sub-layer (through
        :meth:`children`), to ``device``: "cpu", "cuda" (the local rank's GPU) or "cuda:N".
        Returns self.  Arrays already there stay the same objects; the forward cache is
        dropped.  Make optimisers after moving (or call their ``to``); the Trainer does both."""
        dev = get_device(device)
        dev.use()  # CuPy allocates and computes on the current GPU: make it this one
        for _, child in self.children():
            child.to(dev)
        own = vars(self)  # a container's params/grads/buffers are merged views: its children's
        for key in ("params", "grads", "buffers"):
            arrays = own.get(key)
            if isinstance(arrays, dict):
                for k, v in arrays.items():
                    arrays[k] = to_device(v, dev)
        self._cache, self._out_shape = None, None
        self._moved_to(dev)
        return self

    def _moved_to(self, device: "Device") -> None:
        """Hook for state other than params, grads and buffers (Dropout's device generator)."""

    @property
    def device(self) -> str:
        """Where the parameters and buffers live: "cpu" (also when there are none), "cuda:N"."""
        for v in (*self.params.values(), *self.buffers.values()):
            return device_of(v)
        return "cpu"

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

    # -- memory: shapes before anything is allocated (limits.py) -------------------------------
    def build_virtual(self, input_shape: Shape) -> Shape:
        """:meth:`build` without allocating: the parameters and buffers it would create become
        read-only zero-stride placeholders of their real shapes and dtypes
        (:func:`virtual_array`, a few bytes however large), so output shapes, parameter counts,
        multiply-adds, ``summary`` and ``explain`` work and the cost checks can run before any
        weight exists.  Not for forward or training; :meth:`adopt` gives it real arrays.
        Returns the per-image output shape.  The default calls :meth:`build` (right for a layer
        without parameters); a kind that creates parameters overrides it."""
        return self.build(input_shape)

    def adopt(self, arrays: dict[str, Array]) -> None:
        """Take ``arrays`` (keys as in the layer's state dict) as its parameters and buffers,
        each cast to the dtype it has, with zero gradients; a container hands each child the
        entries under its prefix.  How a model file's weights replace the placeholders of
        :meth:`build_virtual` without random weights being drawn first (load_model has checked
        the names and shapes)."""
        if self.children():
            for name, child in self.children():
                head = f"{name}."
                child.adopt({k[len(head):]: v for k, v in arrays.items() if k.startswith(head)})
            return
        params = {k: np.asarray(arrays[k]).astype(v.dtype, copy=False)
                  for k, v in self.params.items()}
        self.buffers = {k: np.asarray(arrays[k]).astype(v.dtype, copy=False)
                        for k, v in self.buffers.items()}
        self._set_params(**params)

    # -- what the layer is in every format (defaults; registered kinds override) ----------------
    def children(self) -> list[tuple[str, "Layer"]]:
        """Sub-layers with their state-dict prefixes ('0', 'block.1', ...); none for a plain layer."""
        return []

    def to_spec(self) -> dict[str, Any]:
        """The layer's JSON architecture entry without "type", every key explicit."""
        return {}

    @classmethod
    def from_spec(cls, spec: Any, ctx: Any) -> "Layer | list[Layer]":
        """The layer(s) for one JSON entry.  ``spec`` reads typed keys with errors that name the
        entry (formats/architecture.py); ``ctx`` has ``shape`` (the per-image shape flowing in),
        ``classes``, ``dtype``, ``rng`` and ``build(specs, shape)`` for nested blocks."""
        return cls()

    def explain(self, input_shape: Shape, ctx: Any) -> Any:
        """The lecture's sentence for this layer on a per-image ``input_shape``: an
        ``inspect.explain.Told``, made with ``ctx.told(kind, text, output_shape=None, macs=None,
        workspace_bytes=0, fits=True, problem="", steps=())``.  ``ctx`` (an
        ``inspect.explain.ExplainContext``) has ``itemsize``, ``label`` ('3', '3.1'),
        ``misfit_note(layer, shape)`` (the ``fit='error'`` check of windowed layers) and
        ``walk(children, shape)`` for the layers inside a container.  The words are in
        ``convscope.words``.  The default, built by ``ctx.generic``, names the layer, its shapes
        and its parameter count: 'Swish(): 28×28×6 → 28×28×6; no parameters'."""
        return ctx.generic(self, input_shape)

    def to_onnx(self, g: Any, x: str, input_shape: Shape) -> str:
        """Append the ONNX nodes computing this layer (at inference) on tensor ``x`` of per-image
        ``input_shape``; return the output's name.  ``g`` is formats/onnx's GraphBuilder:
        ``g.node(op, inputs, **attrs)`` and ``g.tensor(suffix, value, dtype=None)`` (named after
        the layer's state-dict prefix), ``g.opset``, ``g.dtype``, ``g.pads(pads)`` and, for a
        container, ``g.emit(name, child, x, shape)``."""
        raise UnsupportedLayer(f"{self.name} has no ONNX export; give it a to_onnx hook")

    @classmethod
    def from_onnx(cls, node: Any, g: Any, input_shape: Shape) -> "Layer | None":
        """The layer for one ONNX node (an operator in the kind's ``onnx_ops``) on per-image
        ``input_shape``, or None when this kind does not read this node after all.  ``g`` is
        formats/onnx's GraphReader: ``g.attrs(node)``, ``g.const(node, i, what)``, ``g.dtype``,
        ``g.fill(layer, arrays)``, ``g.pad_before(node)`` (a Pad folded in), ``g.window_pads``."""
        raise UnsupportedLayer(f"{cls.__name__} has no ONNX import; give it a from_onnx hook")

    def to_torch(self, torch: Any) -> Any:
        """The equivalent ``torch.nn`` module, configured: the converter copies the weights in
        (state-dict keys are shared).  ``torch`` is the torch module (formats/torch's TorchKit:
        every attribute of torch, plus ``PaddedConv2d``, ``dtype_of(layer)`` and, for a
        container, ``child_module(name, layer)``)."""
        raise UnsupportedLayer(f"{self.name} has no PyTorch mapping; give it a to_torch hook")

    @classmethod
    def from_torch(cls, module: Any, torch: Any) -> "Layer":
        """The layer for one ``torch.nn`` module (a class in the kind's ``torch`` names),
        configured: the converter copies the weights in.  ``torch`` as in :meth:`to_torch`, with
        ``np_dtype(module)``, ``unsupported(module, why)`` and ``child_layer(name, module)``."""
        raise UnsupportedLayer(f"{cls.__name__} has no PyTorch mapping; give it a from_torch "
                               "hook")

    def rng_state(self) -> Any:
        """The random generator's state, for checkpoints (stochastic layers)."""
        return None

    def set_rng_state(self, state: Any) -> None:
        """Restore what :meth:`rng_state` returned."""

    @classmethod
    def example(cls, dtype: Any = np.float32) -> tuple["Layer", Shape]:
        """A small built instance (parameters of ``dtype``, float32 or float64) and its
        per-image input shape, for the registry's test suite (every registered kind must give
        one; a layer without parameters ignores ``dtype``)."""
        raise NotImplementedError(f"{cls.__name__}.example() is not defined; every registered "
                                  "kind gives one for the registry's test suite")

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

    def _forget(self) -> None:
        """Drop what the last forward kept for backward, here and in every sublayer: a new
        forward replaces it anyway, and dropped first its arrays (masks, indices, the inputs
        kept) go back to the workspace pool in time for this forward to reuse them."""
        self._cache, self._out_shape = None, None
        for _, child in self.children():
            child._forget()

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

    def _set_virtual(self, **shapes: Shape) -> None:
        """Placeholder parameters and gradients of ``shapes`` in the layer's dtype
        (:meth:`build_virtual`)."""
        dtype = self.dtype or np.dtype(np.float32)
        self.params = {k: virtual_array(s, dtype) for k, s in shapes.items()}
        self.grads = {k: virtual_array(s, dtype) for k, s in shapes.items()}

    def __repr__(self) -> str:
        return f"{self.name}()"
