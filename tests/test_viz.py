"""Pictures: each PNG is written with the expected tiles, and what the tiles show is checked
pixel by pixel against numbers computed here independently (the layers' real outputs from a
forward pass and the loop reference convolution, the weights, the confusion counts)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("matplotlib", reason="the pictures need matplotlib (convscope[viz])")
Image = pytest.importorskip("PIL.Image", reason="the pictures need Pillow (convscope[viz])")

import matplotlib  # noqa: E402

import convscope as cs  # noqa: E402
from convscope import viz  # noqa: E402
from convscope.naive import conv2d as naive_conv2d  # noqa: E402


def lecture_net(seed: int = 0) -> cs.Sequential:
    return cs.Sequential(cs.Conv2D(3, 6, 5), cs.ReLU(), cs.Conv2D(6, 10, 5), cs.ReLU(),
                         cs.MaxPool2D(2), cs.Flatten(), cs.Linear(None, 10),
                         input_shape=(3, 32, 32), seed=seed)


def png(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        assert im.mode == "RGB"
        return np.asarray(im).copy()


def tile_pixels(img: np.ndarray, tile: viz.Tile) -> np.ndarray:
    """The map pixels a tile shows: one sample per zoom × zoom block."""
    left, top, right, bottom = tile.box
    block = img[top:bottom, left:right]
    assert block.shape[0] % tile.zoom == 0 and block.shape[1] % tile.zoom == 0
    return block[::tile.zoom, ::tile.zoom]


def expected_gray(a: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """matplotlib's 'gray' colormap: level = 255 · (a − lo) / (hi − lo)."""
    return 255 * (a.astype(np.float64) - lo) / (hi - lo)


def test_activation_maps_are_the_layers_real_outputs(tmp_path: Path, rng: np.random.Generator) -> None:
    net = lecture_net()
    x = rng.normal(size=(3, 32, 32)).astype(np.float32)
    image = rng.integers(0, 256, size=(32, 32, 3), dtype=np.uint8)
    names = [f"class {k}" for k in range(10)]
    path = tmp_path / "car.png"
    pic = viz.activation_maps(net, x, path, image=image, classes=names, label=4)
    img = png(path)
    assert img.shape == (pic.height, pic.width, 3)
    assert [p.title for p in pic.panels] == ["input", "[0] CONV", "[1] RELU", "[2] CONV", "[3] RELU",
                                             "[4] POOL", "[6] FC"]
    # the numbers, computed independently: the loop reference conv, then the layers by hand
    w0, b0 = net[0].params["weight"].astype(np.float64), net[0].params["bias"].astype(np.float64)
    conv0 = naive_conv2d(x[None].astype(np.float64), w0, b0)[0]
    assert np.allclose(pic.panels[1].array, conv0, atol=1e-4)
    assert np.allclose(pic.panels[2].array, np.maximum(conv0, 0), atol=1e-4)
    y = x[None]
    outs = []
    for layer in net.layers:
        y = layer.forward(y)
        outs.append(y[0])
    for panel in pic.panels[1:-1]:
        assert np.array_equal(panel.array, outs[panel.layer])
    scores = net.predict(x[None])[0]
    assert np.allclose(pic.panels[-1].array, scores)
    assert pic.panels[-1].extra["predicted"] == int(np.argmax(scores))
    assert pic.panels[-1].extra["order"][:3] == list(np.argsort(-scores)[:3])
    # the pixels: every tile of every map column shows its map on the column's grey scale
    for panel in pic.panels[1:-1]:
        maps = outs[panel.layer]
        assert len(panel.tiles) == maps.shape[0]
        lo, hi = float(maps.min()), float(maps.max())
        assert (panel.vmin, panel.vmax) == (lo, hi)
        for tile, ch in zip(panel.tiles, panel.channels):
            left, top, right, bottom = tile.box
            assert (bottom - top, right - left) == (maps.shape[1] * tile.zoom, maps.shape[2] * tile.zoom)
            shown = tile_pixels(img, tile)
            assert np.array_equal(shown[..., 0], shown[..., 1])  # grey
            assert np.abs(shown[..., 0] - expected_gray(maps[ch], lo, hi)).max() <= 0.5 + 1e-6
    # the input column shows the image as given
    (tile,) = pic.panels[0].tiles
    assert np.array_equal(tile_pixels(img, tile), image)


