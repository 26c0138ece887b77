"""Pictures of a training run: loss and accuracy curves, the confusion matrix, sample predictions.

Each returns a :class:`~convscope.inspect.canvas.Picture` whose panels hold what was drawn (the
curves' values, the confusion counts and shares, the images) and where each tile lies.
"""

from __future__ import annotations

import math
import os
from typing import Any, Mapping, Sequence

import numpy as np

from .canvas import (TEXT, Canvas, Panel, Picture, color_index, colorize, colormap_lut, enlarge,
                     fit_tile, rgb_image)

__all__ = ["training_curves", "confusion_matrix", "confusion_plot", "prediction_grid"]

# ---------------------------------------------------------------------------------------------
# training curves and the confusion matrix


def _series(history: Sequence[Mapping[str, Any]], key: str) -> tuple[list[float], list[float]]:
    xs, ys = [], []
    for i, row in enumerate(history):
        v = row.get(key)
        if v is not None and np.isfinite(float(v)):
            xs.append(float(row.get("epoch", i + 1)))
            ys.append(float(v))
    return xs, ys


_CURVE_KEYS = {"loss": (("train_loss", "train"), ("val_loss", "validation")),
               "accuracy": (("train_acc", "train"), ("val_acc", "validation"))}


def training_curves(history: Sequence[Mapping[str, Any]], path: str | os.PathLike[str] | None = None,
                    *, title: str = "training") -> Picture:
    """Loss and accuracy per epoch, train and validation, side by side.

    ``history`` is one dict per epoch with ``epoch`` and any of ``train_loss``, ``val_loss``,
    ``train_acc``, ``val_acc`` (accuracies as fractions 0..1; ``loss``/``acc`` and
    ``val_accuracy``-style names are read too).  ``panels[k].extra['lines']`` holds the
    (label, epochs, values) drawn.
    """
    rows = [_normalize_history_row(r) for r in history]
    if not rows:
        raise ValueError("training_curves: the history is empty; train for at least one epoch")
    cv = Canvas(900, 360)
    cv.text(450, 8, title, 11, weight="bold")
    panels = []
    for j, (what, keys) in enumerate(_CURVE_KEYS.items()):
        ax = cv.axes(70 + j * 450, 44, 350, 260)
        lines = []
        for key, name in keys:
            xs, ys = _series(rows, key)
            if not xs:
                continue
            if what == "accuracy":
                ys = [100 * v for v in ys]
            ax.plot(xs, ys, marker="o", markersize=3, linewidth=1.6, label=name,
                    color="#1f77b4" if name == "train" else "#e07b00")
            lines.append((name, xs, ys))
        ax.set_xlabel("epoch", fontsize=8.5)
        ax.set_ylabel("loss" if what == "loss" else "accuracy (%)", fontsize=8.5)
        ax.set_title(what, fontsize=10)
        ax.tick_params(labelsize=8)
        ax.grid(alpha=0.3)
        epochs = sorted({x for _, xs, _ in lines for x in xs})
        if epochs and len(epochs) <= 12 and all(float(e).is_integer() for e in epochs):
            ax.set_xticks(epochs)
        if lines:
            ax.legend(fontsize=8, frameon=False)
            for name, xs, ys in lines:  # the final values, written at the last point
                fmt = f"{ys[-1]:.1f}%" if what == "accuracy" else f"{ys[-1]:.4g}"
                ax.annotate(fmt, (xs[-1], ys[-1]), textcoords="offset points",
                            xytext=(0, 6 if name == "train" else -12), ha="right", fontsize=7.5,
                            color="#1f77b4" if name == "train" else "#e07b00")
        else:
            ax.text(0.5, 0.5, f"no {what} recorded", ha="center", va="center",
                    transform=ax.transAxes, fontsize=9)
        panels.append(Panel(what, np.asarray([ys for _, _, ys in lines], dtype=object)
                            if lines else np.zeros(0), cmap="lines", extra={"lines": lines}))
    return cv.render(path, panels)


def _normalize_history_row(row: Mapping[str, Any]) -> dict[str, Any]:
    aliases = {"loss": "train_loss", "acc": "train_acc", "accuracy": "train_acc",
               "train_accuracy": "train_acc", "val_accuracy": "val_acc",
               "valid_loss": "val_loss", "valid_acc": "val_acc"}
    if not isinstance(row, Mapping):
        raise TypeError(f"each history entry must be a dict of numbers, got {type(row).__name__}")
    return {aliases.get(k, k): v for k, v in row.items()}


def confusion_matrix(y_true: Any, y_pred: Any, num_classes: int) -> np.ndarray:
    """Counts (num_classes, num_classes): row = true class, column = predicted class."""
    t, p = np.asarray(y_true).reshape(-1), np.asarray(y_pred).reshape(-1)
    if t.shape != p.shape:
        raise ValueError(f"y_true has {t.size} labels but y_pred has {p.size}")
    for name, a in (("y_true", t), ("y_pred", p)):
        if a.size and (not np.issubdtype(a.dtype, np.integer) or a.min() < 0 or a.max() >= num_classes):
            raise ValueError(f"{name} must hold integer classes 0..{num_classes - 1}, got values "
                             f"{a.min()}..{a.max()} ({a.dtype})")
    return np.bincount(t * num_classes + p, minlength=num_classes ** 2).reshape(
        num_classes, num_classes).astype(np.int64)


