"""Old import path of :mod:`convscope.ops.conv` (the same module object), kept for a release."""

import sys

from .ops import conv as _module

sys.modules[__name__] = _module
