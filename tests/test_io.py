"""Model files: the round trip, interoperability with safetensors, and every refusal; image
prediction for files of any size and colour."""

from __future__ import annotations

import json
import os
import struct
from pathlib import Path

import numpy as np
import pytest

import convscope as cs
from convscope.data import Normalizer, load_dataset
from convscope.io import (CHECKPOINT_FORMAT, FORMAT_VERSION, MODEL_FORMAT, ModelFileError,
                          atomic_write, estimate_background, load_model, read_metadata,
                          read_safetensors, save_model, write_safetensors)
from convscope.models import architecture_of, build_model

PIL = pytest.importorskip("PIL")
from PIL import Image  # noqa: E402

CLASSES = [f"c{i}" for i in range(10)]


def _model(seed: int = 0):
    return build_model([{"type": "conv", "filters": 4, "size": 3, "pad": 1},
                        {"type": "batchnorm"}, {"type": "relu"}, {"type": "pool", "size": 2},
                        {"type": "dropout", "p": 0.1}, {"type": "fc", "units": "classes"}],
                       (1, 8, 8), 10, seed=seed)


@pytest.fixture
def saved(tmp_path: Path) -> tuple[Path, object]:
    model = _model()
    # make the batch-norm buffers non-trivial, as after training
    model.forward(np.random.default_rng(0).normal(size=(6, 1, 8, 8)).astype(np.float32))
    path = save_model(tmp_path / "m.safetensors", model, CLASSES,
                      normalization=Normalizer((0.25,), (0.5,)), background=0, dataset="toy",
                      arch_name="toy", training={"test_accuracy": 0.5})
    return path, model


def _rewrite_header(path: Path, edit) -> None:
    raw = path.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + n])
    edit(header)
    new = json.dumps(header).encode()
    new += b" " * (-len(new) % 8)
    path.write_bytes(struct.pack("<Q", len(new)) + new + raw[8 + n:])


def test_round_trip_gives_the_same_model_and_metadata(saved) -> None:
    path, model = saved
    loaded = load_model(path)
    assert loaded.classes == CLASSES
    assert loaded.input_shape == (1, 8, 8)
    assert loaded.architecture == architecture_of(model)
    assert loaded.normalization == Normalizer((0.25,), (0.5,))
    assert loaded.background == 0
    meta = loaded.metadata
    assert meta["dataset"] == "toy" and meta["training"]["test_accuracy"] == 0.5
    assert meta["convscope_version"]
    own, other = model.state_dict(), loaded.model.state_dict()
    assert list(own) == list(other)
    for k in own:
        assert own[k].dtype == other[k].dtype
        np.testing.assert_array_equal(own[k], other[k])
    x = np.random.default_rng(1).integers(0, 256, size=(5, 1, 8, 8), dtype=np.uint8)
    expected = model.predict(Normalizer((0.25,), (0.5,))(x))
    probs = loaded.predict_proba(x)
    e = np.exp(expected - expected.max(1, keepdims=True))
    np.testing.assert_allclose(probs, e / e.sum(1, keepdims=True), rtol=1e-5, atol=1e-7)
    assert read_metadata(path)["classes"] == CLASSES


def test_files_are_plain_safetensors_both_ways(saved, tmp_path: Path) -> None:
    from safetensors import safe_open
    from safetensors.numpy import save_file

    path, model = saved
    with safe_open(str(path), framework="np") as f:
        assert f.metadata()["format"] == MODEL_FORMAT
        assert f.metadata()["format_version"] == str(FORMAT_VERSION)
        meta = json.loads(f.metadata()["convscope"])
        assert meta["architecture"] == architecture_of(model)
        for k, v in model.state_dict().items():
            np.testing.assert_array_equal(f.get_tensor(k), v)
    # a file written by the safetensors library itself reads back the same
    arrays = {"a": np.arange(6, dtype=np.float64).reshape(2, 3), "b": np.array(7, np.int64),
              "c": np.zeros((0, 2), np.float32), "d": np.arange(3, dtype=np.uint8)}
    other = tmp_path / "lib.safetensors"
    save_file(arrays, str(other), metadata={"format": CHECKPOINT_FORMAT,
                                            "format_version": str(FORMAT_VERSION),
                                            "convscope": json.dumps({"x": 1})})
    back, meta = read_safetensors(other, CHECKPOINT_FORMAT)
    assert meta == {"x": 1}
    for k, v in arrays.items():
        assert back[k].dtype == v.dtype and back[k].shape == v.shape
        np.testing.assert_array_equal(back[k], v)


