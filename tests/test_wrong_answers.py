"""Issue 13, wrong answers without an error: an image folder found again by the model's record
(from another directory, never another folder of the same name), the test split by default,
NaN or retyped weights and overlapping tensors refused naming the tensor, a report on another
dataset's classes refused, a one-class folder and an empty test split said, clear metadata
messages, control characters in class names escaped."""

from __future__ import annotations

import json
import os
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from convscope.cli import main
from convscope.data import load_dataset, stratified_split
from convscope.errors import DataError, ModelFileError
from convscope.formats.architecture import build_model
from convscope.formats.model_file import (MODEL_FORMAT, load_model, read_safetensors, save_model,
                                          write_safetensors)

ROOT = Path(__file__).resolve().parents[1]
TINY = [{"type": "conv", "filters": 2, "size": 3}, {"type": "relu"}, {"type": "pool", "size": 2},
        {"type": "fc", "units": "classes"}]


def _run(capsys, *argv) -> tuple[int, str, str]:
    rc = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


def _cli(*argv, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "convscope.cli", *map(str, argv)], cwd=cwd,
                          env=env, capture_output=True, text=True, timeout=300)


def _one_line(err: str, command: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"convscope {command}: error: "), err
    return lines[0]


def _folder(root: Path, per_class: int, classes=("a", "b", "c")) -> Path:
    """An image folder of 12x12 grey images, one sub-folder per class (class k: k's level)."""
    from PIL import Image

    rng = np.random.default_rng(len(str(root)) + per_class)
    for k, name in enumerate(classes):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            img = np.clip(rng.normal(60 + 70 * k, 20, (12, 12)), 0, 255).astype(np.uint8)
            Image.fromarray(img).save(root / name / f"{i}.png")
    return root


@pytest.fixture(scope="module")
def folder_run(tmp_path_factory) -> tuple[Path, Path]:
    """(the image folder "imgs", the run folder of a model trained on it)."""
    tmp = tmp_path_factory.mktemp("wrong")
    data = _folder(tmp / "train_here" / "imgs", 10)
    arch = tmp / "tiny.json"
    arch.write_text(json.dumps(TINY))
    run = tmp / "run"
    rc = main(["train", "--data", str(data), "--arch", str(arch), "--epochs", "2",
               "--batch-size", "8", "--val-fraction", "0", "--seed", "0", "--quiet",
               "--out", str(run)])
    assert rc == 0
    return data, run


# ---------------------------------------------------------------------------------------------
# the image folder a model was trained on


def test_the_model_file_records_the_folder(folder_run) -> None:
    data, run = folder_run
    rec = load_model(run / "model.safetensors").metadata["data"]
    assert rec["kind"] == "folder" and rec["path"] == str(data.resolve())
    assert rec["classes"] == ["a", "b", "c"]
    assert rec["counts"] == {"train": [8, 8, 8], "test": [2, 2, 2]}  # the stratified 20%


