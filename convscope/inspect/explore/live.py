"""``convscope train --serve``: the explorer of a run while it trains, refreshed each epoch.

The trainer and the server share one thing, a :class:`Snapshot` (the epoch, the history and a
copy of the weights), replaced whole at each epoch's end by the :class:`LiveRun` callback in the
training thread; copying LeNet-5's weights costs microseconds, so training is not slowed.  The
server builds the page from the latest snapshot only when a browser asks for it (GET /), in its
own thread, on its own copy of the model (the engine's layers keep per-call caches, so the
training model is never run by the server), one build at a time, and keeps it until the next
epoch lands.  Routes:

* ``GET /``: the explorer of the latest epoch's weights (curves, filters, activation maps, the
  confusion matrix on the test images); it polls ``/api/run`` and reloads itself, keeping the
  view, when a new epoch lands;
* ``GET /api/run``: ``{"epoch", "epochs", "status", "done", "best_epoch", "last"}``, small and
  computed from the snapshot alone (``status``: "training"; "saving" once the epochs are done
  while the command writes the model file, the report and explore.html; then "completed" or
  "early_stopped" when all is written (``done``), or "interrupted").

Same safety as ``convscope serve`` (:class:`~.server.GuardedServer`): 127.0.0.1 unless a host is
given, the Host-header check, no request bodies (a POST is refused unread), stalled clients
dropped.
"""

from __future__ import annotations

import copy
import json
import threading
from dataclasses import dataclass, replace
from http import HTTPStatus
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from ...train.control import kept_epoch
from .build import explorer_data, explorer_html, pick_probes, run_record
from .server import PAGE_ROUTES, GuardedServer, Refused

__all__ = ["Snapshot", "LiveRun", "LiveServer", "snapshot_of", "API_RUN", "PROBES",
           "CONFUSION_IMAGES"]

API_RUN = "/api/run"
#: Probe images of the live page (the first test image of each class in turn).
PROBES = 8
#: Test images in the live page's confusion matrix: the first ones (predicting them is most of a
#: page build, which shares the CPU with training; the final explore.html has them all).
CONFUSION_IMAGES = 500
_STARTING = (b"<!doctype html><meta charset=utf-8><meta http-equiv=refresh content=1>"
             b"<title>convscope train: starting</title><p>Training is starting; this page "
             b"reloads itself in a second.</p>")
_LAST_KEYS = ("train_loss", "train_ce", "train_accuracy", "val_loss", "val_accuracy", "lr",
              "seconds")


@dataclass(frozen=True)
class Snapshot:
    """What the server shows: ``epoch`` of ``epochs`` done, the history (metrics.jsonl's lines),
    a copy of the weights (state dict) and the run's status ("training" until it ends)."""

    epoch: int
    epochs: int
    history: tuple[Mapping[str, Any], ...]
    state: Mapping[str, np.ndarray]
    status: str = "training"
    best_epoch: int | None = None

    @property
    def done(self) -> bool:
        """Whether the run is over and its files written (nothing will change any more)."""
        return self.status not in ("training", "saving")

    def summary(self) -> dict[str, Any]:
        """The answer of ``GET /api/run``."""
        last = self.history[-1] if self.history else {}
        return {"epoch": self.epoch, "epochs": self.epochs, "status": self.status,
                "done": self.done, "best_epoch": self.best_epoch,
                "last": {k: last[k] for k in _LAST_KEYS if k in last}}


def snapshot_of(trainer: Any, status: str = "training") -> Snapshot:
    """The trainer's state now: its epoch, a copy of its history and of its model's weights."""
    history = tuple(dict(h) for h in trainer.history)
    kept = kept_epoch(history)
    state = {k: np.array(v, copy=True) for k, v in trainer.model.state_dict().items()}
    return Snapshot(int(trainer.epoch), int(trainer.config.epochs), history, state, status,
                    None if kept is None else int(kept["epoch"]))


