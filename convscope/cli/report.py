"""``convscope report``: (re)write a run folder's report.html."""

from __future__ import annotations

import argparse
import contextlib
from typing import Any

from ..formats.run_folder import RunLock, folder_state
from ..inspect.report import report_for_run
from ._common import Formatter, add_import

__all__ = ["add_parser", "run"]


def add_parser(sub: Any) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "report", formatter_class=Formatter, help="(re)write a run's report.html",
        description="Write report.html into a run folder of convscope train: the model table "
        "and the lecture's walk, training curves, filters, sample predictions with their "
        "activation maps, and the confusion matrix on the test split.  One self-contained file "
        "(pictures embedded, no scripts, no network): open it from disk in any browser.",
        epilog="example:\n  convscope report runs/lenet5-digits-20250101-120000")
    p.add_argument("run_dir", metavar="RUN", help="a run folder (with model.safetensors)")
    p.add_argument("--data", metavar="NAME|DIR",
                   help="dataset for the test images (default: the model's)")
    p.add_argument("--data-dir", metavar="DIR", help="where the full datasets' files are")
    add_import(p)
    return p


def run(args: argparse.Namespace) -> int:
    is_run = folder_state(args.run_dir) in ("started", "trained")  # a training's folder: locked
    with RunLock(args.run_dir) if is_run else contextlib.nullcontext():
        print(report_for_run(args.run_dir, args.data, args.data_dir))
    return 0