def test_evaluate_from_another_directory_finds_the_folder_and_uses_its_test_split(
        folder_run, tmp_path: Path) -> None:
    data, run = folder_run
    done = _cli("evaluate", run / "model.safetensors", "--json", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["split"] == "test" and result["images"] == 6  # never the 24 training images
    assert "split: test (the images training never saw" in done.stderr
    here = _cli("evaluate", run / "model.safetensors", cwd=tmp_path)
    assert "imgs test split, 6 images" in here.stdout
    # the bare name from another directory means the recorded folder too
    named = _cli("evaluate", run / "model.safetensors", "--data", "imgs", "--json", cwd=tmp_path)
    assert named.returncode == 0 and json.loads(named.stdout)["images"] == 6, named.stderr


def test_another_folder_of_the_same_name_is_refused(folder_run, tmp_path: Path) -> None:
    data, run = folder_run
    _folder(tmp_path / "imgs", 4)  # same classes, other images
    done = _cli("evaluate", run / "model.safetensors", "--data", "imgs", cwd=tmp_path)
    assert done.returncode == 1
    line = _one_line(done.stderr, "evaluate")
    assert "not the folder the model was trained on" in line and str(data.resolve()) in line
    for argv in (("report", run, "--data", "imgs"),
                 ("viz", "activations", run / "model.safetensors", "--data", "imgs", "--out",
                  tmp_path / "a.png")):
        done = _cli(*argv, cwd=tmp_path)
        assert done.returncode == 1 and "not the folder the model was trained on" in done.stderr


def test_report_and_viz_index_find_the_folder_from_another_directory(folder_run, tmp_path: Path
                                                                     ) -> None:
    data, run = folder_run
    done = _cli("report", run, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "imgs" in (run / "report.html").read_text()
    done = _cli("viz", "activations", run / "model.safetensors", "--index", "1", "--out",
                tmp_path / "act.png", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "act.png").is_file()


def test_a_changed_or_missing_folder_is_refused(folder_run, tmp_path: Path) -> None:
    data, run = folder_run
    copy = tmp_path / "copy"
    shutil.copytree(data, copy / "imgs")
    model = tmp_path / "model.safetensors"
    tensors, meta = read_safetensors(run / "model.safetensors", MODEL_FORMAT)
    meta["data"]["path"] = str((copy / "imgs").resolve())
    write_safetensors(model, tensors, MODEL_FORMAT, meta)
    assert _cli("evaluate", model, cwd=tmp_path).returncode == 0  # the same images: fine
    shutil.copy(copy / "imgs" / "a" / "0.png", copy / "imgs" / "a" / "extra.png")
    done = _cli("evaluate", model, cwd=tmp_path)
    assert done.returncode == 1
    assert "has changed since the model was trained on it" in _one_line(done.stderr, "evaluate")
    shutil.rmtree(copy)
    done = _cli("evaluate", model, cwd=tmp_path)
    assert done.returncode == 1 and "which is not there now" in done.stderr


def test_evaluate_on_a_folder_the_model_never_saw_uses_all_of_it(folder_run, capsys,
                                                                  tmp_path: Path) -> None:
    data, run = folder_run
    other = _folder(tmp_path / "fresh", 3)
    rc, out, err = _run(capsys, "evaluate", run / "model.safetensors", "--data", other, "--json")
    assert rc == 0, err
    assert json.loads(out)["split"] == "all" and json.loads(out)["images"] == 9
    assert "the model was not trained on fresh: all its images" in err


# ---------------------------------------------------------------------------------------------
# model files that would predict garbage


@pytest.fixture
def model_file(tmp_path: Path) -> Path:
    model = build_model(TINY, (1, 28, 28), 10, seed=0)
    return save_model(tmp_path / "m.safetensors", model, [str(d) for d in range(10)],
                      dataset="digits")


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_weights_are_refused_naming_the_tensor(model_file: Path, capsys, bad: float
                                                          ) -> None:
    tensors, meta = read_safetensors(model_file, MODEL_FORMAT)
    tensors["4.bias"] = tensors["4.bias"].copy()
    tensors["4.bias"][4] = bad
    write_safetensors(model_file, tensors, MODEL_FORMAT, meta)
    with pytest.raises(ModelFileError, match=r"tensor '4\.bias' holds NaN or infinite values"):
        load_model(model_file)
    from PIL import Image

    img = model_file.parent / "x.png"
    Image.fromarray(np.zeros((28, 28), np.uint8)).save(img)
    rc, out, err = _run(capsys, "predict", model_file, img)
    assert rc == 1 and "'4.bias' holds NaN" in _one_line(err, "predict") and "nan%" not in out


def test_save_model_refuses_non_finite_weights(tmp_path: Path) -> None:
    model = build_model(TINY, (1, 28, 28), 10, seed=0)
    model.params[next(iter(model.params))][...] = np.nan
    with pytest.raises(ValueError, match="NaN or infinite"):
        save_model(tmp_path / "m.safetensors", model, [str(d) for d in range(10)])
    assert not (tmp_path / "m.safetensors").exists()


def _edit_header(path: Path, edit) -> None:
    raw = path.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + n])
    edit(header)
    text = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(text)) + text + raw[8 + n:])


def test_a_tensor_retyped_in_the_header_is_refused_naming_it(model_file: Path) -> None:
    def retype(header):
        header["0.weight"]["dtype"] = "I32"  # the same 4 bytes per value: only the type lies

    _edit_header(model_file, retype)
    with pytest.raises(ModelFileError, match=r"tensor '0\.weight' is stored as int32, the "
                                             r"architecture's weights are float32"):
        load_model(model_file)


def test_overlapping_and_gapped_byte_ranges_are_refused(model_file: Path) -> None:
    tensors, _ = read_safetensors(model_file, MODEL_FORMAT)
    a, b = "0.bias", "4.bias"  # 2 and 10 floats

    def overlap(header):
        begin = header[a]["data_offsets"][0]
        size = header[b]["data_offsets"][1] - header[b]["data_offsets"][0]
        header[b]["data_offsets"] = [begin, begin + size]  # b read from a's bytes

    _edit_header(model_file, overlap)
    with pytest.raises(ModelFileError, match="overlap"):
        load_model(model_file)

    def gap(header):
        names = sorted((k for k in header if k != "__metadata__"),
                       key=lambda k: header[k]["data_offsets"][0])
        first = header[names[0]]
        first["data_offsets"] = [first["data_offsets"][0] + 4, first["data_offsets"][1]]
        first["shape"] = [int(np.prod(first["shape"])) - 1]

    tensors_ok = model_file.with_name("ok.safetensors")
    save_model(tensors_ok, build_model(TINY, (1, 28, 28), 10, seed=0),
               [str(d) for d in range(10)])
    _edit_header(tensors_ok, gap)
    with pytest.raises(ModelFileError, match="unused"):
        read_safetensors(tensors_ok, MODEL_FORMAT)


