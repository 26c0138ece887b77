"""Old import path of the inspecting commands (explain, shapes, viz, report), now one module
each in :mod:`convscope.cli`; kept for a release."""

from .cli import explain as _explain
from .cli import report as _report
from .cli import shapes as _shapes
from .cli import viz as _viz
from .cli._common import Command
from .cli._inputs import model_from as _model_from
from .cli.evaluate import write_confusion_png

__all__ = ["EXPLAIN", "SHAPES", "VIZ", "REPORT", "write_confusion_png"]

EXPLAIN = Command(_explain.add_parser, _explain.run)
SHAPES = Command(_shapes.add_parser, _shapes.run)
VIZ = Command(_viz.add_parser, _viz.run)
REPORT = Command(_report.add_parser, _report.run)
