"""``convscope viz``: PNG pictures of a network: a conv layer's filters, every layer's
activation maps for one image (the lecture's car figure), a run's training curves."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from ..data import load_dataset, load_image, to_float
from ..data.record import find_dataset
from ..inspect import viz
from ..inspect.history import read_history  # the reader of metrics.jsonl
from ..inspect.tree import filter_layers, position
from ..train.evaluation import model_dtype
from ._common import CommandError, Formatter, add_import, say
from ._inputs import model_from
from ._outputs import check_output

__all__ = ["add_parser", "run"]


def add_parser(sub: Any) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "viz", formatter_class=Formatter, help="pictures: filters, activation maps, curves",
        description="Draw PNG pictures of a network.\n"
        "  filters MODEL       the filters of a conv layer as a grid (the first layer in colour "
        "for RGB input)\n"
        "  activations MODEL [IMAGE]  every layer's activation maps for one image, left to "
        "right, then the class scores (the lecture's car figure); without IMAGE a test image "
        "of the model's dataset (--index)\n"
        "  curves RUN          loss and accuracy per epoch of a training run\n"
        "MODEL is a model file, an .onnx file, or a preset / JSON architecture (untrained "
        "weights, --seed).",
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
    add_import(p)
    return p


def _png(path: str | None, default: str) -> Path:
    out = Path(path or default)
    if out.suffix.lower() != ".png":
        raise CommandError(f"--out must name a .png file, got {str(out)!r}")
    return out


def run(args: argparse.Namespace) -> int:
    if args.out:  # never over the model, the image or the metrics it draws
        check_output(args.out, "--out", [args.source, args.image, *(args.imports or ())])
    if args.what == "curves":
        return _viz_curves(args)
    if args.image is not None and args.what != "activations":
        raise CommandError(f"an IMAGE is only for activations, got {args.image!r}")
    model, saved = model_from(args.source, None if args.source.endswith(".safetensors")
                               else args.input, None, seed=args.seed)
    if args.what == "filters":
        # layers with filters to draw (the shows_filters trait), inside blocks too ('3.1')
        convs = [position(label) for label, _ in filter_layers(model)]
        if not convs:
            raise CommandError(f"{args.source} has no conv layer")
        if args.layer in (None, ""):
            chosen = convs[:1]
        elif args.layer == "all":
            chosen = convs
        else:
            chosen = [position(args.layer)]
            if chosen[0] not in convs:
                if not all(part.isdigit() for part in str(args.layer).split(".")):
                    raise CommandError(f"--layer must be a layer index (3, or 3.1 inside block "
                                       f"3) or 'all', got {args.layer!r}")
                raise CommandError(f"layer {chosen[0]} is not a conv layer; conv layers: "
                                   f"[{', '.join(map(str, convs))}]")
        if args.out and len(chosen) > 1:
            raise CommandError("--layer all writes one file per layer; leave out --out")
        for i in chosen:
            out = _png(args.out, f"filters-layer{i}.png")
            pic = viz.filter_grid(model, i, out, mode=args.mode)
            say(f"layer {i}: {pic.panels[0].title}, {pic.panels[0].extra['mode']} tiles, scale "
                f"±{pic.panels[0].extra['m']:.3g}")
            print(out)
        return 0
    return _viz_activations(args, model, saved)


def _viz_activations(args: argparse.Namespace, model: Any, saved: Any) -> int:
    if args.max_maps < 1:
        raise CommandError(f"--max-maps must be >= 1, got {args.max_maps}")
    label = None
    classes = saved.classes if saved is not None else None
    if args.image is not None:
        if saved is not None:
            imgs, flipped = saved.load_images([args.image], args.fit, args.invert)
            if flipped[0]:
                say(f"{args.image}: grey levels inverted to match the training images "
                    "(--invert no to keep them)")
        else:
            imgs = load_image(args.image, model.input_shape, args.fit)[None]
        name = Path(args.image).stem
    else:
        data = args.data or (saved.metadata.get("dataset") if saved is not None else None)
        if not data:
            raise CommandError("give an IMAGE file, or --data NAME --index N for a dataset image")
        ds = (find_dataset(saved.metadata, args.data, classes=saved.classes)
              if saved is not None else load_dataset(data, download=False))  # the recorded folder
        if tuple(ds.input_shape) != tuple(model.input_shape):
            raise CommandError(f"{ds.name} images are {'x'.join(map(str, ds.input_shape))}, the "
                               f"model takes {'x'.join(map(str, model.input_shape))}")
        if not len(ds.x_test):
            raise CommandError(f"the test split of {ds.name} has no images; give an IMAGE file")
        if not 0 <= args.index < len(ds.x_test):
            raise CommandError(f"--index must be in 0..{len(ds.x_test) - 1}, got {args.index}")
        imgs, label = ds.x_test[args.index:args.index + 1], int(ds.y_test[args.index])
        classes = classes or ds.classes
        name = f"{ds.name}-{args.index}"
    if saved is not None:
        x = saved.preprocess(imgs)[0]
    else:
        x = to_float(imgs)[0].astype(model_dtype(model))
    out = _png(args.out, f"activations-{name}.png")
    pic = viz.activation_maps(model, x, out, image=imgs[0], classes=classes, label=label,
                              max_maps=args.max_maps)
    bars = [p for p in pic.panels if p.cmap == "bars"]
    if bars:
        b = bars[0].extra
        note = "" if saved is not None else " (untrained weights)"
        say(f"predicted: {b['classes'][b['predicted']]} (softmax "
            f"{b['probabilities'][b['predicted']]:.2f}){note}")
    print(out)
    return 0


def _viz_curves(args: argparse.Namespace) -> int:
    src = Path(args.source)
    metrics = src / "metrics.jsonl" if src.is_dir() else src
    if not metrics.is_file():
        raise CommandError(f"{args.source}: no metrics.jsonl (give a run folder of convscope "
                           "train, or its metrics.jsonl)")
    history = read_history(metrics)
    if not history:
        raise CommandError(f"{metrics}: no epochs recorded yet")
    out = _png(args.out, "curves.png")
    viz.training_curves(history, out, title=f"{metrics.parent.name}: loss and accuracy per epoch")
    print(out)
    return 0
