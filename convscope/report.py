"""Old import path of :mod:`convscope.inspect.report` (the same module object), kept for a release."""

import sys

from .inspect import report as _module

sys.modules[__name__] = _module
