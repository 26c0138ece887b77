"""PyTorch weights in and out: models to and from ``torch.nn.Sequential``, state dicts as files.

convscope names every parameter and buffer as PyTorch does ('0.weight', '2.running_mean', ...), so
a model and its PyTorch twin share one state dict::

    tmodel = to_torch(model)                       # an equivalent torch.nn.Sequential
    model2 = from_torch(tmodel, input_shape=(3, 32, 32))
    resnet = from_torch(my_resnet18, (3, 224, 224))    # any module torch.fx traces: Residual blocks
    save_torch_weights(model, "weights.safetensors")   # torch: load_state_dict(load_file(...))
    load_torch_weights(model, "resnet_like.pt")        # read with torch.load(weights_only=True)

Each layer kind maps itself in its own file (``to_torch`` / ``from_torch`` hooks, layers/*.py);
the registry says which ``torch.nn`` classes a kind reads.  The hooks are handed a
:class:`TorchKit`, the torch module plus the few things convscope adds; the kit copies the
weights.  torch is imported only inside these functions: ``import convscope`` never imports it.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Sequence

import numpy as np

from ...errors import ShapeError, UnsupportedLayer
from ...layers.base import Layer, float_dtype
from ...layers.container import Sequential
from ...layers.registry import kind_for_torch, require_kind, supported
from ..files import atomic_write
from ..graph import assemble, decompose
from . import modules
from .fx import trace_graph

if TYPE_CHECKING:  # pragma: no cover
    import torch

__all__ = ["to_torch", "from_torch", "torch_layer", "convscope_layer", "save_torch_weights",
           "load_torch_weights", "to_numpy", "TorchKit"]

_HINT = "torch is needed for this; install it with: pip install torch"


def _torch() -> Any:
    try:
        import torch  # noqa: PLC0415 - torch is optional; import it only when used
    except ImportError as e:  # pragma: no cover - torch is installed where the tests run
        raise ImportError(f"{_HINT} ({e})") from None
    return torch


def to_numpy(a: Any) -> np.ndarray:
    """A NumPy copy of a NumPy, CuPy or torch array."""
    if hasattr(a, "detach"):  # torch
        return a.detach().cpu().numpy().copy()
    if type(a).__module__.split(".")[0] == "cupy":
        return a.get()
    return np.array(a, copy=True)


class TorchKit:
    """What the layers' torch hooks are handed as ``torch``: the torch module itself (every
    attribute reads through: ``torch.nn.Conv2d``, ``torch.float64``), plus

    - ``PaddedConv2d``: nn.Conv2d with asymmetric padding (formats/torch/modules.py);
    - ``ConvscopeResidual`` / ``ConvscopeConcat``: the branching layers' modules (the same file);
    - ``dtype_of(layer)``: torch.float64 or torch.float32, as the layer's parameters;
    - ``np_dtype(module)``: float32 or float64, as the module's tensors (``layer_dtype`` when it
      has none);
    - ``unsupported(module, why)``: the error for a module or option convscope cannot read;
    - ``child_module(name, layer)`` / ``child_layer(name, module)``: a container's child, converted
      (errors name its path).

    A hook only builds the module or layer: the kit copies the weights (state dicts share keys),
    except into a container (a layer with ``children()``), whose children carry them.
    """

    def __init__(self, torch: Any, layer_dtype: Any = np.float32) -> None:
        self._torch = torch
        self.layer_dtype = float_dtype(layer_dtype)
        self._path = self._failed = ""  # the child being converted; the innermost that failed

    def __getattr__(self, name: str) -> Any:
        return getattr(self._torch, name)

    @property
    def PaddedConv2d(self) -> type:  # noqa: N802 - a class
        return modules.PaddedConv2d

    @property
    def ConvscopeResidual(self) -> type:  # noqa: N802 - a class
        return modules.ConvscopeResidual

    @property
    def ConvscopeConcat(self) -> type:  # noqa: N802 - a class
        return modules.ConvscopeConcat

    def dtype_of(self, layer: Layer) -> Any:
        return self._torch.float64 if layer.dtype == np.float64 else self._torch.float32

    def np_dtype(self, module: Any) -> np.dtype:
        kinds = {t.dtype for t in list(module.parameters()) + list(module.buffers())
                 if t.is_floating_point()}
        if not kinds:
            return self.layer_dtype
        if kinds == {self._torch.float32}:
            return np.dtype(np.float32)
        if kinds == {self._torch.float64}:
            return np.dtype(np.float64)
        raise self.unsupported(module, f"its tensors are {sorted(map(str, kinds))}; convscope "
                                       "works in float32 or float64, convert with module.float() "
                                       "first")

    @staticmethod
    def unsupported(module: Any, why: str = "") -> UnsupportedLayer:
        return UnsupportedLayer(f"from_torch: {module!r} ({type(module).__name__}) is not "
                                f"supported{': ' + why if why else ''}; supported modules: "
                                f"{supported('torch')}")

    # -- convscope -> torch --------------------------------------------------------------------
    def module_for(self, layer: Layer) -> Any:
        """The torch module for ``layer``, weights copied, in the layer's training mode."""
        require_kind(layer, "converted to PyTorch")
        return self._with_state(layer, layer.to_torch(self))

    def _with_state(self, layer: Layer, module: Any) -> Any:
        if not layer.children():
            own = dict(layer.params) | dict(layer.buffers)
            with self._torch.no_grad():
                for name, tensor in module.state_dict().items():
                    if name not in own:
                        raise UnsupportedLayer(f"{layer!r}: its torch module has {name!r}, which "
                                               f"the layer has not (it has {sorted(own)})")
                    tensor.copy_(self._torch.from_numpy(to_numpy(own[name])))
        return module.train(layer.training)

    def child_module(self, name: str, layer: Layer) -> Any:
        return self._child(name, "layer", self.module_for, layer, (TypeError, ShapeError))

    # -- torch -> convscope --------------------------------------------------------------------
    def layer_for(self, module: Any) -> Layer:
        """The convscope layer for a torch module, weights copied, in its training mode."""
        kind = kind_for_torch(module)
        if kind is None:
            raise self.unsupported(module)
        layer = kind.cls.from_torch(module, self)
        if not layer.children():
            own = dict(layer.params) | dict(layer.buffers)
            theirs = module.state_dict()
            if set(own) != set(theirs):
                raise self.unsupported(module, f"its state dict has {sorted(theirs)}, convscope's "
                                               f"layer {sorted(own)}")
            for name, target in own.items():
                value = to_numpy(theirs[name])
                if value.shape != target.shape:
                    raise ShapeError(f"from_torch: {type(module).__name__} '{name}' has shape "
                                     f"{value.shape}, convscope's layer needs {target.shape}")
                np.copyto(target, value, casting="unsafe")
        return layer.train(module.training)

    def child_layer(self, name: str, module: Any) -> Layer:
        return self._child(name, "module", self.layer_for, module, (TypeError, ShapeError,
                                                                    ValueError))

    def _child(self, name: str, word: str, convert: Any, item: Any, errors: tuple) -> Any:
        """convert(item); an error gets '<word> <path>: ' in front once, at the outermost child."""
        outer = self._path
        self._path = f"{outer}.{name}" if outer else name
        try:
            return convert(item)
        except errors as e:
            self._failed = self._failed or self._path
            if outer:
                raise
            where, self._failed = self._failed, ""
            raise type(e)(f"{word} {where}: {e}") from None
        finally:
            self._path = outer


