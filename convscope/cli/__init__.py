"""The ``convscope`` command: train, evaluate, predict, summary, and the subcommands others add.

Each subcommand is an object (a module, or a :class:`Command` here) with
``add_parser(subparsers) -> argparse.ArgumentParser`` and ``run(args) -> int | None``.  To add
one, write ``convscope/<yours>.py`` with those two functions and add a line to
:data:`SUBCOMMANDS`.  Errors print one line (``convscope <command>: error: ...``) and exit 1;
``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as _dt
import importlib
import json
import os
import secrets
import sys
import textwrap
import time
from pathlib import Path
from typing import Any, Callable, NamedTuple, Sequence

import numpy as np

from ..errors import CommandError

#: (name, "module" or "module:attribute") of each subcommand, in the order ``--help`` lists them.
SUBCOMMANDS: list[tuple[str, str]] = [
    ("train", "convscope.cli:TRAIN"),
    ("evaluate", "convscope.cli:EVALUATE"),
    ("predict", "convscope.cli:PREDICT"),
    ("summary", "convscope.cli:SUMMARY"),
    ("explain", "convscope.cli.inspect:EXPLAIN"),
    ("shapes", "convscope.cli.inspect:SHAPES"),
    ("viz", "convscope.cli.inspect:VIZ"),
    ("report", "convscope.cli.inspect:REPORT"),
    ("export", "convscope.cli.export"),
]


class Command(NamedTuple):
    """A subcommand defined in this module."""

    add_parser: Callable[[Any], argparse.ArgumentParser]
    run: Callable[[argparse.Namespace], int | None]




class _Formatter(argparse.HelpFormatter):
    """Wraps the description and epilog paragraph by paragraph; indented lines (examples) stay."""

    def __init__(self, prog: str) -> None:
        super().__init__(prog, max_help_position=32, width=min(100, _terminal_width()))

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        lines = []
        for line in text.splitlines():
            if not line.strip() or line.startswith(" "):
                lines.append(indent + line)
            else:
                lines.extend(textwrap.wrap(line, width, initial_indent=indent,
                                           subsequent_indent=indent + " " * 2 * (":" in line[:14])))
        return "\n".join(lines)


def _terminal_width() -> int:
    try:
        return os.get_terminal_size().columns
    except OSError:
        return 100


def _say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------------
# train

TRAIN_DEFAULTS: dict[str, Any] = {
    "data": "digits", "arch": "lenet5", "epochs": 40, "batch_size": 64, "optimizer": "adam",
    "lr": None, "momentum": 0.9, "nesterov": False, "weight_decay": 0.0, "schedule": "cosine",
    "step_size": 0, "gamma": 0.1, "warmup": 0.0, "min_lr": 0.0, "label_smoothing": 0.1,
    "patience": None, "val_fraction": 0.1, "augment": "auto", "seed": None, "limit": None,
    "data_dir": None, "download": True, "threads": 1}
DEFAULT_LR = {"sgd": 0.02, "adam": 3e-3, "adamw": 3e-3}
#: What ``--augment auto`` means for the known datasets (others: no augmentation).
AUTO_AUGMENT = {"digits": "crop=2", "mnist": "crop=2", "fashion-small": "flip",
                "fashion-mnist": "flip", "cifar10": "crop=4+flip"}
_RESUMABLE = {"epochs", "threads"}  # settings that may change on --resume


def parse_augment(spec: str) -> dict[str, Any] | None:
    """``"none"``, ``"crop"``, ``"crop=3"``, ``"flip"`` or ``"crop=2+flip"`` -> Augment settings."""
    if spec in ("none", ""):
        return None
    out = {"crop_padding": 0, "hflip": False}
    for part in spec.split("+"):
        name, _, value = part.partition("=")
        if name == "crop":
            try:
                out["crop_padding"] = int(value) if value else 2
            except ValueError:
                raise CommandError(f"--augment: crop=N needs a whole number of pixels, got "
                                   f"{part!r}") from None
            if out["crop_padding"] < 0:
                raise CommandError(f"--augment: crop padding must be >= 0, got {part!r}")
        elif name == "flip" and not value:
            out["hflip"] = True
        else:
            raise CommandError(f"--augment: unknown item {part!r}; use none, auto, crop, crop=N, "
                               "flip or a '+' list such as crop=2+flip")
    return out


def _train_parser(sub: Any) -> argparse.ArgumentParser:
    d = TRAIN_DEFAULTS
    p = sub.add_parser(
        "train", formatter_class=_Formatter, help="train an image classifier",
        description="Train a ConvNet on a dataset with the hand-written loop (forward, loss, "
        "backward, optimiser step), validating each epoch and keeping the best model.\n"
        "Writes a run folder: model.safetensors (the model file), metrics.jsonl (one line per "
        "epoch), checkpoint.safetensors (to --resume), config.json and results.json; ends by "
        "printing the test accuracy and these paths.\n"
        "Ctrl-C stops after the current batch and saves a checkpoint; a NaN or infinite loss "
        "stops the run keeping the last good checkpoint.",
        epilog="examples:\n"
        "  convscope train                                  # lenet5 on the bundled digits\n"
        "  convscope train --data fashion-small --arch fashion --epochs 20\n"
        "  convscope train --arch my_net.json --optimizer sgd --lr 0.02 --seed 1\n"
        "  convscope train --resume runs/lenet5-digits-20250101-120000\n\n"
        "datasets: digits, fashion-small (bundled, no download); mnist, fashion-mnist, cifar10 "
        "(found in --data-dir, $CONVSCOPE_DATA, ~/.cache/convscope or /usr/share/datasets, "
        "else downloaded); or a folder with one sub-folder of images per class.\n"
        "architectures: lecture, lenet5, fashion, cifar, or a JSON file listing layers, e.g. "
        '[{"type": "conv", "filters": 6, "size": 5}, {"type": "relu"}, {"type": "pool", '
        '"size": 2}, {"type": "fc", "units": "classes"}]')
    g = p.add_argument_group("data")
    g.add_argument("--data", metavar="NAME|DIR", help=f"dataset name or image folder (default: {d['data']})")
    g.add_argument("--data-dir", metavar="DIR", help="where the full datasets' files are (default: the search path above)")
    g.add_argument("--no-download", dest="download", action="store_false", default=None,
                   help="never download a dataset; fail if its files are not found")
    g.add_argument("--val-fraction", type=float, metavar="F",
                   help=f"share of the training images held out to validate each epoch, 0 for none "
                   f"(default: {d['val_fraction']})")
    g.add_argument("--augment", metavar="SPEC",
                   help="training augmentation: auto, none, crop, crop=N (random shifts of up to N "
                   "pixels), flip, or crop=N+flip (default: auto: "
                   + ", ".join(f"{k} {v}" for k, v in AUTO_AUGMENT.items()) + ", else none)")
    g.add_argument("--limit", type=int, metavar="N",
                   help="use only the first N training and N test images (quick tries)")
    g = p.add_argument_group("model")
    g.add_argument("--arch", metavar="NAME|FILE",
                   help=f"preset (lecture, lenet5, fashion, cifar) or JSON file (default: {d['arch']})")
    g = p.add_argument_group("optimisation")
    g.add_argument("--epochs", type=int, metavar="N", help=f"epochs in all (default: {d['epochs']})")
    g.add_argument("--batch-size", type=int, metavar="N", help=f"images per step (default: {d['batch_size']})")
    g.add_argument("--optimizer", choices=("sgd", "adam", "adamw"),
                   help=f"sgd (with --momentum), adam, or adamw (decoupled weight decay) "
                   f"(default: {d['optimizer']})")
    g.add_argument("--lr", type=float, metavar="RATE",
                   help="learning rate (default: 0.003 for adam and adamw, 0.02 for sgd)")
    g.add_argument("--momentum", type=float, metavar="M", help=f"SGD momentum (default: {d['momentum']})")
    g.add_argument("--nesterov", action="store_true", default=None, help="Nesterov momentum (SGD)")
    g.add_argument("--weight-decay", type=float, metavar="WD",
                   help=f"L2 weight decay (decoupled for adamw) (default: {d['weight_decay']})")
    g.add_argument("--schedule", choices=("constant", "step", "cosine"),
                   help=f"learning-rate schedule (default: {d['schedule']})")
    g.add_argument("--step-size", type=int, metavar="N",
                   help="step schedule: epochs between drops (default: a third of the epochs)")
    g.add_argument("--gamma", type=float, metavar="G", help=f"step schedule: factor per drop (default: {d['gamma']})")
    g.add_argument("--warmup", type=float, metavar="EPOCHS",
                   help=f"linear warm-up of the learning rate, in epochs (default: {d['warmup']})")
    g.add_argument("--min-lr", type=float, metavar="RATE", help=f"cosine schedule: final rate (default: {d['min_lr']})")
    g.add_argument("--label-smoothing", type=float, metavar="E",
                   help="cross-entropy against targets of 1 - E on the label and E/classes on "
                   f"every class (default: {d['label_smoothing']})")
    g.add_argument("--patience", type=int, metavar="N",
                   help="early stopping: stop after N epochs without a better validation accuracy "
                   "(default: never)")
    g = p.add_argument_group("run")
    g.add_argument("--seed", type=int, metavar="N",
                   help="seed for weights, shuffling, augmentation and dropout: the same seed "
                   "repeats a run exactly (default: a random one, printed and saved)")
    g.add_argument("--out", metavar="DIR", help="run folder (default: runs/<arch>-<data>-<time>)")
    g.add_argument("--resume", metavar="DIR",
                   help="continue the run in DIR (its checkpoint and settings; --epochs may raise "
                   "the total)")
    _add_threads(g)
    g.add_argument("--quiet", action="store_true", help="no progress bar or epoch lines")
    return p


def _add_threads(group: Any) -> None:
    group.add_argument("--threads", type=int, metavar="N",
                       help="BLAS threads for the matrix products; 0: the BLAS library's own "
                       "choice, one per core (default: 1: a small ConvNet's matrices gain little "
                       "from more, and more threads slow down badly when other jobs share the "
                       "cores; needs threadpoolctl)")


def _thread_limit(threads: int | None, check_only: bool = False) -> Any:
    """A context that limits the BLAS threads: ``threads`` (None: 1 where threadpoolctl is
    installed; 0: no limit).  ``check_only`` validates without applying."""
    if threads is not None and threads < 0:
        raise CommandError(f"--threads must be >= 0, got {threads}")
    if threads == 0:
        return contextlib.nullcontext()
    try:
        from threadpoolctl import threadpool_limits  # noqa: PLC0415 - optional
    except ImportError:
        if threads is None:
            return contextlib.nullcontext()
        raise CommandError("--threads needs threadpoolctl: pip install threadpoolctl") from None
    if check_only:  # threadpool_limits applies the limit as soon as it is made
        return contextlib.nullcontext()
    return threadpool_limits(limits=threads or 1, user_api="blas")


def _explicit(args: argparse.Namespace) -> dict[str, Any]:
    return {k: getattr(args, k) for k in TRAIN_DEFAULTS if getattr(args, k, None) is not None}


def _settings(args: argparse.Namespace) -> tuple[dict[str, Any], Path, bool]:
    """The run's settings (from the command line, or the run folder on --resume)."""
    given = _explicit(args)
    if args.resume:
        run_dir = Path(args.resume)
        if run_dir.is_file():
            run_dir = run_dir.parent
        cfg_path = run_dir / "config.json"
        if not cfg_path.is_file():
            raise CommandError(f"--resume {args.resume}: no run there (no {cfg_path})")
        try:
            saved = json.loads(cfg_path.read_text(encoding="utf-8"))["settings"]
        except (OSError, ValueError, KeyError) as exc:
            raise CommandError(f"{cfg_path}: unreadable run settings ({exc})") from None
        if args.out and Path(args.out).resolve() != run_dir.resolve():
            raise CommandError("--resume continues a run in its own folder; leave out --out")
        for k, v in given.items():
            if k not in _RESUMABLE and saved.get(k) != v:
                raise CommandError(f"--{k.replace('_', '-')} {v} differs from the run being "
                                   f"resumed ({saved.get(k)}); only --epochs and --threads can change")
        settings = {**TRAIN_DEFAULTS, **saved,
                    **{k: v for k, v in given.items() if k in _RESUMABLE}}
        return settings, run_dir, True
    settings = {**TRAIN_DEFAULTS, **given}
    if settings["seed"] is None:
        settings["seed"] = secrets.randbelow(2 ** 31)
    if settings["lr"] is None:
        settings["lr"] = DEFAULT_LR[settings["optimizer"]]
    if args.out:
        run_dir = Path(args.out)
    else:
        stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
        data_name = Path(str(settings["data"])).name or "data"
        run_dir = Path("runs") / f"{Path(str(settings['arch'])).stem}-{data_name}-{stamp}"
    if (run_dir / "checkpoint.safetensors").exists() or (run_dir / "config.json").exists():
        raise CommandError(f"{run_dir} already holds a run; continue it with --resume {run_dir} "
                           "or choose another --out")
    return settings, run_dir, False


