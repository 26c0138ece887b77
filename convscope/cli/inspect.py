"""The ``convscope`` subcommands that look inside a network: explain, shapes, viz, report.

Each is a :class:`~convscope.cli.Command` listed in :data:`convscope.cli.SUBCOMMANDS`::

    convscope explain lecture                        # the lecture's walk, 32×32×3 -> ... -> FC
    convscope explain my_net.json --input 28x28x1 --strict
    convscope shapes --input 7 --filter 3 --stride 3 # (7 − 3 + 2·0) / 3 + 1 = 2.33: does not fit
    convscope viz filters runs/x/model.safetensors --layer all
    convscope viz activations runs/x/model.safetensors digit.png
    convscope viz curves runs/x
    convscope report runs/x
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path
from typing import Any

import numpy as np

from . import Command, _Formatter, _say
from ..errors import CommandError

__all__ = ["EXPLAIN", "SHAPES", "VIZ", "REPORT", "write_confusion_png"]


# ---------------------------------------------------------------------------------------------
# models from the command line


def _model_from(arch: str, input_shape: str | None, classes: int | None, seed: int = 0,
                data: str | None = None) -> tuple[Any, Any]:
    """(Sequential, SavedModel or None) for a model file, a preset or a JSON architecture."""
    from ..formats.model_file import load_model  # noqa: PLC0415
    from ..formats.architecture import build_model, parse_shape, resolve_architecture  # noqa: PLC0415

    shape = parse_shape(input_shape) if input_shape else None
    if classes is not None and classes < 1:
        raise CommandError(f"--classes must be >= 1, got {classes}")
    if str(arch).endswith(".safetensors"):
        if classes is not None:
            raise CommandError("a saved model has its own classes; leave out --classes")
        saved = load_model(arch)
        if shape is not None and shape != saved.input_shape:
            _say(f"{arch} was trained on {'x'.join(map(str, saved.input_shape))} (C x H x W); "
                 f"explaining it on {'x'.join(map(str, shape))}")
        return saved.model, saved
    if data:
        from ..data import load_dataset  # noqa: PLC0415

        ds = load_dataset(data, download=False, input_shape=shape)
        shape, classes = shape or tuple(ds.input_shape), classes or ds.num_classes
    name, layers, file_shape = resolve_architecture(arch)
    if shape is None and layers is not None and file_shape is None and not any(
            isinstance(spec, dict) and spec.get("type") == "input" for spec in layers):
        raise CommandError(f"{arch} names no input shape; give --input (e.g. 32x32x3 or 1x28x28)")
    return build_model(arch, shape, classes or 10, seed=seed), None


# ---------------------------------------------------------------------------------------------
# explain and shapes


def _explain_parser(sub: Any) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "explain", formatter_class=_Formatter, help="the lecture's arithmetic, layer by layer",
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
        "  convscope explain --input 7 --filter 3 --stride 3   # bare numbers: see `shapes`")
    p.add_argument("arch", metavar="ARCH", nargs="?", default="lecture",
                   help="preset (lecture, lenet5, fashion, cifar), JSON architecture or model "
                   "file (default: lecture)")
    p.add_argument("--input", metavar="SHAPE",
                   help="per-image input, e.g. 32x32x3 or 1x28x28 (default: the model's, the "
                   "preset's own or the JSON file's); a bare number N with --filter asks the "
                   "lecture's question for an N×N input")
    p.add_argument("--classes", type=int, metavar="N", help="number of classes (default: 10)")
    p.add_argument("--data", metavar="NAME", help="take the input shape and classes from a dataset")
    p.add_argument("--strict", action="store_true",
                   help="exit with status 1 when a stride does not fit")
    _size_options(p, required=False)
    return p


def _size_options(p: argparse.ArgumentParser, required: bool) -> None:
    g = p.add_argument_group("bare numbers (the lecture's question)")
    g.add_argument("--filter", "-F", type=int, metavar="F", required=required,
                   help="filter side F")
    g.add_argument("--stride", "-S", type=int, metavar="S",
                   help="stride S (default: list strides 1..F)")
    g.add_argument("--pad", "-P", metavar="P", default="0",
                   help="zero padding P on each side, or 'same' (default: 0)")
    g.add_argument("--dilation", type=int, default=1, metavar="D", help="dilation (default: 1)")


def _size_answer(args: argparse.Namespace) -> int:
    from ..inspect.explain import explain_size  # noqa: PLC0415

    text = str(args.input or "").strip()
    if not re.fullmatch(r"\d+", text):
        raise CommandError(f"--input must be the input side N (a whole number) with --filter, "
                           f"got {args.input!r}")
    pad: int | str = args.pad
    if pad != "same":
        if not re.fullmatch(r"\d+", str(pad)):
            raise CommandError(f"--pad must be a whole number >= 0 or 'same', got {pad!r}")
        pad = int(pad)
    answer = explain_size(int(text), args.filter, args.stride, pad, args.dilation)
    print(answer)
    if args.strict and not answer.fits:
        raise CommandError("a stride does not fit (see above)")
    return 0


def _explain_run(args: argparse.Namespace) -> int:
    from ..errors import ShapeError  # noqa: PLC0415
    from ..inspect.explain import explain  # noqa: PLC0415

    if args.filter is not None:
        return _size_answer(args)
    if args.input is not None and re.fullmatch(r"\s*\d+\s*", args.input):
        raise CommandError(f"--input {args.input} is one number: add --filter F (and --stride S) "
                           "for the lecture's question, or give a shape such as 32x32x3")
    model, saved = _model_from(args.arch, args.input, args.classes, data=args.data)
    shape = None
    if saved is not None and args.input:
        from ..formats.architecture import parse_shape  # noqa: PLC0415

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


EXPLAIN = Command(_explain_parser, _explain_run)


def _shapes_parser(sub: Any) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "shapes", formatter_class=_Formatter, help="output size for bare numbers: N, F, S, P",
        description="The lecture's question: an N×N input, an F×F filter, stride S and zero "
        "padding P give an output side of (N − F + 2P) / S + 1.  Without --stride every stride "
        "1..F is listed.  A stride that does not fit is diagnosed: what is never seen, and the "
        "nearest strides and paddings that fit.",
        epilog="examples:\n  convscope shapes --input 7 --filter 3            # strides 1, 2, 3\n"
        "  convscope shapes --input 7 --filter 3 --stride 3 --strict\n"
        "  convscope shapes --input 32 --filter 5 --pad same")
    p.add_argument("--input", "-N", required=True, metavar="N", help="input side N")
    p.add_argument("--strict", action="store_true",
                   help="exit with status 1 when a stride does not fit")
    _size_options(p, required=True)
    return p


SHAPES = Command(_shapes_parser, _size_answer)


# ---------------------------------------------------------------------------------------------
# viz


def _viz_parser(sub: Any) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "viz", formatter_class=_Formatter, help="pictures: filters, activation maps, curves",
        description="Draw PNG pictures of a network.\n"
        "  filters MODEL       the filters of a conv layer as a grid (the first layer in colour "
        "for RGB input)\n"
        "  activations MODEL [IMAGE]  every layer's activation maps for one image, left to "
        "right, then the class scores (the lecture's car figure); without IMAGE a test image "
        "of the model's dataset (--index)\n"
        "  curves RUN          loss and accuracy per epoch of a training run\n"
        "MODEL is a model file, or a preset / JSON architecture (untrained weights, --seed).",
        epilog="examples:\n"
        "  convscope viz filters runs/x/model.safetensors --layer all\n"
        "  convscope viz activations runs/x/model.safetensors digit.png --out lecture.png\n"
        "  convscope viz activations runs/x/model.safetensors --index 7\n"
        "  convscope viz activations lecture photo.jpg   # the lecture's net on a 32x32 photo\n"
        "  convscope viz curves runs/x")
    p.add_argument("what", choices=("filters", "activations", "curves"), help="what to draw")
    p.add_argument("source", metavar="MODEL|RUN", help="model file, preset, JSON, or run folder")
    p.add_argument("image", metavar="IMAGE", nargs="?", help="activations: an image file")
    p.add_argument("--out", "-o", metavar="PNG",
                   help="output file (default: filters-layer<i>.png, activations-<image>.png, "
                   "curves.png in the current folder)")
    p.add_argument("--layer", default=None, metavar="I|all",
                   help="filters: the conv layer's index, or all (default: the first conv)")
    p.add_argument("--mode", choices=("auto", "rgb", "channels", "mean"), default="auto",
                   help="filters: colour tiles, one tile per input channel, or channel means")
    p.add_argument("--index", type=int, default=0, metavar="N",
                   help="activations without IMAGE: which test image (default: 0)")
    p.add_argument("--data", metavar="NAME", help="activations without IMAGE: the dataset")
    p.add_argument("--fit", choices=("stretch", "crop", "pad"), default="pad",
                   help="activations: how to bring the image to the model's size (default: pad)")
    p.add_argument("--invert", choices=("auto", "yes", "no"), default="auto",
                   help="activations with a model file: invert grey levels (default: auto)")
    p.add_argument("--input", metavar="SHAPE", help="preset/JSON: the input shape, e.g. 32x32x3")
    p.add_argument("--seed", type=int, default=0, help="preset/JSON: seed of the random weights")
    p.add_argument("--max-maps", type=int, default=32, metavar="N",
                   help="activations: at most N maps per layer (default: 32)")
    return p


def _png(path: str | None, default: str) -> Path:
    out = Path(path or default)
    if out.suffix.lower() != ".png":
        raise CommandError(f"--out must name a .png file, got {str(out)!r}")
    return out


def _viz_run(args: argparse.Namespace) -> int:
    from ..inspect import viz  # noqa: PLC0415

    if args.what == "curves":
        return _viz_curves(args)
    if args.image is not None and args.what != "activations":
        raise CommandError(f"an IMAGE is only for activations, got {args.image!r}")
    model, saved = _model_from(args.source, None if args.source.endswith(".safetensors")
                               else args.input, None, seed=args.seed)
    if args.what == "filters":
        from ..layers import Conv2D  # noqa: PLC0415

        convs = [i for i, layer in enumerate(model.layers) if isinstance(layer, Conv2D)]
        if not convs:
            raise CommandError(f"{args.source} has no conv layer")
        if args.layer in (None, ""):
            chosen = convs[:1]
        elif args.layer == "all":
            chosen = convs
        else:
            try:
                chosen = [int(args.layer)]
            except ValueError:
                raise CommandError(f"--layer must be a layer index or 'all', got {args.layer!r}") from None
            if chosen[0] not in convs:
                raise CommandError(f"layer {chosen[0]} is not a conv layer; conv layers: {convs}")
        if args.out and len(chosen) > 1:
            raise CommandError("--layer all writes one file per layer; leave out --out")
        for i in chosen:
            out = _png(args.out, f"filters-layer{i}.png")
            pic = viz.filter_grid(model, i, out, mode=args.mode)
            _say(f"layer {i}: {pic.panels[0].title}, {pic.panels[0].extra['mode']} tiles, scale "
                 f"±{pic.panels[0].extra['m']:.3g}")
            print(out)
        return 0
    return _viz_activations(args, model, saved)


def _viz_activations(args: argparse.Namespace, model: Any, saved: Any) -> int:
    from ..inspect import viz  # noqa: PLC0415
    from ..data import load_dataset, load_image, to_float  # noqa: PLC0415

    if args.max_maps < 1:
        raise CommandError(f"--max-maps must be >= 1, got {args.max_maps}")
    label = None
    classes = saved.classes if saved is not None else None
    if args.image is not None:
        if saved is not None:
            imgs, flipped = saved.load_images([args.image], args.fit, args.invert)
            if flipped[0]:
                _say(f"{args.image}: grey levels inverted to match the training images "
                     "(--invert no to keep them)")
        else:
            imgs = load_image(args.image, model.input_shape, args.fit)[None]
        name = Path(args.image).stem
    else:
        data = args.data or (saved.metadata.get("dataset") if saved is not None else None)
        if not data:
            raise CommandError("give an IMAGE file, or --data NAME --index N for a dataset image")
        ds = load_dataset(data, download=False)
        if tuple(ds.input_shape) != tuple(model.input_shape):
            raise CommandError(f"{ds.name} images are {'x'.join(map(str, ds.input_shape))}, the "
                               f"model takes {'x'.join(map(str, model.input_shape))}")
        if not 0 <= args.index < len(ds.x_test):
            raise CommandError(f"--index must be in 0..{len(ds.x_test) - 1}, got {args.index}")
        imgs, label = ds.x_test[args.index:args.index + 1], int(ds.y_test[args.index])
        classes = classes or ds.classes
        name = f"{ds.name}-{args.index}"
    if saved is not None:
        x = saved.preprocess(imgs)[0]
    else:
        dtype = next((p.dtype for p in model.params.values()), np.dtype(np.float32))
        x = to_float(imgs)[0].astype(dtype)
    out = _png(args.out, f"activations-{name}.png")
    pic = viz.activation_maps(model, x, out, image=imgs[0], classes=classes, label=label,
                              max_maps=args.max_maps)
    bars = [p for p in pic.panels if p.cmap == "bars"]
    if bars:
        b = bars[0].extra
        note = "" if saved is not None else " (untrained weights)"
        _say(f"predicted: {b['classes'][b['predicted']]} (softmax "
             f"{b['probabilities'][b['predicted']]:.2f}){note}")
    print(out)
    return 0


def _viz_curves(args: argparse.Namespace) -> int:
    from ..inspect import viz  # noqa: PLC0415
    from ..inspect.report import _read_history  # noqa: PLC0415

    src = Path(args.source)
    metrics = src / "metrics.jsonl" if src.is_dir() else src
    if not metrics.is_file():
        raise CommandError(f"{args.source}: no metrics.jsonl (give a run folder of convscope "
                           "train, or its metrics.jsonl)")
    history = _read_history(metrics)
    if not history:
        raise CommandError(f"{metrics}: no epochs recorded yet")
    out = _png(args.out, "curves.png")
    viz.training_curves(history, out, title=f"{metrics.parent.name}: loss and accuracy per epoch")
    print(out)
    return 0


VIZ = Command(_viz_parser, _viz_run)


# ---------------------------------------------------------------------------------------------
# report, and the confusion-matrix picture of evaluate


def _report_parser(sub: Any) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "report", formatter_class=_Formatter, help="(re)write a run's report.html",
        description="Write report.html into a run folder of convscope train: the model table "
        "and the lecture's walk, training curves, filters, sample predictions with their "
        "activation maps, and the confusion matrix on the test split.  One self-contained file "
        "(pictures embedded, no scripts, no network): open it from disk in any browser.",
        epilog="example:\n  convscope report runs/lenet5-digits-20250101-120000")
    p.add_argument("run_dir", metavar="RUN", help="a run folder (with model.safetensors)")
    p.add_argument("--data", metavar="NAME|DIR",
                   help="dataset for the test images (default: the model's)")
    p.add_argument("--data-dir", metavar="DIR", help="where the full datasets' files are")
    return p


def _report_run(args: argparse.Namespace) -> int:
    from ..inspect.report import report_for_run  # noqa: PLC0415

    print(report_for_run(args.run_dir, args.data, args.data_dir))
    return 0


REPORT = Command(_report_parser, _report_run)


def write_confusion_png(path: str | Path, confusion: np.ndarray, classes: list[str],
                        title: str) -> Path:
    """The confusion matrix of ``convscope evaluate`` as a PNG."""
    from ..inspect import viz  # noqa: PLC0415

    out = Path(path)
    viz.confusion_plot(confusion, classes, out, title=title)
    return out
