"""Test-time augmentation (``tta="flip"``): each image's class probabilities averaged with its
mirror image's, in evaluate, SavedModel.predict_proba and the train/evaluate/predict commands."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from convscope.cli import main
from convscope.data import Normalizer, load_dataset, tta_views
from convscope.io import load_model
from convscope.models import build_model
from convscope.train import evaluate

ARCH = [{"type": "conv", "filters": 4, "size": 3, "pad": 1}, {"type": "batchnorm"},
        {"type": "relu"}, {"type": "pool", "size": 2}, {"type": "fc", "units": "classes"}]


def _data(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return (rng.integers(0, 256, size=(n, 1, 8, 8)).astype(np.uint8),
            rng.integers(0, 3, n).astype(np.int64))


def _model(seed: int = 0):
    model = build_model(ARCH, (1, 8, 8), 3, seed=seed)
    model.eval()
    return model


def _softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


def test_views_are_the_images_and_their_mirror_images() -> None:
    x, _ = _data(3)
    (same,) = tta_views(x, "none")
    assert same is x
    plain, mirror = tta_views(x, "flip")
    assert plain is x
    np.testing.assert_array_equal(mirror[..., 0], x[..., -1])  # left-right: W reversed, H kept
    np.testing.assert_array_equal(mirror[:, :, 0, :], x[:, :, 0, ::-1])
    with pytest.raises(ValueError, match="tta must be one of none, flip, got 'rotate'"):
        tta_views(x, "rotate")


@pytest.mark.parametrize("batch_size", [7, 500])
def test_flip_evaluation_averages_the_two_views_probabilities(batch_size: int) -> None:
    x, y = _data(40)
    model, norm = _model(), Normalizer.fit(x)
    p = (_softmax(model.predict(norm(x)).astype(np.float64))
         + _softmax(model.predict(norm(x[..., ::-1].copy())).astype(np.float64))) / 2
    ev = evaluate(model, x, y, normalizer=norm, num_classes=3, batch_size=batch_size, tta="flip")
    pred = p.argmax(1)
    assert ev.correct == int((pred == y).sum()) and ev.total == 40
    np.testing.assert_array_equal(ev.confusion, np.histogram2d(y, pred, bins=[range(4)] * 2)[0])
    assert ev.loss == pytest.approx(-np.log(p[np.arange(40), y]).mean(), rel=1e-5)
    one = evaluate(model, x, y, normalizer=norm, num_classes=3)
    assert ev.loss != pytest.approx(one.loss, rel=1e-6)  # not the one-view evaluation
    mirrored = evaluate(model, x[..., ::-1].copy(), y, normalizer=norm, num_classes=3, tta="flip")
    assert mirrored.loss == pytest.approx(ev.loss, rel=1e-6)  # the same two views, swapped
    with pytest.raises(ValueError, match="tta must be one of none, flip, got 'both'"):
        evaluate(model, x, y, normalizer=norm, tta="both")


def test_flip_is_the_one_view_result_on_mirror_symmetric_images() -> None:
    x, y = _data(30)
    x = np.concatenate([x[..., :4], x[..., :4][..., ::-1]], axis=-1)  # each row a palindrome
    model, norm = _model(1), Normalizer.fit(x)
    one = evaluate(model, x, y, normalizer=norm, num_classes=3)
    both = evaluate(model, x, y, normalizer=norm, num_classes=3, tta="flip")
    np.testing.assert_array_equal(both.confusion, one.confusion)
    assert both.loss == pytest.approx(one.loss, rel=1e-5)


# ---------------------------------------------------------------------------------------------
# the commands and the model file


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    """One epoch on 200 fashion-small images, with --tta flip."""
    out = tmp_path_factory.mktemp("tta") / "run"
    assert main(["train", "--data", "fashion-small", "--arch", "lecture", "--epochs", "1",
                 "--limit", "200", "--seed", "3", "--quiet", "--tta", "flip", "--out",
                 str(out)]) == 0
    return out


def test_train_reports_both_accuracies_and_evaluate_repeats_them(run: Path, capsys) -> None:
    capsys.readouterr()
    results = json.loads((run / "results.json").read_text())
    assert results["tta"] == "flip" and results["test_images"] == 200
    saved = load_model(run / "model.safetensors")
    ds = load_dataset("fashion-small")
    x, y = ds.x_test[:200], ds.y_test[:200]
    for tta, key in (("none", "test_accuracy"), ("flip", "test_accuracy_tta")):
        assert main(["evaluate", str(run / "model.safetensors"), "--limit", "200", "--json",
                     "--tta", tta]) == 0
        data = json.loads(capsys.readouterr().out)
        assert data["tta"] == tta and data["accuracy"] == pytest.approx(results[key])
        p = saved.predict_proba(x, tta=tta)
        assert results[key] == pytest.approx(float((p.argmax(1) == y).mean()))
    assert saved.metadata["training"]["test_accuracy_tta"] == results["test_accuracy_tta"]
    # each evaluation its own picture beside the model: the flip one never over the one-view one
    assert (run / "confusion-test.png").is_file() and (run / "confusion-test-flip.png").is_file()


def test_train_prints_the_flip_accuracy(tmp_path: Path, capsys) -> None:
    assert main(["train", "--data", "fashion-small", "--arch", "lecture", "--epochs", "1",
                 "--limit", "60", "--seed", "0", "--quiet", "--val-fraction", "0", "--tta",
                 "flip", "--out", str(tmp_path / "r")]) == 0
    out = capsys.readouterr().out.splitlines()
    results = json.loads((tmp_path / "r" / "results.json").read_text())
    assert out[1] == (f"test accuracy with test-time augmentation flip: "
                      f"{100 * results['test_accuracy_tta']:.2f}% "
                      f"({results['test_correct_tta']}/60; each image and its mirror image)")


def test_predict_probabilities_are_the_mean_of_the_two_views(run: Path, tmp_path: Path,
                                                             capsys) -> None:
    from PIL import Image

    saved = load_model(run / "model.safetensors")
    x = load_dataset("fashion-small").x_test[:3]
    files = []
    for i, img in enumerate(x):
        files.append(tmp_path / f"f{i}.png")
        Image.fromarray(img[0]).save(files[-1])
    capsys.readouterr()
    assert main(["predict", str(run / "model.safetensors"), *map(str, files), "--json",
                 "--tta", "flip", "-k", "10", "--invert", "no"]) == 0
    preds = json.loads(capsys.readouterr().out)
    want = (saved.predict_proba(x) + saved.predict_proba(x[..., ::-1].copy())) / 2
    np.testing.assert_allclose(saved.predict_proba(x, tta="flip"), want, rtol=1e-12)
    for pred, row in zip(preds, want):
        got = np.zeros(len(row))
        got[pred["indices"]] = pred["probabilities"]
        np.testing.assert_allclose(got, row, rtol=1e-4, atol=1e-7)  # one image per batch there


def test_a_bad_tta_is_one_line(capsys) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["evaluate", "m.safetensors", "--tta", "rotate"])
    err = capsys.readouterr().err.strip().splitlines()
    assert exc.value.code == 2 and "--tta: invalid choice: 'rotate'" in err[-1]
