"""The explorer's receptive field through containers: a nested Sequential composes its layers, a
Residual and a Concat take the union of their branches (identity shortcut included).  Checked
against the input gradient's reach (positive weights, no ReLU: no gradient cancels), in Python
and in the page's JavaScript (headless Chromium)."""

from __future__ import annotations

import os
from typing import Any, Callable

import numpy as np
import pytest

from convscope import AvgPool2D, Conv2D, Flatten, Linear, Sequential
from convscope.inspect.explore import explorer_data, explorer_html, model_record, receptive_field
from explore_common import CHROMIUM, CHROMIUM_ARGS

F64 = {"dtype": np.float64}
Residual = pytest.importorskip("convscope.layers.graph").Residual
Concat = pytest.importorskip("convscope.layers.graph").Concat


def _positive(layer: Any) -> None:
    for _, child in layer.children():
        _positive(child)
    if "weight" in getattr(layer, "params", {}) and not layer.children():
        layer.params["weight"][...] = np.abs(layer.params["weight"]) + 0.1


def _rf_by_gradient(model: Sequential, layer: int, y: int, x: int) -> tuple[int, ...] | None:
    """Bounding box of the input pixels whose gradient on cell (y, x) of top-level layer
    ``layer``, all channels (a Concat's channels come from different branches), is not zero
    (None: the cell sees padding only)."""
    layers = [child for _, child in model.children()][:layer + 1]
    out = np.ones((1, *model.input_shape))
    for l in layers:
        out = l.forward(out)
    dy = np.zeros_like(out)
    dy[0, :, y, x] = 1.0
    for l in reversed(layers):
        dy = l.backward(dy)
    ys, xs = np.nonzero(np.abs(dy[0]).sum(axis=0))
    if not len(ys):
        return None
    return int(ys.min()), int(xs.min()), int(ys.max()), int(xs.max())


STACKS: dict[str, Callable[[], list[Any]]] = {
    # a block that keeps the size was read as "each cell itself"; one that shrinks as "all"
    "nested sequential": lambda: [
        Conv2D(2, 2, 3, padding=1, **F64),
        Sequential(Conv2D(2, 3, 3, padding=1, **F64), Conv2D(3, 3, 3, padding=1, **F64)),
        Sequential(Conv2D(3, 2, 3, stride=2, padding=1, **F64),
                   Sequential(AvgPool2D(2), Conv2D(2, 2, (3, 1), **F64))),
        Conv2D(2, 2, 3, **F64)],
    "residual, identity shortcut": lambda: [
        Conv2D(2, 3, 3, stride=2, **F64),
        Residual([Conv2D(3, 3, 3, padding=1, **F64), Conv2D(3, 3, 3, padding=1, **F64)]),
        Conv2D(3, 2, 2, **F64)],
    "residual, strided shortcut": lambda: [
        Residual([Conv2D(2, 4, 3, stride=2, padding=1, **F64), Conv2D(4, 4, 3, padding=1, **F64)],
                 Conv2D(2, 4, 1, stride=2, **F64)),
        Residual(Sequential()),  # block = the identity too: y = 2x
        Conv2D(4, 2, 3, padding=2, dilation=2, **F64)],
    "concat of three windows": lambda: [
        Concat(Conv2D(2, 1, 1, **F64), Conv2D(2, 2, 3, padding=1, **F64),
               [Conv2D(2, 2, 5, padding=2, **F64), AvgPool2D(3, 1, padding=1)]),
        Concat(Sequential(), Conv2D(5, 3, (5, 1), padding=(2, 0), **F64)),
        Conv2D(8, 2, 3, stride=2, **F64)],
}


def _model(name: str, scores: bool = False) -> Sequential:
    """The stack on 2×19×17 inputs, positive weights; ``scores``: ending in 2 class scores."""
    layers = STACKS[name]()
    if scores:
        n = int(np.prod(Sequential(*layers, input_shape=(2, 19, 17)).output_shape((2, 19, 17))))
        layers += [Flatten(), Linear(n, 2, **F64)]
    model = Sequential(*layers, input_shape=(2, 19, 17), seed=0)
    _positive(model)
    return model


def _cells(rec: list[dict[str, Any]], count: int = 8) -> list[tuple[int, int, int]]:
    rng = np.random.default_rng(0)
    cells = []
    for layer, r in enumerate(rec):
        if len(r["shape"]) != 3:
            continue  # flatten, fc: a vector
        _, h, w = r["shape"]
        cells += [(layer, 0, 0), (layer, h - 1, w - 1)]
        cells += [(layer, int(rng.integers(h)), int(rng.integers(w))) for _ in range(count)]
    return cells


@pytest.mark.parametrize("name", list(STACKS))
def test_container_receptive_field_is_what_the_gradient_reaches(name: str) -> None:
    model = _model(name)
    rec = model_record(model)["layers"]
    assert any(r["dep"] == "table" for r in rec), [r["dep"] for r in rec]
    for layer, y, x in _cells(rec):
        rf = receptive_field(rec, layer, y, x)
        got = None if rf is None else (rf["top"], rf["left"], rf["bottom"], rf["right"])
        assert got == _rf_by_gradient(model, layer, y, x), (name, layer, y, x)


def test_a_size_keeping_block_is_not_read_as_one_cell() -> None:
    """The old reading ("same": a cell sees its own pixel) against the block's 5×5."""
    model = _model("nested sequential")
    rec = model_record(model)["layers"]
    assert rec[1]["dep"] == "table"
    rf = receptive_field(rec, 1, 9, 8)
    assert (rf["top"], rf["left"], rf["bottom"], rf["right"]) == (6, 5, 12, 11)  # 3 convs 3×3


def test_page_receptive_field_through_containers(tmp_path: Any) -> None:
    if not os.path.exists(CHROMIUM):
        pytest.skip(f"{CHROMIUM} is not installed")
    sync_playwright = pytest.importorskip("playwright.sync_api").sync_playwright
    pages = {}
    for name in ("nested sequential", "residual, strided shortcut", "concat of three windows"):
        model = _model(name, scores=True)
        pixels = np.random.default_rng(1).integers(0, 256, (1, 2, 19, 17), dtype=np.uint8)
        data = explorer_data(model, [str(k) for k in range(2)], pixels,
                             lambda p: p.astype(np.float64) / 255)
        path = tmp_path / f"{len(pages)}.html"
        path.write_text(explorer_html(data), encoding="utf-8")
        pages[name] = (path.as_uri(), data["model"]["layers"])
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            pg = browser.new_page()
            errors: list[str] = []
            pg.on("pageerror", lambda e: errors.append(str(e)))
            for name, (url, rec) in pages.items():
                pg.goto(url)
                pg.wait_for_function("window.convscope !== undefined")
                for layer, y, x in _cells(rec, 4):
                    got = pg.evaluate(f"window.convscope.receptiveField({layer}, {y}, {x})")
                    assert got == receptive_field(rec, layer, y, x), (name, layer, y, x)
            assert errors == []
        finally:
            browser.close()
