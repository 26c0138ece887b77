"""Old import path of :mod:`convscope.formats.torch.convert` (the same module object), kept for a release."""

import sys

from .formats.torch import convert as _module

sys.modules[__name__] = _module