def torch_layer(layer: Layer) -> "torch.nn.Module":
    """The ``torch.nn`` module computing what ``layer`` computes, with its weights copied.

    Raises UnsupportedLayer (a TypeError) naming the layer when it has no PyTorch mapping.
    """
    return TorchKit(_torch()).module_for(layer)


def to_torch(model: Sequential) -> "torch.nn.Sequential":
    """An equivalent ``torch.nn.Sequential``: same layers, weights copied, same training mode.

    Its ``state_dict()`` has the keys and shapes of ``model.state_dict()``.
    """
    kit = TorchKit(_torch())
    if not isinstance(model, Sequential):
        raise TypeError(f"to_torch: expected a convscope Sequential, got {type(model).__name__}")
    return Sequential.to_torch(model, kit).train(model.training)  # a subclass too, at the top


def convscope_layer(module: "torch.nn.Module", dtype: Any = None) -> Layer:
    """The convscope layer computing what a ``torch.nn`` module computes, weights copied.

    ``dtype`` is for layers without tensors of their own (batch norm with neither affine nor
    running statistics); by default the module's.  Raises UnsupportedLayer (a TypeError) naming
    the module when convscope has no equivalent.
    """
    return TorchKit(_torch(), dtype or np.float32).layer_for(module)


def from_torch(module: "torch.nn.Module", input_shape: Sequence[int] | None = None,
               dtype: Any = None, *, final_softmax: str = "error") -> Sequential:
    """A convscope Sequential from a torch module, weights copied, in the module's mode.

    A ``torch.nn.Sequential`` of supported modules converts child by child (state-dict keys
    kept).  Any other module, or a Sequential holding modules convscope has no kind for (a
    ResNet block), is traced with torch.fx (formats/torch/fx.py): its graph of modules,
    ``x + y``, ``torch.cat``, flattening and functional layers becomes nested Sequential,
    Residual and Concat blocks (formats/graph.py); that needs ``input_shape``.
    ``input_shape`` (C, H, W) builds the model and checks every shape (needed for
    ``summary()``).  Layers take their module's dtype (float32 or float64); ``dtype`` is for a
    module with no tensors at all (default float32).  ``final_softmax='drop'`` leaves out a
    softmax at the very end of a traced forward (the model outputs the scores).  What convscope
    cannot run raises UnsupportedLayer (a TypeError) naming the module or the fx node.
    """
    torch = _torch()
    if final_softmax not in ("error", "drop"):
        raise ValueError(f"from_torch: final_softmax must be 'error' or 'drop', got "
                         f"{final_softmax!r}")
    if not isinstance(module, torch.nn.Module):
        raise TypeError(f"from_torch: expected a torch.nn.Module, got {type(module).__name__}")
    torch_kinds = {t.dtype for t in list(module.parameters()) + list(module.buffers())
                   if t.is_floating_point()}
    dtype = np.float64 if torch_kinds == {torch.float64} else float_dtype(dtype or np.float32)
    shape = None if input_shape is None else tuple(int(s) for s in input_shape)
    if isinstance(module, torch.nn.Sequential):
        try:
            model = Sequential.from_torch(module, TorchKit(torch, dtype))
        except UnsupportedLayer:
            if shape is None:  # no shape to trace with: the child's own error
                raise
            model = _traced(module, shape, dtype, final_softmax)
    elif shape is None:
        raise TypeError(f"from_torch: a {type(module).__name__} is not a torch.nn.Sequential, so "
                        "it is traced with torch.fx, which needs input_shape=(C, H, W)")
    else:
        model = _traced(module, shape, dtype, final_softmax)
    model.train(module.training)
    if shape is not None:
        model.build(shape)
    return model


