"""report.html: written by a training run, self-contained (no network, no scripts), its numbers
those of the run, and rendered by a real browser (headless Chromium) with every picture shown."""

from __future__ import annotations

import base64
import html.parser
import io
import os
import re
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("matplotlib", reason="the report's pictures need matplotlib (convscope[viz])")
Image = pytest.importorskip("PIL.Image", reason="the report's pictures need Pillow (convscope[viz])")

from convscope.data import Normalizer, load_dataset  # noqa: E402
from convscope.models import build_model  # noqa: E402
from convscope.report import CURVES, REPORT, RunReport, report_for_run  # noqa: E402
from convscope.train import TrainConfig, Trainer, evaluate  # noqa: E402
from explore_common import block_network  # noqa: E402

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]


class _Page(html.parser.HTMLParser):
    """Collects tags, images, links, table rows and text of an HTML page."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[str] = []
        self.imgs: list[dict[str, Any]] = []
        self.refs: list[str] = []
        self.rows: dict[str, int] = {}
        self.table: str | None = None
        self.text: list[str] = []
        self.open: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        self.tags.append(tag)
        if tag not in ("meta", "img", "br"):
            self.open.append(tag)
        if tag == "img":
            self.imgs.append(a)
        for key in ("src", "href"):
            if a.get(key) and not a[key].startswith("#"):
                self.refs.append(a[key])
        if tag == "table":
            self.table = a.get("class")
        if tag == "tr" and self.table:
            self.rows[self.table] = self.rows.get(self.table, 0) + 1

    def handle_endtag(self, tag: str) -> None:
        assert self.open and self.open[-1] == tag, f"</{tag}> closes <{self.open[-1:]}>"
        self.open.pop()

    def handle_data(self, data: str) -> None:
        self.text.append(data)


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A short real training run of the lecture's network on bundled digits, with RunReport."""
    ds = load_dataset("digits")
    x, y = ds.x_train[:400], ds.y_train[:400]
    xt, yt = ds.x_test[:200], ds.y_test[:200]
    norm = Normalizer.fit(x)
    model = build_model("lecture", ds.input_shape, ds.num_classes, seed=0)
    run_dir = tmp_path_factory.mktemp("runs") / "lecture-digits"
    log: list[str] = []
    trainer = Trainer(model, TrainConfig(epochs=2, batch_size=32, lr=3e-3, seed=0), normalizer=norm,
                      run_dir=run_dir, classes=ds.classes,
                      model_info={"dataset": "digits", "arch_name": "lecture"},
                      callbacks=[RunReport(xt, yt, log=log.append)])
    result = trainer.fit(x[:320], y[:320], x[320:], y[320:])
    return {"dir": run_dir, "model": model, "norm": norm, "xt": xt, "yt": yt, "ds": ds,
            "result": result, "log": log, "trainer": trainer}


def test_training_writes_curves_and_report(run: dict[str, Any]) -> None:
    d = run["dir"]
    assert (d / CURVES).is_file() and (d / REPORT).is_file()
    assert run["log"] == [f"report: {d / REPORT}"]
    with Image.open(d / CURVES) as im:
        assert im.format == "PNG" and im.size == (900, 360)


def test_report_is_self_contained_and_well_formed(run: dict[str, Any]) -> None:
    text = (run["dir"] / REPORT).read_text(encoding="utf-8")
    page = _Page()
    page.feed(text)
    page.close()
    assert not page.open, f"unclosed tags {page.open}"
    assert "script" not in page.tags and "link" not in page.tags and "iframe" not in page.tags
    assert "http://" not in text and "https://" not in text and "url(" not in text
    assert "explore.html" in page.refs  # the run's explorer, beside the report
    refs = [r for r in page.refs if r != "explore.html"]
    assert refs and all(r.startswith("data:image/png;base64,") for r in refs)
    sizes = []
    for img in page.imgs:
        raw = base64.b64decode(img["src"].split(",", 1)[1], validate=True)
        with Image.open(io.BytesIO(raw)) as im:
            assert im.format == "PNG"
            assert im.size == (int(img["width"]), int(img["height"]))
            sizes.append(im.size)
            assert img.get("alt")
    # curves, 2 filter grids, the prediction grid, 3 activation figures, the confusion matrix
    assert len(page.imgs) == 8
    model = run["model"]
    assert page.rows["summary"] == 1 + len(model.layers) + 2  # head, input, layers, total
    assert page.rows["history"] == 1 + 2
    assert page.rows["per-class"] == 1 + 10
    words = " ".join(page.text)
    assert "CONV: 6 filters 5×5×1, stride 1, pad 0: (28 − 5 + 2·0) / 1 + 1 = 24 → 24×24×6" in words
    ev = evaluate(model, run["xt"], run["yt"], normalizer=run["norm"], num_classes=10)
    assert f"{100 * ev.accuracy:.2f}%" in words and f"({ev.correct:,} of {ev.total:,})" in words
    h = run["result"].history
    assert f"{h[-1]['train_loss']:.4f}" in words


