"""The HTML report of a training run: ``report.html`` in the run folder, one self-contained file.

It holds the model's summary table and the lecture's walk through it, the training curves, the
filters of the conv layers, sample predictions with the activation maps of every layer, and the
confusion matrix with per-class accuracy.  CSS is inline and every picture is a ``data:`` URI:
no script, no web font, no network; it opens from disk (or from a copy of the file alone) in any
browser.

From Python::

    trainer = Trainer(model, config, run_dir="runs/x", classes=ds.classes,
                      callbacks=[RunReport(ds.x_test, ds.y_test)])   # curves.png each epoch,
    trainer.fit(...)                                                  # report.html at the end
    report_for_run("runs/x")                                          # (re)write it later
"""

from __future__ import annotations

import datetime as _dt
import html
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping, Sequence

import numpy as np

from .._version import __version__
from ..data import Normalizer, to_float
from ..data.record import find_dataset
from ..formats.files import atomic_write
from ..formats.model_file import load_model
from ..ops.loss import softmax
from ..train import METRICS, MODEL, evaluate
from ..train.control import kept_epoch
from ..words import nbytes_text, volume
from . import viz
from .explain import explain
from .history import comparable_history, curves_picture, history_table, read_history
from .tree import filter_layers

if TYPE_CHECKING:
    from ..layers.container import Sequential

__all__ = ["report_html", "write_report", "report_for_run", "RunReport", "REPORT", "CURVES",
           "comparable_history"]

REPORT, CURVES = "report.html", "curves.png"

_CSS = """
:root { --ink: #1d2329; --muted: #5b6670; --line: #d9dee3; --accent: #e07b00; --bg: #f6f7f9; }
* { box-sizing: border-box; }
body { margin: 0; background: var(--bg); color: var(--ink);
       font: 15px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, "DejaVu Sans", sans-serif; }
main { max-width: 1180px; margin: 0 auto; padding: 24px 28px 48px; }
h1 { font-size: 26px; margin: 0 0 4px; }
h2 { font-size: 20px; margin: 0 0 12px; }
h3 { font-size: 16px; margin: 18px 0 8px; }
section { background: #fff; border: 1px solid var(--line); border-radius: 8px; padding: 16px 20px;
          margin: 18px 0; }
.meta { color: var(--muted); margin: 0 0 14px; }
.cards { display: flex; flex-wrap: wrap; gap: 12px; }
.card { background: #fff; border: 1px solid var(--line); border-radius: 8px; padding: 10px 16px;
        min-width: 150px; }
.card b { display: block; font-size: 22px; }
.card span { color: var(--muted); font-size: 13px; }
nav { margin: 16px 0 0; font-size: 14px; }
nav a { margin-right: 14px; color: #1f5fa8; text-decoration: none; }
table { border-collapse: collapse; font-size: 13.5px; margin: 6px 0 10px; }
th, td { border-bottom: 1px solid var(--line); padding: 4px 10px; text-align: left;
         vertical-align: top; }
th { background: #eef1f4; font-weight: 600; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; }
tr.total td { font-weight: 600; border-top: 2px solid var(--ink); }
.scroll { overflow-x: auto; }
pre { background: #f3f5f7; border: 1px solid var(--line); border-radius: 6px; padding: 10px 12px;
      font: 12.5px/1.45 "DejaVu Sans Mono", Menlo, Consolas, monospace; overflow-x: auto;
      white-space: pre; }
figure { margin: 10px 0 18px; }
figure img { max-width: 100%; height: auto; border: 1px solid var(--line); border-radius: 4px;
             background: #fff; }
figcaption { color: var(--muted); font-size: 13px; margin-top: 4px; }
.grid { display: flex; flex-wrap: wrap; gap: 10px 24px; align-items: flex-start; }
.right { color: #1a7f37; } .wrong { color: #c62828; }
footer { color: var(--muted); font-size: 12.5px; margin-top: 24px; }
"""


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _img(pic: Any, alt: str, caption: str = "") -> str:
    cap = f"<figcaption>{_e(caption)}</figcaption>" if caption else ""
    return (f'<figure><img src="{pic.data_uri()}" alt="{_e(alt)}" width="{pic.width}" '
            f'height="{pic.height}">{cap}</figure>')


def _pct(v: Any) -> str:
    return "–" if v is None or not np.isfinite(float(v)) else f"{100 * float(v):.2f}%"


def _prepare(model: Sequential, x: np.ndarray, normalizer: Normalizer | None) -> np.ndarray:
    dtype = model.dtype
    out = normalizer(x) if normalizer is not None else (to_float(x) if x.dtype == np.uint8 else x)
    return np.asarray(out).astype(dtype, copy=False)