def _check_settings(s: dict[str, Any]) -> None:
    if s["limit"] is not None and s["limit"] < 1:
        raise CommandError(f"--limit must be >= 1, got {s['limit']}")
    if not 0 <= s["val_fraction"] < 1:
        raise CommandError(f"--val-fraction must be in [0, 1), got {s['val_fraction']}")


def _load_data(s: dict[str, Any], input_shape: tuple[int, int, int] | None = None) -> Any:
    from ..data import load_dataset  # noqa: PLC0415 - keep `convscope --help` fast

    return load_dataset(s["data"], s["data_dir"], download=s["download"], input_shape=input_shape)


def _train_run(args: argparse.Namespace) -> int:
    from ..data import Normalizer, stratified_split  # noqa: PLC0415
    from ..formats.model_file import atomic_write, estimate_background, save_model  # noqa: PLC0415
    from ..formats.architecture import build_model, resolve_architecture  # noqa: PLC0415
    from ..train import TrainConfig, Trainer, TrainingDiverged  # noqa: PLC0415

    s, run_dir, resuming = _settings(args)
    _check_settings(s)
    _thread_limit(s["threads"], check_only=True)  # fail now, not after the data loads
    t_start = time.perf_counter()
    arch_name = resolve_architecture(s["arch"])[0]  # a bad --arch fails before the data loads
    augment = s["augment"]
    if augment == "auto":
        augment = AUTO_AUGMENT.get(str(s["data"]), "none")
    aug = parse_augment(augment)
    ds = _load_data(s)
    x_train, y_train, x_test, y_test = ds.x_train, ds.y_train, ds.x_test, ds.y_test
    if s["limit"] is not None:
        x_train, y_train = x_train[:s["limit"]], y_train[:s["limit"]]
        x_test, y_test = x_test[:s["limit"]], y_test[:s["limit"]]
    x_val = y_val = None
    if s["val_fraction"] > 0:
        tr, va = stratified_split(y_train, s["val_fraction"], seed=s["seed"])
        if len(tr) == 0 or len(va) == 0:
            raise CommandError(f"--val-fraction {s['val_fraction']} leaves no images to train or "
                               f"validate on ({len(y_train)} images); use more or --val-fraction 0")
        x_train, y_train, x_val, y_val = x_train[tr], y_train[tr], x_train[va], y_train[va]
    model = build_model(s["arch"], ds.input_shape, ds.num_classes, seed=s["seed"])
    out = model.output_shape(model.input_shape)
    if out != (ds.num_classes,):
        raise CommandError(f"the architecture ends in {'x'.join(map(str, out))} outputs per "
                           f"image but {ds.name} has {ds.num_classes} classes; end it with "
                           '{"type": "fc", "units": "classes"}')
    normalizer = Normalizer.fit(x_train)
    try:
        config = TrainConfig(epochs=s["epochs"], batch_size=s["batch_size"],
                             optimizer=s["optimizer"], lr=s["lr"], momentum=s["momentum"],
                             nesterov=bool(s["nesterov"]), weight_decay=s["weight_decay"],
                             schedule=s["schedule"], step_size=s["step_size"], gamma=s["gamma"],
                             warmup_epochs=s["warmup"], min_lr=s["min_lr"],
                             label_smoothing=s["label_smoothing"], patience=s["patience"],
                             seed=s["seed"], augment=aug)
    except ValueError as exc:
        raise CommandError(str(exc)) from None
    background = estimate_background(x_train)
    info = {"dataset": ds.name, "arch_name": arch_name, "background": background}
    quiet = args.quiet
    from ..inspect.report import RunReport  # noqa: PLC0415 - curves.png each epoch, report.html at the end

    trainer = Trainer(model, config, normalizer=normalizer, run_dir=run_dir, classes=ds.classes,
                      model_info=info, progress=not quiet, log=None if quiet else _say,
                      callbacks=[RunReport(x_test, y_test, log=_say)])
    if not resuming:
        atomic_write(run_dir / "config.json", json.dumps(
            {"settings": s, "argv": sys.argv[1:], "started": _dt.datetime.now().isoformat(
                timespec="seconds")}, indent=2) + "\n")
    else:
        atomic_write_settings(run_dir, s)
    n_params = sum(int(p.size) for p in model.params.values())
    if not quiet:
        _say(f"{'resuming' if resuming else 'training'} {arch_name} ({n_params:,} parameters, "
             f"input {'x'.join(map(str, ds.input_shape))}) on {ds.name}: {len(x_train):,} training, "
             f"{0 if x_val is None else len(x_val):,} validation, {len(x_test):,} test images; "
             f"{config.optimizer} lr {config.lr:g} ({config.schedule}), {config.epochs} epochs of "
             f"{config.batch_size}, augment {augment}, seed {config.seed}")
        _say(f"run folder: {run_dir}")
    has_checkpoint = (run_dir / "checkpoint.safetensors").is_file()
    if resuming and not has_checkpoint and not quiet:
        _say("no checkpoint was written before the run stopped: starting it over")
    try:
        with _thread_limit(s["threads"]):
            result = trainer.fit(x_train, y_train, x_val, y_val,
                                 resume=resuming and has_checkpoint)
    except TrainingDiverged as exc:
        raise CommandError(f"{exc} (convscope train --lr {exc.suggested_lr:.3g})") from exc
    if result.status == "interrupted":
        where = (f"at batch {trainer.batch} of epoch {trainer.epoch + 1}" if trainer.batch
                 else f"after epoch {trainer.epoch}")
        _say(f"interrupted; checkpoint saved {where}; continue with: convscope train "
             f"--resume {run_dir}")
        return 130
    with _thread_limit(s["threads"]):
        test = trainer.evaluate(x_test, y_test)
    results = {"test_accuracy": test.accuracy, "test_loss": test.loss, "test_correct": test.correct,
               "test_images": test.total, "status": result.status, "epochs": result.epochs,
               "best_epoch": result.best_epoch, "best_val_accuracy": result.best_val_accuracy,
               "seed": config.seed,
               "seconds": round(time.perf_counter() - t_start, 2)}
    model_path = save_model(run_dir / "model.safetensors", model, ds.classes,
                            normalization=normalizer, background=background, dataset=ds.name,
                            arch_name=arch_name, training={**results, "config": config.to_dict()})
    atomic_write(run_dir / "results.json", json.dumps(results, indent=2) + "\n")
    note = {"early_stopped": f" (early stopping after epoch {result.epochs})"}.get(result.status, "")
    kept = f", best validation epoch {result.best_epoch}" if result.best_epoch else ""
    print(f"test accuracy: {100 * test.accuracy:.2f}% ({test.correct:,}/{test.total:,} {ds.name} "
          f"test images{kept}){note}")
    print(f"model: {model_path}")
    print(f"metrics: {run_dir / 'metrics.jsonl'}")
    print(f"checkpoint: {run_dir / 'checkpoint.safetensors'}")
    print(f"results: {run_dir / 'results.json'}")
    return 0


