"""The layers of a ConvNet; each one's backward sits right under its forward."""

from .activations import LeakyReLU, ReLU, ReLU6, Sigmoid, Tanh
from .base import Layer
from .conv import Conv2D
from .linear import Dropout, Flatten, Linear
from .norm import BatchNorm1D, BatchNorm2D
from .pool import AvgPool2D, GlobalAvgPool2D, MaxPool2D
from .graph import Concat, Residual  # after the others: its branches are Sequentials

__all__ = ["Layer", "Conv2D", "MaxPool2D", "AvgPool2D", "GlobalAvgPool2D", "ReLU", "LeakyReLU",
           "Sigmoid", "Tanh", "Flatten", "Linear", "Dropout", "BatchNorm2D", "BatchNorm1D",
           "ReLU6", "Residual", "Concat"]
