"""Old import path of :mod:`convscope.formats.architecture` (the same module object), kept for a release."""

import sys

from .formats import architecture as _module

sys.modules[__name__] = _module
