"""Old import path of :mod:`convscope.cli.inspect` (the same module object), kept for a release."""

import sys

from .cli import inspect as _module

sys.modules[__name__] = _module
