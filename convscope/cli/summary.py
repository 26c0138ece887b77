"""``convscope summary``: the model table of a preset, a JSON architecture or a model file."""

from __future__ import annotations

import argparse
from typing import Any

from ..formats.architecture import PRESETS, build_model, parse_shape, resolve_architecture
from ..formats.model_file import load_model
from ._common import DEFAULT_ARCH, CommandError, Formatter, add_import, say
from ._inputs import load_data, names_no_input, onnx_model

__all__ = ["add_parser", "run"]


def add_parser(sub: Any) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "summary", formatter_class=Formatter, help="the model table: shapes, parameters, mult-adds",
        description="Print the model table of a preset, a JSON architecture or a saved model: "
        "each layer's output shape, its parameters with the lecture's formula (5·5·3·6 + 6 = "
        "456), multiply-adds and activation memory per image.",
        epilog="examples:\n  convscope summary lecture                 # on the lecture's 32x32x3\n"
        "  convscope summary lenet5 --input-shape 1x28x28\n"
        "  convscope summary my_net.json --data digits\n"
        "  convscope summary runs/x/model.safetensors\n"
        "  convscope summary resnet18.onnx --input-shape 3x224x224")
    p.add_argument("arch", metavar="ARCH", nargs="?", default=DEFAULT_ARCH,
                   help=f"preset ({', '.join(PRESETS)}), JSON file, model file or "
                   f".onnx file (default: {DEFAULT_ARCH})")
    p.add_argument("--input-shape", metavar="CxHxW",
                   help="per-image input, e.g. 1x28x28 or 32x32x3 (default: the preset's own "
                   "input, the JSON file's input_shape, or --data's)")
    p.add_argument("--classes", type=int, metavar="N",
                   help="number of classes (default: --data's, else 10)")
    p.add_argument("--data", metavar="NAME|DIR", help="take the input shape and classes from a dataset")
    add_import(p)
    return p


def run(args: argparse.Namespace) -> int:
    if str(args.arch).endswith(".safetensors"):
        if args.input_shape or args.classes or args.data:
            raise CommandError("a saved model has its own input shape and classes; leave out "
                               "--input-shape, --classes and --data")
        saved = load_model(args.arch)
        print(saved.model.summary())
        meta = saved.metadata
        acc = (meta.get("training") or {}).get("test_accuracy")
        print(f"classes ({len(saved.classes)}): {', '.join(saved.classes)}")
        print(f"trained on {meta.get('dataset')}" + (f", test accuracy {100 * acc:.2f}%"
                                                     if acc is not None else "")
              + f"; convscope {meta.get('convscope_version')}, {meta.get('created')}")
        return 0
    shape = parse_shape(args.input_shape) if args.input_shape else None
    if str(args.arch).endswith(".onnx"):
        if args.classes or args.data:
            raise CommandError("an ONNX model has its own classes; leave out --classes and "
                               "--data")
        print(onnx_model(args.arch, shape).summary())
        return 0
    classes = args.classes
    if args.classes is not None and args.classes < 1:
        raise CommandError(f"--classes must be >= 1, got {args.classes}")
    if args.data:
        ds = load_data({"data": args.data, "data_dir": None, "download": False}, shape)
        shape = shape or tuple(ds.input_shape)
        classes = classes or ds.num_classes
    name, layers, file_shape = resolve_architecture(args.arch)
    if shape is None and names_no_input(layers, file_shape):
        raise CommandError(f"{args.arch} names no input shape; give --input-shape (e.g. 1x28x28) "
                           "or --data")
    model = build_model(args.arch, shape, classes or 10, seed=0, allocate=False)  # no weights
    if name in PRESETS and shape is None:
        say(f"{name} on its own input {'x'.join(map(str, model.input_shape))} (C x H x W); set "
            "--input-shape or --data for another")
    print(model.summary())
    return 0