def test_other_format_version_is_refused(saved) -> None:
    path, _ = saved
    later = str(FORMAT_VERSION + 1)
    _rewrite_header(path, lambda h: h["__metadata__"].update(format_version=later))
    with pytest.raises(ModelFileError, match=f"format version {later} but this convscope .* reads "
                                             f"versions 1, {FORMAT_VERSION}; use the convscope"):
        load_model(path)


#: What convscope wrote as format version 1: pools as "pool" + "kind", every batch norm as
#: "batchnorm" (1-D after fc), no "fit" key, one entry per engine layer.
V1_ARCHITECTURE = [
    {"type": "conv", "filters": 4, "size": [3, 3], "stride": [1, 1], "pad": [[1, 1], [1, 1]],
     "dilation": [1, 1], "groups": 1, "bias": True, "padding_mode": "zeros"},
    {"type": "batchnorm", "eps": 1e-5, "momentum": 0.1}, {"type": "relu"},
    {"type": "pool", "kind": "max", "size": [2, 2], "stride": [2, 2], "pad": [0, 0],
     "dilation": [1, 1], "ceil_mode": False},
    {"type": "pool", "kind": "avg", "size": [2, 2], "stride": [1, 1], "pad": [0, 0],
     "ceil_mode": True, "count_include_pad": False},
    {"type": "flatten"}, {"type": "fc", "units": 6, "bias": True},
    {"type": "batchnorm", "eps": 1e-3, "momentum": 0.2}, {"type": "dropout", "p": 0.1},
    {"type": "fc", "units": 10, "bias": False}]


def test_a_version_1_file_loads_and_saves_as_the_current_version(tmp_path: Path) -> None:
    from safetensors.numpy import save_file

    model = build_model(V1_ARCHITECTURE, (1, 8, 8), 10, seed=0)
    rng = np.random.default_rng(0)
    for k, v in model.state_dict().items():  # every array distinct, so a mix-up shows
        if v.dtype.kind == "f":
            v[...] = rng.uniform(0.5, 2, v.shape) if k.endswith("var") else rng.standard_normal(v.shape)
    meta = {"architecture": V1_ARCHITECTURE, "arch_name": "old", "input_shape": [1, 8, 8],
            "classes": CLASSES, "dtype": "float32", "normalization": None, "background": 0,
            "dataset": "toy", "convscope_version": "0.1.0", "training": {}}
    old = tmp_path / "v1.safetensors"
    save_file({k: np.array(v) for k, v in model.state_dict().items()}, str(old),
              metadata={"format": MODEL_FORMAT, "format_version": "1",
                        "convscope": json.dumps(meta)})
    loaded = load_model(old)
    assert [type(layer).__name__ for layer in loaded.model.layers] == [
        "Conv2D", "BatchNorm2D", "ReLU", "MaxPool2D", "AvgPool2D", "Flatten", "Linear",
        "BatchNorm1D", "Dropout", "Linear"]
    bn1d = loaded.model.layers[7]
    assert (bn1d.eps, bn1d.momentum) == (1e-3, 0.2)
    assert loaded.model.layers[4].count_include_pad is False
    for k, v in model.state_dict().items():
        np.testing.assert_array_equal(loaded.model.state_dict()[k], v, err_msg=k)
    x = rng.standard_normal((3, 1, 8, 8)).astype(np.float32)
    np.testing.assert_array_equal(loaded.model.predict(x), model.predict(x))
    # saved again, it is a current-version file naming each layer by its kind
    new = save_model(tmp_path / "v2.safetensors", loaded.model, CLASSES)
    from safetensors import safe_open

    with safe_open(str(new), framework="np") as f:
        assert f.metadata()["format_version"] == str(FORMAT_VERSION) == "2"
    types = [e["type"] for e in read_metadata(new)["architecture"]]
    assert types == ["conv", "batchnorm", "relu", "maxpool", "avgpool", "flatten", "fc",
                     "batchnorm1d", "dropout", "fc"]
    np.testing.assert_array_equal(load_model(new).model.predict(x), model.predict(x))


