"""A run's history (metrics.jsonl's lines) in the report: the table and the curves, with the
train and validation losses compared like with like.

``train_loss`` is the loss trained on (with label smoothing, if any), ``val_loss`` the plain
cross-entropy; ``train_ce`` (recorded since the trainer counts it) is the training batches'
cross-entropy without smoothing, the measure of ``val_loss``.  The epoch starred is the one whose
weights the trainer kept (:func:`~convscope.train.control.kept_epoch`, the trainer's own rule).
"""

from __future__ import annotations

import html
import json
import math
from pathlib import Path
from typing import Any, Mapping, Sequence

from ..train.control import kept_epoch
from . import viz

__all__ = ["comparable_history", "curves_picture", "history_table"]


def read_history(path: Path) -> list[dict[str, Any]]:
    """The rows of a run's metrics.jsonl ([] when there is none); a line that is not JSON is a
    ValueError naming the file and the line."""
    if not path.is_file():
        return []
    rows = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if line.strip():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as exc:
                raise ValueError(f"{path}, line {n}: not JSON ({exc.msg})") from None
    return rows


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _pct(v: Any) -> str:
    return "–" if v is None or not math.isfinite(float(v)) else f"{100 * float(v):.2f}%"


def comparable_history(history: Sequence[Mapping[str, Any]]) -> tuple[list[dict[str, Any]], str]:
    """(rows, what the loss curves show): the rows with ``train_loss`` replaced by ``train_ce``
    (the training batches' cross-entropy without label smoothing) wherever it was recorded, so
    that the train and validation losses drawn are the same measure."""
    if not history or any("train_ce" not in h for h in history):
        return [dict(h) for h in history], "loss as trained"
    return ([{**h, "train_loss": h["train_ce"]} for h in history],
            "cross-entropy, no label smoothing")


def curves_picture(history: Sequence[Mapping[str, Any]], path: Path | None, title: str) -> Any:
    """The curves picture of train and validation losses that measure the same thing."""
    rows, what = comparable_history(history)
    return viz.training_curves(rows, path, title=f"{title} (loss: {what})")


def history_table(history: Sequence[Mapping[str, Any]],
                   label_smoothing: float | None = None) -> str:
    ce = any("train_ce" in h for h in history)
    smooth = f", label smoothing {label_smoothing:g}" if label_smoothing else ""
    head = ("<tr><th class=num>epoch</th><th class=num>learning rate</th>"
            f"<th class=num>train loss (as trained{smooth})</th>"
            + ("<th class=num>train cross-entropy</th>" if ce else "")
            + "<th class=num>train accuracy</th><th class=num>validation loss</th>"
            "<th class=num>validation accuracy</th><th class=num>seconds</th></tr>")
    kept = kept_epoch(history)
    rows = []
    for h in history:
        def num(key: str, fmt: str) -> str:
            v = h.get(key)
            return "–" if v is None else format(float(v), fmt)
        star = " ★" if h is kept else ""
        rows.append(f"<tr><td class=num>{_e(h.get('epoch', ''))}{star}</td>"
                    f"<td class=num>{num('lr', '.3g')}</td><td class=num>{num('train_loss', '.4f')}</td>"
                    + (f"<td class=num>{num('train_ce', '.4f')}</td>" if ce else "")
                    + f"<td class=num>{_pct(h.get('train_accuracy'))}</td>"
                    f"<td class=num>{num('val_loss', '.4f')}</td>"
                    f"<td class=num>{_pct(h.get('val_accuracy'))}</td>"
                    f"<td class=num>{num('seconds', '.1f')}</td></tr>")
    return (f"<div class=scroll><table class=history><thead>{head}</thead><tbody>{''.join(rows)}"
            "</tbody></table></div><p class=meta>★ the epoch whose weights were kept (the best "
            "validation accuracy; of equal ones, the lowest validation loss). The validation loss "
            "is the cross-entropy without label smoothing"
            + (", as is the train cross-entropy: compare those two" if ce else "") + ".</p>")