def atomic_write_settings(run_dir: Path, settings: dict[str, Any]) -> None:
    """Rewrite config.json's settings (after --resume raised --epochs), keeping the rest."""
    from ..formats.model_file import atomic_write  # noqa: PLC0415

    path = run_dir / "config.json"
    data = json.loads(path.read_text(encoding="utf-8"))
    if data.get("settings") != settings:
        data["settings"] = settings
        data.setdefault("resumed", []).append(_dt.datetime.now().isoformat(timespec="seconds"))
        atomic_write(path, json.dumps(data, indent=2) + "\n")


TRAIN = Command(_train_parser, _train_run)


# ---------------------------------------------------------------------------------------------
# evaluate


def _evaluate_parser(sub: Any) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "evaluate", formatter_class=_Formatter, help="accuracy, per-class accuracy, confusion matrix",
        description="Evaluate a model file on a dataset split: overall accuracy and loss, the "
        "accuracy on each class, and the confusion matrix (rows: true class, columns: "
        "predicted).",
        epilog="examples:\n  convscope evaluate runs/x/model.safetensors\n"
        "  convscope evaluate model.safetensors --data mnist --split test --json")
    p.add_argument("model", metavar="MODEL", help="a model file (.safetensors) from convscope train")
    p.add_argument("--data", metavar="NAME|DIR",
                   help="dataset name or image folder (default: the one the model was trained on)")
    p.add_argument("--data-dir", metavar="DIR", help="where the full datasets' files are")
    p.add_argument("--no-download", dest="download", action="store_false",
                   help="never download a dataset")
    p.add_argument("--split", choices=("test", "train", "all"),
                   help="which images to evaluate (default: test; all for an image folder "
                   "without train/ and test/ sub-folders)")
    p.add_argument("--limit", type=int, metavar="N", help="only the first N images")
    p.add_argument("--batch-size", type=int, default=500, metavar="N",
                   help="images per forward pass (default: 500)")
    p.add_argument("--json", action="store_true", help="print the results as JSON")
    _add_threads(p)
    p.add_argument("--confusion", metavar="PNG",
                   help="also draw the confusion matrix into PNG (default: confusion-<split>.png "
                   "next to a model in a run folder)")
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


