"""Old import path of :mod:`convscope.layers.container` (the same module object), kept for a release."""

import sys

from .layers import container as _module

sys.modules[__name__] = _module
