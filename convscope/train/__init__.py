"""The Trainer: the hand-written training loop, with everything a long run needs around it.

Each step is the four lines of the lecture's recipe::

    model.zero_grad()
    loss = loss_fn(model.forward(x), y)            # forward, softmax cross-entropy
    model.backward(loss_fn.backward())             # backward: every dL/dw
    optimizer.step()                               # w -= lr · update(dL/dw)

Around it: a learning-rate schedule (constant, step, cosine; optional warm-up), validation each
epoch, keeping the best model, early stopping, a tqdm progress bar, a metrics log, atomic
checkpoints each epoch that :meth:`Trainer.fit` resumes from exactly, a clean stop on Ctrl-C
(a checkpoint at the current batch), and a stop with a clear message when the loss is not a
finite number.  With the same seed a run repeats exactly, resumed or not.

Run folder (``run_dir``): ``checkpoint.safetensors`` (the whole training state),
``model.safetensors`` (the best model so far, a model file), ``metrics.jsonl`` (one JSON
object per epoch).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import signal
import sys
import threading
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Sequence

import numpy as np

from ..errors import TrainingDiverged

from ..runtime import no_grad
from ..data import Augment, BatchLoader, Normalizer
from ..data.batches import to_float
from ..formats.model_file import (CHECKPOINT_FORMAT, ModelFileError, atomic_write, estimate_background,
                 read_safetensors, save_model, write_safetensors)
from ..layers import Dropout
from ..losses import CrossEntropyLoss
from ..layers.container import Sequential
from ..optim import SGD, Adam, AdamW, Optimizer

__all__ = ["TrainConfig", "Trainer", "FitResult", "Evaluation", "TrainingDiverged", "evaluate",
           "learning_rate", "OPTIMIZERS", "SCHEDULES", "CHECKPOINT", "MODEL", "METRICS"]

OPTIMIZERS: dict[str, type[Optimizer]] = {"sgd": SGD, "adam": Adam, "adamw": AdamW}
SCHEDULES = ("constant", "step", "cosine")
CHECKPOINT, MODEL, METRICS = "checkpoint.safetensors", "model.safetensors", "metrics.jsonl"




@dataclass
class TrainConfig:
    """Hyper-parameters of a run (all JSON-serialisable; stored in every checkpoint).

    ``schedule``: "constant"; "step" (lr · gamma^floor(epoch / step_size), as PyTorch's
    StepLR); "cosine" (from lr down to min_lr over the run, per batch).  ``warmup_epochs``
    ramps the rate up linearly first.  ``patience``: stop after that many epochs without a
    better validation accuracy (None: never).  ``augment``: ``{"crop_padding": int, "hflip":
    bool}`` applied to training batches.
    """

    epochs: int = 10
    batch_size: int = 64
    optimizer: str = "adam"
    lr: float = 1e-3
    momentum: float = 0.9
    nesterov: bool = False
    weight_decay: float = 0.0
    schedule: str = "cosine"
    step_size: int = 0
    gamma: float = 0.1
    warmup_epochs: float = 0.0
    min_lr: float = 0.0
    label_smoothing: float = 0.0
    patience: int | None = None
    seed: int = 0
    augment: dict[str, Any] | None = None
    eval_batch_size: int = 500

    def __post_init__(self) -> None:
        def bad(name: str, need: str) -> ValueError:
            return ValueError(f"{name} must be {need}, got {getattr(self, name)!r}")

        for name in ("epochs", "batch_size", "eval_batch_size"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise bad(name, "an int >= 1")
        if self.optimizer not in OPTIMIZERS:
            raise bad("optimizer", f"one of {', '.join(OPTIMIZERS)}")
        if self.schedule not in SCHEDULES:
            raise bad("schedule", f"one of {', '.join(SCHEDULES)}")
        for name in ("lr", "weight_decay", "min_lr", "warmup_epochs"):
            v = getattr(self, name)
            if not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0:
                raise bad(name, "a finite number >= 0")
        if not self.lr > 0:
            raise bad("lr", "> 0")
        if not 0 <= self.momentum < 1:
            raise bad("momentum", "in [0, 1)")
        if not 0 < self.gamma <= 1:
            raise bad("gamma", "in (0, 1]")
        if not 0 <= self.label_smoothing < 1:
            raise bad("label_smoothing", "in [0, 1)")
        if isinstance(self.step_size, bool) or not isinstance(self.step_size, int) or self.step_size < 0:
            raise bad("step_size", "an int >= 0 (0: a third of the epochs)")
        if self.patience is not None and (not isinstance(self.patience, int) or self.patience < 1):
            raise bad("patience", "an int >= 1 or None")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise bad("seed", "an int >= 0")
        if self.warmup_epochs >= self.epochs:
            raise bad("warmup_epochs", f"less than epochs ({self.epochs})")
        if self.augment is not None:
            self.augment = Augment.from_dict(self.augment).to_dict()

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "TrainConfig":
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ValueError(f"TrainConfig: unknown settings {unknown}")
        return cls(**dict(d))


def learning_rate(config: TrainConfig, step: int, steps_per_epoch: int) -> float:
    """The learning rate for (0-based) ``step``: warm-up, then the schedule."""
    t = step / steps_per_epoch  # epochs done, fractional
    lr0, warm = config.lr, config.warmup_epochs
    if t < warm:
        return lr0 * (step + 1) / (warm * steps_per_epoch)
    if config.schedule == "constant":
        return lr0
    if config.schedule == "step":
        size = config.step_size or max(1, config.epochs // 3)
        return lr0 * config.gamma ** int(t // size)
    span = config.epochs - warm
    return config.min_lr + (lr0 - config.min_lr) * 0.5 * (1 + math.cos(math.pi * (t - warm) / span))


# ---------------------------------------------------------------------------------------------
# evaluation


@dataclass
class Evaluation:
    """Loss, accuracy and the confusion matrix (rows: true class, columns: predicted)."""

    loss: float
    accuracy: float
    correct: int
    total: int
    confusion: np.ndarray = field(repr=False)

    @property
    def per_class_accuracy(self) -> np.ndarray:
        """Accuracy on each true class (NaN for a class with no images)."""
        rows = self.confusion.sum(axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.diag(self.confusion) / rows


def _model_dtype(model: Sequential) -> np.dtype:
    return next((p.dtype for p in model.params.values()), np.dtype(np.float32))


def _prepare(x: np.ndarray, normalizer: Normalizer | None, dtype: np.dtype) -> np.ndarray:
    out = normalizer(x) if normalizer is not None else to_float(x)
    return out.astype(dtype, copy=False)


def evaluate(model: Sequential, x: np.ndarray, y: np.ndarray, *,
             normalizer: Normalizer | None = None, num_classes: int | None = None,
             batch_size: int = 500) -> Evaluation:
    """Mean cross-entropy, accuracy and confusion matrix of ``model`` on images ``x``
    (N, C, H, W; uint8 or float) with labels ``y`` (N,), in evaluation mode."""
    y = np.asarray(y, dtype=np.int64)
    if len(x) != len(y):
        raise ValueError(f"evaluate: {len(x)} images but {len(y)} labels")
    k = num_classes or int(model.output_shape(tuple(x.shape[1:]))[0])
    dtype = _model_dtype(model)
    confusion = np.zeros((k, k), dtype=np.int64)
    loss_sum = 0.0
    loss_fn = CrossEntropyLoss()
    was_training = model.training
    model.eval()
    try:
        with no_grad():
            for i in range(0, len(x), batch_size):
                scores = model.forward(_prepare(x[i:i + batch_size], normalizer, dtype))
                yb = y[i:i + batch_size]
                loss_sum += float(loss_fn.forward(scores, yb)) * len(yb)
                np.add.at(confusion, (yb, scores.argmax(axis=1)), 1)
    finally:
        model.train(was_training)
    total = int(len(y))
    correct = int(np.trace(confusion))
    return Evaluation(loss_sum / max(total, 1), correct / max(total, 1), correct, total, confusion)


# ---------------------------------------------------------------------------------------------
# the trainer


@dataclass
class FitResult:
    """How :meth:`Trainer.fit` ended: status "completed", "early_stopped" or "interrupted"."""

    status: str
    epochs: int
    history: list[dict[str, Any]]
    best_epoch: int | None = None
    best_val_accuracy: float | None = None
    seconds: float = 0.0
    paths: dict[str, Path] = field(default_factory=dict)


def _fingerprint(x: np.ndarray, y: np.ndarray) -> str:
    h = hashlib.sha256(np.ascontiguousarray(y).tobytes())
    h.update(np.ascontiguousarray(x[::max(1, len(x) // 64)]).tobytes())
    h.update(str(x.shape).encode())
    return h.hexdigest()[:16]


def _rng_to_array(rng: np.random.Generator) -> np.ndarray:
    st = rng.bit_generator.state
    if st.get("bit_generator") != "PCG64":
        raise ValueError(f"cannot checkpoint a {st.get('bit_generator')} generator; use PCG64")
    s, inc = st["state"]["state"], st["state"]["inc"]
    m = (1 << 64) - 1
    return np.array([s >> 64, s & m, inc >> 64, inc & m, st["has_uint32"], st["uinteger"]],
                    dtype=np.uint64)


def _rng_from_array(a: np.ndarray) -> np.random.Generator:
    v = [int(t) for t in a]
    rng = np.random.Generator(np.random.PCG64())
    rng.bit_generator.state = {"bit_generator": "PCG64",
                               "state": {"state": (v[0] << 64) | v[1], "inc": (v[2] << 64) | v[3]},
                               "has_uint32": v[4], "uinteger": v[5]}
    return rng


def _better(a: Mapping[str, float], b: Mapping[str, Any] | None) -> bool:
    """Whether validation metrics ``a`` beat the best so far ``b`` (accuracy, then loss)."""
    if b is None:
        return True
    return (a["val_accuracy"], -a["val_loss"]) > (b["val_accuracy"], -b["val_loss"])


class Trainer:
    """Trains a built :class:`Sequential` classifier with softmax cross-entropy.

    ``trainer = Trainer(model, TrainConfig(epochs=10, lr=1e-3), normalizer=norm,
    run_dir="runs/x", classes=names)``; ``result = trainer.fit(x_train, y_train, x_val,
    y_val)``; ``trainer.fit(..., resume=True)`` continues from ``run_dir``'s checkpoint.

    Images are uint8 (N, C, H, W) (or floats in [0, 1]); ``normalizer`` maps them to the model's
    input for training, validation and the saved model file.  ``model_info`` goes into the model
    file (``dataset``, ``arch_name``, ``background``, ``training``).  ``callbacks``: objects
    with any of ``on_train_begin(trainer)``, ``on_batch_end(trainer, info)`` (info: epoch,
    batch, step, loss, lr), ``on_epoch_end(trainer, metrics)`` (metrics: the epoch's line of
    metrics.jsonl), ``on_train_end(trainer, result)``; a plain function is an
    ``on_epoch_end``.
    ``log`` receives one line per epoch (None: silent); ``progress`` shows a tqdm bar.
    """

    def __init__(self, model: Sequential, config: TrainConfig | None = None, *,
                 normalizer: Normalizer | None = None, run_dir: str | Path | None = None,
                 classes: Sequence[str] | None = None, model_info: Mapping[str, Any] | None = None,
                 callbacks: Sequence[Any] = (), progress: bool = False,
                 log: Callable[[str], None] | None = None) -> None:
        if not isinstance(model, Sequential) or model.input_shape is None:
            raise ValueError("Trainer needs a built Sequential (give it input_shape)")
        self.model = model
        self.config = config or TrainConfig()
        out = model.output_shape(model.input_shape)
        if len(out) != 1:
            raise ValueError(f"Trainer: the model must end in class scores (K,), it gives {out}")
        self.num_classes = int(out[0])
        if classes is not None and len(classes) != self.num_classes:
            raise ValueError(f"Trainer: {len(classes)} class names but the model gives "
                             f"{self.num_classes} scores")
        self.classes = [str(c) for c in classes] if classes is not None else [
            str(i) for i in range(self.num_classes)]
        self.normalizer = normalizer
        self.run_dir = Path(run_dir) if run_dir is not None else None
        self.model_info = dict(model_info or {})
        self.callbacks = list(callbacks)
        self.progress, self.log = progress, log
        self.loss_fn = CrossEntropyLoss(self.config.label_smoothing)
        cfg = self.config
        if cfg.optimizer == "sgd":
            self.optimizer: Optimizer = SGD(model, cfg.lr, cfg.momentum, 0.0, cfg.nesterov,
                                            cfg.weight_decay)
        else:
            self.optimizer = OPTIMIZERS[cfg.optimizer](model, cfg.lr, weight_decay=cfg.weight_decay)
        self.dropouts = [(i, layer) for i, layer in enumerate(model.layers)
                         if isinstance(layer, Dropout)]
        for i, layer in self.dropouts:
            layer.rng = np.random.default_rng([cfg.seed, 1, i])
        # the training state (what a checkpoint holds)
        self.epoch = 0          # epochs completed
        self.batch = 0          # batches completed in the current epoch
        self.step = 0           # optimiser steps in all
        self.partial = {"loss_sum": 0.0, "correct": 0, "seen": 0, "seconds": 0.0}
        self.best: dict[str, Any] | None = None
        self.best_state: dict[str, np.ndarray] | None = None
        self.bad_epochs = 0
        self.history: list[dict[str, Any]] = []
        self.data_info: dict[str, Any] = {}
        self._consistent = True
        self._stop_requested = False

    # -- paths --------------------------------------------------------------------------------
    def path(self, name: str) -> Path | None:
        return self.run_dir / name if self.run_dir is not None else None

    @property
    def checkpoint_path(self) -> Path | None:
        return self.path(CHECKPOINT)

    # -- checkpoints --------------------------------------------------------------------------
    def state_arrays(self) -> dict[str, np.ndarray]:
        arrays = {f"model.{k}": np.asarray(v) for k, v in self.model.state_dict().items()}
        arrays.update({f"optim.{k}": np.asarray(v)
                       for k, v in self.optimizer.state_dict()["arrays"].items()})
        arrays.update({f"rng.{i}": _rng_to_array(layer.rng) for i, layer in self.dropouts})
        if self.best_state is not None:
            arrays.update({f"best.{k}": v for k, v in self.best_state.items()})
        return arrays

    def state_meta(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "batch": self.batch, "step": self.step,
                "partial": dict(self.partial), "best": self.best, "bad_epochs": self.bad_epochs,
                "history": self.history, "config": self.config.to_dict(),
                "optimizer": {"lr": self.optimizer.lr, "step_count": self.optimizer.step_count},
                "data": self.data_info, "classes": self.classes}

    def save_checkpoint(self, path: str | Path | None = None) -> Path:
        """Write the whole training state (atomically) to ``path`` or the run's checkpoint."""
        target = Path(path) if path is not None else self.checkpoint_path
        if target is None:
            raise ValueError("save_checkpoint: no path and no run_dir")
        return write_safetensors(target, self.state_arrays(), CHECKPOINT_FORMAT, self.state_meta())

    def load_checkpoint(self, path: str | Path | None = None) -> None:
        """Restore a state written by :meth:`save_checkpoint` (same model and settings)."""
        source = Path(path) if path is not None else self.checkpoint_path
        if source is None:
            raise ValueError("load_checkpoint: no path and no run_dir")
        arrays, meta = read_safetensors(source, CHECKPOINT_FORMAT)
        try:
            saved = TrainConfig.from_dict(meta["config"])
        except (KeyError, TypeError, ValueError) as exc:
            raise ModelFileError(f"{source}: bad training settings in the checkpoint ({exc})") from None
        mine = self.config.to_dict()
        diffs = [f"{k} {v!r} (this run: {mine[k]!r})" for k, v in saved.to_dict().items()
                 if k != "epochs" and mine[k] != v]
        if diffs:
            raise ModelFileError(f"{source}: the checkpoint was trained with "
                                 f"{', '.join(diffs)}; resume with the same settings")
        sections: dict[str, dict[str, np.ndarray]] = {"model": {}, "optim": {}, "rng": {},
                                                      "best": {}}
        for key, value in arrays.items():
            head, _, rest = key.partition(".")
            if head not in sections:
                raise ModelFileError(f"{source}: unexpected array {key!r} in the checkpoint")
            sections[head][rest] = value
        own = self.model.state_dict()
        if set(own) != set(sections["model"]) or any(
                own[k].shape != sections["model"][k].shape for k in own):
            raise ModelFileError(f"{source}: the checkpoint's weights do not match this model")
        self.model.load_state_dict(sections["model"])
        self.optimizer.load_state_dict({**meta["optimizer"], "arrays": sections["optim"]})
        for i, layer in self.dropouts:
            if str(i) in sections["rng"]:
                layer.rng = _rng_from_array(sections["rng"][str(i)])
        self.best_state = sections["best"] or None
        self.epoch, self.batch, self.step = int(meta["epoch"]), int(meta["batch"]), int(meta["step"])
        self.partial = dict(meta["partial"])
        self.best, self.bad_epochs = meta["best"], int(meta["bad_epochs"])
        self.history = list(meta["history"])
        self.data_info = dict(meta.get("data") or {})

    # -- helpers ------------------------------------------------------------------------------
    def _say(self, msg: str) -> None:
        if self.log is not None:
            self.log(msg)

    def _emit(self, event: str, *args: Any) -> None:
        for cb in self.callbacks:
            fn = getattr(cb, event, None)
            if fn is None and event == "on_epoch_end" and callable(cb) and not any(
                    hasattr(cb, e) for e in ("on_train_begin", "on_batch_end", "on_train_end")):
                fn = cb
            if fn is not None:
                fn(self, *args)

    def _write_metrics(self) -> None:
        path = self.path(METRICS)
        if path is not None:
            atomic_write(path, "".join(json.dumps(m) + "\n" for m in self.history))

    def _save_model(self, state: Mapping[str, np.ndarray] | None = None) -> Path | None:
        path = self.path(MODEL)
        if path is None:
            return None
        current = None
        if state is not None:
            current = {k: v.copy() for k, v in self.model.state_dict().items()}
            self.model.load_state_dict(state)
        try:
            info = self.model_info
            training = {**info.get("training", {}), "config": self.config.to_dict(),
                        "epochs_trained": self.epoch,
                        "best": self.best}
            return save_model(path, self.model, self.classes, normalization=self.normalizer,
                              background=info.get("background"), dataset=info.get("dataset"),
                              arch_name=info.get("arch_name"), training=training)
        finally:
            if current is not None:
                self.model.load_state_dict(current)

    def evaluate(self, x: np.ndarray, y: np.ndarray) -> Evaluation:
        """:func:`evaluate` with this trainer's normaliser and classes."""
        return evaluate(self.model, x, y, normalizer=self.normalizer, num_classes=self.num_classes,
                        batch_size=self.config.eval_batch_size)

    def restore_best(self) -> bool:
        """Load the best validation weights into the model (if there are any)."""
        if self.best_state is None:
            return False
        self.model.load_state_dict(self.best_state)
        return True

    # -- the loop -----------------------------------------------------------------------------
    def _check_data(self, x: Any, y: Any, what: str) -> np.ndarray:
        y = np.asarray(y)
        if not isinstance(x, np.ndarray) or x.ndim != 4:
            raise ValueError(f"fit: {what} images must be an array (N, C, H, W), got "
                             f"{getattr(x, 'shape', type(x).__name__)}")
        if y.shape != (len(x),) or len(x) == 0 or y.dtype.kind not in "iu":
            raise ValueError(f"fit: {len(x)} {what} images need {len(x)} integer labels, got "
                             f"{y.dtype} {y.shape}")
        if tuple(x.shape[1:]) != tuple(self.model.input_shape):
            raise ValueError(f"fit: {what} images are {tuple(x.shape[1:])} but the model takes "
                             f"{tuple(self.model.input_shape)}")
        if y.min() < 0 or y.max() >= self.num_classes:
            raise ValueError(f"fit: {what} labels must be in 0..{self.num_classes - 1}, got "
                             f"{y.min()}..{y.max()}")
        return y.astype(np.int64, copy=False)

    def fit(self, x_train: np.ndarray, y_train: np.ndarray, x_val: np.ndarray | None = None,
            y_val: np.ndarray | None = None, *, resume: bool = False) -> FitResult:
        """Train for ``config.epochs`` epochs (in all, counting resumed ones).

        With validation data: each epoch is validated, the best weights are kept (and written
        to ``model.safetensors``), early stopping applies, and the model holds the best
        weights at the end.  ``resume`` loads ``run_dir``'s checkpoint first.  Returns a
        :class:`FitResult`; raises :class:`TrainingDiverged` on a NaN or infinite loss.
        """
        cfg = self.config
        y_train = self._check_data(x_train, y_train, "training")
        has_val = x_val is not None and y_val is not None and len(x_val) > 0
        if has_val:
            y_val = self._check_data(x_val, y_val, "validation")
        data_info = {"train": int(len(x_train)), "val": int(len(x_val)) if has_val else 0,
                     "fingerprint": _fingerprint(x_train, y_train)}
        if resume:
            self.load_checkpoint()
            if self.data_info and self.data_info != data_info:
                raise ModelFileError(f"{self.checkpoint_path}: the checkpoint was made on "
                                     f"different data ({self.data_info['train']} training, "
                                     f"{self.data_info['val']} validation images; now "
                                     f"{data_info['train']} and {data_info['val']})")
        self.data_info = data_info
        if "background" not in self.model_info and x_train.dtype == np.uint8:
            # the training images' border grey: predict() inverts photos of the opposite kind
            self.model_info["background"] = estimate_background(x_train)
        loader = BatchLoader(x_train, y_train, cfg.batch_size, seed=cfg.seed,
                             normalizer=self.normalizer,
                             augment=Augment.from_dict(cfg.augment) if cfg.augment else None)
        start = time.perf_counter()
        self._emit("on_train_begin")
        # overflow in a diverging run is reported by the loss check, not by NumPy warnings
        with np.errstate(over="ignore", invalid="ignore"), self._sigint():
            status = self._run(loader, x_val, y_val, has_val)
        if status != "interrupted" and has_val:
            self.restore_best()
        result = FitResult(status, self.epoch, list(self.history),
                           self.best["epoch"] if self.best else None,
                           self.best["val_accuracy"] if self.best else None,
                           time.perf_counter() - start,
                           {k: p for k, p in (("checkpoint", self.path(CHECKPOINT)),
                                              ("model", self.path(MODEL)),
                                              ("metrics", self.path(METRICS))) if p is not None})
        self._emit("on_train_end", result)
        return result

    def _run(self, loader: BatchLoader, x_val: Any, y_val: Any, has_val: bool) -> str:
        """Epochs until done, early stopping or an interrupt; returns the status."""
        cfg = self.config
        self._consistent = True
        if self.best is not None and cfg.patience is not None and self.bad_epochs >= cfg.patience:
            return "early_stopped"
        try:
            while self.epoch < cfg.epochs:
                self._train_epoch(loader)
                metrics = self._end_epoch(x_val, y_val, has_val)
                self._emit("on_epoch_end", metrics)
                if metrics.get("stop"):
                    return "early_stopped"
                if self._stop_requested:
                    raise KeyboardInterrupt
        except KeyboardInterrupt:
            if self._consistent and self.run_dir is not None:
                self.save_checkpoint()  # at a batch boundary: resume continues from here
            return "interrupted"
        return "completed"

    def _train_epoch(self, loader: BatchLoader) -> None:
        """One pass over the training data (from batch ``self.batch`` when resuming)."""
        cfg, spe, p = self.config, len(loader), self.partial
        dtype = _model_dtype(self.model)
        batch_hooks = any(hasattr(cb, "on_batch_end") for cb in self.callbacks)
        loader.epoch = self.epoch
        self.model.train()
        t0 = time.perf_counter() - p["seconds"]
        pbar = self._bar(spe)
        try:
            for b, (xb, yb) in enumerate(loader):
                if b < self.batch:  # resuming inside an epoch: replay the loader's draws
                    continue
                self._consistent = False
                lr = learning_rate(cfg, self.step, spe)
                self.optimizer.lr = lr
                self.optimizer.zero_grad()
                scores = self.model.forward(xb.astype(dtype, copy=False))
                loss = float(self.loss_fn.forward(scores, yb))
                if not math.isfinite(loss):
                    raise self._diverged(loss, b, spe, lr)
                self.model.backward(self.loss_fn.backward())
                self.optimizer.step()
                p["loss_sum"] += loss * len(yb)
                p["correct"] += int((scores.argmax(axis=1) == yb).sum())
                p["seen"] += len(yb)
                p["seconds"] = time.perf_counter() - t0
                self.step += 1
                self.batch = b + 1
                self._consistent = True
                if pbar is not None:
                    pbar.update(1)
                    if b % 5 == 4 or b == spe - 1:
                        pbar.set_postfix_str(f"loss {p['loss_sum'] / p['seen']:.4f}, acc "
                                             f"{100 * p['correct'] / p['seen']:.2f}%, "
                                             f"{p['seen'] / max(p['seconds'], 1e-9):,.0f} img/s",
                                             refresh=False)
                if batch_hooks:
                    self._emit("on_batch_end", {"epoch": self.epoch + 1, "batch": b + 1,
                                                "step": self.step, "loss": loss, "lr": lr})
                if self._stop_requested:
                    raise KeyboardInterrupt
        finally:
            if pbar is not None:
                pbar.close()

    def _end_epoch(self, x_val: Any, y_val: Any, has_val: bool) -> dict[str, Any]:
        p = self.partial
        seconds = p["seconds"]
        metrics: dict[str, Any] = {
            "epoch": self.epoch + 1, "lr": self.optimizer.lr,
            "train_loss": p["loss_sum"] / max(p["seen"], 1),
            "train_accuracy": p["correct"] / max(p["seen"], 1),
            "seconds": round(seconds, 3),
            "images_per_second": round(p["seen"] / max(seconds, 1e-9), 1)}
        improved = False
        if has_val:
            ev = self.evaluate(x_val, y_val)
            if not math.isfinite(ev.loss):
                raise self._diverged(ev.loss, self.batch - 1, self.batch, self.optimizer.lr,
                                     "validation loss")
            metrics.update(val_loss=ev.loss, val_accuracy=ev.accuracy)
            improved = _better(metrics, self.best)
            if improved:
                self.best = {"epoch": self.epoch + 1, "val_accuracy": ev.accuracy,
                             "val_loss": ev.loss}
                self.best_state = {k: np.array(v, copy=True)
                                   for k, v in self.model.state_dict().items()}
                self.bad_epochs = 0
            else:
                self.bad_epochs += 1
        metrics["best"] = improved
        self.epoch += 1
        self.batch = 0
        self.partial = {"loss_sum": 0.0, "correct": 0, "seen": 0, "seconds": 0.0}
        self.history.append(metrics)
        patience = self.config.patience
        stop = has_val and patience is not None and self.bad_epochs >= patience
        if improved or not has_val:
            self._save_model()
        self._write_metrics()
        if self.run_dir is not None:
            self.save_checkpoint()
        line = (f"epoch {metrics['epoch']}/{self.config.epochs}: loss {metrics['train_loss']:.4f}, "
                f"accuracy {100 * metrics['train_accuracy']:.2f}%")
        if has_val:
            line += (f" | validation loss {metrics['val_loss']:.4f}, accuracy "
                     f"{100 * metrics['val_accuracy']:.2f}%{' (best)' if improved else ''}")
        line += f" | lr {metrics['lr']:.3g} | {seconds:.1f} s, {metrics['images_per_second']:,.0f} img/s"
        self._say(line)
        if stop:
            self._say(f"early stopping: no better validation accuracy for {patience} epochs "
                      f"(best: epoch {self.best['epoch']})")
        return {**metrics, "stop": stop} if stop else metrics

    def _diverged(self, loss: float, b: int, spe: int, lr: float, what: str = "loss"
                  ) -> TrainingDiverged:
        """The error for a non-finite loss at batch ``b`` (0-based) of the current epoch; the
        validation loss is checked after the epoch's last step."""
        ckpt = self.checkpoint_path
        kept = (f"the last good checkpoint ({ckpt}, epoch {self.epoch}) is kept" if ckpt is not None
                and ckpt.exists() else "no checkpoint was written yet")
        step = self.step + (what == "loss")
        where = "at" if what == "loss" else "after"
        lower = self.config.lr / 10
        msg = (f"{what} became {loss} {where} step {step} (epoch {self.epoch + 1}, batch "
               f"{b + 1} of {spe}) with learning rate {lr:.3g}; training stopped and {kept}; "
               f"try a lower learning rate, e.g. {lower:.3g}")
        return TrainingDiverged(msg, step, self.epoch + 1, lr, lower)

    def _bar(self, total: int) -> Any:
        if not self.progress:
            return None
        try:
            from tqdm.auto import tqdm  # noqa: PLC0415 - only for the progress bar
        except ImportError:  # pragma: no cover - tqdm is a dependency
            raise ImportError("the progress bar needs tqdm: pip install tqdm") from None
        return tqdm(total=total, initial=self.batch, desc=f"epoch {self.epoch + 1}/{self.config.epochs}",
                    unit="batch", leave=False, dynamic_ncols=True, file=sys.stderr,
                    disable=None)  # None: no bar when stderr is not a terminal

    @contextlib.contextmanager
    def _sigint(self) -> Iterator[None]:
        """Within: the first Ctrl-C stops after the current batch (with a checkpoint), a second
        one stops at once.  Only in the main thread (signals go there)."""
        self._stop_requested = False
        if threading.current_thread() is not threading.main_thread():
            yield
            return

        def handler(signum: int, frame: Any) -> None:
            if self._stop_requested:
                raise KeyboardInterrupt
            self._stop_requested = True
            self._say("stopping after this batch and saving a checkpoint "
                      "(Ctrl-C again to stop at once)")

        previous = signal.signal(signal.SIGINT, handler)
        try:
            yield
        finally:
            signal.signal(signal.SIGINT, previous)