def _summary_table(model: Sequential) -> str:
    s = model.summary()
    rows = [f"<tr><td></td><td>input</td><td>{_e(volume(s.input_shape))}</td><td class=num></td>"
            f"<td></td><td class=num></td><td class=num>"
            f"{_e(nbytes_text(int(np.prod(s.input_shape)) * s.itemsize))}</td></tr>"]
    for r in s.rows:  # a block's layers indented under its row of totals
        indent = "&nbsp;" * 4 * r.depth
        rows.append(f"<tr><td class=num>{_e(r.label or r.index)}</td><td>{indent}{_e(r.layer)}</td>"
                    f"<td>{_e(volume(r.output_shape))}</td><td class=num>{r.params:,}</td>"
                    f"<td>{_e(r.formula)}</td><td class=num>{r.macs:,}</td>"
                    f"<td class=num>{_e(nbytes_text(r.activation_bytes))}</td></tr>")
    rows.append(f"<tr class=total><td></td><td>total</td><td></td>"
                f"<td class=num>{s.total_params:,}</td><td></td><td class=num>{s.total_macs:,}</td>"
                f"<td class=num>{_e(nbytes_text(s.activation_bytes))}</td></tr>")
    head = ("<tr><th class=num>#</th><th>layer</th><th>output (H×W×C)</th><th class=num>params</th>"
            "<th>formula</th><th class=num>mult-adds</th><th class=num>activations</th></tr>")
    return (f'<div class=scroll><table class="summary"><thead>{head}</thead><tbody>'
            + "".join(rows) + "</tbody></table></div>")


def _pick_samples(y: np.ndarray, pred: np.ndarray, count: int) -> list[int]:
    """Deterministic picks: first a wrong prediction (if any), then right ones of new classes."""
    wrong = [int(i) for i in np.flatnonzero(pred != y)]
    picks = wrong[:1]
    for i in range(len(y)):
        if len(picks) >= count:
            break
        if i not in picks and int(y[i]) not in {int(y[j]) for j in picks}:
            picks.append(i)
    for i in range(len(y)):
        if len(picks) >= count:
            break
        if i not in picks:
            picks.append(i)
    return picks[:count]


