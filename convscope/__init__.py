"""convscope: ConvNets from scratch on NumPy, fast, checked to the last gradient, open to inspection.

>>> import convscope as cs
>>> net = cs.Sequential(cs.Conv2D(3, 6, 5), cs.ReLU(), input_shape=(3, 32, 32))
>>> net.shapes()[-1]
(6, 28, 28)

Subpackages: ``ops`` (the array math), ``layers`` (each kind in its own file, with what it is in
every format), ``inspect`` (summary, explain, viz, report), ``formats`` (model files, JSON
architectures, presets, ONNX, PyTorch), ``train``, ``data``, ``cli``.  Submodules load on first
use (``convscope.viz``, ``convscope.data``, ...): ``import convscope`` imports no torch, onnx or
matplotlib.
"""

from __future__ import annotations

import importlib
from typing import Any

from . import functional, init, naive, shapes
from ._version import __version__
from .errors import ArchitectureError, ShapeError, UnsupportedLayer
from .init import manual_seed
from .layers import (AvgPool2D, BatchNorm1D, BatchNorm2D, Concat, Conv2D, Dropout, Flatten,
                     GlobalAvgPool2D, Layer, LeakyReLU, Linear, MaxPool2D, ReLU, ReLU6, Residual,
                     Sigmoid, Tanh)
from .layers.container import Sequential, Summary
from .layers.registry import REGISTRY, register_layer
from .losses import CrossEntropyLoss, MSELoss
from .optim import SGD, Adam, AdamW
from .runtime import no_grad

__all__ = ["Conv2D", "MaxPool2D", "AvgPool2D", "GlobalAvgPool2D", "ReLU", "LeakyReLU", "Sigmoid",
           "Tanh", "ReLU6", "Flatten", "Linear", "Dropout", "BatchNorm2D", "BatchNorm1D",
           "Sequential", "Residual", "Concat", "Summary", "Layer", "register_layer", "REGISTRY",
           "CrossEntropyLoss", "MSELoss", "SGD", "Adam", "AdamW", "ShapeError", "ArchitectureError",
           "UnsupportedLayer", "no_grad", "manual_seed", "export_onnx", "import_onnx", "shapes",
           "functional", "init", "interop", "naive", "save_model", "load_model", "build_model",
           "architecture_of", "__version__"]

#: Submodules imported on first attribute access (PEP 562), old paths included.
_LAZY = ("data", "train", "cli", "ops", "distributed", "inspect", "formats", "explain", "viz",
         "report", "io", "models", "model", "onnx_io", "backend", "runtime", "workspace", "losses",
         "optim", "errors", "layers", "conv_gemm", "torch_modules", "cli_inspect", "cli_export")


#: Functions imported on first use (start-up time; model files need Pillow and safetensors).
_LAZY_NAMES = {"export_onnx": "formats.onnx.export", "import_onnx": "formats.onnx.export",
               "save_model": "formats.model_file", "load_model": "formats.model_file",
               "build_model": "formats.architecture", "architecture_of": "formats.architecture"}


def __getattr__(name: str) -> Any:
    if name == "interop":  # the old name of formats.torch.convert
        return importlib.import_module(f"{__name__}.formats.torch.convert")
    if name in _LAZY:
        return importlib.import_module(f"{__name__}.{name}")
    if name in _LAZY_NAMES:
        return getattr(importlib.import_module(f"{__name__}.{_LAZY_NAMES[name]}"), name)
    raise AttributeError(f"module 'convscope' has no attribute {name!r}")