class LiveRun:
    """A :class:`~convscope.train.Trainer` callback handing a :class:`Snapshot` to ``publish``
    when training begins, after every epoch, and when it ends: the weights then are the ones
    kept (the best validation epoch's), with status "saving" (or "interrupted"); whoever writes
    the run's files calls :meth:`finish` when they are written."""

    def __init__(self, publish: Callable[[Snapshot], None]) -> None:
        self.publish = publish
        self.last: Snapshot | None = None
        self.status = "training"

    def _send(self, snap: Snapshot) -> None:
        self.last = snap
        self.publish(snap)

    def on_train_begin(self, trainer: Any) -> None:
        self._send(snapshot_of(trainer))

    def on_epoch_end(self, trainer: Any, metrics: Mapping[str, Any]) -> None:
        self._send(snapshot_of(trainer))

    def on_train_end(self, trainer: Any, result: Any) -> None:
        self.status = str(result.status)
        self._send(snapshot_of(trainer, "interrupted" if self.status == "interrupted"
                               else "saving"))

    def finish(self) -> None:
        """The run's files are written: the last snapshot with the run's final status."""
        if self.last is not None and not self.last.done:
            self._send(replace(self.last, status=self.status))


class LiveServer(GuardedServer):
    """The explorer of a run in training (see the module docstring).

    ``model`` is copied (the server never runs the training model); ``prepare`` maps uint8
    images to its input (the normaliser); ``x_test``/``y_test`` uint8 images and labels give the
    probes and the confusion matrix; ``label_smoothing`` is named on the curves.
    """

    def __init__(self, model: Any, classes: Sequence[str],
                 prepare: Callable[[np.ndarray], np.ndarray], x_test: np.ndarray,
                 y_test: np.ndarray, host: str = "127.0.0.1", port: int = 8000, *,
                 title: str = "convscope train", info: Mapping[str, Any] | None = None,
                 label_smoothing: float | None = None,
                 log: Callable[[str], None] | None = None) -> None:
        if x_test is None or not len(x_test):
            raise ValueError("train --serve: the live page needs test images (its probes)")
        self.model = copy.deepcopy(model)
        self.model.eval()
        self.classes = [str(c) for c in classes]
        self.prepare = prepare
        self.x_test, self.y_test = np.asarray(x_test), np.asarray(y_test)
        self.probes = pick_probes(self.y_test, PROBES)
        self.title, self.info = title, dict(info or {})
        self.label_smoothing = label_smoothing
        self.snapshot: Snapshot | None = None  # replaced whole by publish(): no lock needed
        self._build = threading.Lock()         # one page build at a time
        self._page: tuple[Snapshot, bytes] | None = None
        self.builds = 0
        super().__init__(host, port, max_bytes=0, log=log)

    def publish(self, snap: Snapshot) -> None:
        """Make ``snap`` the latest (called from the training thread)."""
        self.snapshot = snap

    def page_data(self, snap: Snapshot) -> dict[str, Any]:
        """The explorer's data for ``snap``, computed on the server's own model."""
        self.model.load_state_dict(dict(snap.state))
        self.model.eval()
        n = CONFUSION_IMAGES
        run = run_record(self.model, self.prepare, list(snap.history), self.x_test[:n],
                         self.y_test[:n])
        run["label_smoothing"] = self.label_smoothing
        run["best_epoch"] = snap.best_epoch
        idx = self.probes
        where = f"epoch {snap.epoch} of {snap.epochs}" + ("" if not snap.done else
                                                          f", {snap.status.replace('_', ' ')}")
        data = explorer_data(self.model, self.classes, self.x_test[idx], self.prepare,
                             names=[f"test image {i}" for i in idx],
                             labels=[int(self.y_test[i]) for i in idx], run=run,
                             title=f"{self.title} ({where})", info=self.info)
        data["watch"] = {"api": API_RUN.lstrip("/"), **snap.summary()}
        return data

    def page(self) -> bytes:
        """The page of the latest snapshot (built once per snapshot, when first asked for)."""
        snap = self.snapshot
        if snap is None:  # the data is still loading: a page that asks again in a second
            return _STARTING
        with self._build:
            if self._page is None or self._page[0] is not snap:
                self._page = (snap, explorer_html(self.page_data(snap)).encode("utf-8"))
                self.builds += 1
            return self._page[1]

    def get(self, route: str) -> tuple[str, bytes]:
        if route == API_RUN:
            snap = self.snapshot
            body = snap.summary() if snap is not None else {"epoch": 0, "status": "starting",
                                                            "done": False}
            return "application/json", json.dumps(body, allow_nan=False).encode("utf-8")
        if route in PAGE_ROUTES:
            return "text/html; charset=utf-8", self.page()
        raise Refused(HTTPStatus.NOT_FOUND, f"no page {route!r}; the live view is at / and "
                      f"{API_RUN}")
