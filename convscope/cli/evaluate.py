"""``convscope evaluate``: accuracy, per-class accuracy and the confusion matrix of a model file
on a dataset split (as text or JSON, and as a PNG beside a model in a run folder)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..data.record import find_dataset, trained_on
from ..formats.model_file import load_model
from ..inspect import viz
from ..train import evaluate
from ._common import CommandError, Formatter, add_import, add_threads, printable, say, thread_limit
from ._device import add_device
from ._outputs import check_output
from ._tta import add_tta

__all__ = ["add_parser", "run", "format_confusion", "write_confusion_png"]



def add_parser(sub: Any) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "evaluate", formatter_class=Formatter, help="accuracy, per-class accuracy, confusion matrix",
        description="Evaluate a model file on a dataset split: overall accuracy and loss, the "
        "accuracy on each class, and the confusion matrix (rows: true class, columns: "
        "predicted).",
        epilog="examples:\n  convscope evaluate runs/x/model.safetensors\n"
        "  convscope evaluate model.safetensors --data mnist --split test --json")
    p.add_argument("model", metavar="MODEL", help="a model file (.safetensors) from convscope train")
    p.add_argument("--data", metavar="NAME|DIR",
                   help="dataset name or image folder (default: the one the model was trained on; "
                   "an image folder is found again by the path and class counts its model file "
                   "records)")
    p.add_argument("--data-dir", metavar="DIR", help="where the full datasets' files are")
    p.add_argument("--no-download", dest="download", action="store_false",
                   help="never download a dataset")
    p.add_argument("--split", choices=("test", "train", "all"),
                   help="which images to evaluate (default: test, the images training never "
                   "saw: for the image folder it was trained on without train/ and test/, the 20%% "
                   "its stratified split held out; all for a dataset the model was not trained "
                   "on)")
    p.add_argument("--limit", type=int, metavar="N", help="only the first N images")
    p.add_argument("--batch-size", type=int, default=500, metavar="N",
                   help="images per forward pass (default: 500)")
    p.add_argument("--json", action="store_true", help="print the results as JSON")
    add_tta(p, "evaluates each image and its mirror image")
    add_threads(p)
    add_device(p)
    p.add_argument("--confusion", metavar="PNG",
                   help="also draw the confusion matrix into PNG (default: confusion-<split>.png, "
                   "confusion-<split>-flip.png with --tta flip, next to a model in a run folder)")
    add_import(p)
    return p


def format_confusion(confusion: np.ndarray, classes: Sequence[str]) -> str:
    """The confusion matrix as a text table (rows: true class, columns: predicted), each row
    followed by its class name when the names are not just the indices."""
    labels = [str(i) for i in range(len(classes))]
    named = list(map(str, classes)) != labels
    width = max([3] + [len(f"{int(v):,}") for v in confusion.flat])
    head = " " * 6 + " ".join(s.rjust(width) for s in labels) + "   <- predicted"
    rows = [f"{lab:>4}  " + " ".join(f"{int(v):,}".rjust(width) for v in row)
            + (f"   {name}" if named else "") for lab, row, name in zip(labels, confusion, classes)]
    return "\n".join([head, *rows])


def run(args: argparse.Namespace) -> int:
    thread_limit(args.threads, check_only=True)
    if args.confusion is not None:  # never over the model file or another convscope file
        check_output(args.confusion, "--confusion", [args.model, *(args.imports or ())])
        if not str(args.confusion).lower().endswith(".png"):
            raise CommandError(f"--confusion must name a .png file, got {args.confusion!r}")
    saved = load_model(args.model)
    if args.batch_size < 1:
        raise CommandError(f"--batch-size must be >= 1, got {args.batch_size}")
    if args.limit is not None and args.limit < 1:
        raise CommandError(f"--limit must be >= 1, got {args.limit}")
    ds = find_dataset(saved.metadata, args.data, args.data_dir, download=args.download,
                      input_shape=saved.input_shape)
    if list(ds.classes) != saved.classes:
        raise CommandError(f"{ds.name} has classes {ds.classes[:12]} but the model was trained "
                           f"on {saved.classes[:12]}")
    if tuple(ds.input_shape) != saved.input_shape:
        raise CommandError(f"{ds.name} images are {'x'.join(map(str, ds.input_shape))}, the "
                           f"model takes {'x'.join(map(str, saved.input_shape))}")
    note = None
    if args.split is None:  # never training images unless asked for
        args.split = "test" if trained_on(saved.metadata, ds) else "all"
        note = (f"split: {args.split} (" + ("the images training never saw" if args.split == "test"
                else f"the model was not trained on {ds.name}: all its images") + "; --split to "
                "choose)")
    x, y = {"test": (ds.x_test, ds.y_test), "train": (ds.x_train, ds.y_train),
            "all": (np.concatenate([ds.x_train, ds.x_test]),
                    np.concatenate([ds.y_train, ds.y_test]))}[args.split]
    if args.limit:
        x, y = x[:args.limit], y[:args.limit]
    if not len(y):
        raise CommandError(f"the {args.split} split of {ds.name} has no images (a class with a "
                           "single image goes to training); give --split train or all, or add "
                           "images")
    if note:
        say(note)
    with thread_limit(args.threads):
        ev = evaluate(saved.model.to(args.device), x, y, normalizer=saved.normalization,
                      num_classes=len(saved.classes), batch_size=args.batch_size, tta=args.tta)
    per_class = ev.per_class_accuracy
    tta_note = "" if args.tta == "none" else f", test-time augmentation {args.tta}"
    _confusion_png(args, ev, saved.classes, f"{ds.name} {args.split} split{tta_note}")
    if args.json:
        print(json.dumps({"model": str(args.model), "data": ds.name, "split": args.split,
                          "images": ev.total, "tta": args.tta, "accuracy": ev.accuracy,
                          "loss": ev.loss,
                          "per_class_accuracy": {c: (None if np.isnan(a) else float(a))
                                                 for c, a in zip(saved.classes, per_class)},
                          "classes": saved.classes, "confusion": ev.confusion.tolist()}, indent=2))
        return 0
    what = (f"{ds.name}, all {ev.total:,} images" if args.split == "all"
            else f"{ds.name} {args.split} split, {ev.total:,} images")
    print(f"{what}{tta_note}: accuracy {100 * ev.accuracy:.2f}% "
          f"({ev.correct:,}/{ev.total:,}), loss {ev.loss:.4f}")
    print("\nper-class accuracy:")
    counts = ev.confusion.sum(axis=1)
    shown = [printable(c) for c in saved.classes]  # control characters escaped
    wide = max(len(c) for c in shown)
    for i, (c, a) in enumerate(zip(shown, per_class)):
        acc = "   n/a" if np.isnan(a) else f"{100 * a:6.2f}%"
        print(f"{i:>4}  {c:<{wide}}  {acc}  ({int(ev.confusion[i, i]):,}/{int(counts[i]):,})")
    print("\nconfusion matrix (rows: true class, columns: predicted):")
    print(format_confusion(ev.confusion, shown))
    return 0


def _confusion_png(args: argparse.Namespace, ev: Any, classes: list[str], title: str) -> None:
    """Draw the confusion matrix: to --confusion, or beside a model in a run folder."""
    folder = Path(args.model).parent
    if args.confusion is None and not (folder / "metrics.jsonl").is_file():
        return
    tta = "" if args.tta == "none" else f"-{args.tta}"  # never over the one-view picture
    path = args.confusion or folder / f"confusion-{args.split}{tta}.png"
    try:
        say(f"confusion matrix: {write_confusion_png(path, ev.confusion, classes, title)}")
    except (ImportError, OSError) as exc:
        if args.confusion is not None:
            raise
        say(f"confusion matrix picture skipped: {exc}")


def write_confusion_png(path: str | Path, confusion: np.ndarray, classes: list[str],
                        title: str) -> Path:
    """The confusion matrix (K, K) of ``convscope evaluate`` as a PNG."""
    out = Path(path)
    viz.confusion_plot(confusion, classes, out, title=title)
    return out