def report_html(model: Sequential, classes: Sequence[str], *,
                history: Sequence[Mapping[str, Any]] = (), x_eval: np.ndarray | None = None,
                y_eval: np.ndarray | None = None, normalizer: Normalizer | None = None,
                eval_name: str = "test", title: str = "convscope run",
                info: Mapping[str, Any] | None = None, samples: int = 3, gallery: int = 16,
                max_conv: int = 4, label_smoothing: float | None = None) -> str:
    """The report as one HTML string (see the module's docstring).

    ``x_eval`` uint8 (N, C, H, W) with labels ``y_eval`` feed the sample predictions, their
    activation maps and the confusion matrix; ``normalizer`` maps them to the model's input.
    ``info`` adds lines to the header (dataset, architecture, ...).  The best epoch is the one
    whose weights the trainer kept (:func:`~convscope.train.control.kept_epoch`); the curves
    compare like with like (:func:`comparable_history`); ``label_smoothing`` (the run's) is named
    in the history table.
    """
    if model.input_shape is None:
        raise ValueError("report: the model has no input_shape; build it first")
    classes = [str(c) for c in classes]
    info = dict(info or {})
    summary = model.summary()
    ev = None
    if x_eval is not None and y_eval is not None and len(x_eval):
        y_eval = np.asarray(y_eval, dtype=np.int64)
        ev = evaluate(model, x_eval, y_eval, normalizer=normalizer, num_classes=len(classes))
    best = kept_epoch(history)
    cards = [(f"{summary.total_params:,}", "parameters")]
    if ev is not None:
        cards.insert(0, (_pct(ev.accuracy), f"{eval_name} accuracy ({ev.correct:,} of {ev.total:,})"))
    if best is not None:
        cards.insert(1, (_pct(best["val_accuracy"]), f"validation accuracy of the kept weights "
                                                     f"(epoch {best['epoch']})"))
    if history:
        secs = sum(float(h.get("seconds", 0) or 0) for h in history)
        cards.append((str(len(history)), f"epochs ({secs:.0f} s of training)"))
    meta = " · ".join(f"{_e(k)}: {_e(v)}" for k, v in info.items() if v not in (None, "", {}))
    created = _dt.datetime.now().astimezone().isoformat(timespec="seconds")
    parts = [f"<header><h1>{_e(title)}</h1><p class=meta>{meta}</p><div class=cards>"
             + "".join(f"<div class=card><b>{_e(v)}</b><span>{_e(k)}</span></div>" for v, k in cards)
             + "</div><nav><a href='#model'>Model</a><a href='#training'>Training</a>"
             "<a href='#filters'>Filters</a><a href='#predictions'>Predictions</a>"
             "<a href='#confusion'>Confusion matrix</a>"
             "<a href='explore.html'>Explorer (interactive)</a></nav></header>"]
    # ---- the model
    walk = str(explain(model))
    parts.append(f"<section id=model><h2>Model</h2>{_summary_table(model)}"
                 f"<details open><summary>The lecture's arithmetic, layer by layer</summary>"
                 f"<pre>{_e(walk)}</pre></details></section>")
    # ---- training
    if history:
        curves = curves_picture(history, None, "loss and accuracy per epoch")
        parts.append(f"<section id=training><h2>Training</h2>{_img(curves, 'training curves')}"
                     f"{history_table(history, label_smoothing)}</section>")
    else:
        parts.append("<section id=training><h2>Training</h2><p class=meta>No training history "
                     "was recorded.</p></section>")
    # ---- filters
    convs = [label for label, _ in filter_layers(model)]  # blocks' conv layers too
    figs = [_img(viz.filter_grid(model, i), f"filters of layer {i}") for i in convs[:max_conv]]
    more = (f"<p class=meta>{len(convs) - max_conv} more conv layers not drawn.</p>"
            if len(convs) > max_conv else "")
    parts.append("<section id=filters><h2>Filters</h2>"
                 + (f"<div class=grid>{''.join(figs)}</div>{more}" if figs else
                    "<p class=meta>The model has no conv layer.</p>") + "</section>")
    # ---- predictions and activation maps
    if ev is not None:
        x_in = _prepare(model, x_eval[:max(gallery, samples) * 8], normalizer)
        scores = model.predict(x_in)
        pred = scores.argmax(axis=1)
        probs = softmax(scores)[np.arange(len(pred)), pred]
        n = min(gallery, len(pred))
        grid = viz.prediction_grid(x_eval[:n], pred[:n], classes, y_true=y_eval[:n], probs=probs[:n])
        right = int((pred[:n] == y_eval[:n]).sum())
        body = [_img(grid, "sample predictions", f"The first {n} {eval_name} images: predicted class "
                     f"and its probability; {right} of {n} right (green), wrong ones in red with "
                     "the true class.")]
        for i in _pick_samples(y_eval[:len(pred)], pred, samples):
            pic = viz.activation_maps(model, x_in[i], image=x_eval[i], classes=classes,
                                      label=int(y_eval[i]))
            ok = "right" if pred[i] == y_eval[i] else "wrong"
            body.append(f"<h3>{_e(eval_name)} image {i}: true <em>{_e(classes[y_eval[i]])}</em>, "
                        f"predicted <em class={ok}>{_e(classes[pred[i]])}</em></h3>"
                        + _img(pic, f"activation maps for {eval_name} image {i}",
                               "Every layer's output for this image, left to right; each column "
                               "has its own grey scale (black = its minimum, white = its maximum)."))
        parts.append(f"<section id=predictions><h2>Sample predictions</h2>{''.join(body)}</section>")
        cm = viz.confusion_plot(ev.confusion, classes, title=f"{eval_name} set")
        per = ev.per_class_accuracy
        rows = "".join(f"<tr><td>{_e(c)}</td><td class=num>{int(ev.confusion[k].sum()):,}</td>"
                       f"<td class=num>{_pct(per[k])}</td></tr>" for k, c in enumerate(classes))
        parts.append(f"<section id=confusion><h2>Confusion matrix</h2><div class=grid>"
                     f"{_img(cm, 'confusion matrix', 'Rows: true class; columns: predicted class.')}"
                     f"<div class=scroll><table class=per-class><thead><tr><th>class</th>"
                     f"<th class=num>images</th><th class=num>accuracy</th></tr></thead><tbody>"
                     f"{rows}</tbody></table></div></div></section>")
    else:
        parts.append("<section id=predictions><h2>Sample predictions</h2><p class=meta>No "
                     "evaluation images were given.</p></section><section id=confusion><h2>"
                     "Confusion matrix</h2><p class=meta>No evaluation images were given.</p>"
                     "</section>")
    parts.append(f"<footer>Written by convscope {_e(__version__)} on {_e(created)}. Self-contained: "
                 "no scripts and no network; pictures are embedded.</footer>")
    return ("<!doctype html>\n<html lang=en>\n<head>\n<meta charset=utf-8>\n"
            "<meta name=viewport content='width=device-width, initial-scale=1'>\n"
            f"<title>{_e(title)}</title>\n<style>{_CSS}</style>\n</head>\n<body><main>\n"
            + "\n".join(parts) + "\n</main></body>\n</html>\n")


