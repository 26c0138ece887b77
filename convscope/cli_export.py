"""Old import path of :mod:`convscope.cli.export` (the same module object), kept for a release."""

import sys

from .cli import export as _module

sys.modules[__name__] = _module
