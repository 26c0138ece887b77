"""The :class:`Trainer`: the lecture's four-line step in a loop, with validation, the best
model, early stopping, checkpoints that resume exactly, Ctrl-C and the NaN stop."""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from ..data import Augment, BatchLoader, Normalizer
from ..distributed.parallel import DataParallel
from ..distributed.shard import evaluate_sharded
from ..errors import TrainingDiverged
from ..formats.model_file import atomic_write, estimate_background
from ..formats.run_folder import RunLock
from ..layers.container import Sequential
from ..losses import CrossEntropyLoss
from ..ops.jit import turned_on as compiled_kernels
from ..ops.threads import own_cores
from ..runtime import get_device, to_device, to_host, xp_of
from . import checkpoint
from .checkpoint import CHECKPOINT, METRICS, MODEL, fingerprint, on_host, seed_stochastic
from .config import TrainConfig, make_optimizer
from .control import (better, class_names, diverged, emit, epoch_line, epoch_metrics, progress_bar,
                      show_progress, stop_on_sigint, unsmoothed_loss_sum, all_workers_sum)
from .evaluation import Evaluation, check_images, evaluate, model_dtype
from .schedule import learning_rate

__all__ = ["Trainer", "FitResult"]

_EMPTY = {"loss_sum": 0.0, "ce_sum": 0.0, "correct": 0, "seen": 0, "seconds": 0.0}


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