def _evaluate_run(args: argparse.Namespace) -> int:
    from ..formats.model_file import load_model  # noqa: PLC0415
    from ..train import evaluate  # noqa: PLC0415

    _thread_limit(args.threads, check_only=True)
    saved = load_model(args.model)
    data = args.data or saved.metadata.get("dataset")
    if not data:
        raise CommandError(f"{args.model} does not name its dataset; give --data")
    if args.batch_size < 1:
        raise CommandError(f"--batch-size must be >= 1, got {args.batch_size}")
    if args.limit is not None and args.limit < 1:
        raise CommandError(f"--limit must be >= 1, got {args.limit}")
    ds = _load_data({"data": data, "data_dir": args.data_dir, "download": args.download},
                    saved.input_shape)
    if list(ds.classes) != saved.classes:
        raise CommandError(f"{ds.name} has classes {ds.classes[:12]} but the model was trained "
                           f"on {saved.classes[:12]}")
    if tuple(ds.input_shape) != saved.input_shape:
        raise CommandError(f"{ds.name} images are {'x'.join(map(str, ds.input_shape))}, the "
                           f"model takes {'x'.join(map(str, saved.input_shape))}")
    if args.split is None:
        folder = Path(str(data))
        args.split = "all" if folder.is_dir() and not (folder / "test").is_dir() else "test"
    x, y = {"test": (ds.x_test, ds.y_test), "train": (ds.x_train, ds.y_train),
            "all": (np.concatenate([ds.x_train, ds.x_test]),
                    np.concatenate([ds.y_train, ds.y_test]))}[args.split]
    if args.limit:
        x, y = x[:args.limit], y[:args.limit]
    with _thread_limit(args.threads):
        ev = evaluate(saved.model, x, y, normalizer=saved.normalization,
                      num_classes=len(saved.classes), batch_size=args.batch_size)
    per_class = ev.per_class_accuracy
    _confusion_png(args, ev, saved.classes, f"{ds.name} {args.split} split")
    if args.json:
        print(json.dumps({"model": str(args.model), "data": ds.name, "split": args.split,
                          "images": ev.total, "accuracy": ev.accuracy, "loss": ev.loss,
                          "per_class_accuracy": {c: (None if np.isnan(a) else float(a))
                                                 for c, a in zip(saved.classes, per_class)},
                          "classes": saved.classes, "confusion": ev.confusion.tolist()}, indent=2))
        return 0
    what = (f"{ds.name}, all {ev.total:,} images" if args.split == "all"
            else f"{ds.name} {args.split} split, {ev.total:,} images")
    print(f"{what}: accuracy {100 * ev.accuracy:.2f}% "
          f"({ev.correct:,}/{ev.total:,}), loss {ev.loss:.4f}")
    print("\nper-class accuracy:")
    counts = ev.confusion.sum(axis=1)
    wide = max(len(c) for c in saved.classes)
    for i, (c, a) in enumerate(zip(saved.classes, per_class)):
        acc = "   n/a" if np.isnan(a) else f"{100 * a:6.2f}%"
        print(f"{i:>4}  {c:<{wide}}  {acc}  ({int(ev.confusion[i, i]):,}/{int(counts[i]):,})")
    print("\nconfusion matrix (rows: true class, columns: predicted):")
    print(format_confusion(ev.confusion, saved.classes))
    return 0


