"""Old import path of :mod:`convscope.ops.conv_reference` (the same module object), kept for a
release; ``naive.conv2d`` is its :func:`conv2d_forward_loops`."""

import sys

from .ops import conv_reference as _module

sys.modules[__name__] = _module
