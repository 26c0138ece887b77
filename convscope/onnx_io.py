"""Old import path of :mod:`convscope.formats.onnx.export` (the same module object), kept for a release."""

import sys

from .formats.onnx import export as _module

sys.modules[__name__] = _module
