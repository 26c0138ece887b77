"""What an explorer is built from: a model file or a run folder, and its probe images.

``MODEL`` is a ``.safetensors`` model file; ``RUN`` a folder of ``convscope train`` (its
``model.safetensors``, ``metrics.jsonl`` and the test split of the model's dataset give the
curves and the confusion matrix).  Probe images are the image files given (converted as
``convscope predict`` does), else test images of the model's dataset.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ...data import load_dataset
from ...errors import CommandError, DataError
from ...formats.model_file import SavedModel, atomic_write, load_model
from ...train.control import kept_epoch
from ..history import read_history
from .build import EXPLORE, explorer_data, explorer_html, pick_probes, run_record

__all__ = ["Target", "load_target", "probe_images", "build_explorer", "write_explorer",
           "write_run_explorer", "PROBES", "MODEL", "METRICS"]

MODEL, METRICS = "model.safetensors", "metrics.jsonl"
#: Probe images taken from the test split when none are given.
PROBES = 8


@dataclass
class Target:
    """A loaded model, the run folder it belongs to (or None), and its test split if found."""

    saved: SavedModel
    run_dir: Path | None
    x_test: np.ndarray | None = None
    y_test: np.ndarray | None = None
    history: list[dict[str, Any]] = field(default_factory=list)
    note: str = ""


def load_target(target: str | os.PathLike[str], data_dir: str | None = None) -> Target:
    """The model of a model file or run folder; with a run, its history; and the test split
    of the model's dataset when it is on disk (never downloaded)."""
    path = Path(target)
    if path.is_dir():
        if not (path / MODEL).is_file():
            raise CommandError(f"{path}: no {MODEL} here; give a model file or a run folder of "
                               "`convscope train`")
        run_dir: Path | None = path
        path = path / MODEL
    elif path.is_file():
        run_dir = path.parent if (path.parent / METRICS).is_file() else None
    else:
        raise CommandError(f"{path}: no such model file or run folder")
    saved = load_model(path)
    t = Target(saved, run_dir, history=read_history(run_dir / METRICS) if run_dir else [])
    name = saved.metadata.get("dataset")
    if name:
        try:
            ds = load_dataset(name, data_dir, download=False)
            if tuple(ds.input_shape) == tuple(saved.input_shape):
                t.x_test, t.y_test = ds.x_test, ds.y_test
            else:
                t.note = f"dataset {name!r} has images {ds.input_shape}, the model takes " \
                         f"{saved.input_shape}"
        except (DataError, OSError, ValueError) as exc:
            t.note = f"no test images of {name!r} ({exc})"
    return t


def probe_images(t: Target, images: Sequence[str | os.PathLike[str]] = (), count: int = PROBES
                 ) -> tuple[np.ndarray, list[str], list[int | None]]:
    """(uint8 images, names, true labels or None): the files given, else test images."""
    if images:
        try:
            pixels, _ = t.saved.load_images(list(images), fit="pad", invert="auto")
        except DataError as exc:
            raise CommandError(str(exc)) from None
        return pixels, [Path(p).name for p in images], [None] * len(images)
    if t.x_test is None:
        why = f": {t.note}" if t.note else ""
        raise CommandError(f"no probe images: give image files after the model{why}")
    idx = pick_probes(t.y_test, count)
    return (t.x_test[idx], [f"test image {i}" for i in idx], [int(t.y_test[i]) for i in idx])


def build_explorer(t: Target, images: Sequence[str | os.PathLike[str]] = (), *,
                   live: bool = False) -> dict[str, Any]:
    """The page's data for a target (see :func:`~.build.explorer_data`)."""
    saved = t.saved
    pixels, names, labels = probe_images(t, images)
    run = None
    if t.run_dir is not None or t.x_test is not None:
        cfg = (saved.metadata.get("training") or {}).get("config") or {}
        run = run_record(saved.model, saved.preprocess, t.history, t.x_test, t.y_test)
        run["label_smoothing"] = cfg.get("label_smoothing")
        kept = kept_epoch(t.history)  # the trainer's rule, for a model file that does not say
        run["best_epoch"] = (saved.metadata.get("training") or {}).get("best_epoch") or (
            kept["epoch"] if kept else None)
    where = t.run_dir.name if t.run_dir is not None else Path(saved.path or "model").name
    info = {"model": where, "dataset": saved.metadata.get("dataset"),
            "architecture": saved.metadata.get("arch_name"),
            "input": "×".join(map(str, (saved.input_shape[1], saved.input_shape[2],
                                        saved.input_shape[0])))}
    return explorer_data(saved.model, saved.classes, pixels, saved.preprocess, names=names,
                         labels=labels, run=run, title=f"convscope explorer: {where}", info=info,
                         live=live)


def write_run_explorer(run_dir: str | os.PathLike[str], x_test: np.ndarray | None,
                       y_test: np.ndarray | None) -> Path:
    """``explore.html`` for a finished run folder whose test split is already in memory (what
    ``convscope train`` calls at the end: nothing is loaded twice)."""
    run = Path(run_dir)
    t = Target(load_model(run / MODEL), run, x_test, y_test, read_history(run / METRICS))
    return write_explorer(t)


def write_explorer(t: Target, images: Sequence[str | os.PathLike[str]] = (),
                   out: str | os.PathLike[str] | None = None) -> Path:
    """Write the explorer HTML (default: ``explore.html`` in the run folder, else here)."""
    path = Path(out) if out is not None else (t.run_dir or Path(".")) / EXPLORE
    return atomic_write(path, explorer_html(build_explorer(t, images)))