class Trainer:
    """Trains a built :class:`Sequential` classifier with softmax cross-entropy.

    ``trainer = Trainer(model, TrainConfig(epochs=10, lr=1e-3), normalizer=norm,
    run_dir="runs/x", classes=names)``; ``result = trainer.fit(x_train, y_train, x_val,
    y_val)``; ``trainer.fit(..., resume=True)`` continues from ``run_dir``'s checkpoint.

    Images are uint8 (N, C, H, W) (or floats in [0, 1]); ``normalizer`` maps them to the model's
    input for training, validation and the saved model file.  ``model_info`` goes into the model
    file (``dataset``, ``arch_name``, ``background``, ``training``, ``data``: an image folder's
    record, convscope/data/record.py).  ``callbacks``: objects
    with any of ``on_train_begin(trainer)``, ``on_batch_end(trainer, info)`` (info: epoch,
    batch, step, loss, lr), ``on_epoch_end(trainer, metrics)`` (metrics: the epoch's line of
    metrics.jsonl), ``on_train_end(trainer, result)``; a plain function is an
    ``on_epoch_end``.
    ``log`` receives one line per epoch (None: silent); ``progress`` shows a tqdm bar.
    Every layer with the ``stochastic`` trait (dropout, at any depth) gets its own generator
    from the seed, saved in the checkpoint through its ``rng_state``/``set_rng_state`` hooks.

    ``comm`` (``convscope.distributed.init()``): data-parallel training on ``comm.size``
    workers that equals one process: ``batch_size`` is the global batch, each worker takes its
    slice, gradients are summed weighted by the slices' sizes; rank 0 alone writes files, logs,
    shows the bar and runs the callbacks; checkpoints do not depend on the number of workers.
    ``sync_bn``: batch norm over the global batch (default: each worker's slice, as DDP).
    ``device`` ("cpu", "cuda", "cuda:N"; None: where the model is): the model is moved there
    first; each batch is copied there, nothing else crosses during a step; files, callbacks
    and reports see host copies of the weights (:func:`~.checkpoint.on_host`).
    ``jit``: numba's compiled kernels (:mod:`convscope.ops.jit`) while :meth:`fit` runs, where
    numba is installed (``pip install 'convscope[fast]'``) and ``CONVSCOPE_JIT`` is not 0; from
    the first direct convolution on, the cores go to convscope's threads (ops/threads.py)."""

    def __init__(self, model: Sequential, config: TrainConfig | None = None, *,
                 normalizer: Normalizer | None = None, run_dir: str | Path | None = None,
                 classes: Sequence[str] | None = None, model_info: Mapping[str, Any] | None = None,
                 callbacks: Sequence[Any] = (), progress: bool = False,
                 log: Callable[[str], None] | None = None, comm: Any = None,
                 sync_bn: bool = False, device: str | None = None, jit: bool = True) -> None:
        if not isinstance(model, Sequential) or model.input_shape is None:
            raise ValueError("Trainer needs a built Sequential (give it input_shape)")
        self.model = model if device is None else model.to(device)  # before the optimiser
        self.device = get_device(model.device)
        if sync_bn and not self.device.is_cpu:
            raise ValueError(f"Trainer: sync_bn on {self.device.name} is not supported yet; "
                             "train on the GPU without sync_bn, or on the CPU")
        self.config = config or TrainConfig()
        out = model.output_shape(model.input_shape)
        if len(out) != 1:
            raise ValueError(f"Trainer: the model must end in class scores (K,), it gives {out}")
        self.num_classes = int(out[0])
        self.classes = class_names(classes, self.num_classes)
        self.normalizer = normalizer
        self.run_dir = Path(run_dir) if run_dir is not None else None
        self.model_info = dict(model_info or {})
        self.callbacks = list(callbacks)
        self.progress, self.log, self.jit = progress, log, jit
        self.loss_fn = CrossEntropyLoss(self.config.label_smoothing)
        self.optimizer = make_optimizer(model, self.config)
        # -- distributed: the flat gradient buffer; rank 0 alone speaks and writes --
        self.dp = DataParallel(model, self.optimizer, comm, sync_bn=sync_bn)
        self.comm = self.dp.comm
        if not self.dp.is_root:
            self.callbacks, self.progress, self.log = [], False, None
        #: (state-dict prefix, layer) of each stochastic layer, seeded from config.seed
        self.stochastic = seed_stochastic(model, self.config.seed)
        # the training state (what a checkpoint holds)
        self.epoch = 0          # epochs completed
        self.batch = 0          # batches completed in the current epoch
        self.step = 0           # optimiser steps in all
        self.partial = dict(_EMPTY)
        self.best: dict[str, Any] | None = None
        self.best_state: dict[str, np.ndarray] | None = None
        self.bad_epochs = 0
        self.history: list[dict[str, Any]] = []
        self.data_info: dict[str, Any] = {}
        self._consistent = True
        self._stop_requested = False
        self._stop_agreed = False  # with several workers: a stop every worker knows of
        #: (epoch, batch) of the last checkpoint written to the run folder (None: none yet)
        self.saved_at: tuple[int, int] | None = None

    # -- paths --------------------------------------------------------------------------------
    def path(self, name: str) -> Path | None:
        return self.run_dir / name if self.run_dir is not None else None

    @property
    def checkpoint_path(self) -> Path | None:
        return self.path(CHECKPOINT)

    # -- checkpoints (what they hold: train/checkpoint.py) ------------------------------------
    def state_arrays(self) -> dict[str, np.ndarray]:
        return checkpoint.state_arrays(self)

    def state_meta(self) -> dict[str, Any]:
        return checkpoint.state_meta(self)

    def save_checkpoint(self, path: str | Path | None = None) -> Path:
        """Write the whole training state (atomically) to ``path`` or the run's checkpoint."""
        target = Path(path) if path is not None else self.checkpoint_path
        if target is None:
            raise ValueError("save_checkpoint: no path and no run_dir")
        written = checkpoint.save_state(self, target)
        if target == self.checkpoint_path:
            self.saved_at = (self.epoch, self.batch)
        return written

    def load_checkpoint(self, path: str | Path | None = None) -> None:
        """Restore a state written by :meth:`save_checkpoint` (same model and settings)."""
        source = Path(path) if path is not None else self.checkpoint_path
        if source is None:
            raise ValueError("load_checkpoint: no path and no run_dir")
        checkpoint.load_state(self, source)

    # -- outputs ------------------------------------------------------------------------------
    def _say(self, msg: str) -> None:
        if self.log is not None:
            self.log(msg)

    def _write_outputs(self, model: bool) -> None:
        """metrics.jsonl, the model file (``model``: the weights are the best so far) and the
        checkpoint, in the run folder."""
        if self.run_dir is not None:
            if model and self.dp.is_root:
                checkpoint.write_model(self, self.path(MODEL))
            if self.dp.is_root:
                atomic_write(self.path(METRICS),
                             "".join(json.dumps(m) + "\n" for m in self.history))
                self.save_checkpoint()
            self.dp.barrier()  # nobody reads a file rank 0 is still writing

    def evaluate(self, x: np.ndarray, y: np.ndarray, tta: str = "none") -> Evaluation:
        """:func:`evaluate` (``tta`` too) with this trainer's normaliser and classes (with
        several workers: each its own shard of the images, the counts summed: all get it)."""
        return evaluate_sharded(evaluate, self.comm, self.model, x, y, normalizer=self.normalizer,
                                num_classes=self.num_classes,
                                batch_size=self.config.eval_batch_size, tta=tta)

    def restore_best(self) -> bool:
        """Load the best validation weights into the model (if there are any)."""
        if self.best_state is None:
            return False
        self.model.load_state_dict(self.best_state)
        return True

    # -- the loop -----------------------------------------------------------------------------
    def fit(self, x_train: np.ndarray, y_train: np.ndarray, x_val: np.ndarray | None = None,
            y_val: np.ndarray | None = None, *, resume: bool = False) -> FitResult:
        """Train for ``config.epochs`` epochs (in all, counting resumed ones).

        With validation data: each epoch is validated, the best weights are kept (and written
        to ``model.safetensors``), early stopping applies, and the model holds the best
        weights at the end.  ``resume`` loads ``run_dir``'s checkpoint first.  Returns a
        :class:`FitResult`; raises :class:`TrainingDiverged` on a NaN or infinite loss, and
        :class:`~convscope.errors.RunFolderError` when another process trains in ``run_dir``
        (the run lock of formats/run_folder.py, held by the writing worker while it trains).
        """
        with compiled_kernels(self.jit), own_cores(on_demand=True):  # ops/threads.py
            if self.run_dir is None or not self.dp.is_root:
                return self._fit(x_train, y_train, x_val, y_val, resume=resume)
            with RunLock(self.run_dir):
                return self._fit(x_train, y_train, x_val, y_val, resume=resume)

    def _fit(self, x_train: np.ndarray, y_train: np.ndarray, x_val: np.ndarray | None,
             y_val: np.ndarray | None, *, resume: bool) -> FitResult:
        """:meth:`fit`, the run folder locked."""
        cfg, shape, k = self.config, self.model.input_shape, self.num_classes
        y_train = check_images(x_train, y_train, shape, k, "training")
        has_val = x_val is not None and y_val is not None and len(x_val) > 0
        if has_val:
            y_val = check_images(x_val, y_val, shape, k, "validation")
        data_info = {"train": int(len(x_train)), "val": int(len(x_val)) if has_val else 0,
                     "fingerprint": fingerprint(x_train, y_train)}
        if resume:
            self.load_checkpoint()
            checkpoint.check_same_data(self.data_info, data_info, self.checkpoint_path)
        self.data_info = data_info
        self.dp.start()  # every worker the same model: rank 0's weights and optimiser state
        if "background" not in self.model_info and x_train.dtype == np.uint8:
            # the training images' border grey: predict() inverts photos of the opposite kind
            self.model_info["background"] = estimate_background(x_train)
        loader = BatchLoader(x_train, y_train, cfg.batch_size, seed=cfg.seed,
                             normalizer=self.normalizer,
                             augment=Augment.from_dict(cfg.augment) if cfg.augment else None)
        start = time.perf_counter()
        with on_host(self.model):  # callbacks read host arrays
            emit(self.callbacks, "on_train_begin", self)
        # overflow in a diverging run is reported by the loss check, not by NumPy warnings
        self._stop_requested = self._stop_agreed = False
        with np.errstate(over="ignore", invalid="ignore"), stop_on_sigint(self._request_stop):
            status = self._run(loader, x_val, y_val, has_val)
        if status != "interrupted" and has_val:
            self.restore_best()
        paths = {name: self.run_dir / file for name, file in (
            ("checkpoint", CHECKPOINT), ("model", MODEL), ("metrics", METRICS))} if self.run_dir else {}
        best = self.best or {}
        result = FitResult(status, self.epoch, list(self.history), best.get("epoch"),
                           best.get("val_accuracy"), time.perf_counter() - start, paths)
        with on_host(self.model):
            emit(self.callbacks, "on_train_end", self, result)
        return result

    def _request_stop(self) -> bool:
        """Ctrl-C: ask for a stop after this batch; True when one was asked for already."""
        if self._stop_requested:
            return True
        self._stop_requested = True
        self._say("stopping after this batch and saving a checkpoint (Ctrl-C again to stop at once)")
        return False

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
                with on_host(self.model):
                    emit(self.callbacks, "on_epoch_end", self, metrics)
                if metrics.get("stop"):
                    return "early_stopped"
                if self._stopping(collective=True):
                    raise KeyboardInterrupt
        except KeyboardInterrupt:
            if self._stop_agreed:  # every worker is here: one set of running statistics
                self.dp.sync_buffers()
            if self._consistent and self.run_dir is not None and self.dp.is_root:
                try:
                    self.save_checkpoint()  # at a batch boundary: resume continues from here
                except KeyboardInterrupt:  # a second Ctrl-C: the previous checkpoint stays
                    pass
            return "interrupted"
        return "completed"

    def _train_epoch(self, loader: BatchLoader) -> None:
        """One pass over the training data (from batch ``self.batch`` when resuming)."""
        spe, dtype = len(loader), model_dtype(self.model)
        batch_hooks = any(hasattr(cb, "on_batch_end") for cb in self.callbacks)
        loader.epoch = self.epoch
        self.model.train()
        t0 = time.perf_counter() - self.partial["seconds"]
        pbar = progress_bar(spe, self.batch, f"epoch {self.epoch + 1}/{self.config.epochs}"
                            ) if self.progress else None
        try:
            for b, (xb, yb) in enumerate(self.dp.batches(loader)):
                if b < self.batch:  # resuming inside an epoch: replay the loader's draws
                    continue
                loss, lr = self._train_step(to_device(xb.astype(dtype, copy=False), self.device),
                                            to_device(yb, self.device), b, spe, t0)
                if pbar is not None:
                    show_progress(pbar, b, spe, self.partial)
                if batch_hooks:
                    emit(self.callbacks, "on_batch_end", self, {
                        "epoch": self.epoch + 1, "batch": b + 1, "step": self.step,
                        "loss": loss, "lr": lr})
                if self._stopping():
                    raise KeyboardInterrupt
        finally:
            if pbar is not None:
                pbar.close()

    def _train_step(self, xb: np.ndarray, yb: np.ndarray, b: int, spe: int,
                    t0: float) -> tuple[float, float]:
        """The lecture's step on batch ``b``: forward, loss, backward, update; returns (loss, lr)."""
        p = self.partial
        self._consistent = False  # until the counters agree with the weights again
        lr = learning_rate(self.config, self.step, spe)
        self.optimizer.lr = lr
        self.dp.zero_grad()
        n = len(yb)  # this worker's slice; an empty one runs too (dropout's draws, sync-BN)
        scores = self.model.forward(xb)
        loss = float(self.loss_fn.forward(scores, yb)) if n else 0.0
        # the loss without label smoothing, what val_loss measures (before backward may reuse
        # the scores' buffer); with no smoothing it is the loss itself
        ce = unsmoothed_loss_sum(scores, yb) if self.config.label_smoothing else None
        if not self.dp.parallel and not math.isfinite(loss):
            raise self._diverged(loss, b, spe, lr)
        self.model.backward(self.loss_fn.backward() if n else xp_of(scores).zeros_like(scores))
        # -- distributed: the global batch's mean gradient and totals, and any worker's stop --
        t = self.dp.reduce(n, loss * n, int((scores.argmax(axis=1) == yb).sum()),
                           self._stop_requested)
        if not math.isfinite(t.loss_sum):  # every worker sees it: all stop at this step
            raise self._diverged(t.loss, b, spe, lr)
        self._stop_agreed, loss = t.stop, t.loss
        self.optimizer.step()
        p["loss_sum"] += t.loss_sum
        if p.get("ce_sum") is not None:
            p["ce_sum"] += t.loss_sum if ce is None else all_workers_sum(self.dp, ce)
        p["correct"] += t.correct
        p["seen"] += t.n
        p["seconds"] = time.perf_counter() - t0
        self.step += 1
        self.batch = b + 1
        self._consistent = True
        return loss, lr

    def _end_epoch(self, x_val: Any, y_val: Any, has_val: bool) -> dict[str, Any]:
        """Validate, keep the best, log, write metrics.jsonl, the model and the checkpoint."""
        patience, seconds = self.config.patience, self.partial["seconds"]
        metrics = epoch_metrics(self.partial, self.epoch + 1, self.optimizer.lr)
        self.dp.sync_buffers()  # workers: averaged running statistics, the same bits checked
        improved = has_val and self._validate(x_val, y_val, metrics)
        metrics["best"] = improved
        self.epoch += 1
        self.batch = 0
        self.partial = dict(_EMPTY)
        self.history.append(metrics)
        stop = has_val and patience is not None and self.bad_epochs >= patience
        self._write_outputs(model=improved or not has_val)
        self._say(epoch_line(metrics, self.config.epochs, has_val, improved, seconds))
        if stop:
            self._say(f"early stopping: no better validation accuracy for {patience} epochs "
                      f"(best: epoch {self.best['epoch']})")
        return {**metrics, "stop": stop} if stop else metrics

    def _validate(self, x_val: Any, y_val: Any, metrics: dict[str, Any]) -> bool:
        """Add the validation loss and accuracy to ``metrics``; keep the weights if they are
        the best so far (returns whether they are)."""
        ev = self.evaluate(x_val, y_val)
        if not math.isfinite(ev.loss):
            raise self._diverged(ev.loss, self.batch - 1, self.batch, self.optimizer.lr,
                                 "validation loss")
        metrics.update(val_loss=ev.loss, val_accuracy=ev.accuracy)
        if not better(metrics, self.best):
            self.bad_epochs += 1
            return False
        self.best = {"epoch": self.epoch + 1, "val_accuracy": ev.accuracy, "val_loss": ev.loss}
        self.best_state = {k: np.array(to_host(v), copy=True)
                           for k, v in self.model.state_dict().items()}
        self.bad_epochs = 0
        return True

    def _stopping(self, collective: bool = False) -> bool:
        """Whether to stop now: this process's Ctrl-C; with several workers, any worker's, as
        the last step's reduction agreed (``collective``: ask every worker now)."""
        if not self.dp.parallel:
            return self._stop_requested
        if collective:
            self._stop_agreed = self.dp.any(self._stop_requested)
        return self._stop_agreed

    def _diverged(self, loss: float, b: int, spe: int, lr: float, what: str = "loss"
                  ) -> TrainingDiverged:
        """The error for a non-finite loss at batch ``b`` (0-based) of the current epoch; the
        validation loss is checked after the epoch's last step."""
        return diverged(loss, what, step=self.step + (what == "loss"), epoch=self.epoch + 1,
                        batch=b + 1, batches=spe, lr=lr, base_lr=self.config.lr,
                        checkpoint=self.checkpoint_path, epochs_done=self.epoch)
