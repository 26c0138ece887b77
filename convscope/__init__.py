"""convscope: ConvNets from scratch on NumPy, fast, checked to the last gradient, open to inspection.

>>> import convscope as cs
>>> net = cs.Sequential(cs.Conv2D(3, 6, 5), cs.ReLU(), input_shape=(3, 32, 32))
>>> net.shapes()[-1]
(6, 28, 28)
"""

from . import functional, init, naive, shapes
from ._version import __version__
from .formats.torch import convert as interop
from .runtime import no_grad
from .errors import ShapeError
from .init import manual_seed
from .layers import (AvgPool2D, BatchNorm1D, BatchNorm2D, Conv2D, Dropout, Flatten,
                     GlobalAvgPool2D, Layer, LeakyReLU, Linear, MaxPool2D, ReLU, Sigmoid, Tanh)
from .losses import CrossEntropyLoss, MSELoss
from .layers.container import Sequential, Summary
from .formats.onnx.export import export_onnx, import_onnx
from .optim import SGD, Adam, AdamW


__all__ = ["Conv2D", "MaxPool2D", "AvgPool2D", "GlobalAvgPool2D", "ReLU", "LeakyReLU", "Sigmoid",
           "Tanh", "Flatten", "Linear", "Dropout", "BatchNorm2D", "BatchNorm1D", "Sequential",
           "Summary", "Layer", "CrossEntropyLoss", "MSELoss", "SGD", "Adam", "AdamW", "ShapeError",
           "no_grad", "manual_seed", "export_onnx", "import_onnx", "shapes", "functional", "init",
           "interop", "naive", "__version__"]