def _confusion_png(args: argparse.Namespace, ev: Any, classes: list[str], title: str) -> None:
    """Draw the confusion matrix: to --confusion, or beside a model in a run folder."""
    from .inspect import write_confusion_png  # noqa: PLC0415

    run = Path(args.model).parent
    if args.confusion is None and not (run / "metrics.jsonl").is_file():
        return
    path = args.confusion or run / f"confusion-{args.split}.png"
    try:
        _say(f"confusion matrix: {write_confusion_png(path, ev.confusion, classes, title)}")
    except (ImportError, OSError) as exc:
        if args.confusion is not None:
            raise
        _say(f"confusion matrix picture skipped: {exc}")


EVALUATE = Command(_evaluate_parser, _evaluate_run)


# ---------------------------------------------------------------------------------------------
# predict


def _predict_parser(sub: Any) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "predict", formatter_class=_Formatter, help="label image files with a trained model",
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
    _add_threads(p)
    return p


def _expand_images(items: Sequence[str]) -> list[Path]:
    from ..data import IMAGE_EXTENSIONS  # noqa: PLC0415

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


def _predict_run(args: argparse.Namespace) -> int:
    from ..data import DataError  # noqa: PLC0415
    from ..formats.model_file import load_model  # noqa: PLC0415

    if args.top_k < 1:
        raise CommandError(f"--top-k must be >= 1, got {args.top_k}")
    _thread_limit(args.threads, check_only=True)
    saved = load_model(args.model)
    paths = _expand_images(args.images)
    failed = 0
    records = []
    for path in paths:
        try:
            if not path.exists():
                raise DataError(f"{path}: no such image file")
            with _thread_limit(args.threads):
                (pred,) = saved.predict_files([path], args.top_k, args.fit, args.invert)
        except DataError as exc:
            _say(f"convscope predict: error: {exc}")
            failed += 1
            continue
        records.append(pred)
        if not args.json:
            labels = "  ".join(f"{lab} ({100 * pr:.1f}%)"
                               for lab, pr in zip(pred.labels, pred.probabilities))
            print(f"{path}: {labels}{'  [inverted]' if pred.inverted else ''}", flush=True)
    if args.json:
        print(json.dumps([{"image": r.source, "labels": r.labels, "indices": r.indices,
                           "probabilities": r.probabilities, "inverted": r.inverted}
                          for r in records], indent=2))
    return 1 if failed else 0