def test_report_sees_into_blocks(rng: np.random.Generator) -> None:
    """A block's layers get summary rows under its totals, steps in the walk, and their filters."""
    from convscope import Conv2D, Flatten, Linear, MaxPool2D, ReLU, Sequential
    from convscope.report import report_html

    net = Sequential(Conv2D(1, 4, 3), Sequential(Conv2D(4, 6, 3), ReLU(), MaxPool2D(2)),
                     Flatten(), Linear(None, 3), input_shape=(1, 10, 10), seed=0)
    x = rng.integers(0, 256, (12, 1, 10, 10), dtype=np.uint8)
    text = report_html(net, ["a", "b", "c"], x_eval=x, y_eval=rng.integers(0, 3, 12), samples=1,
                       gallery=4)
    page = _Page()
    page.feed(text)
    page.close()
    assert page.rows["summary"] == 1 + 1 + (4 + 3) + 1  # head, input, 4 layers and 3 inside, total
    assert [img["alt"] for img in page.imgs if img["alt"].startswith("filters")] == [
        "filters of layer 0", "filters of layer 1.0"]
    words = " ".join(page.text)
    assert "[1] BLOCK: 3 layers in a row: 8×8×4 → 3×3×6" in words
    assert "[1.0] CONV: 6 filters 3×3×4" in words


def test_report_for_run_rewrites_it(run: dict[str, Any], tmp_path: Path) -> None:
    copy = tmp_path / "copy"
    shutil.copytree(run["dir"], copy)
    (copy / REPORT).unlink()
    (copy / CURVES).unlink()
    path = report_for_run(copy)
    assert path == copy / REPORT and (copy / CURVES).is_file()
    page = _Page()
    page.feed(path.read_text(encoding="utf-8"))
    assert page.rows["per-class"] == 1 + 10  # the whole digits test split: 100 images a class
    assert "1,000" in " ".join(page.text) or "1000" in " ".join(page.text)
    with pytest.raises(FileNotFoundError, match="no model.safetensors here"):
        report_for_run(tmp_path)


def test_run_report_without_matplotlib_goes_on(run: dict[str, Any], monkeypatch: pytest.MonkeyPatch,
                                               tmp_path: Path) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    log: list[str] = []
    cb = RunReport(log=log.append)
    trainer = run["trainer"]
    monkeypatch.setattr(trainer, "run_dir", tmp_path)
    cb.on_epoch_end(trainer, {})
    cb.on_epoch_end(trainer, {})
    cb.on_train_end(trainer, run["result"])
    assert cb.disabled and len(log) == 1 and "pip install 'convscope[viz]'" in log[0]
    assert not any(tmp_path.iterdir())


