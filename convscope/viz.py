"""Old import path of :mod:`convscope.inspect.viz` (the same module object), kept for a release."""

import sys

from .inspect import viz as _module

sys.modules[__name__] = _module