def test_activation_maps_vectors_truncation_and_large_maps(tmp_path: Path,
                                                           rng: np.random.Generator) -> None:
    net = cs.Sequential(cs.Conv2D(1, 40, 3, padding=1), cs.ReLU(), cs.Flatten(), cs.Linear(None, 7),
                        cs.Tanh(), cs.Linear(None, 3), input_shape=(1, 120, 100), seed=1)
    x = rng.normal(size=(1, 120, 100)).astype(np.float32)
    pic = viz.activation_maps(net, x, tmp_path / "a.png", max_maps=12, max_rows=4)
    img = png(tmp_path / "a.png")
    conv = pic.panels[1]
    assert len(conv.tiles) == 12 and conv.channels == list(range(12))  # first 12 of 40 maps
    tile = conv.tiles[5]
    assert tile.step > 1 and tile.zoom == 1  # a 120x100 map is drawn every step-th pixel
    shown = tile_pixels(img, tile)[..., 0]
    ref = conv.array[5][::tile.step, ::tile.step]
    assert shown.shape == ref.shape
    lo, hi = float(conv.array[:12].min()), float(conv.array[:12].max())
    assert np.abs(shown - expected_gray(ref, lo, hi)).max() <= 0.5 + 1e-6
    # the hidden vectors (7 numbers after Linear, after Tanh) are grids of cells, row by row
    vec = [p for p in pic.panels if p.title in ("[3] FC", "[4] TANH")]
    assert len(vec) == 2
    for panel in vec:
        grid = panel.extra["grid"]
        assert grid.shape == (3, 3) and np.isnan(grid.flat[7:]).all()
        cells = tile_pixels(img, panel.tiles[0])[..., 0]
        got = cells.reshape(-1)[:7]
        assert np.abs(got - expected_gray(panel.array, panel.vmin, panel.vmax)).max() <= 0.5 + 1e-6
    assert pic.panels[-1].extra["classes"] == ["class 0", "class 1", "class 2"]


def test_filter_grid_rgb_first_layer(tmp_path: Path) -> None:
    net = lecture_net(3)
    pic = viz.filter_grid(net, path=tmp_path / "f.png")
    img = png(tmp_path / "f.png")
    panel = pic.panels[0]
    w = net[0].params["weight"].astype(np.float64)  # (6, 3, 5, 5)
    m = np.abs(w).max()
    assert panel.extra["mode"] == "rgb" and len(panel.tiles) == 6 and panel.channels == list(range(6))
    assert (panel.vmin, panel.vmax) == (-m, m)
    for tile, k in zip(panel.tiles, panel.channels):
        shown = tile_pixels(img, tile)
        assert shown.shape == (5, 5, 3)
        want = 255 * np.clip(0.5 + w[k].transpose(1, 2, 0) / (2 * m), 0, 1)
        assert np.abs(shown - want).max() <= 0.5 + 1e-6


def test_filter_grid_channels_and_mean(tmp_path: Path) -> None:
    net = lecture_net(4)
    w = net[2].params["weight"].astype(np.float64)  # (10, 6, 5, 5)
    m = np.abs(w).max()
    lut = np.round(matplotlib.colormaps["RdBu_r"](np.linspace(0, 1, 256))[:, :3] * 255)
    pic = viz.filter_grid(net, 2, tmp_path / "c.png", max_filters=7, max_channels=4)
    img = png(tmp_path / "c.png")
    panel = pic.panels[0]
    assert panel.extra["mode"] == "channels" and len(panel.tiles) == 7 * 4
    for tile, code in zip(panel.tiles, panel.channels):
        k, c = divmod(code, 6)
        idx = np.clip(np.rint((w[k, c] + m) / (2 * m) * 255), 0, 255).astype(int)
        assert np.array_equal(tile_pixels(img, tile), lut[idx])
    # tiles sit in a grid: same row, same top; same column, same left
    tops = {t.box[1] for t in panel.tiles[:4]}
    lefts = {panel.tiles[r * 4].box[0] for r in range(7)}
    assert len(tops) == 1 and len(lefts) == 1
    pic = viz.filter_grid(net, 2, tmp_path / "m.png", mode="mean")
    img = png(tmp_path / "m.png")
    panel = pic.panels[0]
    assert len(panel.tiles) == 10
    mean = w.mean(axis=1)
    for tile, k in zip(panel.tiles, panel.channels):
        idx = np.clip(np.rint((mean[k] + m) / (2 * m) * 255), 0, 255).astype(int)
        assert np.array_equal(tile_pixels(img, tile), lut[idx])


