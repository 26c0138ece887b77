"""``convscope explore``: one self-contained HTML page of a model, from the sliding filter to the label.

::

    convscope explore runs/x                        # runs/x/explore.html, test images as probes
    convscope explore runs/x/model.safetensors digit.png --out digit.html
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from ..inspect.explore.source import load_target, write_explorer

__all__ = ["add_parser", "run"]


def add_parser(sub: Any) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "explore", formatter_class=argparse.RawDescriptionHelpFormatter,
        help="write the interactive explorer of a model (one offline HTML file)",
        description="Write one self-contained HTML file that shows a model at work on a few "
        "probe images:\nthe sliding filter with its real numbers (w·x + b), the arithmetic of "
        "every layer with what-if\ncontrols, receptive fields, every activation map, the "
        "filters, saliency and Grad-CAM beside\na randomised-weights copy and, for a run "
        "folder, the curves and the confusion matrix.\nIt opens from disk with no network and "
        "needs no matplotlib.",
        epilog="examples:\n  convscope explore runs/x\n"
        "  convscope explore runs/x/model.safetensors digit.png photo.jpg --out mine.html")
    p.add_argument("model", metavar="MODEL|RUN", help="a model file (.safetensors) or a run folder")
    p.add_argument("images", metavar="IMAGE", nargs="*",
                   help="probe image files (default: test images of the model's dataset)")
    p.add_argument("--out", metavar="HTML",
                   help="where to write (default: explore.html in the run folder, else here)")
    p.add_argument("--data-dir", metavar="DIR", help="where the full datasets' files are")
    return p


def run(args: argparse.Namespace) -> int:
    target = load_target(args.model, args.data_dir)
    if target.note and not args.images:
        print(f"convscope explore: {target.note}", file=sys.stderr)
    path = write_explorer(target, args.images, args.out)
    print(f"explorer: {path}")
    return 0