@pytest.mark.parametrize("field,value,needs", [
    ("input_shape", ["a", 28, 28], "'input_shape' is [\"a\", 28, 28]; it must be 3 whole numbers"),
    ("input_shape", [1, 28], "it must be 3 whole numbers C, H, W"),
    ("classes", 5, "'classes' is 5; it must be a list of names"),
    ("dtype", "floaty", "'dtype' is \"floaty\"; it must be float32 or float64"),
])
def test_bad_metadata_reads_clearly(model_file: Path, field: str, value, needs: str) -> None:
    tensors, meta = read_safetensors(model_file, MODEL_FORMAT)
    meta[field] = value
    write_safetensors(model_file, tensors, MODEL_FORMAT, meta)
    with pytest.raises(ModelFileError) as info:
        load_model(model_file)
    assert needs in str(info.value) and "invalid literal" not in str(info.value)


def test_missing_metadata_reads_clearly(model_file: Path) -> None:
    tensors, meta = read_safetensors(model_file, MODEL_FORMAT)
    del meta["input_shape"]
    write_safetensors(model_file, tensors, MODEL_FORMAT, meta)
    with pytest.raises(ModelFileError, match="the metadata has no 'input_shape'"):
        load_model(model_file)


# ---------------------------------------------------------------------------------------------
# the classes, and splits with nothing in them


def test_report_on_another_datasets_classes_is_refused(tmp_path: Path, capsys) -> None:
    run = tmp_path / "run"
    run.mkdir()
    model = build_model(TINY, (1, 28, 28), 10, seed=0)
    save_model(run / "model.safetensors", model, [str(d) for d in range(10)], dataset="digits")
    (run / "report.html").write_text("the digits report")
    rc, out, err = _run(capsys, "report", run, "--data", "fashion-small")
    assert rc == 1 and "but the model was trained on" in _one_line(err, "report")
    assert (run / "report.html").read_text() == "the digits report"


def test_a_one_class_folder_is_refused(tmp_path: Path, capsys) -> None:
    data = _folder(tmp_path / "cats", 5, classes=("cat",))
    rc, _, err = _run(capsys, "train", "--data", data, "--out", tmp_path / "r", "--quiet")
    assert rc == 1 and "only one class ('cat')" in _one_line(err, "train")


def test_an_empty_test_split_is_said_not_scored(tmp_path: Path, capsys) -> None:
    data = _folder(tmp_path / "single", 1)  # one image per class: all go to training
    arch = tmp_path / "tiny.json"
    arch.write_text(json.dumps(TINY))
    run = tmp_path / "r"
    rc, out, err = _run(capsys, "train", "--data", data, "--arch", arch, "--epochs", "1",
                        "--val-fraction", "0", "--quiet", "--out", run)
    assert rc == 0, err
    assert "test accuracy: none: the test split of single has no images" in out
    assert "0.00%" not in out and "(0/0" not in out
    assert json.loads((run / "results.json").read_text())["test_accuracy"] is None
    rc, out, err = _run(capsys, "evaluate", run / "model.safetensors")
    assert rc == 1 and "the test split of single has no images" in _one_line(err, "evaluate")
    assert "0/0" not in out


def test_splitting_nothing_says_so() -> None:
    with pytest.raises(DataError, match="no images to split"):
        stratified_split(np.zeros(0, np.int64), 0.2)


def test_control_characters_in_class_names_never_reach_the_terminal(tmp_path: Path, capsys
                                                                    ) -> None:
    names = ("a\x1b[31mred", "b\rback", "c\u202eevil")
    data = _folder(tmp_path / "ctrl", 3, classes=names)
    model = build_model(TINY, (1, 12, 12), 3, seed=0)
    path = save_model(tmp_path / "m.safetensors", model, sorted(names), dataset="ctrl")
    rc, out, err = _run(capsys, "evaluate", path, "--data", data)
    assert rc == 0, err
    assert "a\\x1b[31mred" in out and "b\\rback" in out and "c\\u202eevil" in out
    assert not any(ch in out + err for ch in "\x1b\r\u202e")
    rc, out, err = _run(capsys, "predict", path, data / names[0] / "0.png")
    assert rc == 0 and not any(ch in out + err for ch in "\x1b\r\u202e")
    rc, out, err = _run(capsys, "evaluate", path, "--data", "digits")  # the classes differ
    assert rc == 1 and not any(ch in err for ch in "\x1b\r\u202e")