def test_filter_grid_errors() -> None:
    net = lecture_net()
    with pytest.raises(ValueError, match=r"layer 1 is not a conv layer \(no filters to draw\); "
                                         r"conv layers are at \[0, 2\]"):
        viz.filter_grid(net, 1)
    with pytest.raises(ValueError, match="mode='rgb' needs filters of depth 3, layer 2 has depth 6"):
        viz.filter_grid(net, 2, mode="rgb")
    with pytest.raises(ValueError, match="has no conv layer"):
        viz.filter_grid(cs.Sequential(cs.Flatten(), cs.Linear(4, 2), input_shape=(1, 2, 2)))
    with pytest.raises(ValueError, match="unknown colormap 'nope'"):
        viz.filter_grid(net, 2, cmap="nope")


def test_training_curves_draw_the_history(tmp_path: Path) -> None:
    history = [{"epoch": e, "train_loss": 2.0 / e, "val_loss": 2.5 / e, "train_accuracy": 1 - 0.4 / e,
                "val_accuracy": 1 - 0.5 / e, "lr": 0.1} for e in range(1, 6)]
    pic = viz.training_curves(history, tmp_path / "curves.png")
    assert Image.open(tmp_path / "curves.png").size == (pic.width, pic.height)
    loss, acc = pic.panels
    (n1, x1, y1), (n2, x2, y2) = loss.extra["lines"]
    assert (n1, n2) == ("train", "validation") and x1 == [1, 2, 3, 4, 5]
    assert y1 == [h["train_loss"] for h in history] and y2 == [h["val_loss"] for h in history]
    assert [round(v, 9) for v in acc.extra["lines"][1][2]] == [
        round(100 * h["val_accuracy"], 9) for h in history]
    only_train = viz.training_curves([{"epoch": 1, "train_loss": 1.0, "train_accuracy": 0.5}])
    assert [name for name, _, _ in only_train.panels[0].extra["lines"]] == ["train"]
    with pytest.raises(ValueError, match="history is empty"):
        viz.training_curves([])


def test_confusion_matrix_counts_and_picture(tmp_path: Path, rng: np.random.Generator) -> None:
    y = rng.integers(0, 4, 300)
    p = np.where(rng.random(300) < 0.6, y, rng.integers(0, 4, 300))
    cm = viz.confusion_matrix(y, p, 4)
    loop = np.zeros((4, 4), int)
    for t, q in zip(y, p):
        loop[t, q] += 1
    assert np.array_equal(cm, loop) and cm.sum() == 300
    pic = viz.confusion_plot(cm, ["cat", "dog", "bird", "fish"], tmp_path / "cm.png")
    img = png(tmp_path / "cm.png")
    panel = pic.panels[0]
    assert len(panel.tiles) == 16
    lut = np.round(matplotlib.colormaps["Blues"](np.linspace(0, 1, 256))[:, :3] * 255)
    share = cm / cm.sum(axis=1, keepdims=True)
    for tile, code in zip(panel.tiles, panel.channels):
        r, c = divmod(code, 4)
        left, top, _, _ = tile.box
        corner = img[top:top + 3, left:left + 3]  # the count is written in the middle
        assert np.array_equal(corner, np.broadcast_to(lut[int(np.rint(share[r, c] * 255))], (3, 3, 3)))
    with pytest.raises(ValueError, match=r"y_true must hold integer classes 0..3"):
        viz.confusion_matrix([0, 5], [0, 1], 4)
    with pytest.raises(ValueError, match="classes has 2 names but the matrix is 4×4"):
        viz.confusion_plot(cm, ["a", "b"])


