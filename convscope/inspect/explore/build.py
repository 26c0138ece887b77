"""The explorer's data for a model (and its run), and the one self-contained HTML file.

:func:`explorer_data` gathers everything the page shows into one JSON-able dict (no timestamps,
no random ids, fixed key order: the same inputs give the same bytes); :func:`explorer_html`
inlines it, with the page's CSS and JavaScript (package data under ``static/``), into one HTML
file that needs no network, no WebGL and no matplotlib.
"""

from __future__ import annotations

import base64
import hashlib
import html
import json
from importlib import resources
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from ..._version import __version__
from .collect import image_records, model_record, u8

__all__ = ["explorer_data", "explorer_html", "run_record", "pick_probes", "floats", "EXPLORE",
           "THUMBS_PER_CELL"]

EXPLORE = "explore.html"
#: Test images kept per confusion-matrix cell (the page says how many more there are).
THUMBS_PER_CELL = 8
_HISTORY_KEYS = ("epoch", "lr", "train_loss", "train_ce", "train_accuracy", "val_loss",
                 "val_accuracy", "best")


def pick_probes(y: np.ndarray, count: int = 8) -> list[int]:
    """Indices of ``count`` images: the first of each class in turn, then the next ones."""
    y = np.asarray(y)
    picks: list[int] = []
    seen: set[int] = set()
    for i, c in enumerate(y.tolist()):
        if len(picks) < count and c not in seen:
            picks.append(i)
            seen.add(c)
    for i in range(len(y)):
        if len(picks) >= count:
            break
        if i not in picks:
            picks.append(i)
    return picks


def run_record(model: Any, prepare: Callable[[np.ndarray], np.ndarray], history: Sequence[Any],
               x_test: np.ndarray | None, y_test: np.ndarray | None, split: str = "test"
               ) -> dict[str, Any]:
    """The training curves (``history``: metrics.jsonl's lines) and the confusion matrix of
    ``model`` on uint8 images ``x_test`` with labels ``y_test``, each cell with the indices of
    its first :data:`THUMBS_PER_CELL` images and their thumbnails."""
    rec: dict[str, Any] = {"history": [{k: h[k] for k in _HISTORY_KEYS if k in h}
                                       for h in history], "confusion": None}
    if x_test is None or y_test is None or not len(x_test):
        return rec
    y = np.asarray(y_test, np.int64)
    pred = np.asarray(model.predict(prepare(x_test))).argmax(axis=1)
    k = int(model.output_shape(tuple(model.input_shape))[0])
    counts = np.zeros((k, k), np.int64)
    np.add.at(counts, (y, pred), 1)
    cells: dict[str, list[int]] = {}
    for i, (t, p) in enumerate(zip(y.tolist(), pred.tolist())):
        cell = cells.setdefault(f"{t},{p}", [])
        if len(cell) < THUMBS_PER_CELL:
            cell.append(i)
    kept = sorted({i for idx in cells.values() for i in idx})
    slot = {i: n for n, i in enumerate(kept)}
    rec["confusion"] = {"split": split, "counts": counts.tolist(), "total": int(len(y)),
                        "correct": int(np.trace(counts)),
                        "cells": {c: [slot[i] for i in idx] for c, idx in sorted(cells.items())},
                        "indices": kept, "thumbs": u8(np.asarray(x_test)[kept])}
    return rec


def _digest(arrays: Mapping[str, Any]) -> str:
    h = hashlib.sha256()
    for k in sorted(arrays):
        a = np.ascontiguousarray(np.asarray(arrays[k]))
        h.update(k.encode())
        h.update(str(a.dtype).encode() + str(a.shape).encode())
        h.update(a.tobytes())
    return h.hexdigest()[:16]


def explorer_data(model: Any, classes: Sequence[str], pixels: np.ndarray,
                  prepare: Callable[[np.ndarray], np.ndarray], *,
                  names: Sequence[str] | None = None, labels: Sequence[int | None] | None = None,
                  run: Mapping[str, Any] | None = None, title: str = "convscope explorer",
                  info: Mapping[str, Any] | None = None, live: bool = False,
                  seed: int = 0) -> dict[str, Any]:
    """Everything the page shows, as one dict (see the module docstring).

    ``pixels`` uint8 probe images (N, C, H, W); ``prepare`` maps uint8 images to the model's float
    input (its normalisation); ``run`` from :func:`run_record`; ``live`` makes the page offer an
    upload and a drawing canvas that POST to ``/api/predict`` (the server); ``seed`` draws the
    randomised copy of the sanity check.
    """
    if model.input_shape is None:
        raise ValueError("explorer: the model has no input_shape; build it first")
    pixels = np.asarray(pixels)
    if pixels.ndim != 4 or tuple(pixels.shape[1:]) != tuple(model.input_shape):
        raise ValueError(f"explorer: probe images must be uint8 (N, "
                         f"{', '.join(map(str, model.input_shape))}), got {tuple(pixels.shape)}")
    names = list(names) if names is not None else [f"image {i}" for i in range(len(pixels))]
    x = prepare(pixels)
    meta = {"convscope": __version__, "weights_sha256": _digest(model.state_dict()),
            "probes_sha256": _digest({"pixels": pixels}), "seed": seed, **dict(info or {})}
    return {"title": title, "classes": [str(c) for c in classes], "meta": meta,
            "model": model_record(model),
            "images": image_records(model, x, pixels, names, labels, seed),
            "run": dict(run) if run else None, "live": bool(live)}


def _static(name: str) -> str:
    return resources.files(__package__).joinpath("static", name).read_text(encoding="utf-8")


def _noscript(data: Mapping[str, Any]) -> str:
    """The summary table, for a browser without JavaScript."""
    rows = "".join(f"<tr><td>{r['index']}</td><td>{html.escape(r['name'])}</td>"
                   f"<td>{'×'.join(map(str, r['shape']))}</td><td>{r['params']:,}</td>"
                   f"<td>{html.escape(r['formula'])}</td><td>{r['macs']:,}</td></tr>"
                   for r in data["model"]["layers"])
    return ("<noscript><p>The explorer needs JavaScript; here is the model's table.</p>"
            "<table class=summary><tr><th>#</th><th>layer</th><th>output</th><th>params</th>"
            f"<th>formula</th><th>mult-adds</th></tr>{rows}</table></noscript>")


def explorer_html(data: Mapping[str, Any]) -> str:
    """The page: explore.html with explore.css, explore.js and ``data`` inlined."""
    blob = json.dumps(data, ensure_ascii=True, separators=(",", ":"), allow_nan=False)
    blob = blob.replace("</", "<\\/")  # the data can never close its <script>
    page = _static("explore.html")
    for key, value in (("/*CSS*/", _static("explore.css")), ("/*JS*/", _static("explore.js")),
                       ("<!--NOSCRIPT-->", _noscript(data)), ("/*DATA*/", blob),
                       ("<!--TITLE-->", html.escape(str(data.get("title", ""))))):
        page = page.replace(key, value, 1)
    return page


def floats(data: Mapping[str, Any]) -> Any:
    """Decode one ``f32`` / ``u8`` record of the data back to an array (tests and tools)."""
    if "f32" in data:
        return np.frombuffer(base64.b64decode(data["f32"]), "<f4").reshape(data["shape"])
    return np.frombuffer(base64.b64decode(data["u8"]), np.uint8).reshape(data["shape"])

