"""The explorer in a real browser (Debian's Chromium through Playwright): the page's numbers are
the engine's, its arithmetic is convscope.shapes', it moves by the stride, and it touches no
network.  Screenshots of the main views are kept under the test's tmp dir (the path is printed)."""

from __future__ import annotations

import itertools
import os
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pytest

from convscope import Conv2D, Flatten, Linear, ReLU, Sequential
from convscope.errors import ShapeError
from convscope.inspect.explore import (build_explorer, explorer_data, explorer_html, floats,
                                       load_target)
from convscope.shapes import conv_output_size, fit_suggestions, size_formula, unseen
from explore_common import CHROMIUM, CHROMIUM_ARGS, block_network, make_run, padded

PLAY_MS = 400  # explore.js's PLAY_MS


def _sync_playwright() -> Any:
    if not os.path.exists(CHROMIUM):
        pytest.skip(f"{CHROMIUM} is not installed (apt-get install chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("playwright is not installed (pip install playwright)")
    return sync_playwright


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    run = make_run(tmp_path_factory.mktemp("runs") / "lenet5-digits", images=800)
    target = load_target(run)
    data = build_explorer(target)
    path = run / "explore.html"
    path.write_text(explorer_html(data), encoding="utf-8")
    return {"target": target, "data": data, "url": path.as_uri(),
            "shots": tmp_path_factory.mktemp("screenshots")}


@pytest.fixture(scope="module")
def browser(site: dict[str, Any]) -> Iterator[Any]:
    sync_playwright = _sync_playwright()
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            b.close()


@pytest.fixture(scope="module")
def odd_site(tmp_path_factory: pytest.TempPathFactory, site: dict[str, Any]) -> dict[str, Any]:
    """An untrained net with stride 2, dilation 2, groups and reflect padding, on test digits."""
    model = Sequential(Conv2D(1, 4, 3, stride=2, padding=2, dilation=2), ReLU(),
                       Conv2D(4, 6, 3, stride=2, padding=1, groups=2, padding_mode="reflect"),
                       Flatten(), Linear(6 * 7 * 7, 10), input_shape=(1, 28, 28), seed=3)
    t = site["target"]
    x, y = t.x_test[:3], t.y_test[:3]
    data = explorer_data(model, t.saved.classes, x, t.saved.preprocess, labels=[int(v) for v in y])
    path = tmp_path_factory.mktemp("odd") / "explore.html"
    path.write_text(explorer_html(data), encoding="utf-8")
    return {"model": model, "data": data, "url": path.as_uri()}


def _open(browser: Any, url: str) -> Iterator[Any]:
    """A fresh page on ``url`` that records any request other than file: and data:, and every
    console error and page error; the test fails if there were any."""
    ctx = browser.new_context(viewport={"width": 1360, "height": 900})
    pg = ctx.new_page()
    foreign: list[str] = []
    errors: list[str] = []
    block_network(pg, foreign)
    pg.on("console", lambda m: errors.append(f"console.{m.type}: {m.text}")
          if m.type == "error" else None)
    pg.on("pageerror", lambda e: errors.append(f"pageerror: {e}"))
    pg.clock.install(time=0)
    pg.goto(url)
    pg.wait_for_function("window.convscope !== undefined")
    pg.clock.pause_at(1000)  # play ticks only when a test advances the clock (run_for)
    yield pg
    ctx.close()
    assert foreign == [], f"the page asked the network for {foreign}"
    assert errors == [], errors


@pytest.fixture
def page(browser: Any, site: dict[str, Any]) -> Iterator[Any]:
    yield from _open(browser, site["url"])


@pytest.fixture
def odd_page(browser: Any, odd_site: dict[str, Any]) -> Iterator[Any]:
    yield from _open(browser, odd_site["url"])


def _engine(site: dict[str, Any], image: int, layer: int) -> np.ndarray:
    """The engine's output of ``layer`` (and the input for -1) for probe ``image``."""
    im = site["data"]["images"][image]
    model = site["target"].saved.model
    x = floats(im["input"])[None].astype(np.float32)
    for l in model.layers[:layer + 1]:
        x = l.forward(x)
    return x[0]


def _rf(layers: list[Any], shape: tuple[int, ...], layer: int, y: int, x: int) -> dict[str, int]:
    """The receptive field, computed here from the layers' own attributes."""
    shapes = [shape]
    for l in layers:
        shapes.append(l.output_shape(shapes[-1]))
    y0, y1, x0, x1 = y, y, x, x
    for j in range(layer, -1, -1):
        l, (c, h, w) = layers[j], shapes[j]
        if hasattr(l, "kernel_size"):
            (kh, kw), (sh, sw), (dh, dw) = l.kernel_size, l.stride, l.dilation
            y0, y1 = y0 * sh - l.pads[0][0], y1 * sh - l.pads[0][0] + dh * (kh - 1)
            x0, x1 = x0 * sw - l.pads[1][0], x1 * sw - l.pads[1][0] + dw * (kw - 1)
        y0, y1, x0, x1 = max(y0, 0), min(y1, h - 1), max(x0, 0), min(x1, w - 1)
    return {"top": y0, "left": x0, "bottom": y1, "right": x1}


def test_the_sliding_filter_holds_the_engines_numbers(page: Any, site: dict[str, Any]) -> None:
    model = site["target"].saved.model
    convs = [i for i, l in enumerate(model.layers) if l.shows_filters]
    assert convs == [0, 3]
    rng = np.random.default_rng(0)
    for case in range(16):
        image = int(rng.integers(len(site["data"]["images"])))
        if case % 4 == 0:
            page.locator(f"[data-testid=probe-{image}]").click()
        else:
            page.evaluate(f"document.querySelector('[data-testid=probe-{image}]').click()")
        layer = convs[case % 2]
        conv = model.layers[layer]
        out = _engine(site, image, layer)
        k = int(rng.integers(out.shape[0]))
        y = 0 if case == 0 else int(rng.integers(out.shape[1]))  # case 0: the padded corner
        x = 0 if case == 0 else int(rng.integers(out.shape[2]))
        s = page.evaluate(f"window.convscope.select({layer}, {k}, {y}, {x})")
        assert page.evaluate("window.convscope.state()")["value"] == s["value"]
        assert (s["layer"], s["filter"], s["y"], s["x"]) == (layer, k, y, x)
        assert abs(s["value"] - float(out[k, y, x])) < 1e-4
        assert abs(sum(s["partial_sums"]) - (s["value"] - s["bias"])) < 1e-9
        assert abs(s["bias"] - float(conv.params["bias"][k])) < 1e-7
        np.testing.assert_allclose(s["weights"], conv.params["weight"][k], rtol=0, atol=1e-7)
        (kh, kw), (sh, sw) = conv.kernel_size, conv.stride
        xin = padded(_engine(site, image, layer - 1), conv.pads)
        want = xin[:, y * sh:y * sh + kh, x * sw:x * sw + kw]
        np.testing.assert_allclose(s["window"], want, rtol=0, atol=1e-7)
        pt, pl = conv.pads[0][0], conv.pads[1][0]
        c_in, h_in, w_in = xin.shape[0], xin.shape[1] - 2 * pt, xin.shape[2] - 2 * pl
        win = np.array(s["window"])
        for ky, kx in itertools.product(range(kh), range(kw)):
            iy, ix = y * sh - pt + ky, x * sw - pl + kx
            if not (0 <= iy < h_in and 0 <= ix < w_in):
                assert (win[:, ky, kx] == 0).all()
        if case == 0 and pt:
            assert (win[:, :pt, :] == 0).all() and (win[:, :, :pl] == 0).all()
        shown = float(page.locator("[data-testid=dot-sum]").inner_text())
        assert abs(shown - float(out[k, y, x])) < 1e-3


def test_receptive_fields_match_the_arithmetic(page: Any, site: dict[str, Any]) -> None:
    model = site["target"].saved.model
    shape = tuple(model.input_shape)
    shapes = model.shapes()
    rng = np.random.default_rng(1)
    for layer, l in enumerate(model.layers):
        out = shapes[layer + 1]
        for _ in range(3):
            y = int(rng.integers(out[1])) if len(out) == 3 else 0
            x = int(rng.integers(out[2])) if len(out) == 3 else 0
            got = page.evaluate(f"window.convscope.receptiveField({layer}, {y}, {x})")
            if len(out) == 3:
                assert got == _rf(model.layers, shape, layer, y, x), (layer, y, x)
            else:
                assert got == {"top": 0, "left": 0, "bottom": shape[1] - 1, "right": shape[2] - 1}
    page.evaluate("window.convscope.select(3, 1, 4, 7)")
    box = page.locator("[data-testid=rf-box]")
    want = _rf(model.layers, shape, 3, 4, 7)
    assert {k: int(box.get_attribute(f"data-{k}")) for k in want} == want
    # by hand: rows 4-8, columns 7-11 of the pool's output; 8-17, 14-23 before the 2×2 pool;
    # then 5×5 at padding 2: 6-19, 12-25
    assert want == {"top": 6, "left": 12, "bottom": 19, "right": 25}


def test_keys_and_play_move_the_window_by_the_stride(page: Any, site: dict[str, Any]) -> None:
    model = site["target"].saved.model
    layer = 0
    conv = model.layers[layer]
    (sh, sw), pt, pl = conv.stride, conv.pads[0][0], conv.pads[1][0]
    page.evaluate(f"window.convscope.select({layer}, 2, 0, 0)")
    win = page.locator("[data-testid=window]")

    def where() -> tuple[int, int, int, int]:
        s = page.evaluate("window.convscope.state()")
        return s["y"], s["x"], int(win.get_attribute("data-y")), int(win.get_attribute("data-x"))

    assert where() == (0, 0, -pt, -pl)
    page.keyboard.press("ArrowRight")
    page.keyboard.press("ArrowRight")
    assert where() == (0, 2, -pt, 2 * sw - pl)
    page.keyboard.press("ArrowDown")
    assert where() == (1, 2, sh - pt, 2 * sw - pl)
    page.keyboard.press("ArrowLeft")
    page.keyboard.press("ArrowUp")
    page.keyboard.press("ArrowUp")  # stays in the map
    assert where() == (0, 1, -pt, sw - pl)
    page.locator("[data-testid=play]").click()
    page.clock.run_for(PLAY_MS * 3 + 10)
    assert where() == (0, 4, -pt, 4 * sw - pl)
    page.keyboard.press(" ")  # pause
    page.clock.run_for(PLAY_MS * 5)
    assert where() == (0, 4, -pt, 4 * sw - pl)
    assert page.locator("[data-testid=play]").get_attribute("data-playing") == "0"
    out_w = model.layers[layer].output_shape(tuple(model.input_shape))[2]
    page.evaluate(f"window.convscope.select({layer}, 0, 0, {out_w - 1})")
    page.locator("[data-testid=play]").click()
    page.clock.run_for(PLAY_MS + 10)
    assert where()[:2] == (1, 0)  # past the last column: the next row
    page.locator("[data-testid=play]").click()


def test_stride_dilation_groups_and_reflect_padding(odd_page: Any, odd_site: dict[str, Any]
                                                    ) -> None:
    page, model = odd_page, odd_site["model"]
    rng = np.random.default_rng(2)
    for layer in (0, 2):
        conv = model.layers[layer]
        (kh, kw), (sh, sw), (dh, dw) = conv.kernel_size, conv.stride, conv.dilation
        pt, pl = conv.pads[0][0], conv.pads[1][0]
        for image in range(3):
            page.evaluate(f"document.querySelector('[data-testid=probe-{image}]').click()")
            x = floats(odd_site["data"]["images"][image]["input"])[None].astype(np.float32)
            for l in model.layers[:layer]:
                x = l.forward(x)
            out = conv.forward(x)[0]
            mode = {"zeros": "constant", "reflect": "reflect"}[conv.padding_mode]
            xin = np.pad(x[0], ((0, 0), conv.pads[0], conv.pads[1]), mode=mode)
            for _ in range(4):
                k, y, xx = (int(rng.integers(n)) for n in out.shape)
                s = page.evaluate(f"window.convscope.select({layer}, {k}, {y}, {xx})")
                assert abs(s["value"] - float(out[k, y, xx])) < 1e-4
                assert abs(sum(s["partial_sums"]) - (s["value"] - s["bias"])) < 1e-9
                d = conv.in_channels // conv.groups
                c0 = k // (conv.out_channels // conv.groups) * d
                want = xin[c0:c0 + d, y * sh:y * sh + dh * (kh - 1) + 1:dh,
                           xx * sw:xx * sw + dw * (kw - 1) + 1:dw]
                np.testing.assert_allclose(s["window"], want, rtol=0, atol=1e-6)
        # the window moves by the stride
        page.evaluate(f"window.convscope.select({layer}, 0, 0, 0)")
        win = page.locator("[data-testid=window]")
        page.keyboard.press("ArrowRight")
        page.keyboard.press("ArrowDown")
        assert (int(win.get_attribute("data-y")), int(win.get_attribute("data-x"))) == (sh - pt, sw - pl)
        page.locator("[data-testid=play]").click()
        page.clock.run_for(PLAY_MS * 2 + 10)
        page.locator("[data-testid=play]").click()
        assert int(win.get_attribute("data-x")) == 3 * sw - pl
    with pytest.raises(Exception, match="select: layer 1 has no filter to slide; conv layers: 0, 2"):
        page.evaluate("window.convscope.select(1, 0, 0, 0)")


def test_what_if_arithmetic_is_convscope_shapes(page: Any) -> None:
    cases = [(n, f, s, p, d) for n in (1, 2, 5, 7, 13, 28, 32) for f in (1, 2, 3, 5, 7)
             for s in (1, 2, 3, 4, 8) for p in (0, 1, 2, 3) for d in (1, 2, 3)]
    got = page.evaluate("""cases => cases.map(c => {
        const A = window.convscopeArith, r = A.outSize(...c);
        return r.error ? null : [r.out, r.exact, A.formula(...c), A.fixes(...c), A.unseen(...c)];
    })""", cases)
    checked = 0
    for (n, f, s, p, d), js in zip(cases, got):
        try:
            want = conv_output_size(n, f, s, p, d)
        except ShapeError:
            assert js is None, (n, f, s, p, d)
            continue
        exact = (n + 2 * p - d * (f - 1) - 1) % s == 0
        assert js is not None and js[:2] == [want, exact], (n, f, s, p, d)
        assert js[2] == size_formula(n, f, s, (p, p), d), (n, f, s, p, d)
        assert js[3] == fit_suggestions(n, f, s, (p, p), d), (n, f, s, p, d)
        assert js[4] == unseen(n, f, s, (p, p), d), (n, f, s, p, d)
        checked += 1
    assert checked > 1000
    # the card of layer 0 (28 wide, F 5, P 2): P 0 and S 2 do not fit; reset gives 28 again
    out = page.locator("[data-testid=whatif-out-0]")
    assert out.get_attribute("data-out") == "28"
    page.locator("[data-testid=whatif-P-0]").fill("0")
    page.locator("[data-testid=whatif-S-0]").fill("2")
    assert out.get_attribute("data-out") == "12"
    assert "warn-nonint" in out.get_attribute("class")
    assert "(28 − 5) / 2 + 1 = 12.50: stride 2 does not fit" in out.inner_text()
    page.locator("[data-testid=whatif-reset-0]").click()
    assert out.get_attribute("data-out") == "28" and "warn" not in (out.get_attribute("class") or "")


def test_pipeline_scores_filters_and_confusion(page: Any, site: dict[str, Any]) -> None:
    data, model = site["data"], site["target"].saved.model
    im = data["images"][0]
    for i, l in enumerate(data["model"]["layers"]):
        if len(l["shape"]) == 3:
            assert page.locator(f".actmap[data-layer='{i}']").count() == min(l["shape"][0], 32)
    assert page.locator("[data-testid=predicted]").inner_text() == data["classes"][im["pred"]]
    assert page.locator("[data-testid=filters-0] canvas").count() == 6
    assert page.locator("[data-testid=filters-3] canvas").count() == 16 * 6
    cm = data["run"]["confusion"]
    counts = np.array(cm["counts"])
    cells = page.locator("[data-testid=confusion-table] button")
    assert cells.count() == counts.size
    assert sum(int(cells.nth(i).get_attribute("data-count")) for i in range(counts.size)) == cm["total"]
    t, p = np.unravel_index(np.argmax(counts), counts.shape)
    page.locator(f"[data-cell='{t},{p}']").click()
    assert page.locator("[data-testid=cell-images] canvas").count() == min(counts[t, p], 8)
    more = page.locator("[data-testid=cell-more]")
    assert (more.inner_text() == f"+{counts[t, p] - 8} more") if counts[t, p] > 8 else more.count() == 0
    off = [(a, b) for a, b in zip(*np.nonzero(counts)) if a != b]
    if off:
        a, b = off[0]
        page.locator(f"[data-cell='{a},{b}']").click()
        assert page.locator("[data-testid=cell-images] canvas").count() == min(counts[a, b], 8)
    # clicking a pool cell in the pipeline lights its receptive field on the input
    page.locator(".actmap[data-layer='2'][data-filter='1']").click(position={"x": 3, "y": 3})
    assert page.locator("[data-testid=rf-box]").get_attribute("data-top") == "0"


def test_screenshots_of_the_main_views(page: Any, site: dict[str, Any]) -> None:
    page.evaluate("window.convscope.select(0, 3, 0, 1)")
    shots = site["shots"]
    page.screenshot(path=str(shots / "explore-full.png"), full_page=True)
    for section in ("pipeline", "slide", "arith", "rf", "filters", "why", "training"):
        page.locator(f"#{section}").screenshot(path=str(shots / f"explore-{section}.png"))
    made = sorted(p.name for p in shots.iterdir())
    print(f"\nexplorer screenshots: {shots} ({', '.join(made)})")
    assert len(made) == 8 and all((shots / m).stat().st_size > 2000 for m in made)