def _playwright() -> Any:
    if not os.path.exists(CHROMIUM):
        pytest.skip(f"{CHROMIUM} is not installed (apt-get install chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("playwright is not installed (pip install playwright)")
    return sync_playwright


def test_report_renders_in_headless_chromium(run: dict[str, Any], tmp_path: Path) -> None:
    sync_playwright = _playwright()
    report = run["dir"] / REPORT
    outside: list[str] = []
    with sync_playwright() as p:
        with tempfile.TemporaryDirectory() as profile:
            ctx = p.chromium.launch_persistent_context(
                profile, executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS,
                viewport={"width": 1280, "height": 900}, offline=True)
            try:
                page = ctx.new_page()
                block_network(page, outside)
                errors: list[str] = []
                page.on("pageerror", lambda e: errors.append(str(e)))
                page.goto(report.as_uri(), wait_until="load")
                assert page.title() == "convscope run lecture-digits"
                images = page.evaluate("""() => [...document.images].map(i => ({
                    ok: i.complete, w: i.naturalWidth, h: i.naturalHeight,
                    attrW: +i.getAttribute('width'), shown: i.getBoundingClientRect().width}))""")
                assert len(images) == 8
                for im in images:
                    assert im["ok"] and im["w"] == im["attrW"] and im["h"] > 0 and im["shown"] > 0
                assert page.evaluate("document.documentElement.scrollWidth") <= 1280
                sections = page.evaluate("[...document.querySelectorAll('section h2')].map(h => h.textContent)")
                assert sections == ["Model", "Training", "Filters", "Sample predictions",
                                    "Confusion matrix"]
                assert "28×28×1" in page.inner_text("#model")
                shot = tmp_path / "report.png"
                page.screenshot(path=str(shot), full_page=True)
                # a phone-sized window: pictures shrink to fit, nothing overflows the page
                page.set_viewport_size({"width": 420, "height": 800})
                widths = page.evaluate("[...document.images].map(i => i.getBoundingClientRect().right)")
                assert max(widths) <= 420
                assert errors == []
            finally:
                ctx.close()
    assert outside == []
    with Image.open(shot) as im:
        rgb = np.asarray(im.convert("RGB"), dtype=np.float64)
    assert rgb.shape[1] == 1280 and rgb.shape[0] > 2000  # the whole report, not a blank page
    assert rgb.std() > 20
    keep = os.environ.get("CONVSCOPE_SCREENSHOTS")
    if keep:  # to look at the rendering yourself
        Path(keep).mkdir(parents=True, exist_ok=True)
        shutil.copy(shot, Path(keep) / "report.png")


def test_cli_train_writes_report_and_cli_report_rewrites_it(tmp_path: Path,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    from convscope.cli import main

    run_dir = tmp_path / "run"
    assert main(["train", "--arch", "lecture", "--epochs", "1", "--limit", "150", "--seed", "0",
                 "--out", str(run_dir), "--quiet"]) == 0
    assert (run_dir / CURVES).is_file() and (run_dir / REPORT).is_file()
    said = capsys.readouterr()
    assert f"report: {run_dir / REPORT}" in said.err
    # make demo's promise: the command ends by printing a report and an explorer that exist
    last = dict(line.split(": ", 1) for line in said.out.strip().splitlines()[-2:])
    assert set(last) == {"report", "explorer"}, said.out
    assert all(Path(v).is_file() for v in last.values()), last
    (run_dir / REPORT).unlink()
    assert main(["report", str(run_dir)]) == 0
    assert capsys.readouterr().out.strip() == str(run_dir / REPORT)
    assert "<title>convscope run run</title>" in (run_dir / REPORT).read_text(encoding="utf-8")
    assert main(["report", str(tmp_path)]) == 1
    assert "no model.safetensors here" in capsys.readouterr().err


# -- the best epoch is the kept one; the curves compare like with like (issue 11) ---------------
# Scripted validation results: epochs 2 and 4 tie on accuracy, 4 has the lower loss, so the
# trainer (train.control.better: accuracy, then loss) keeps epoch 4; the report once said 2.
_SCRIPT = [(0.70, 0.90), (0.90, 0.60), (0.85, 0.50), (0.90, 0.40), (0.90, 0.70)]


def test_the_best_epoch_is_the_one_whose_weights_were_kept(tmp_path: Path) -> None:
    from types import SimpleNamespace

    from convscope.train.control import kept_epoch

    ds = load_dataset("digits")
    x, y = ds.x_train[:96], ds.y_train[:96]
    model = build_model("lecture", ds.input_shape, ds.num_classes, seed=0)
    run_dir = tmp_path / "tie"
    trainer = Trainer(model, TrainConfig(epochs=len(_SCRIPT), batch_size=32, lr=3e-3, seed=0),
                      normalizer=Normalizer.fit(x), run_dir=run_dir, classes=ds.classes,
                      callbacks=[RunReport(ds.x_test[:40], ds.y_test[:40])])
    kept_weights: dict[int, dict[str, np.ndarray]] = {}
    script = iter(_SCRIPT)

    def scripted(xv: np.ndarray, yv: np.ndarray) -> Any:
        acc, loss = next(script)
        kept_weights[trainer.epoch + 1] = {k: v.copy() for k, v in model.state_dict().items()}
        return SimpleNamespace(accuracy=acc, loss=loss)

    trainer.evaluate = scripted  # type: ignore[method-assign]
    result = trainer.fit(x[:64], y[:64], x[64:], y[64:])
    assert result.best_epoch == 4 == kept_epoch(trainer.history)["epoch"]
    for k, v in model.state_dict().items():  # the model holds epoch 4's weights
        np.testing.assert_array_equal(v, kept_weights[4][k])
    text = (run_dir / REPORT).read_text(encoding="utf-8")
    assert "validation accuracy of the kept weights (epoch 4)" in text
    assert "(epoch 2)" not in text
    assert re.findall(r"<tr><td class=num>(\d+) ★", text) == ["4"]  # one row starred


def test_curves_compare_the_same_loss(tmp_path: Path) -> None:
    """With label smoothing, train_ce is the training images' plain cross-entropy (what val_loss
    measures) and the curves draw it; train_loss stays the smoothed loss trained on.  A learning
    rate of 1e-30 keeps the weights fixed, so both equal the losses of the whole training set."""
    from convscope.losses import CrossEntropyLoss

    ds = load_dataset("digits")
    x, y = ds.x_train[:200], ds.y_train[:200]
    norm = Normalizer.fit(x)
    model = build_model("lecture", ds.input_shape, ds.num_classes, seed=0)
    run_dir = tmp_path / "smooth"
    trainer = Trainer(model, TrainConfig(epochs=2, batch_size=48, optimizer="sgd", momentum=0.0,
                                         lr=1e-30, label_smoothing=0.2, seed=0),
                      normalizer=norm, run_dir=run_dir, classes=ds.classes,
                      callbacks=[RunReport(ds.x_test[:40], ds.y_test[:40])])
    trainer.fit(x[:160], y[:160], x[160:], y[160:])
    scores = model.predict(norm(x[:160]).astype(model.dtype))
    plain = float(CrossEntropyLoss(0.0)(scores.astype(np.float64), y[:160]))
    smoothed = float(CrossEntropyLoss(0.2)(scores.astype(np.float64), y[:160]))
    for h in trainer.history:
        assert h["train_ce"] == pytest.approx(plain, rel=1e-5)
        assert h["train_loss"] == pytest.approx(smoothed, rel=1e-5)
        assert abs(h["train_loss"] - h["train_ce"]) > 0.01  # two measures: only one is drawn
        assert h["val_loss"] == pytest.approx(evaluate(model, x[160:], y[160:], normalizer=norm,
                                                       num_classes=10).loss, rel=1e-5)
    from convscope.inspect.history import curves_picture

    pic = curves_picture(trainer.history, None, "t")
    lines = {name: ys for name, _, ys in pic.panels[0].extra["lines"]}
    assert lines["train"] == pytest.approx([h["train_ce"] for h in trainer.history])
    assert lines["validation"] == pytest.approx([h["val_loss"] for h in trainer.history])
    text = (run_dir / REPORT).read_text(encoding="utf-8")
    assert "train loss (as trained, label smoothing 0.2)" in text
    assert "train cross-entropy" in text


def test_without_smoothing_train_ce_is_the_loss(run: dict[str, Any]) -> None:
    for h in run["trainer"].history:
        assert h["train_ce"] == h["train_loss"]


def test_train_ce_over_workers_is_the_global_batch_s() -> None:
    """With 2 or 3 workers (ThreadComm) each epoch's train_ce is one process's: the slices'
    sums are added over the workers (and the trained-on loss, as before)."""
    import convscope.distributed as dist
    from convscope import Conv2D, Flatten, Linear, ReLU, Sequential

    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (50, 1, 8, 8), dtype=np.uint8)
    y = rng.integers(0, 3, 50)
    cfg = TrainConfig(epochs=2, batch_size=16, lr=0.05, optimizer="sgd", label_smoothing=0.3,
                      seed=0)

    def history(comm: Any = None) -> list[dict[str, Any]]:
        model = Sequential(Conv2D(1, 3, 3, dtype=np.float64), ReLU(), Flatten(),
                           Linear(None, 3, dtype=np.float64), input_shape=(1, 8, 8), seed=0)
        trainer = Trainer(model, cfg, comm=comm)
        trainer.fit(x[:40], y[:40], x[40:], y[40:])
        return trainer.history

    one = history()
    for k in (2, 3):
        for h in dist.ThreadComm.run(k, history):
            for a, b in zip(h, one):
                assert a["train_ce"] == pytest.approx(b["train_ce"], rel=1e-12)
                assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-12)
                assert abs(a["train_ce"] - a["train_loss"]) > 1e-3
