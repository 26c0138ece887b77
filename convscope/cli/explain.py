"""``convscope explain``: a network in the lecture's terms, layer by layer (the size formula
filled in, the weight counts, the totals), with strides that do not fit diagnosed in place."""

from __future__ import annotations

import argparse
import re
from typing import Any

from ..errors import ShapeError
from ..formats.architecture import PRESETS, parse_shape
from ..inspect.explain import explain
from ._common import CommandError, Formatter, add_import
from ._inputs import model_from
from .shapes import size_answer, size_options

__all__ = ["add_parser", "run"]


def add_parser(sub: Any) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "explain", formatter_class=Formatter, help="the lecture's arithmetic, layer by layer",
        description="Walk through a network in the lecture's terms: for each conv layer the "
        "filters, stride and padding, the size formula filled in ((32 − 5 + 2·0) / 1 + 1 = 28 → "
        "28×28×6) and the weight count (5·5·3·6 = 450, biases 6); pooling the same way; FC with "
        "its weights; the shape after each activation; then totals of parameters, multiply-adds, "
        "activation memory and the im2col workspace.  A stride that does not fit is diagnosed "
        "in place: what is never seen, and the nearest strides and paddings that fit.",
        epilog="examples:\n"
        "  convscope explain                            # the lecture's network on 32x32x3\n"
        "  convscope explain lenet5 --input 1x28x28\n"
        "  convscope explain my_net.json --input 32x32x3 --strict\n"
        "  convscope explain runs/x/model.safetensors\n"
        "  convscope explain resnet18.onnx --input 3x224x224   # any CNN exported to ONNX\n"
        "  convscope explain --input 7 --filter 3 --stride 3   # bare numbers: see `shapes`")
    p.add_argument("arch", metavar="ARCH", nargs="?", default="lecture",
                   help=f"preset ({', '.join(PRESETS)}), JSON architecture, model "
                   "file or .onnx file (default: lecture)")
    p.add_argument("--input", metavar="SHAPE",
                   help="per-image input, e.g. 32x32x3 or 1x28x28 (default: the model's, the "
                   "preset's own or the JSON file's); a bare number N with --filter asks the "
                   "lecture's question for an N×N input")
    p.add_argument("--classes", type=int, metavar="N", help="number of classes (default: 10)")
    p.add_argument("--data", metavar="NAME", help="take the input shape and classes from a dataset")
    p.add_argument("--strict", action="store_true",
                   help="exit with status 1 when a stride does not fit")
    size_options(p, required=False)
    add_import(p)
    return p



def run(args: argparse.Namespace) -> int:
    if args.filter is not None:
        return size_answer(args)
    if args.input is not None and re.fullmatch(r"\s*\d+\s*", args.input):
        raise CommandError(f"--input {args.input} is one number: add --filter F (and --stride S) "
                           "for the lecture's question, or give a shape such as 32x32x3")
    model, saved = model_from(args.arch, args.input, args.classes, data=args.data,
                              allocate=False)  # the walk needs shapes, not weights
    shape = None
    if saved is not None and args.input:
        shape = parse_shape(args.input)
    try:
        ex = explain(model, shape)
    except ShapeError as exc:
        raise CommandError(str(exc)) from None
    print(ex)
    if args.strict and ex.misfits:
        first = ex.misfits[0]
        raise CommandError(f"layer {first.index} {first.layer}: {first.problem}")
    return 0
