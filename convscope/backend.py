"""Old import path of :mod:`convscope.runtime` (the same module object), kept for a release."""

import sys

from . import runtime as _module

sys.modules[__name__] = _module