PREDICT = Command(_predict_parser, _predict_run)


# ---------------------------------------------------------------------------------------------
# summary


def _summary_parser(sub: Any) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "summary", formatter_class=_Formatter, help="the model table: shapes, parameters, mult-adds",
        description="Print the model table of a preset, a JSON architecture or a saved model: "
        "each layer's output shape, its parameters with the lecture's formula (5·5·3·6 + 6 = "
        "456), multiply-adds and activation memory per image.",
        epilog="examples:\n  convscope summary lecture                 # on the lecture's 32x32x3\n"
        "  convscope summary lenet5 --input-shape 1x28x28\n"
        "  convscope summary my_net.json --data digits\n"
        "  convscope summary runs/x/model.safetensors")
    p.add_argument("arch", metavar="ARCH", nargs="?", default=TRAIN_DEFAULTS["arch"],
                   help="preset (lecture, lenet5, fashion, cifar), JSON file or model file "
                   f"(default: {TRAIN_DEFAULTS['arch']})")
    p.add_argument("--input-shape", metavar="CxHxW",
                   help="per-image input, e.g. 1x28x28 or 32x32x3 (default: the preset's own "
                   "input, the JSON file's input_shape, or --data's)")
    p.add_argument("--classes", type=int, metavar="N",
                   help="number of classes (default: --data's, else 10)")
    p.add_argument("--data", metavar="NAME|DIR", help="take the input shape and classes from a dataset")
    return p


