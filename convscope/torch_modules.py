"""Old import path of :mod:`convscope.formats.torch.modules` (the same module object), kept for a release."""

import sys

from .formats.torch import modules as _module

sys.modules[__name__] = _module