def test_fit_error_survives_save_and_load(tmp_path: Path) -> None:
    """fit="error" (refuse a stride that does not fit) was lost on save: it loaded as floor."""
    import convscope as cs

    model = cs.Sequential(cs.Conv2D(1, 2, 3, stride=2, fit="error"), cs.ReLU(),
                          cs.MaxPool2D(2, fit="error"), cs.AvgPool2D(1, fit="error"),
                          cs.Flatten(), cs.Linear(None, 10), input_shape=(1, 9, 9), seed=0)
    loaded = load_model(save_model(tmp_path / "m.safetensors", model, CLASSES)).model
    assert [getattr(layer, "fit", None) for layer in loaded.layers] == [
        "error", None, "error", "error", None, None]
    with pytest.raises(cs.ShapeError):  # 10x10: (10 - 3) / 2 + 1 is not whole
        loaded.output_shape((1, 10, 10))


@pytest.mark.parametrize("keep", [0, 5, 8, 40, -1, -100])
def test_truncated_file_is_refused(saved, keep: int) -> None:
    path, _ = saved
    raw = path.read_bytes()
    path.write_bytes(raw[:keep] if keep >= 0 else raw[:keep])
    with pytest.raises(ModelFileError, match="truncated|too short") as info:
        load_model(path)
    assert str(path) in str(info.value) and "\n" not in str(info.value)


