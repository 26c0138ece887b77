"""PyTorch weights in and out: models to and from ``torch.nn.Sequential``, state dicts as files.

convscope names every parameter and buffer as PyTorch does ('0.weight', '2.running_mean', ...), so
a model and its PyTorch twin share one state dict::

    tmodel = to_torch(model)                       # an equivalent torch.nn.Sequential
    model2 = from_torch(tmodel, input_shape=(3, 32, 32))
    save_torch_weights(model, "weights.safetensors")   # torch: load_state_dict(load_file(...))
    load_torch_weights(model, "resnet_like.pt")        # read with torch.load(weights_only=True)

torch is imported only inside these functions: ``import convscope`` never imports it.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Sequence

import numpy as np

from ...errors import ShapeError
from ...layers import (AvgPool2D, BatchNorm1D, BatchNorm2D, Conv2D, Dropout, Flatten,
                     GlobalAvgPool2D, Layer, LeakyReLU, Linear, MaxPool2D, ReLU, Sigmoid, Tanh)
from ...layers.base import float_dtype
from ...layers.container import Sequential
from ...shapes import same_padding

if TYPE_CHECKING:  # pragma: no cover
    import torch

__all__ = ["to_torch", "from_torch", "torch_layer", "convscope_layer", "save_torch_weights",
           "load_torch_weights", "to_numpy"]

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


# ---------------------------------------------------------------------------------------------
# convscope -> torch


def _torch_dtype(layer: Layer) -> Any:
    torch = _torch()
    return torch.float64 if layer.dtype == np.float64 else torch.float32


def torch_layer(layer: Layer) -> "torch.nn.Module":
    """The ``torch.nn`` module computing what ``layer`` computes, with its weights copied.

    Raises TypeError naming the layer when PyTorch has no equivalent.
    """
    torch = _torch()
    nn = torch.nn
    if isinstance(layer, Sequential):
        return to_torch(layer)
    kind = type(layer)
    if kind is Conv2D:
        if layer.in_channels is None:
            raise ShapeError(f"{layer!r}: in_channels is not known yet; build the model with an "
                             "input_shape first")
        pads = layer.pads
        common = dict(stride=layer.stride, dilation=layer.dilation, groups=layer.groups,
                      bias=layer.use_bias, dtype=_torch_dtype(layer))
        same = tuple(same_padding(k, d) for k, d in zip(layer.kernel_size, layer.dilation))
        if pads[0][0] == pads[0][1] and pads[1][0] == pads[1][1]:
            module = nn.Conv2d(layer.in_channels, layer.out_channels, layer.kernel_size,
                               padding=(pads[0][0], pads[1][0]), padding_mode=layer.padding_mode,
                               **common)
        elif layer.stride == (1, 1) and pads == same:
            module = nn.Conv2d(layer.in_channels, layer.out_channels, layer.kernel_size,
                               padding="same", padding_mode=layer.padding_mode, **common)
        else:
            from .modules import PaddedConv2d  # noqa: PLC0415

            module = PaddedConv2d(layer.in_channels, layer.out_channels, layer.kernel_size, pads,
                                  padding_mode=layer.padding_mode, **common)
    elif kind is MaxPool2D:
        module = nn.MaxPool2d(layer.kernel_size, layer.stride, (layer.pads[0][0], layer.pads[1][0]),
                              layer.dilation, ceil_mode=layer.ceil_mode)
    elif kind is AvgPool2D:
        module = nn.AvgPool2d(layer.kernel_size, layer.stride, (layer.pads[0][0], layer.pads[1][0]),
                              ceil_mode=layer.ceil_mode, count_include_pad=layer.count_include_pad)
    elif kind is GlobalAvgPool2D:
        module = nn.AdaptiveAvgPool2d(1)
    elif kind is ReLU:
        module = nn.ReLU()
    elif kind is LeakyReLU:
        module = nn.LeakyReLU(layer.negative_slope)
    elif kind is Sigmoid:
        module = nn.Sigmoid()
    elif kind is Tanh:
        module = nn.Tanh()
    elif kind is Flatten:
        module = nn.Flatten()
    elif kind is Dropout:
        module = nn.Dropout(layer.p)
    elif kind is Linear:
        if layer.in_features is None:
            raise ShapeError(f"{layer!r}: in_features is not known yet; build the model with an "
                             "input_shape first")
        module = nn.Linear(layer.in_features, layer.out_features, layer.use_bias,
                           dtype=_torch_dtype(layer))
    elif kind in (BatchNorm2D, BatchNorm1D):
        if layer.num_features is None:
            raise ShapeError(f"{layer!r}: num_features is not known yet; build the model with an "
                             "input_shape first")
        cls = nn.BatchNorm2d if kind is BatchNorm2D else nn.BatchNorm1d
        module = cls(layer.num_features, layer.eps, layer.momentum, layer.affine,
                     layer.track_running_stats, dtype=_torch_dtype(layer))
    else:
        raise TypeError(f"to_torch: no PyTorch module for {layer!r} ({type(layer).__name__}); "
                        f"supported: {', '.join(sorted(c.__name__ for c in _SUPPORTED))}")
    with torch.no_grad():
        own = dict(layer.params) | dict(layer.buffers)
        for name, tensor in module.state_dict().items():
            tensor.copy_(torch.from_numpy(to_numpy(own[name])))
    return module.train(layer.training)


def to_torch(model: Sequential) -> "torch.nn.Sequential":
    """An equivalent ``torch.nn.Sequential``: same layers, weights copied, same training mode.

    Its ``state_dict()`` has the keys and shapes of ``model.state_dict()``.
    """
    torch = _torch()
    if not isinstance(model, Sequential):
        raise TypeError(f"to_torch: expected a convscope Sequential, got {type(model).__name__}")
    modules = []
    for i, layer in enumerate(model.layers):
        try:
            modules.append(torch_layer(layer))
        except (TypeError, ShapeError) as e:
            raise type(e)(f"layer {i}: {e}") from None
    return torch.nn.Sequential(*modules).train(model.training)


# ---------------------------------------------------------------------------------------------
# torch -> convscope


_SUPPORTED = (Conv2D, MaxPool2D, AvgPool2D, GlobalAvgPool2D, ReLU, LeakyReLU, Sigmoid, Tanh,
              Flatten, Dropout, Linear, BatchNorm2D, BatchNorm1D)
_TORCH_NAMES = ("Conv2d", "MaxPool2d", "AvgPool2d", "AdaptiveAvgPool2d(1)", "ReLU", "LeakyReLU",
                "Sigmoid", "Tanh", "Flatten", "Dropout", "Linear", "BatchNorm2d", "BatchNorm1d",
                "Sequential")


def _unsupported(module: Any, why: str = "") -> TypeError:
    return TypeError(f"from_torch: {module!r} ({type(module).__name__}) is not supported"
                     f"{': ' + why if why else ''}; supported modules: {', '.join(_TORCH_NAMES)}")


def _np_dtype(module: Any, default: Any = np.float32) -> Any:
    """float32 or float64 from the module's floating tensors (``default`` when it has none)."""
    torch = _torch()
    tensors = list(module.parameters()) + list(module.buffers())
    kinds = {t.dtype for t in tensors if t.is_floating_point()}
    if not kinds:
        return default
    if kinds == {torch.float32}:
        return np.float32
    if kinds == {torch.float64}:
        return np.float64
    raise _unsupported(module, f"its tensors are {sorted(map(str, kinds))}; convscope works in "
                               "float32 or float64, convert with module.float() first")