def write_report(run_dir: str | Path, model: Sequential, classes: Sequence[str],
                 **kwargs: Any) -> Path:
    """Write ``report.html`` into ``run_dir`` (atomically); returns its path.  ``kwargs`` as
    :func:`report_html`."""
    return atomic_write(Path(run_dir) / REPORT, report_html(model, classes, **kwargs))


def report_for_run(run_dir: str | Path, dataset: str | None = None,
                   data_dir: str | Path | None = None, **kwargs: Any) -> Path:
    """(Re)write ``report.html`` for a finished run folder: its ``model.safetensors``,
    ``metrics.jsonl`` and the test split of its dataset (``dataset`` overrides the one the model
    file names; an image folder is found by its record, data/record.py, and a dataset of other
    classes refused).  Also rewrites ``curves.png``."""
    run = Path(run_dir)
    if not (run / MODEL).is_file():
        raise FileNotFoundError(f"{run}: no {MODEL} here; is it a run folder of `convscope train`?")
    saved = load_model(run / MODEL)
    history = read_history(run / METRICS)
    name = dataset or saved.metadata.get("dataset")
    x = y = None
    if name or saved.metadata.get("data"):
        ds = find_dataset(saved.metadata, dataset, data_dir, classes=saved.classes)
        if tuple(ds.input_shape) != tuple(saved.input_shape):
            raise ValueError(f"dataset {name!r} has images {ds.input_shape} but the model takes "
                             f"{saved.input_shape}")
        x, y = (ds.x_test, ds.y_test) if len(ds.y_test) else (None, None)
    if history:
        curves_picture(history, run / CURVES, f"{run.name}: loss and accuracy per epoch")
    kwargs.setdefault("label_smoothing", ((saved.metadata.get("training") or {}).get("config")
                                          or {}).get("label_smoothing"))
    info = {"run": run.name, "dataset": name, "architecture": saved.metadata.get("arch_name"),
            "input": volume(saved.input_shape), "model file": MODEL}
    return write_report(run, saved.model, saved.classes, history=history, x_eval=x, y_eval=y,
                        normalizer=saved.normalization, title=f"convscope run {run.name}",
                        info=info, **kwargs)


class RunReport:
    """A :class:`~convscope.train.Trainer` callback: ``curves.png`` after every epoch and
    ``report.html`` at the end, in the trainer's run folder.

    ``x_eval``/``y_eval`` (uint8 images and labels; e.g. the test split) feed the predictions
    and the confusion matrix.  Without matplotlib the pictures are skipped with one message to
    ``log`` (training goes on).
    """

    def __init__(self, x_eval: np.ndarray | None = None, y_eval: np.ndarray | None = None, *,
                 eval_name: str = "test", info: Mapping[str, Any] | None = None,
                 log: Callable[[str], None] | None = None) -> None:
        self.x_eval, self.y_eval, self.eval_name = x_eval, y_eval, eval_name
        self.info = dict(info or {})
        self.log = log
        self.disabled = False
        self.report_path: Path | None = None

    def _say(self, msg: str) -> None:
        if self.log is not None:
            self.log(msg)

    def _skip(self, exc: ImportError) -> None:
        if not self.disabled:
            self._say(f"pictures and report.html skipped: {exc}")
        self.disabled = True

    def on_epoch_end(self, trainer: Any, metrics: Mapping[str, Any]) -> None:
        if self.disabled or trainer.run_dir is None:
            return
        try:
            curves_picture(trainer.history, trainer.run_dir / CURVES,
                    f"{trainer.run_dir.name}: loss and accuracy per epoch")
        except ImportError as exc:
            self._skip(exc)

    def on_train_end(self, trainer: Any, result: Any) -> None:
        if self.disabled or trainer.run_dir is None:
            return
        model_info = trainer.model_info
        info = {"run": trainer.run_dir.name, "dataset": model_info.get("dataset"),
                "architecture": model_info.get("arch_name"), "input": volume(trainer.model.input_shape),
                **self.info, "status": result.status.replace("_", " ")}
        try:
            self.report_path = write_report(
                trainer.run_dir, trainer.model, trainer.classes, history=trainer.history,
                x_eval=self.x_eval, y_eval=self.y_eval, normalizer=trainer.normalizer,
                eval_name=self.eval_name, title=f"convscope run {trainer.run_dir.name}", info=info,
                label_smoothing=trainer.config.label_smoothing)
        except ImportError as exc:
            self._skip(exc)
            return
        self._say(f"report: {self.report_path}")