def test_corrupt_header_is_refused(saved, tmp_path: Path) -> None:
    path, _ = saved
    raw = bytearray(path.read_bytes())
    (n,) = struct.unpack("<Q", raw[:8])
    raw[8 + n // 2] = 0  # a NUL byte is invalid anywhere in JSON
    path.write_bytes(bytes(raw))
    with pytest.raises(ModelFileError, match="corrupt header"):
        load_model(path)
    huge = tmp_path / "huge.safetensors"
    huge.write_bytes(struct.pack("<Q", 2 ** 62) + b"{}")
    with pytest.raises(ModelFileError, match="corrupt header"):
        load_model(huge)
    pickle_file = tmp_path / "model.pt"
    pickle_file.write_bytes(b"\x80\x04\x95" + os.urandom(200))  # what torch.save writes
    with pytest.raises(ModelFileError):
        load_model(pickle_file)


def test_corrupt_tensor_entry_is_refused(saved) -> None:
    path, _ = saved
    _rewrite_header(path, lambda h: h["0.weight"].update(shape=[4, 1, 3, 4]))
    with pytest.raises(ModelFileError, match="corrupt header entry for '0.weight'"):
        load_model(path)


def test_mismatched_weights_are_refused(saved, tmp_path: Path) -> None:
    path, model = saved
    meta = read_metadata(path)
    tensors, _ = read_safetensors(path)
    # a weight with another shape: same names, the architecture says 4 filters
    bad = dict(tensors)
    bad["0.weight"] = np.zeros((5, 1, 3, 3), np.float32)
    write_safetensors(tmp_path / "shape.safetensors", bad, MODEL_FORMAT, meta)
    with pytest.raises(ModelFileError, match=r"'0.weight' is \(5, 1, 3, 3\), the architecture "
                                             r"needs \(4, 1, 3, 3\)"):
        load_model(tmp_path / "shape.safetensors")
    # a missing and an unexpected weight
    renamed = {("9.weight" if k == "0.weight" else k): v for k, v in tensors.items()}
    write_safetensors(tmp_path / "names.safetensors", renamed, MODEL_FORMAT, meta)
    with pytest.raises(ModelFileError, match=r"missing \['0.weight'\], unexpected \['9.weight'\]"):
        load_model(tmp_path / "names.safetensors")


def test_unknown_layer_in_architecture_is_refused(saved, tmp_path: Path) -> None:
    path, _ = saved
    tensors, meta = read_safetensors(path)
    meta["architecture"][2] = {"type": "swish"}
    write_safetensors(tmp_path / "arch.safetensors", tensors, MODEL_FORMAT, meta)
    with pytest.raises(ModelFileError, match=r"arch.safetensors: model file names layer kind "
                                             r"'swish', which is not registered; import the "
                                             r"module that defines it$") as info:
        load_model(tmp_path / "arch.safetensors")
    assert "\n" not in str(info.value)
    # inside a nested block too
    meta["architecture"][2] = {"type": "sequential", "layers": [{"type": "relu"},
                                                               {"type": "mish"}]}
    write_safetensors(tmp_path / "nested.safetensors", tensors, MODEL_FORMAT, meta)
    with pytest.raises(ModelFileError, match=r"names layer kind 'mish', which is not registered"):
        load_model(tmp_path / "nested.safetensors")
    # a kind is looked up in the registry, never imported: nothing in a file runs
    import sys

    meta["architecture"][2] = {"type": "antigravity"}  # a stdlib module that opens a browser
    write_safetensors(tmp_path / "module.safetensors", tensors, MODEL_FORMAT, meta)
    with pytest.raises(ModelFileError, match=r"names layer kind 'antigravity'"):
        load_model(tmp_path / "module.safetensors")
    assert "antigravity" not in sys.modules


def test_other_files_are_refused(saved, tmp_path: Path) -> None:
    path, _ = saved
    with pytest.raises(ModelFileError, match="no such file"):
        load_model(tmp_path / "missing.safetensors")
    with pytest.raises(ModelFileError, match="is a folder"):
        load_model(tmp_path)
    tensors, meta = read_safetensors(path)
    write_safetensors(tmp_path / "ckpt.safetensors", tensors, CHECKPOINT_FORMAT, meta)
    with pytest.raises(ModelFileError, match="training checkpoint, not a model file"):
        load_model(tmp_path / "ckpt.safetensors")
    from safetensors.numpy import save_file

    save_file({"w": np.zeros(3, np.float32)}, str(tmp_path / "plain.safetensors"))
    with pytest.raises(ModelFileError, match="not a convscope model"):
        load_model(tmp_path / "plain.safetensors")


def test_save_refuses_wrong_class_count(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="gives \\(10,\\) scores per image but 3 class names"):
        save_model(tmp_path / "m.safetensors", _model(), ["a", "b", "c"])


def test_atomic_write_keeps_the_old_file_on_failure(tmp_path: Path, monkeypatch) -> None:
    target = tmp_path / "f.txt"
    atomic_write(target, "old")

    def boom(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError, match="disk full"):
        atomic_write(target, "new")
    monkeypatch.undo()
    assert target.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.txt"]  # no temporary left behind


def test_estimate_background() -> None:
    rng = np.random.default_rng(0)
    dark = np.zeros((50, 1, 10, 10), np.uint8)
    dark[:, :, 3:7, 3:7] = 255
    assert estimate_background(dark) == 0
    assert estimate_background(255 - dark) == 255
    assert estimate_background(rng.integers(0, 256, (50, 3, 10, 10), dtype=np.uint8)) is None
    mixed = np.concatenate([dark, 255 - dark])  # half on black, half on white: no one background
    assert estimate_background(mixed) is None
    for name in ("digits", "fashion-small"):
        assert estimate_background(load_dataset(name).x_train) == 0


# ---------------------------------------------------------------------------------------------
# predicting image files


@pytest.fixture(scope="module")
def digit_model(tmp_path_factory) -> tuple[Path, np.ndarray, np.ndarray]:
    """A small model trained briefly on the bundled digits, and some test digits."""
    from convscope.train import TrainConfig, Trainer

    ds = load_dataset("digits")
    norm = Normalizer.fit(ds.x_train)
    model = build_model("lenet5", ds.input_shape, 10, seed=0)
    Trainer(model, TrainConfig(epochs=2, lr=2e-3, seed=0), normalizer=norm).fit(
        ds.x_train[:1000], ds.y_train[:1000])
    path = save_model(tmp_path_factory.mktemp("m") / "digits.safetensors", model, ds.classes,
                      normalization=norm, background=estimate_background(ds.x_train))
    return path, ds.x_test[:8], ds.y_test[:8]


def _write(img: Image.Image, path: Path) -> Path:
    img.save(path)
    return path


def test_predict_grey_rgb_rgba_and_inverted_match_the_array(digit_model, tmp_path: Path) -> None:
    path, xs, _ = digit_model
    saved = load_model(path)
    assert saved.background == 0
    for i, x in enumerate(xs):
        grey = x[0]  # white digit on black, 28x28
        direct = saved.predict_proba(x[None])[0]
        files = [
            _write(Image.fromarray(grey, "L"), tmp_path / f"g{i}.png"),
            _write(Image.fromarray(np.stack([grey] * 3, -1), "RGB"), tmp_path / f"rgb{i}.png"),
            # black digit on white paper: inverted automatically
            _write(Image.fromarray(255 - grey, "L"), tmp_path / f"paper{i}.png"),
            # a white stroke on a transparent background
            _write(Image.fromarray(np.stack([np.full_like(grey, 255)] * 3 + [grey], -1), "RGBA"),
                   tmp_path / f"rgba{i}.png"),
            # a black stroke on a transparent background
            _write(Image.fromarray(np.stack([np.zeros_like(grey)] * 3 + [grey], -1), "RGBA"),
                   tmp_path / f"rgba_dark{i}.png"),
        ]
        preds = saved.predict_files(files, top_k=10)
        for f, pred in zip(files, preds):
            probs = np.zeros(10)
            probs[pred.indices] = pred.probabilities
            np.testing.assert_allclose(probs, direct, atol=2e-3, err_msg=str(f))
        assert [p.inverted for p in preds] == [False, False, True, False, True]


def test_predict_huge_tiny_jpeg_and_odd_modes(digit_model, tmp_path: Path) -> None:
    path, xs, ys = digit_model
    saved = load_model(path)
    direct = saved.predict_proba(xs).argmax(1)
    agree = 0
    for i, x in enumerate(xs):
        big = Image.fromarray(x[0], "L").resize((2000, 1400), Image.Resampling.NEAREST)
        big_path = _write(big, tmp_path / f"big{i}.png")
        (pred,) = saved.predict_files([big_path], top_k=1, fit="stretch")
        agree += pred.indices[0] == direct[i]
    assert agree >= len(xs) - 1  # resampling 2000x1400 back to 28x28 barely changes a digit
    files = [
        _write(Image.fromarray(xs[0, 0], "L").resize((3, 2)), tmp_path / "tiny.png"),
        _write(Image.new("L", (1, 1), 200), tmp_path / "pixel.png"),
        _write(Image.fromarray(np.stack([xs[1, 0]] * 3, -1), "RGB").resize((90, 60)),
               tmp_path / "photo.jpg"),
        _write(Image.fromarray(xs[2, 0], "L").convert("P"), tmp_path / "palette.png"),
        _write(Image.fromarray(xs[3, 0], "L").convert("LA"), tmp_path / "la.png"),
        _write(Image.fromarray(xs[4, 0].astype(np.uint16) * 257).convert("I;16"),
               tmp_path / "sixteen.png"),
    ]
    for fit in ("stretch", "crop", "pad"):
        for pred in saved.predict_files(files, top_k=3, fit=fit):
            assert len(pred.labels) == 3 and pred.labels[0] in saved.classes
            assert sorted(pred.probabilities, reverse=True) == pred.probabilities
            assert 0 < sum(pred.probabilities) <= 1 + 1e-9


def test_predict_proba_refuses_other_shapes(saved) -> None:
    path, _ = saved
    with pytest.raises(ValueError, match=r"takes images of shape \(N, 1, 8, 8\), got \(2, 1, 9, 9\)"):
        load_model(path).predict_proba(np.zeros((2, 1, 9, 9), np.uint8))


def test_predict_refuses_bad_files(digit_model, tmp_path: Path) -> None:
    from convscope.data import DataError

    path, _, _ = digit_model
    saved = load_model(path)
    (tmp_path / "not.png").write_bytes(b"not an image")
    with pytest.raises(DataError, match="cannot read image"):
        saved.predict_files([tmp_path / "not.png"])
    with pytest.raises(DataError, match="no such image file"):
        saved.predict_files([tmp_path / "missing.png"])
    with pytest.raises(ValueError, match="top_k must be >= 1"):
        saved.predict_files([tmp_path / "not.png"], top_k=0)


def test_a_float64_model_whose_first_layer_has_no_parameters_predicts(tmp_path):
    """The model's dtype comes from all its parameters, not the first layer's (a Flatten has none)."""
    net = cs.Sequential(cs.Flatten(), cs.Linear(None, 3, dtype=np.float64), input_shape=(1, 2, 2),
                        seed=0)
    save_model(tmp_path / "m.safetensors", net, ["a", "b", "c"])
    saved = load_model(tmp_path / "m.safetensors")
    p = saved.predict_proba(np.arange(8, dtype=np.uint8).reshape(2, 1, 2, 2))
    assert p.dtype == np.float64 and p.shape == (2, 3)
    np.testing.assert_allclose(p.sum(axis=1), 1.0)