def _summary_run(args: argparse.Namespace) -> int:
    from ..formats.model_file import load_model  # noqa: PLC0415
    from ..formats.architecture import PRESETS, build_model, parse_shape, resolve_architecture  # noqa: PLC0415

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
    classes = args.classes
    if args.classes is not None and args.classes < 1:
        raise CommandError(f"--classes must be >= 1, got {args.classes}")
    if args.data:
        ds = _load_data({"data": args.data, "data_dir": None, "download": False}, shape)
        shape = shape or tuple(ds.input_shape)
        classes = classes or ds.num_classes
    name, layers, file_shape = resolve_architecture(args.arch)
    if shape is None and layers is not None and file_shape is None and not any(
            isinstance(l, dict) and l.get("type") == "input" for l in layers):
        raise CommandError(f"{args.arch} names no input shape; give --input-shape (e.g. 1x28x28) "
                           "or --data")
    model = build_model(args.arch, shape, classes or 10, seed=0)
    if name in PRESETS and shape is None:
        _say(f"{name} on its own input {'x'.join(map(str, model.input_shape))} (C x H x W); set "
             "--input-shape or --data for another")
    print(model.summary())
    return 0


SUMMARY = Command(_summary_parser, _summary_run)


# ---------------------------------------------------------------------------------------------
# main


