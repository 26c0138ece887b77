"""Old import path of :mod:`convscope.formats.model_file` (the same module object), kept for a release."""

import sys

from .formats import model_file as _module

sys.modules[__name__] = _module
