"""``convscope train``: train a classifier on a dataset, writing a run folder that
``--resume`` continues (the settings in config.json, the state in checkpoint.safetensors)."""

from __future__ import annotations

import argparse
import contextlib
import datetime as _dt
import json
import os
import secrets
import sys
import time
from pathlib import Path
from typing import Any

from .. import distributed as dist
from ..data import Normalizer, stratified_split
from ..data.record import data_record
from ..formats.architecture import PRESETS, build_model, resolve_architecture
from ..formats.model_file import atomic_write, estimate_background, save_model
from ..inspect.report import RunReport  # curves.png each epoch, report.html at the end
from ..inspect.explore.source import write_run_explorer  # explore.html at the end
from ..train import TrainConfig, Trainer, TrainingDiverged
from ._common import (TRAIN_THREADS_HELP, CommandError, Formatter, add_import,
                      add_threads, idle_cores, say, thread_limit)
from ._inputs import check_trainable, load_data
from ._tta import add_tta
from ._device import add_device  # --device cuda
from ._live import Live, add_serve, serve_args  # --serve: the live view
from ._outputs import claim_run_folder, interrupted_line, new_run_check
from ._train_settings import AUTO_AUGMENT, DEFAULT_LR, TRAIN_DEFAULTS, parse_augment

__all__ = ["add_parser", "run", "parse_augment", "atomic_write_settings", "TRAIN_DEFAULTS",
           "DEFAULT_LR", "AUTO_AUGMENT"]


_RESUMABLE = {"epochs", "threads", "sync_bn", "tta"}  # settings that may change on --resume
_LAUNCHED = "CONVSCOPE_LAUNCHED"  # set by --workers for its workers: config.json is brand new


def add_parser(sub: Any) -> argparse.ArgumentParser:
    d = TRAIN_DEFAULTS
    p = sub.add_parser(
        "train", formatter_class=Formatter, help="train an image classifier",
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
        "  convscope train --resume runs/lenet5-digits-20250101-120000\n"
        "  convscope train --workers 2 --batch-size 64       # 2 MPI workers, 32 images each\n\n"
        "datasets: digits, fashion-small (bundled, no download); mnist, fashion-mnist, cifar10 "
        "(found in --data-dir, $CONVSCOPE_DATA, ~/.cache/convscope or /usr/share/datasets, "
        "else downloaded); or a folder with one sub-folder of images per class.\n"
        f"architectures: {', '.join(PRESETS)}, or a JSON file listing layers, e.g. "
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
    add_tta(g, "also evaluates the final model on each test image and its mirror image and "
            "reports both accuracies (validation, and so the best epoch, stays one view)", None)
    g.add_argument("--input-size", metavar="HxW",
                   help="an image folder's images are resized to H x W (default: their own size, "
                   "scaled to 64 on the longer side when larger, or 32x32 when sizes differ)")
    g.add_argument("--limit", type=int, metavar="N",
                   help="use only the first N training and N test images (quick tries)")
    g = p.add_argument_group("model")
    g.add_argument("--arch", metavar="NAME|FILE",
                   help=f"preset ({', '.join(PRESETS)}) or JSON file (default: {d['arch']})")
    add_import(g)
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
    add_threads(g, TRAIN_THREADS_HELP)  # None: the idle cores at start-up (idle_cores)
    add_device(g)
    g.add_argument("--quiet", action="store_true", help="no progress bar or epoch lines")
    add_serve(g)
    g = p.add_argument_group("workers (data-parallel on MPI: pip install 'convscope[mpi]')")
    g.add_argument("--workers", type=int, metavar="N",
                   help="train on N MPI processes (it runs mpirun for you): --batch-size stays "
                   "the global batch, each worker takes 1/N of it, and the weights equal one "
                   "process's; or start it yourself: mpirun -np N python -m mpi4py -m convscope "
                   "train ...")
    g.add_argument("--hostfile", metavar="FILE",
                   help="with --workers: Open MPI's hostfile (one 'host slots=K' line per machine)")
    g.add_argument("--sync-bn", dest="sync_bn", action="store_true", default=None,
                   help="batch norm over the global batch, exact (default: each worker's own "
                   "slice, as PyTorch's DDP)")
    return p


def _workers(args: argparse.Namespace) -> Any:
    """This process's communicator (MPI under mpirun), after checking --workers/--hostfile."""
    if args.workers is not None and args.workers < 1:
        raise CommandError(f"--workers must be >= 1, got {args.workers}")
    if args.hostfile is not None and not args.workers:
        raise CommandError("--hostfile needs --workers N")
    comm = dist.init()
    if comm.size > 1 and args.workers not in (None, comm.size):
        raise CommandError(f"--workers {args.workers} under an mpirun of {comm.size} processes; "
                           "leave out --workers (mpirun started the workers)")
    return comm


def _launch(args: argparse.Namespace, s: dict[str, Any], run_dir: Path, resuming: bool) -> int:
    """Write the run's settings, then run it as ``convscope train --resume RUN_DIR`` on
    ``--workers`` MPI processes: every worker reads the same settings (seed, folder)."""
    dist.find_mpirun()  # a missing mpi4py: one line, before anything is written
    _write_settings(run_dir, s, resuming)
    child = ["train", "--resume", str(run_dir), "--device", args.device, *serve_args(args),
             *["--quiet"] * bool(args.quiet)]
    for item in getattr(args, "imports", None) or ():
        child += ["--import", str(item)]
    return dist.launch(child, args.workers, hostfile=args.hostfile, env={_LAUNCHED: "1"})


def _write_settings(run_dir: Path, s: dict[str, Any], resuming: bool) -> None:
    if not resuming:
        atomic_write(run_dir / "config.json", json.dumps(
            {"settings": s, "argv": sys.argv[1:], "started": _dt.datetime.now().isoformat(
                timespec="seconds")}, indent=2) + "\n")
    else:
        atomic_write_settings(run_dir, s)


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
                                   f"resumed ({saved.get(k)}); only --epochs, --threads and "
                                   "--sync-bn can change")
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
    new_run_check(run_dir)  # a new or empty folder, or a run that stopped before a checkpoint
    return settings, run_dir, False