def convscope_layer(module: "torch.nn.Module", dtype: Any = None) -> Layer:
    """The convscope layer computing what a ``torch.nn`` module computes, weights copied.

    ``dtype`` is for layers without tensors of their own (batch norm with neither affine nor
    running statistics); by default the module's.  Raises TypeError naming the module when
    convscope has no equivalent.
    """
    torch = _torch()
    nn = torch.nn
    kind = type(module)
    dt = _np_dtype(module, dtype or np.float32)
    if kind is nn.Sequential:
        return from_torch(module)
    from .modules import PaddedConv2d  # noqa: PLC0415

    if kind in (nn.Conv2d, PaddedConv2d):
        if kind is PaddedConv2d:
            padding: Any = module.pads
            mode = module.pad_mode
        else:
            padding = module.padding
            mode = module.padding_mode
        layer: Layer = Conv2D(module.in_channels, module.out_channels, module.kernel_size,
                              module.stride, padding, module.dilation, module.groups,
                              module.bias is not None, mode, dtype=dt, seed=0)
    elif kind is nn.MaxPool2d:
        if module.return_indices:
            raise _unsupported(module, "return_indices=True")
        layer = MaxPool2D(module.kernel_size, module.stride, module.padding, module.dilation,
                          module.ceil_mode)
    elif kind is nn.AvgPool2d:
        if module.divisor_override is not None:
            raise _unsupported(module, f"divisor_override={module.divisor_override}")
        layer = AvgPool2D(module.kernel_size, module.stride, module.padding, module.ceil_mode,
                          module.count_include_pad)
    elif kind is nn.AdaptiveAvgPool2d:
        if module.output_size not in (1, (1, 1), [1, 1]):
            raise _unsupported(module, f"output_size {module.output_size}; only 1 "
                                       "(global average pooling) is")
        layer = GlobalAvgPool2D()
    elif kind is nn.ReLU:
        layer = ReLU()
    elif kind is nn.LeakyReLU:
        layer = LeakyReLU(module.negative_slope)
    elif kind is nn.Sigmoid:
        layer = Sigmoid()
    elif kind is nn.Tanh:
        layer = Tanh()
    elif kind is nn.Flatten:
        if module.start_dim != 1 or module.end_dim != -1:
            raise _unsupported(module, f"start_dim={module.start_dim}, end_dim={module.end_dim}; "
                                       "only Flatten(1, -1) is")
        layer = Flatten()
    elif kind is nn.Dropout:
        layer = Dropout(module.p)
    elif kind is nn.Linear:
        layer = Linear(module.in_features, module.out_features, module.bias is not None,
                       dtype=dt, seed=0)
    elif kind in (nn.BatchNorm2d, nn.BatchNorm1d):
        cls = BatchNorm2D if kind is nn.BatchNorm2d else BatchNorm1D
        layer = cls(module.num_features, module.eps, module.momentum, module.affine,
                    module.track_running_stats, dtype=dt)
    else:
        raise _unsupported(module)
    own = dict(layer.params) | dict(layer.buffers)
    theirs = module.state_dict()
    if set(own) != set(theirs):
        raise _unsupported(module, f"its state dict has {sorted(theirs)}, convscope's layer "
                                   f"{sorted(own)}")
    for name, target in own.items():
        value = to_numpy(theirs[name])
        if value.shape != target.shape:
            raise ShapeError(f"from_torch: {type(module).__name__} '{name}' has shape "
                             f"{value.shape}, convscope's layer needs {target.shape}")
        np.copyto(target, value, casting="unsafe")
    return layer.train(module.training)


