"""The explorer's data and file, without a browser: the engine's numbers, the receptive-field
arithmetic against brute force, saliency against finite differences, one deterministic offline
file under the size budget, and the command."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from convscope import AvgPool2D, Conv2D, Sequential
from convscope.cli import main
from convscope.formats.architecture import build_model
from convscope.formats.model_file import load_model
from convscope.inspect.explore import (explorer_data, explorer_html, floats, load_target,
                                       model_record, randomized_copy, receptive_field,
                                       saliency_maps, write_explorer)
from convscope.inspect.explore.build import THUMBS_PER_CELL
from explore_common import make_run


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_run(tmp_path_factory.mktemp("runs") / "lenet5-digits", images=800)


@pytest.fixture(scope="module")
def built(run: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    target = load_target(run)
    from convscope.inspect.explore import build_explorer

    data = build_explorer(target)
    out = tmp_path_factory.mktemp("page") / "explore.html"
    write_explorer(target, out=out)
    return {"target": target, "data": data, "path": out}


def test_two_builds_are_byte_identical_and_small(built: dict[str, Any], tmp_path: Path) -> None:
    again = write_explorer(load_target(built["target"].run_dir), out=tmp_path / "again.html")
    a, b = built["path"].read_bytes(), again.read_bytes()
    assert hashlib.sha256(a).hexdigest() == hashlib.sha256(b).hexdigest()
    assert len(built["data"]["images"]) == 8
    assert len(a) < 5 * 1024 * 1024, f"{len(a):,} bytes for LeNet-5 with 8 probe images"


def test_the_file_is_self_contained(built: dict[str, Any]) -> None:
    text = built["path"].read_text(encoding="utf-8")
    assert "http://" not in text and "https://" not in text
    assert not re.search(r"<(script|img|link|iframe)[^>]*\s(src|href)=", text)
    assert "url(" not in text and "@import" not in text
    assert text.count("<script") == 2  # the data and the page's code, both inline
    assert "<noscript>" in text and "Conv2D(1, 6, kernel_size=5x5, padding=2)" in text
    assert "matplotlib" not in text


def test_every_layer_output_is_the_engines(built: dict[str, Any]) -> None:
    saved = built["target"].saved
    data = built["data"]
    layers = saved.model.layers
    for im in data["images"][:3]:
        x = floats(im["input"])[None].astype(np.float32)
        for i, layer in enumerate(layers):
            x = layer.forward(x)
            rec = im["outputs"][i]
            if rec is None:
                assert layer.identity_at_inference
                continue
            np.testing.assert_array_equal(floats(rec), x[0])
        probs = saved.predict_proba(floats(im["pixels"])[None])[0]
        np.testing.assert_allclose(im["probs"], probs, atol=1e-6)
        assert im["pred"] == int(np.argmax(probs))


def test_model_record_has_the_lecture_numbers() -> None:
    net = build_model("lecture", (3, 32, 32), 10, seed=0)
    rec = model_record(net)
    first = rec["layers"][0]
    assert first["shape"] == [6, 28, 28] and first["formula"] == "5·5·3·6 + 6 = 456"
    assert first["macs"] == 28 * 28 * 6 * 75
    assert first["window"] == {"k": [5, 5], "s": [1, 1], "p": [[0, 0], [0, 0]], "d": [1, 1]}
    assert "/ 1 + 1 = 28" in first["text"] and "28×28×6" in first["text"]  # explain's sentence
    assert rec["total_params"] == net.summary().total_params
    np.testing.assert_array_equal(floats(first["conv"]["weight"]), net.layers[0].params["weight"])


def _rf_by_gradient(model: Sequential, layer: int, c: int, y: int, x: int) -> tuple[int, ...] | None:
    """The bounding box of the input pixels whose gradient on cell (c, y, x) of ``layer`` is not
    zero: for a linear net with positive weights, exactly the receptive field."""
    inp = np.ones((1, *model.input_shape))
    outs = [inp]
    for l in model.layers[:layer + 1]:
        outs.append(l.forward(outs[-1]))
    dy = np.zeros_like(outs[-1])
    dy[0, c, y, x] = 1.0
    for l in reversed(model.layers[:layer + 1]):
        dy = l.backward(dy)
    ys, xs = np.nonzero(np.abs(dy[0]).sum(axis=0))
    if not len(ys):
        return None  # a window of padding only
    return int(ys.min()), int(xs.min()), int(ys.max()), int(xs.max())


F64 = {"dtype": np.float64}


@pytest.mark.parametrize("stack", [
    lambda: [Conv2D(2, 3, 3, padding=1, **F64), AvgPool2D(2),
             Conv2D(3, 2, 3, stride=2, dilation=2, **F64)],
    lambda: [Conv2D(2, 2, 5, stride=2, padding=2, **F64),
             Conv2D(2, 3, (3, 1), padding=(0, 1), **F64), AvgPool2D(3, 1)],
])
def test_receptive_field_is_what_the_gradient_reaches(stack: Any) -> None:
    model = Sequential(*stack(), input_shape=(2, 19, 17), seed=0)
    for l in model.layers:  # positive weights: no gradient cancels to zero
        if l.params:
            l.params["weight"][...] = np.abs(l.params["weight"]) + 0.1
    rec = model_record(model)["layers"]
    rng = np.random.default_rng(0)
    for layer, l in enumerate(model.layers):
        c, h, w = rec[layer]["shape"]
        for _ in range(6):
            y, x = int(rng.integers(h)), int(rng.integers(w))
            rf = receptive_field(rec, layer, y, x)
            got = None if rf is None else (rf["top"], rf["left"], rf["bottom"], rf["right"])
            assert got == _rf_by_gradient(model, layer, 0, y, x), (layer, y, x)


def test_saliency_is_the_input_gradient(built: dict[str, Any]) -> None:
    saved = built["target"].saved
    m64 = build_model(saved.architecture, saved.input_shape, len(saved.classes),
                      dtype=np.float64)
    m64.load_state_dict(saved.model.state_dict())
    m64.eval()
    x = saved.preprocess(floats(built["data"]["images"][0]["pixels"])[None])[0].astype(np.float64)
    x += np.random.default_rng(2).normal(0, 0.01, x.shape)  # no ties in a max pool: differentiable
    target = 3
    sal, cam, cam_at = saliency_maps(m64, x, target)
    assert cam_at is not None and cam.shape == tuple(saved.model.layers[cam_at].output_shape(
        tuple(m64.shapes()[cam_at])))[1:]
    assert sal.shape == x.shape[1:] and (cam >= 0).all()
    h = 1e-6
    rng = np.random.default_rng(1)
    for _ in range(12):
        i, j = int(rng.integers(x.shape[1])), int(rng.integers(x.shape[2]))
        xp, xm = x.copy(), x.copy()
        xp[0, i, j] += h
        xm[0, i, j] -= h
        fd = (m64.predict(xp[None])[0, target] - m64.predict(xm[None])[0, target]) / (2 * h)
        assert abs(abs(fd) - sal[i, j]) < 1e-5 * max(1.0, sal[i, j]), (i, j, fd, sal[i, j])
    assert not any(np.abs(g).sum() for g in m64.grads.values()), "parameter gradients left over"


def test_randomised_copy_changes_every_weight_and_not_the_model(built: dict[str, Any]) -> None:
    model = built["target"].saved.model
    before = {k: v.copy() for k, v in model.params.items()}
    twin = randomized_copy(model, seed=0)
    again = randomized_copy(model, seed=0)
    for k, v in model.params.items():
        np.testing.assert_array_equal(v, before[k])
        assert twin.params[k].shape == v.shape and not np.array_equal(twin.params[k], v)
        np.testing.assert_array_equal(twin.params[k], again.params[k])
    why = built["data"]["images"][0]["why"]
    assert not np.array_equal(floats(why["saliency"]), floats(why["random_saliency"]))
    assert -1 <= why["saliency_rank_correlation"] <= 1


def test_confusion_cells_add_up(built: dict[str, Any]) -> None:
    cm = built["data"]["run"]["confusion"]
    target = built["target"]
    counts = np.array(cm["counts"])
    assert counts.sum() == cm["total"] == len(target.y_test)
    assert np.trace(counts) == cm["correct"]
    thumbs = floats(cm["thumbs"])
    for cell, slots in cm["cells"].items():
        t, p = map(int, cell.split(","))
        assert len(slots) == min(counts[t, p], THUMBS_PER_CELL)
        for s in slots:
            assert target.y_test[cm["indices"][s]] == t
            np.testing.assert_array_equal(thumbs[s], target.x_test[cm["indices"][s]])
    assert built["data"]["run"]["history"][-1]["epoch"] == 2


def test_explore_command(run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from PIL import Image

    img = tmp_path / "digit.png"
    Image.fromarray(255 - load_target(run).x_test[0, 0]).save(img)  # black on white: inverted
    out = tmp_path / "mine.html"
    assert main(["explore", str(run / "model.safetensors"), str(img), "--out", str(out)]) == 0
    assert capsys.readouterr().out.strip() == f"explorer: {out}"
    assert out.stat().st_size > 10_000
    assert main(["explore", str(tmp_path / "nothing")]) == 1
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "no such model file or run folder" in err


def test_a_model_without_a_dataset_needs_images(run: Path, tmp_path: Path) -> None:
    saved = load_model(run / "model.safetensors")
    data = explorer_data(saved.model, saved.classes, np.zeros((1, 1, 28, 28), np.uint8),
                         saved.preprocess)
    page = explorer_html(data)
    assert data["run"] is None and "cs-data" in page
    with pytest.raises(ValueError, match=r"probe images must be uint8 \(N, 1, 28, 28\)"):
        explorer_data(saved.model, saved.classes, np.zeros((1, 3, 28, 28), np.uint8),
                      saved.preprocess)