def _check_settings(s: dict[str, Any]) -> None:
    if s["limit"] is not None and s["limit"] < 1:
        raise CommandError(f"--limit must be >= 1, got {s['limit']}")
    if not 0 <= s["val_fraction"] < 1:
        raise CommandError(f"--val-fraction must be in [0, 1), got {s['val_fraction']}")


def run(args: argparse.Namespace) -> int:
    with contextlib.ExitStack() as held:  # the run lock, from the check of --out to the end
        return _train(args, held)


def _train(args: argparse.Namespace, held: contextlib.ExitStack) -> int:
    comm = _workers(args)
    settled: Any = None
    if comm.is_root:  # one worker decides the settings (seed, run folder); all take them
        try:
            settled = _settings(args)
            _check_settings(settled[0])
        except CommandError as exc:
            settled = exc
    settled = comm.bcast_obj(settled)
    if isinstance(settled, CommandError):
        raise settled if comm.is_root else SystemExit(1)  # the error line once, from rank 0
    s, run_dir, resuming = settled
    if args.workers and args.workers > 1 and comm.size == 1:
        claim_run_folder(held, run_dir, resuming, hand_down=True)  # held for the workers
        return _launch(args, s, run_dir, resuming)
    fresh = bool(os.environ.get(_LAUNCHED)) and not (run_dir / "checkpoint.safetensors").is_file()
    resuming = resuming and not fresh  # the launcher wrote config.json just now
    thread_limit(s["threads"], check_only=True)  # fail now, not after the data loads
    threads = s["threads"] if s["threads"] is not None else 1 if comm.size > 1 else idle_cores()
    t_start = time.perf_counter()
    arch_name = resolve_architecture(s["arch"])[0]  # a bad --arch fails before the data loads
    augment = s["augment"]
    if augment == "auto":
        augment = AUTO_AUGMENT.get(str(s["data"]), "none")
    aug = parse_augment(augment)
    if comm.is_root and claim_run_folder(held, run_dir, resuming) == "started" and not args.quiet:
        say(f"{run_dir}: the run there stopped before its first checkpoint; starting it over")
    ds = load_data(s)
    check_trainable(ds)
    if ds.info.get("input_note"):
        say(ds.info["input_note"])
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
    info = {"dataset": ds.name, "arch_name": arch_name, "background": background,
            "data": data_record(ds, s["data"])}  # an image folder: found again by evaluate
    quiet = args.quiet or not comm.is_root  # rank 0 alone prints and writes
    trainer = Trainer(model, config, normalizer=normalizer, run_dir=run_dir, classes=ds.classes,
                      model_info=info, progress=not quiet, log=None if quiet else say,
                      callbacks=[RunReport(*((x_test, y_test) if len(y_test) else ()), log=say)],
                      comm=comm, sync_bn=bool(s["sync_bn"]), device=args.device)
    live = Live.start(args, trainer, x_test, y_test) if comm.is_root else None  # --serve
    if comm.is_root and not fresh:
        _write_settings(run_dir, s, resuming)
    n_params = sum(int(p.size) for p in model.params.values())
    if not quiet:
        say(f"{'resuming' if resuming else 'training'} {arch_name} ({n_params:,} parameters, "
            f"input {'x'.join(map(str, ds.input_shape))}) on {ds.name}: {len(x_train):,} training, "
            f"{0 if x_val is None else len(x_val):,} validation, {len(x_test):,} test images; "
            f"{config.optimizer} lr {config.lr:g} ({config.schedule}), {config.epochs} epochs of "
            f"{config.batch_size}, augment {augment}, seed {config.seed}"
            + (f"; {comm.size} workers{', sync-bn' if s['sync_bn'] else ''}" if comm.size > 1
               else ""))
        say(f"run folder: {run_dir}")
    has_checkpoint = (run_dir / "checkpoint.safetensors").is_file()
    if resuming and not has_checkpoint and not quiet:
        say("no checkpoint was written before the run stopped: starting it over")
    try:
        with thread_limit(threads):
            result = trainer.fit(x_train, y_train, x_val, y_val,
                                 resume=resuming and has_checkpoint)
    except TrainingDiverged as exc:  # every worker stops at the same step
        if not comm.is_root:
            return 1
        raise CommandError(f"{exc} (convscope train --lr {exc.suggested_lr:.3g})") from exc
    if result.status == "interrupted" and not comm.is_root:
        return 130
    if result.status == "interrupted":
        say(interrupted_line(trainer, run_dir))  # "checkpoint saved" only when one was
        return 130
    tta = s["tta"] if len(y_test) else "none"
    with thread_limit(threads):
        test = trainer.evaluate(x_test, y_test)  # each worker its own shard
        test_tta = trainer.evaluate(x_test, y_test, tta) if tta != "none" else None
    if not comm.is_root:
        return 0
    results = {"test_accuracy": test.accuracy, "test_loss": test.loss, "test_correct": test.correct,
               "test_images": test.total, "status": result.status, "epochs": result.epochs,
               "best_epoch": result.best_epoch, "best_val_accuracy": result.best_val_accuracy,
               "seed": config.seed,
               "seconds": round(time.perf_counter() - t_start, 2)}
    if test_tta is not None:
        results.update(tta=tta, test_accuracy_tta=test_tta.accuracy, test_loss_tta=test_tta.loss,
                       test_correct_tta=test_tta.correct)
    if not test.total:  # no "0.00% (0/0)": say there was nothing to test on
        results.update(test_accuracy=None, test_loss=None)
    model_path = save_model(run_dir / "model.safetensors", model.to("cpu"), ds.classes,
                            normalization=normalizer, background=background, dataset=ds.name,
                            arch_name=arch_name, training={**results, "config": config.to_dict()},
                            data=info["data"])
    atomic_write(run_dir / "results.json", json.dumps(results, indent=2) + "\n")
    note = {"early_stopped": f" (early stopping after epoch {result.epochs})"}.get(result.status, "")
    kept = f", best validation epoch {result.best_epoch}" if result.best_epoch else ""
    print(f"test accuracy: {100 * test.accuracy:.2f}% ({test.correct:,}/{test.total:,} {ds.name} "
          f"test images{kept}){note}" if test.total else f"test accuracy: none: the test split of "
          f"{ds.name} has no images (a class with a single image goes to training){note}")
    if test_tta is not None:
        print(f"test accuracy with test-time augmentation {tta}: {100 * test_tta.accuracy:.2f}% "
              f"({test_tta.correct:,}/{test_tta.total:,}; each image and its mirror image)")
    print(f"model: {model_path}")
    print(f"metrics: {run_dir / 'metrics.jsonl'}")
    print(f"checkpoint: {run_dir / 'checkpoint.safetensors'}")
    print(f"results: {run_dir / 'results.json'}")
    try:  # the explorer needs no matplotlib; a failure here never loses the trained model
        explorer = write_run_explorer(run_dir, x_test, y_test)
    except (OSError, ValueError, CommandError) as exc:
        say(f"explore.html skipped: {exc}")
        explorer = None
    if (run_dir / "report.html").is_file():
        print(f"report: {run_dir / 'report.html'}")
    if explorer is not None:
        print(f"explorer: {explorer}")
    Live.stay(live)  # --serve: the final model stays on show until Ctrl-C
    return 0


def atomic_write_settings(run_dir: Path, settings: dict[str, Any]) -> None:
    """Rewrite config.json's settings (after --resume raised --epochs), keeping the rest."""

    path = run_dir / "config.json"
    data = json.loads(path.read_text(encoding="utf-8"))
    if data.get("settings") != settings:
        data["settings"] = settings
        data.setdefault("resumed", []).append(_dt.datetime.now().isoformat(timespec="seconds"))
        atomic_write(path, json.dumps(data, indent=2) + "\n")