def _resolve(target: str) -> Any:
    module, _, attr = target.partition(":")
    obj = importlib.import_module(module)
    return getattr(obj, attr) if attr else obj


def build_parser() -> argparse.ArgumentParser:
    """The ``convscope`` parser with every subcommand of :data:`SUBCOMMANDS`."""
    from .._version import __version__  # noqa: PLC0415

    parser = argparse.ArgumentParser(
        prog="convscope", formatter_class=_Formatter,
        description="ConvNets from scratch on NumPy: train, evaluate and inspect image "
        "classifiers.",
        epilog="main job:  convscope train   (lenet5 on the bundled digits: about 98% in under a minute)\n"
        "then:      convscope predict runs/<run>/model.safetensors your_digit.png\n"
        "Run 'convscope <command> --help' for each command's options.")
    parser.add_argument("--version", action="version", version=f"convscope {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", title="commands")
    for name, target in SUBCOMMANDS:
        try:
            obj = _resolve(target)
        except ImportError as exc:
            broken = sub.add_parser(name, help=f"(unavailable: {exc})")
            broken.set_defaults(run=_unavailable(name, exc))
            continue
        p = obj.add_parser(sub)
        p.set_defaults(run=obj.run)
        if not any("--debug" in a.option_strings for a in p._actions):
            p.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                           help="show the traceback on errors")
    return parser


def _unavailable(name: str, exc: Exception) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        raise CommandError(f"{name} is unavailable: {exc}")

    return run


def _one_line(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.filename is not None and exc.strerror:
        return f"{exc.filename}: {exc.strerror.lower()}"
    msg = str(exc.args[0]) if isinstance(exc, KeyError) and exc.args else str(exc)
    msg = " ".join(part.strip() for part in msg.splitlines() if part.strip())
    known = (CommandError, ValueError, OSError, ImportError, RuntimeError, KeyError, TypeError)
    if not msg:
        msg = type(exc).__name__
    if not isinstance(exc, known):
        msg = f"{type(exc).__name__}: {msg} (an internal error; rerun with --debug for details)"
    return msg


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``convscope`` command line; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "run", None) is None:
        parser.print_help(sys.stderr)
        return 2
    try:
        return int(args.run(args) or 0)
    except KeyboardInterrupt:
        if args.debug:
            raise
        _say(f"convscope {args.command}: interrupted")
        return 130
    except BrokenPipeError:  # e.g. `convscope predict ... | head -1`
        try:
            sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - stop the flush at exit failing
        except OSError:
            pass
        return 0
    except Exception as exc:  # noqa: BLE001 - the one place that turns errors into a line
        if args.debug:
            raise
        _say(f"convscope {args.command}: error: {_one_line(exc)}")
        return 1


if __name__ == "__main__":  # pragma: no cover - `python -m convscope.cli`
    from convscope.cli import main as _main  # the module the subcommands import, not __main__

    sys.exit(_main())