def test_prediction_grid(tmp_path: Path, rng: np.random.Generator) -> None:
    images = rng.integers(0, 256, (5, 1, 28, 28), dtype=np.uint8)
    pic = viz.prediction_grid(images, [0, 1, 2, 1, 0], ["a", "b", "c"], tmp_path / "p.png",
                              y_true=[0, 1, 1, 1, 0], cols=3)
    img = png(tmp_path / "p.png")
    assert len(pic.panels[0].tiles) == 5
    for tile, i in zip(pic.panels[0].tiles, pic.panels[0].channels):
        assert np.array_equal(tile_pixels(img, tile)[..., 0], images[i, 0])


def test_saving_is_atomic_and_picture_helpers(tmp_path: Path) -> None:
    pic = viz.filter_grid(lecture_net(), path=tmp_path / "sub" / "f.png")
    assert sorted(p.name for p in (tmp_path / "sub").iterdir()) == ["f.png"]  # no temp files left
    assert pic.data_uri().startswith("data:image/png;base64,iVBORw0KGgo")
    assert pic._repr_png_() == (tmp_path / "sub" / "f.png").read_bytes()


def test_missing_matplotlib_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    with pytest.raises(ImportError, match=r"pip install 'convscope\[viz\]'"):
        viz.training_curves([{"epoch": 1, "train_loss": 1.0}])


# ---------------------------------------------------------------------------------------------
# the command line: convscope viz, and evaluate's confusion matrix


def test_cli_viz_and_evaluate_confusion(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                        capsys: pytest.CaptureFixture[str],
                                        rng: np.random.Generator) -> None:
    from convscope.cli import main
    from convscope.data import Normalizer, load_dataset
    from convscope.io import save_model
    from convscope.models import build_model

    ds = load_dataset("digits")
    model = build_model("lecture", ds.input_shape, 10, seed=0)
    run = tmp_path / "run"
    path = save_model(run / "model.safetensors", model, ds.classes,
                      normalization=Normalizer.fit(ds.x_train[:200]), dataset="digits",
                      arch_name="lecture")
    (run / "metrics.jsonl").write_text('{"epoch": 1, "train_loss": 1.5, "train_accuracy": 0.5}\n'
                                       '{"epoch": 2, "train_loss": 0.9, "train_accuracy": 0.7}\n')
    monkeypatch.chdir(tmp_path)
    assert main(["viz", "filters", str(path), "--layer", "all"]) == 0
    assert capsys.readouterr().out.split() == ["filters-layer0.png", "filters-layer2.png"]
    assert main(["viz", "activations", str(path), "--index", "3"]) == 0
    assert capsys.readouterr().out.strip() == "activations-digits-3.png"
    assert (tmp_path / "activations-digits-3.png").stat().st_size > 1000
    photo = tmp_path / "photo.png"
    Image.fromarray(rng.integers(0, 256, (40, 50, 3), dtype=np.uint8)).save(photo)
    assert main(["viz", "activations", "lecture", str(photo), "--out", "lecture.png"]) == 0
    assert "(untrained weights)" in capsys.readouterr().err
    with Image.open(tmp_path / "lecture.png") as im:
        assert im.size[0] > 600
    assert main(["viz", "curves", str(run)]) == 0
    assert (tmp_path / "curves.png").is_file()
    assert main(["viz", "filters", str(path), "--layer", "1"]) == 1
    assert "layer 1 is not a conv layer; conv layers: [0, 2]" in capsys.readouterr().err
    assert main(["viz", "activations", str(path), "--index", "5000"]) == 1
    assert "--index must be in 0..999, got 5000" in capsys.readouterr().err
    # evaluate draws the confusion matrix beside a model in a run folder, or where told
    assert main(["evaluate", str(path), "--limit", "60"]) == 0
    assert (run / "confusion-test.png").is_file()
    assert main(["evaluate", str(path), "--limit", "60", "--confusion", "cm.png"]) == 0
    assert (tmp_path / "cm.png").is_file()


