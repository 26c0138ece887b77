"""Old import path of :mod:`convscope.inspect.explain` (the same module object), kept for a release."""

import sys

from .inspect import explain as _module

sys.modules[__name__] = _module