def _traced(module: Any, shape: tuple[int, ...], dtype: Any, final_softmax: str) -> Sequential:
    """The module's torch.fx graph as blocks (formats/torch/fx.py, formats/graph.py)."""
    graph = trace_graph(module, shape, TorchKit(_torch(), dtype), final_softmax)
    return assemble(decompose(graph))


# ---------------------------------------------------------------------------------------------
# state dicts as files


def save_torch_weights(model: Sequential, path: str | os.PathLike,
                       metadata: Mapping[str, str] | None = None) -> Path:
    """Write the state dict, PyTorch's keys, as safetensors (no torch needed; no pickle).

    In PyTorch: ``tmodel.load_state_dict(safetensors.torch.load_file(path))``.
    """
    from safetensors.numpy import save  # noqa: PLC0415 - optional

    path = Path(path)
    if path.suffix in (".pt", ".pth", ".bin", ".pkl"):
        raise ValueError(f"save_torch_weights: {str(path)!r} names a pickle file; convscope writes "
                         f"safetensors only (no code runs on loading), e.g. "
                         f"{str(path.with_suffix('.safetensors'))!r}")
    state = {k: np.array(to_numpy(v), order="C") for k, v in model.state_dict().items()}  # 0-d stays 0-d
    meta = {str(k): str(v) for k, v in (metadata or {}).items()}
    return atomic_write(path, save(state, metadata=meta or None))


def _read_state(source: Any) -> dict[str, np.ndarray]:
    if isinstance(source, Mapping):
        return {str(k): to_numpy(v) for k, v in source.items()}
    path = Path(source)
    if not path.is_file():
        raise FileNotFoundError(f"load_torch_weights: no file {str(path)!r}")
    if path.suffix == ".safetensors":
        from safetensors.numpy import load_file  # noqa: PLC0415

        return load_file(str(path))
    if path.suffix in (".pt", ".pth"):
        torch = _torch()
        try:  # weights_only: tensors and plain containers only, never arbitrary objects
            obj = torch.load(str(path), map_location="cpu", weights_only=True)
        except Exception as e:
            raise ValueError(f"load_torch_weights: {str(path)!r} is not a plain state dict "
                             f"(torch.load(weights_only=True) refused it: {e})") from None
        if isinstance(obj, Mapping) and "state_dict" in obj and isinstance(obj["state_dict"], Mapping):
            obj = obj["state_dict"]
        if not isinstance(obj, Mapping):
            raise ValueError(f"load_torch_weights: {str(path)!r} holds a {type(obj).__name__}, "
                             "not a state dict; save one with torch.save(model.state_dict(), path)")
        return {str(k): to_numpy(v) for k, v in obj.items()}
    raise ValueError(f"load_torch_weights: {str(path)!r} should end in .safetensors, .pt or .pth")


def load_torch_weights(model: Sequential, source: Any, strict: bool = True) -> Sequential:
    """Copy a PyTorch state dict into ``model``: a mapping of tensors or arrays, a .safetensors
    file, or a .pt/.pth file (read with ``torch.load(weights_only=True)``: no code is run).

    A 'module.' prefix (DataParallel) is removed; keys and shapes must match (named in the error).
    """
    state = _read_state(source)
    if state and all(k.startswith("module.") for k in state):
        state = {k[len("module."):]: v for k, v in state.items()}
    model.load_state_dict(state, strict=strict)
    return model