def confusion_plot(cm: np.ndarray, classes: Sequence[str] | None = None,
                   path: str | os.PathLike[str] | None = None, *, cmap: str = "Blues",
                   title: str = "confusion matrix") -> Picture:
    """The confusion matrix as a grid of cells, row = true class, column = predicted class.

    A cell's colour is its share of the row (how often that true class got that prediction,
    0..1 on ``cmap``); its count is written in it.  ``panels[0].tiles[r * n + c]`` is cell (r, c)
    and ``panels[0].extra['share']`` the shares drawn.
    """
    cm = np.asarray(cm)
    if cm.ndim != 2 or cm.shape[0] != cm.shape[1] or cm.shape[0] < 1:
        raise ValueError(f"cm must be a square (n, n) matrix of counts, got shape {cm.shape}")
    n = cm.shape[0]
    names = [str(c) for c in classes] if classes is not None else [str(c) for c in range(n)]
    if len(names) != n:
        raise ValueError(f"classes has {len(names)} names but the matrix is {n}×{n}")
    rows = cm.sum(axis=1, keepdims=True)
    share = np.where(rows > 0, cm / np.maximum(rows, 1), 0.0)
    cell = int(np.clip(round(420 / n), 16, 56))
    label_w = min(150, 12 + 7 * max(len(s) for s in names))
    grid = n * cell
    width, height = label_w + grid + 110, 64 + grid + label_w + 20
    cv = Canvas(width, height)
    lut = colormap_lut(cmap)
    acc = np.trace(cm) / max(cm.sum(), 1)
    cv.text(width / 2, 8, f"{title}: {int(np.trace(cm))} of {int(cm.sum())} right "
            f"({100 * acc:.1f}%)", 10.5, weight="bold")
    x0, y0 = label_w, 56
    panel = Panel(title, cm, vmin=0.0, vmax=1.0, cmap=cmap, extra={"share": share})
    size = max(5.5, min(9.0, cell / 4))
    for r in range(n):
        for c in range(n):
            rgb = colorize(np.full((cell - 1, cell - 1), share[r, c]), 0.0, 1.0, lut)
            panel.tiles.append(cv.paste(x0 + c * cell, y0 + r * cell, rgb))
            panel.channels.append(r * n + c)
            if cell >= 20 or cm[r, c]:
                dark = color_index(share[r, c], 0, 1) > 150
                cv.text(x0 + c * cell + (cell - 1) / 2, y0 + r * cell + (cell - 1) / 2, str(cm[r, c]),
                        size, va="center", color="white" if dark else TEXT)
        cv.text(x0 - 6, y0 + r * cell + cell / 2, names[r], 8, ha="right", va="center")
    tilt = max(len(s) for s in names) > 2
    for c in range(n):
        cv.text(x0 + c * cell + cell / 2, y0 + grid + 6, names[c], 8, ha="right" if tilt else "center",
                va="top", rotation=60 if tilt else 0, rotation_mode="anchor")
    cv.text(x0 - label_w + 4, y0 - 14, "true ↓  predicted →", 8, ha="left")
    ramp = lut[np.clip(np.rint(np.linspace(255, 0, grid)), 0, 255).astype(int)]
    cv.paste(x0 + grid + 20, y0, np.repeat(ramp[:, None], 12, axis=1))
    cv.text(x0 + grid + 36, y0, "1", 7.5, ha="left", va="top")
    cv.text(x0 + grid + 36, y0 + grid, "0", 7.5, ha="left", va="bottom")
    cv.text(x0 + grid + 36, y0 + grid / 2, "share\nof row", 7.5, ha="left", va="center")
    return cv.render(path, [panel])


def prediction_grid(images: np.ndarray, y_pred: Sequence[int], classes: Sequence[str],
                    path: str | os.PathLike[str] | None = None, *,
                    y_true: Sequence[int] | None = None, probs: Sequence[float] | None = None,
                    cols: int = 8, tile: int = 64) -> Picture:
    """Images with their predicted class (and the true one: green when right, red when wrong).

    ``images`` uint8 (N, C, H, W) (C = 1 or 3) or (N, H, W, C).  ``panels[0].tiles[i]`` is image i.
    """
    images = np.asarray(images)
    if images.ndim != 4 or len(images) == 0:
        raise ValueError(f"images must be (N, C, H, W) with N >= 1, got shape {images.shape}")
    n = len(images)
    if len(y_pred) != n or (y_true is not None and len(y_true) != n):
        raise ValueError(f"{n} images need {n} predictions (and true labels), got {len(y_pred)}"
                         + ("" if y_true is None else f" and {len(y_true)}"))
    rgbs = [rgb_image(im) for im in images]
    h, w = rgbs[0].shape[:2]
    zoom, step = fit_tile(h, w, tile, 2 * tile)
    th, tw = math.ceil(h / step) * zoom, math.ceil(w / step) * zoom
    cols = max(1, min(cols, n))
    rows = math.ceil(n / cols)
    cw, ch = max(tw, 92) + 10, th + 40
    cv = Canvas(cols * cw + 20, rows * ch + 20)
    panel = Panel("predictions", images, cmap="rgb", extra={"y_pred": list(map(int, y_pred))})
    for i, rgb in enumerate(rgbs):
        r, c = divmod(i, cols)
        x, y = 10 + c * cw + (cw - tw) // 2, 10 + r * ch
        panel.tiles.append(cv.paste(x, y, enlarge(rgb, zoom, step), zoom, step))
        panel.channels.append(i)
        p = int(y_pred[i])
        text = classes[p] + (f" {probs[i]:.2f}" if probs is not None else "")
        color = TEXT
        if y_true is not None:
            right = int(y_true[i]) == p
            color = "#1a7f37" if right else "#c62828"
            if not right:
                text += f"\n(true: {classes[int(y_true[i])]})"
        cv.text(10 + c * cw + cw / 2, y + th + 3, text, 7.5, color=color)
    return cv.render(path, [panel])
