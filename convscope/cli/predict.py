"""``convscope predict``: the top-k labels of image files (any size and colour) with a model file.

Kept light: ``convscope predict`` imports this module only (its start-up time is measured by
``python -m bench.coldstart``)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any, Sequence

from ..data import IMAGE_EXTENSIONS, DataError
from ..formats.model_file import load_model
from ._common import CommandError, Formatter, add_import, add_threads, printable, say, thread_limit
from ._device import add_device
from ._tta import add_tta

__all__ = ["add_parser", "run"]


def add_parser(sub: Any) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "predict", formatter_class=Formatter, help="label image files with a trained model",
        description="Print the top-k labels with their probabilities for each image. Any "
        "PNG/JPEG (or BMP, GIF, WebP, TIFF) of any size and colour is converted to the model's "
        "input: resized, made grey or RGB, transparency filled, and (by default) inverted when "
        "its background is the opposite of the training images' (a black digit on white paper "
        "for a model trained on white digits on black).",
        epilog="examples:\n  convscope predict runs/x/model.safetensors digit.png photo.jpg\n"
        "  convscope predict model.safetensors images/ --top-k 1 --json")
    p.add_argument("model", metavar="MODEL", help="a model file (.safetensors)")
    p.add_argument("images", metavar="IMAGE", nargs="+",
                   help="image files, or folders (their image files are used)")
    p.add_argument("-k", "--top-k", type=int, default=3, metavar="K",
                   help="how many labels per image (default: 3)")
    p.add_argument("--fit", choices=("stretch", "crop", "pad"), default="pad",
                   help="how to bring an image to the model's size: stretch, centre-crop to the "
                   "aspect ratio, or pad keeping the aspect ratio (default: pad)")
    p.add_argument("--invert", choices=("auto", "yes", "no"), default="auto",
                   help="invert grey levels (default: auto, by the background)")
    p.add_argument("--json", action="store_true", help="print the predictions as JSON")
    add_tta(p, "predicts from each image and its mirror image")
    add_threads(p)
    add_device(p)
    add_import(p)
    return p


def _expand_images(items: Sequence[str]) -> list[Path]:
    out: list[Path] = []
    for item in items:
        p = Path(item)
        if p.is_dir():
            found = sorted(f for f in p.rglob("*") if f.is_file()
                           and f.suffix.lower() in IMAGE_EXTENSIONS and not f.name.startswith("."))
            if not found:
                raise CommandError(f"{p}: folder has no image files ({', '.join(IMAGE_EXTENSIONS)})")
            out.extend(found)
        else:
            out.append(p)
    return out


def run(args: argparse.Namespace) -> int:
    if args.top_k < 1:
        raise CommandError(f"--top-k must be >= 1, got {args.top_k}")
    thread_limit(args.threads, check_only=True)
    saved = load_model(args.model)
    saved.model.to(args.device)  # each batch goes there, the scores come back
    paths = _expand_images(args.images)
    failed = 0
    records = []
    for path in paths:
        try:
            if not path.exists():
                raise DataError(f"{path}: no such image file")
            with thread_limit(args.threads):
                (pred,) = saved.predict_files([path], args.top_k, args.fit, args.invert,
                                               args.tta)
        except DataError as exc:
            say(f"convscope predict: error: {exc}")
            failed += 1
            continue
        records.append(pred)
        if not args.json:
            labels = "  ".join(f"{lab} ({100 * pr:.1f}%)"
                               for lab, pr in zip(pred.labels, pred.probabilities))
            print(printable(f"{path}: {labels}{'  [inverted]' if pred.inverted else ''}"),
                  flush=True)  # class names and file names: control characters escaped
    if args.json:
        print(json.dumps([{"image": r.source, "labels": r.labels, "indices": r.indices,
                           "probabilities": r.probabilities, "inverted": r.inverted}
                          for r in records], indent=2))
    return 1 if failed else 0