def from_torch(module: "torch.nn.Sequential", input_shape: Sequence[int] | None = None,
               dtype: Any = None) -> Sequential:
    """A convscope Sequential from a ``torch.nn.Sequential`` of supported modules, weights copied.

    ``input_shape`` (C, H, W) builds it and checks every shape (needed for ``summary()``).
    Layers take their module's dtype (float32 or float64); ``dtype`` is for a module with no
    tensors at all (default float32).  An unsupported module raises TypeError naming it and its
    index.
    """
    torch = _torch()
    if not isinstance(module, torch.nn.Sequential):
        raise TypeError(f"from_torch: expected a torch.nn.Sequential, got {type(module).__name__}; "
                        "wrap a single module as nn.Sequential(module)")
    layers = []
    torch_kinds = {t.dtype for t in list(module.parameters()) + list(module.buffers())
                   if t.is_floating_point()}
    dtype = np.float64 if torch_kinds == {torch.float64} else float_dtype(dtype or np.float32)
    for name, child in module.named_children():
        try:
            layers.append(convscope_layer(child, dtype))
        except (TypeError, ShapeError, ValueError) as e:
            raise type(e)(f"module {name}: {e}") from None
    model = Sequential(*layers)
    model.train(module.training)
    if input_shape is not None:
        model.build(tuple(int(s) for s in input_shape))
    return model


# ---------------------------------------------------------------------------------------------
# state dicts as files


def save_torch_weights(model: Sequential, path: str | os.PathLike,
                       metadata: Mapping[str, str] | None = None) -> Path:
    """Write the state dict, PyTorch's keys, as safetensors (no torch needed; no pickle).

    In PyTorch: ``tmodel.load_state_dict(safetensors.torch.load_file(path))``.
    """
    from safetensors.numpy import save  # noqa: PLC0415

    from ..model_file import atomic_write  # noqa: PLC0415

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
