"""What runs around the training steps: callbacks, the progress bar, Ctrl-C, the epoch line and
the message for a loss that is not a finite number."""

from __future__ import annotations

import contextlib
import signal
import sys
import threading
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Sequence

import numpy as np

from ..errors import TrainingDiverged
from ..ops.loss import log_softmax
from ..runtime import xp_of

__all__ = ["emit", "progress_bar", "show_progress", "stop_on_sigint", "sigint_raises",
           "epoch_metrics", "epoch_line",
           "better", "kept_epoch", "unsmoothed_loss_sum", "all_workers_sum", "diverged",
           "class_names"]

_OTHER_EVENTS = ("on_train_begin", "on_batch_end", "on_train_end")


def emit(callbacks: Sequence[Any], event: str, trainer: Any, *args: Any) -> None:
    """Call ``cb.<event>(trainer, *args)`` on each callback that has it; a plain function (with
    none of the other events) is an ``on_epoch_end``."""
    for cb in callbacks:
        fn = getattr(cb, event, None)
        if fn is None and event == "on_epoch_end" and callable(cb) and not any(
                hasattr(cb, e) for e in _OTHER_EVENTS):
            fn = cb
        if fn is not None:
            fn(trainer, *args)


def progress_bar(total: int, initial: int, desc: str) -> Any:
    """A tqdm bar over an epoch's batches on stderr (none when stderr is not a terminal)."""
    try:
        from tqdm.auto import tqdm  # noqa: PLC0415 - only for the progress bar
    except ImportError:  # pragma: no cover - tqdm is a dependency
        raise ImportError("the progress bar needs tqdm: pip install tqdm") from None
    return tqdm(total=total, initial=initial, desc=desc, unit="batch", leave=False,
                dynamic_ncols=True, file=sys.stderr, disable=None)


def show_progress(pbar: Any, b: int, spe: int, partial: Mapping[str, Any]) -> None:
    """Advance the bar past batch ``b`` of ``spe``; every 5th batch and the last, show the
    running loss, accuracy and speed."""
    pbar.update(1)
    if b % 5 == 4 or b == spe - 1:
        p = partial
        pbar.set_postfix_str(f"loss {p['loss_sum'] / p['seen']:.4f}, acc "
                             f"{100 * p['correct'] / p['seen']:.2f}%, "
                             f"{p['seen'] / max(p['seconds'], 1e-9):,.0f} img/s", refresh=False)