# ---------------------------------------------------------------------------------------------
# blocks and traits: nested Sequential, a user's layer with filters, a user's inference identity


def test_activation_maps_and_filters_inside_a_block(tmp_path: Path, rng: np.random.Generator) -> None:
    net = cs.Sequential(cs.Conv2D(3, 6, 5), cs.ReLU(),
                        cs.Sequential(cs.Conv2D(6, 10, 5), cs.ReLU(), cs.Dropout(0.5)),
                        cs.MaxPool2D(2), cs.Flatten(), cs.Linear(None, 10),
                        input_shape=(3, 32, 32), seed=0)
    x = rng.normal(size=(3, 32, 32)).astype(np.float32)
    pic = viz.activation_maps(net, x, tmp_path / "a.png")
    assert [p.title for p in pic.panels] == ["input", "[0] CONV", "[1] RELU", "[2.0] CONV",
                                             "[2.1] RELU", "[3] POOL", "[5] FC"]
    assert [p.layer for p in pic.panels] == [None, 0, 1, "2.0", "2.1", 3, 5]
    # the arrays drawn are the layers' real outputs, computed here by hand, layer by layer
    y = x[None]
    for layer in (net[0], net[1], net[2][0]):
        y = layer.eval().forward(y)
    np.testing.assert_allclose(pic.panels[3].array, y[0], rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(pic.panels[4].array, np.maximum(y[0], 0), rtol=1e-6, atol=1e-6)
    img = png(tmp_path / "a.png")
    maps = pic.panels[3].array
    lo, hi = float(maps.min()), float(maps.max())
    shown = tile_pixels(img, pic.panels[3].tiles[2])[..., 0]
    assert np.abs(shown - expected_gray(maps[2], lo, hi)).max() <= 0.5 + 1e-6
    assert "forward" not in net[2][0].__dict__  # the recording wrappers are gone
    # filters: the block's conv is found by its label
    assert [label for label, _ in viz.filter_layers(net)] == ["0", "2.0"]
    pic = viz.filter_grid(net, "2.0", tmp_path / "f.png", mode="mean")
    assert pic.panels[0].layer == "2.0" and pic.panels[0].title.startswith("[2.0] CONV: 10 filters")
    assert np.allclose(pic.panels[0].array, net[2][0].params["weight"].mean(axis=1))
    with pytest.raises(ValueError, match=r"conv layers are at \[0, 2\.0\]"):
        viz.filter_grid(net, "2.1")


class _Shift(cs.Layer):
    """A user's layer that is the identity when predicting (like dropout): x + 1 in training."""

    identity_at_inference = True

    def forward(self, x: np.ndarray) -> np.ndarray:
        return x + 1 if self.training else x


class _Filters(cs.Layer):
    """A user's layer with filters (not a Conv2D): found by its ``shows_filters`` trait."""

    shows_filters = True

    def __init__(self) -> None:
        super().__init__()
        self.conv = cs.Conv2D(1, 4, 3, seed=0)
        self.params = self.conv.params  # weight (K, D, kH, kW), as the trait promises

    def output_shape(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        return self.conv.output_shape(input_shape)

    def forward(self, x: np.ndarray) -> np.ndarray:
        return self.conv.forward(x)


def test_pictures_ask_traits_not_classes(tmp_path: Path, rng: np.random.Generator) -> None:
    net = cs.Sequential(_Filters(), _Shift(), cs.ReLU(), cs.Flatten(), cs.Linear(None, 3),
                        input_shape=(1, 8, 8), seed=0)
    pic = viz.activation_maps(net, rng.normal(size=(1, 8, 8)).astype(np.float32))
    assert [p.title for p in pic.panels] == ["input", "[0] _FILTERS", "[2] RELU", "[4] FC"]
    assert pic.panels[0].extra["model_input"].shape == (1, 8, 8)
    pic = viz.filter_grid(net)
    assert pic.panels[0].layer == 0 and len(pic.panels[0].tiles) == 4
    assert np.allclose(pic.panels[0].array, net[0].params["weight"][:, 0])  # one channel: 'mean'