@contextlib.contextmanager
def stop_on_sigint(request_stop: Callable[[], bool]) -> Iterator[None]:
    """Within: Ctrl-C calls ``request_stop()``, which asks for a stop after the current batch
    and returns whether one was asked for already (then the Ctrl-C stops at once).  Only in the
    main thread (signals go there)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: Any) -> None:
        if request_stop():
            raise KeyboardInterrupt

    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def sigint_raises() -> contextlib.AbstractContextManager[None]:
    """Within: Ctrl-C raises KeyboardInterrupt, also in a process started with SIGINT ignored
    (a non-interactive shell's background job, where Python leaves it ignored): a command that
    says "Ctrl-C stops" stops on it.  :func:`stop_on_sigint` asking no second time."""
    return stop_on_sigint(lambda: True)


def class_names(classes: Sequence[str] | None, k: int) -> list[str]:
    """The names of the model's ``k`` classes (their indices when none are given)."""
    if classes is not None and len(classes) != k:
        raise ValueError(f"Trainer: {len(classes)} class names but the model gives {k} scores")
    return [str(c) for c in classes] if classes is not None else [str(i) for i in range(k)]


def better(a: Mapping[str, float], b: Mapping[str, Any] | None) -> bool:
    """Whether validation metrics ``a`` beat the best so far ``b``: a higher accuracy, or the
    same accuracy with a lower loss (the one rule that picks the weights the trainer keeps)."""
    if b is None:
        return True
    return (a["val_accuracy"], -a["val_loss"]) > (b["val_accuracy"], -b["val_loss"])


def kept_epoch(history: Sequence[Mapping[str, Any]]) -> Mapping[str, Any] | None:
    """The row of ``history`` (metrics.jsonl's lines) whose weights the trainer kept: :func:`better`
    replayed over the validated epochs in order, as the trainer applies it each epoch; None
    without validation."""
    best = None
    for row in history:
        if row.get("val_accuracy") is not None and row.get("val_loss") is not None \
                and better(row, best):
            best = row
    return best


def unsmoothed_loss_sum(scores: Any, labels: Any) -> float:
    """Σ over a batch of −log softmax(scores)[label], in float64: the cross-entropy without
    label smoothing, summed (``scores`` (n, K), integer ``labels`` (n,); 0 for n = 0)."""
    n = len(labels)
    if not n:
        return 0.0
    xp = xp_of(scores)  # on the scores' device: one number comes back
    logp = log_softmax(xp.asarray(scores, dtype=np.float64))
    return float(-logp[xp.arange(n), xp.asarray(labels)].sum())


def all_workers_sum(dp: Any, value: float) -> float:
    """``value`` added over every worker (one scalar Allreduce; itself with one process)."""
    if not dp.parallel:
        return float(value)
    return float(dp.comm.allreduce_(np.array([float(value)]), "sum")[0])


def epoch_metrics(partial: Mapping[str, Any], epoch: int, lr: float) -> dict[str, Any]:
    """An epoch's line of metrics.jsonl from its running sums (validation added later).

    ``train_loss`` is the loss trained on (with label smoothing, if any); ``train_ce`` the same
    batches' cross-entropy without smoothing, the measure of ``val_loss`` (absent for an epoch
    resumed from a checkpoint that did not count it)."""
    p, seconds = partial, partial["seconds"]
    out = {"epoch": epoch, "lr": lr,
           "train_loss": p["loss_sum"] / max(p["seen"], 1)}
    if p.get("ce_sum") is not None:
        out["train_ce"] = p["ce_sum"] / max(p["seen"], 1)
    return {**out, "train_accuracy": p["correct"] / max(p["seen"], 1),
            "seconds": round(seconds, 3),
            "images_per_second": round(p["seen"] / max(seconds, 1e-9), 1)}


def epoch_line(metrics: Mapping[str, Any], epochs: int, has_val: bool, improved: bool,
               seconds: float) -> str:
    """The log line of an epoch: its line of metrics.jsonl in words (``seconds`` unrounded)."""
    line = (f"epoch {metrics['epoch']}/{epochs}: loss {metrics['train_loss']:.4f}, "
            f"accuracy {100 * metrics['train_accuracy']:.2f}%")
    if has_val:
        line += (f" | validation loss {metrics['val_loss']:.4f}, accuracy "
                 f"{100 * metrics['val_accuracy']:.2f}%{' (best)' if improved else ''}")
    return (line + f" | lr {metrics['lr']:.3g} | {seconds:.1f} s, "
            f"{metrics['images_per_second']:,.0f} img/s")


def diverged(loss: float, what: str, *, step: int, epoch: int, batch: int, batches: int,
             lr: float, base_lr: float, checkpoint: Path | None,
             epochs_done: int) -> TrainingDiverged:
    """The error for a ``loss`` that is not finite at optimiser ``step`` (1-based), batch
    ``batch`` of ``batches`` in ``epoch`` (1-based); it says which checkpoint survives."""
    kept = (f"the last good checkpoint ({checkpoint}, epoch {epochs_done}) is kept"
            if checkpoint is not None and checkpoint.exists() else "no checkpoint was written yet")
    where = "at" if what == "loss" else "after"
    lower = base_lr / 10
    msg = (f"{what} became {loss} {where} step {step} (epoch {epoch}, batch {batch} of "
           f"{batches}) with learning rate {lr:.3g}; training stopped and {kept}; try a lower "
           f"learning rate, e.g. {lower:.3g}")
    return TrainingDiverged(msg, step, epoch, lr, lower)
