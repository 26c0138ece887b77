"""The `convscope` command: --help, one-line errors, and train -> evaluate -> predict -> summary
end to end, with resume after a kill and a clean Ctrl-C."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from convscope.cli import SUBCOMMANDS, build_parser, main
from convscope.data import load_dataset
from convscope.io import ModelFileError, load_model

ROOT = Path(__file__).resolve().parents[1]
FAST = ["--arch", "lecture", "--quiet", "--seed", "1"]


def _run(capsys, *argv: str) -> tuple[int, str, str]:
    rc = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


def _subprocess(*argv: str, **kw) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen([sys.executable, "-m", "convscope.cli", *map(str, argv)], cwd=kw.pop(
        "cwd", ROOT), env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)


def _one_error_line(err: str, command: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith(f"convscope {command}: error: "), err
    assert "Traceback" not in err
    return lines[0]


# ---------------------------------------------------------------------------------------------
# --help


def _subparsers(parser):
    action = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
    return action.choices


@pytest.mark.parametrize("command", [None] + [name for name, _ in SUBCOMMANDS])
def test_help_is_complete(capsys, command: str | None) -> None:
    argv = ["--help"] if command is None else [command, "--help"]
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 0
    text = capsys.readouterr().out
    parser = build_parser()
    target = parser if command is None else _subparsers(parser)[command]
    for action in target._actions:
        for opt in action.option_strings:
            assert opt in text, f"{opt} missing from {command} --help"
        if action.help not in (None, "==SUPPRESS==") and not action.option_strings and command:
            assert (action.metavar or action.dest) in text
    if command is None:
        for name, _ in SUBCOMMANDS:
            assert name in text
    elif command in ("train", "evaluate", "predict", "summary"):
        assert "example" in text  # shows how it is used


def test_no_command_prints_help_and_fails(capsys) -> None:
    rc, out, err = _run(capsys)
    assert rc == 2 and "commands" in err


# ---------------------------------------------------------------------------------------------
# one-line errors


@pytest.mark.parametrize("argv,command,pattern", [
    (["evaluate", "missing.safetensors"], "evaluate", "missing.safetensors: no such file"),
    (["predict", "missing.safetensors", "x.png"], "predict", "missing.safetensors: no such file"),
    (["summary", "missing.safetensors"], "summary", "missing.safetensors: no such file"),
    (["train", "--arch", "nosuch", "--epochs", "1"], "train",
     "unknown architecture 'nosuch'; presets are lecture, lenet5, fashion, cifar"),
    (["train", "--arch", "lenet", "--epochs", "1"], "train", "did you mean 'lenet5'"),
    (["train", "--augment", "rotate"], "train", "--augment: unknown item 'rotate'"),
    (["train", "--data", "nosuch-data", "--epochs", "1"], "train", "unknown dataset 'nosuch-data'"),
    (["train", "--limit", "0"], "train", "--limit must be >= 1, got 0"),
    (["train", "--lr", "-1", "--limit", "20"], "train", "lr must be"),
    (["train", "--threads", "-1"], "train", "--threads must be >= 0, got -1"),
    (["summary", "lenet5", "--input-shape", "28x28"], "summary", "three positive numbers"),
])
def test_errors_are_one_line(capsys, tmp_path: Path, monkeypatch, argv, command, pattern) -> None:
    monkeypatch.chdir(tmp_path)
    rc, out, err = _run(capsys, *argv)
    assert rc == 1
    assert pattern in _one_error_line(err, command)


def test_bad_json_architecture_is_one_line(capsys, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "net.json").write_text(json.dumps([{"type": "conv", "filter": 6, "size": 5}]))
    rc, _, err = _run(capsys, "train", "--arch", "net.json", "--limit", "20")
    assert rc == 1
    assert "layer 0 (conv): unknown key 'filter' (did you mean 'filters'?)" in _one_error_line(
        err, "train")
    rc, _, err = _run(capsys, "summary", "net.json", "--input-shape", "1x28x28")
    assert rc == 1 and "unknown key 'filter'" in _one_error_line(err, "summary")


def test_nan_loss_is_one_line_naming_the_step(capsys, tmp_path: Path) -> None:
    rc, out, err = _run(capsys, "train", "--optimizer", "sgd", "--lr", "1e30", "--schedule",
                        "constant", "--limit", "60", "--epochs", "2", "--batch-size", "8",
                        "--out", tmp_path / "r", *FAST)
    assert rc == 1 and out == ""
    line = _one_error_line(err, "train")
    assert "at step 2 (epoch 1, batch 2 of" in line and "lower learning rate" in line
    assert "(convscope train --lr 1e+29)" in line


def test_debug_shows_the_exception(capsys, tmp_path: Path) -> None:
    with pytest.raises(ModelFileError, match="no such file"):
        main(["--debug", "evaluate", str(tmp_path / "missing.safetensors")])
    with pytest.raises(ModelFileError):
        main(["evaluate", str(tmp_path / "missing.safetensors"), "--debug"])


def test_real_process_prints_one_line_or_a_traceback(tmp_path: Path) -> None:
    proc = _subprocess("predict", tmp_path / "missing.safetensors", "a.png")
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 1
    assert "missing.safetensors: no such file" in _one_error_line(err, "predict")
    proc = _subprocess("--debug", "predict", tmp_path / "missing.safetensors", "a.png")
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 1
    assert "Traceback (most recent call last)" in err and "ModelFileError" in err


# ---------------------------------------------------------------------------------------------
# end to end


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    """A short real run: `convscope train` on 300 digits for one epoch."""
    out = tmp_path_factory.mktemp("cli") / "run"
    assert main(["train", "--epochs", "2", "--limit", "300", "--out", str(out), *FAST]) == 0
    return out


def test_train_writes_the_run_folder_and_prints_accuracy_and_paths(run: Path, capsys) -> None:
    for name in ("model.safetensors", "checkpoint.safetensors", "metrics.jsonl", "config.json",
                 "results.json"):
        assert (run / name).is_file(), name
    results = json.loads((run / "results.json").read_text())
    assert results["test_images"] == 300 and 0 <= results["test_accuracy"] <= 1
    lines = (run / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in lines] == [1, 2]
    saved = load_model(run / "model.safetensors")
    assert saved.classes == [str(d) for d in range(10)] and saved.input_shape == (1, 28, 28)
    assert saved.metadata["dataset"] == "digits" and saved.metadata["arch_name"] == "lecture"
    assert saved.metadata["training"]["test_accuracy"] == results["test_accuracy"]
    settings = json.loads((run / "config.json").read_text())["settings"]
    assert settings["seed"] == 1 and settings["epochs"] == 2


def test_train_output(tmp_path: Path, capsys) -> None:
    rc, out, err = _run(capsys, "train", "--epochs", "1", "--limit", "100", "--out",
                        tmp_path / "r", "--arch", "lecture", "--seed", "0", "--val-fraction", "0")
    assert rc == 0
    lines = out.splitlines()
    assert lines[0].startswith("test accuracy: ") and "% (" in lines[0]
    acc = float(lines[0].split()[2].rstrip("%"))
    assert acc == pytest.approx(100 * json.loads((tmp_path / "r" / "results.json").read_text())
                                ["test_accuracy"], abs=0.006)
    assert f"model: {tmp_path / 'r' / 'model.safetensors'}" in lines
    assert f"metrics: {tmp_path / 'r' / 'metrics.jsonl'}" in lines
    assert "training lecture" in err and "epoch 1/1: loss" in err and "seed 0" in err


def test_evaluate_prints_accuracy_per_class_and_confusion(run: Path, capsys) -> None:
    rc, out, _ = _run(capsys, "evaluate", run / "model.safetensors", "--limit", "300", "--json")
    assert rc == 0
    data = json.loads(out)
    results = json.loads((run / "results.json").read_text())
    assert data["accuracy"] == pytest.approx(results["test_accuracy"])  # the same 300 images
    conf = np.array(data["confusion"])
    assert conf.shape == (10, 10) and conf.sum() == 300
    assert np.trace(conf) / 300 == pytest.approx(data["accuracy"])
    y = load_dataset("digits").y_test[:300]
    assert list(conf.sum(1)) == list(np.bincount(y, minlength=10))
    rc, out, _ = _run(capsys, "evaluate", run / "model.safetensors", "--limit", "300")
    assert rc == 0
    assert f"accuracy {100 * data['accuracy']:.2f}%" in out
    assert "per-class accuracy" in out and "confusion matrix" in out
    rc, _, err = _run(capsys, "evaluate", run / "model.safetensors", "--data", "fashion-small")
    assert rc == 1 and "classes" in _one_error_line(err, "evaluate")


def test_evaluate_an_image_folder_uses_all_its_images(run: Path, tmp_path: Path, capsys) -> None:
    from PIL import Image

    ds = load_dataset("digits")
    for d in range(10):  # three images of each class, 40x40: resized to the model's 28x28
        folder = tmp_path / "imgs" / str(d)
        folder.mkdir(parents=True)
        for i in np.flatnonzero(ds.y_test == d)[:3]:
            Image.fromarray(ds.x_test[i, 0]).resize((40, 40)).save(folder / f"{i}.png")
    rc, out, err = _run(capsys, "evaluate", run / "model.safetensors", "--data",
                        tmp_path / "imgs", "--json")
    assert rc == 0, err
    data = json.loads(out)
    assert data["split"] == "all" and data["images"] == 30


def test_predict_labels_image_files(run: Path, tmp_path: Path, capsys) -> None:
    from PIL import Image

    ds = load_dataset("digits")
    files = []
    for i in range(4):
        img = Image.fromarray(255 - ds.x_test[i, 0], "L").resize((280, 200))  # dark on white
        files.append(tmp_path / f"d{i}.png")
        img.convert("RGB").save(files[-1])
    rc, out, err = _run(capsys, "predict", run / "model.safetensors", *files, "--top-k", "2")
    assert rc == 0, err
    lines = out.splitlines()
    assert len(lines) == 4
    for f, line in zip(files, lines):
        assert line.startswith(f"{f}: ") and line.count("%)") == 2 and "[inverted]" in line
    rc, out, _ = _run(capsys, "predict", run / "model.safetensors", tmp_path, "--json", "-k", "1")
    preds = json.loads(out)
    assert rc == 0 and [p["image"] for p in preds] == [str(f) for f in files]
    assert all(len(p["labels"]) == 1 and 0 < p["probabilities"][0] <= 1 for p in preds)
    # a missing and a broken image: one line each, the others are still labelled, exit 1
    (tmp_path / "broken.png").write_bytes(b"\x89PNG but not really")
    rc, out, err = _run(capsys, "predict", run / "model.safetensors", files[0],
                        tmp_path / "nope.png", tmp_path / "broken.png")
    assert rc == 1 and out.startswith(f"{files[0]}: ")
    errors = err.strip().splitlines()
    assert len(errors) == 2 and "Traceback" not in err
    assert "nope.png: no such image file" in errors[0]
    assert "broken.png: cannot read image" in errors[1]


def test_summary_of_presets_json_and_model(run: Path, tmp_path: Path, capsys) -> None:
    rc, out, err = _run(capsys, "summary", "lecture")
    assert rc == 0 and "32x32" in err
    assert "6x28x28" in out and "5·5·3·6 + 6 = 456" in out
    rc, out, _ = _run(capsys, "summary", "lenet5", "--input-shape", "1x28x28", "--classes", "7")
    assert rc == 0 and "16x5x5" in out and "84·7 + 7 = 595" in out
    (tmp_path / "a.json").write_text(json.dumps([{"type": "conv", "filters": 6, "size": 5},
                                                 {"type": "relu"}, {"type": "fc", "units": 3}]))
    rc, out, _ = _run(capsys, "summary", tmp_path / "a.json", "--data", "digits")
    assert rc == 0 and "6x24x24" in out and "3456·3 + 3 = 10371" in out
    rc, _, err = _run(capsys, "summary", tmp_path / "a.json")
    assert rc == 1 and "--input-shape" in _one_error_line(err, "summary")
    rc, out, _ = _run(capsys, "summary", run / "model.safetensors")
    assert rc == 0 and "6x24x24" in out and "trained on digits" in out


def test_resume_extends_and_refuses_changes(run: Path, tmp_path: Path, capsys) -> None:
    import shutil

    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    rc, _, err = _run(capsys, "train", "--resume", copy, "--lr", "0.5")
    assert rc == 1 and "--lr 0.5 differs from the run being resumed" in _one_error_line(err, "train")
    rc, _, err = _run(capsys, "train", "--out", copy, *FAST, "--limit", "300")
    assert rc == 1 and "already holds a run; continue it with --resume" in err
    rc, out, _ = _run(capsys, "train", "--resume", copy, "--epochs", "3", "--quiet")
    assert rc == 0 and out.startswith("test accuracy: ")
    lines = (copy / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in lines] == [1, 2, 3]
    assert json.loads((copy / "config.json").read_text())["settings"]["epochs"] == 3


def test_resume_before_the_first_checkpoint_starts_over(tmp_path: Path, capsys) -> None:
    out = tmp_path / "r"
    assert main(["train", "--epochs", "1", "--limit", "100", "--out", str(out), *FAST]) == 0
    (out / "checkpoint.safetensors").unlink()  # as if killed during the first epoch
    rc, stdout, err = _run(capsys, "train", "--resume", out)
    assert rc == 0 and stdout.startswith("test accuracy: ")
    assert "starting it over" in err


def _wait_for(path: Path, proc: subprocess.Popen, timeout: float = 300) -> None:
    end = time.time() + timeout
    while not path.exists():
        if proc.poll() is not None:
            raise AssertionError(f"the run ended before {path.name} appeared: {proc.stderr.read()}")
        if time.time() > end:
            proc.kill()
            raise AssertionError(f"no {path} after {timeout} s")
        time.sleep(0.02)


def test_resume_after_kill_gives_the_weights_of_an_uninterrupted_run(tmp_path: Path,
                                                                      capsys) -> None:
    args = ["train", "--epochs", "5", "--limit", "400", *FAST]
    assert main([*args, "--out", str(tmp_path / "full")]) == 0
    proc = _subprocess(*args, "--out", tmp_path / "killed")
    _wait_for(tmp_path / "killed" / "checkpoint.safetensors", proc)
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=60)
    assert not (tmp_path / "killed" / "results.json").exists()  # it really was cut short
    assert main(["train", "--resume", str(tmp_path / "killed"), "--quiet"]) == 0
    full = load_model(tmp_path / "full" / "model.safetensors").model.state_dict()
    resumed = load_model(tmp_path / "killed" / "model.safetensors").model.state_dict()
    for k in full:
        np.testing.assert_array_equal(full[k], resumed[k], err_msg=k)
    a = json.loads((tmp_path / "full" / "results.json").read_text())
    b = json.loads((tmp_path / "killed" / "results.json").read_text())
    assert a["test_accuracy"] == b["test_accuracy"]


def test_ctrl_c_saves_and_exits_cleanly(tmp_path: Path) -> None:
    proc = _subprocess("train", "--epochs", "50", "--limit", "400", *FAST[:-3], "--seed", "2",
                       "--out", tmp_path / "r")
    _wait_for(tmp_path / "r" / "checkpoint.safetensors", proc)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "Traceback" not in err
    assert f"continue with: convscope train --resume {tmp_path / 'r'}" in err
    assert (tmp_path / "r" / "checkpoint.safetensors").is_file()


def test_blas_threads_default_to_one() -> None:
    threadpoolctl = pytest.importorskip("threadpoolctl")
    from convscope.cli import _thread_limit

    def blas_threads() -> list[int]:
        return [i["num_threads"] for i in threadpoolctl.threadpool_info()
                if i["user_api"] == "blas"]

    before = blas_threads()
    with _thread_limit(None):
        assert set(blas_threads()) == {1}
    with _thread_limit(0):
        assert blas_threads() == before
    assert blas_threads() == before


# ---------------------------------------------------------------------------------------------
# the command table: each command its own module, imported only when it runs


def test_the_tables_help_lines_are_the_commands_own() -> None:
    from convscope.cli import HELP

    action = next(a for a in build_parser()._actions
                  if a.__class__.__name__ == "_SubParsersAction")
    own = {a.dest: a.help for a in action._choices_actions}
    assert HELP and set(HELP) <= set(own)
    for name, line in HELP.items():
        assert own[name] == line, name


def _modules_after(*argv: str, cwd: Path) -> tuple[set[str], str]:
    code = ("import atexit, json, sys; atexit.register(lambda: print(json.dumps(sorted("
            "sys.modules)), file=sys.stderr)); from convscope.cli import main; "
            "sys.exit(main(sys.argv[1:]))")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-c", code, *argv], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return set(json.loads(proc.stderr.strip().splitlines()[-1])), proc.stdout


COMMAND_MODULES = {f"convscope.cli.{name}" for name, _ in SUBCOMMANDS}
HEAVY = {"convscope.train", "convscope.inspect.report", "convscope.inspect.viz", "matplotlib",
         "torch", "onnx", "onnxruntime", "numba"}


def test_predict_imports_its_own_module_only(run: Path, tmp_path: Path) -> None:
    from PIL import Image

    Image.fromarray(load_dataset("digits").x_test[0, 0]).save(tmp_path / "d.png")
    modules, out = _modules_after("predict", str(run / "model.safetensors"),
                                  str(tmp_path / "d.png"), cwd=tmp_path)
    assert out.startswith(f"{tmp_path / 'd.png'}: ")
    assert modules & COMMAND_MODULES == {"convscope.cli.predict"}
    assert not modules & HEAVY, modules & HEAVY
    modules, out = _modules_after("--help", cwd=tmp_path)
    assert "predict" in out and not modules & COMMAND_MODULES


# ---------------------------------------------------------------------------------------------
# --import: a layer of one's own from the command line

SWISH = '''"""A user's layer: y = x·σ(x)."""
import numpy as np

import convscope


@convscope.register_layer("swish")
class Swish(convscope.Layer):
    def forward(self, x):
        s = 1 / (1 + np.exp(-x))
        return self._keep((x, s), x * s)

    def backward(self, dy):
        x, s = self._take(dy)
        return dy * (s + x * s * (1 - s))
'''
NEEDS_IMPORT = ("train", "evaluate", "predict", "summary", "explain", "viz", "report", "export")


def test_import_is_offered_where_models_are_built_or_loaded(capsys) -> None:
    commands = _subparsers(build_parser())
    for name in NEEDS_IMPORT:
        with pytest.raises(SystemExit):
            main([name, "--help"])
        text = " ".join(capsys.readouterr().out.split())
        assert "--import MODULE_OR_FILE" in text and "executed as Python code" in text, name
        assert any("--import" in a.option_strings for a in commands[name]._actions)
    assert not any("--import" in a.option_strings for a in commands["shapes"]._actions)


def test_train_and_predict_with_a_layer_of_ones_own(tmp_path: Path) -> None:
    from PIL import Image

    (tmp_path / "swish.py").write_text(SWISH)
    (tmp_path / "net.json").write_text(json.dumps([
        {"type": "conv", "filters": 4, "size": 5}, {"type": "swish"}, {"type": "pool", "size": 2},
        {"type": "fc", "units": "classes"}]))
    Image.fromarray(load_dataset("digits").x_test[0, 0]).save(tmp_path / "d.png")

    def convscope(*argv: str) -> subprocess.CompletedProcess:  # a fresh registry each time
        return subprocess.run([sys.executable, "-m", "convscope.cli", *argv], cwd=tmp_path,
                              env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True,
                              text=True, timeout=300)

    done = convscope("train", "--arch", "net.json", "--import", "swish.py", "--epochs", "1",
                     "--limit", "200", "--quiet", "--seed", "0", "--out", "run")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("test accuracy: ")
    done = convscope("predict", "--import", "swish.py", "run/model.safetensors", "d.png",
                     "--top-k", "1")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("d.png: ") and done.stdout.count("%)") == 1
    done = convscope("summary", "run/model.safetensors", "--import", str(tmp_path / "swish.py"))
    assert done.returncode == 0 and "Swish" in done.stdout, done.stderr
    done = convscope("predict", "run/model.safetensors", "d.png")  # without --import
    assert done.returncode == 1
    assert "swish" in _one_error_line(done.stderr, "predict")


@pytest.mark.parametrize("name,text,pattern", [
    ("nope.py", None, "--import nope.py: no such file"),
    ("bad.py", "def f(:\n    pass\n", r"--import bad.py: SyntaxError: .* \(bad.py, line 1\)"),
    ("boom.py", "import os\n\nraise RuntimeError('no GPU here')\n",
     r"--import boom.py: RuntimeError: no GPU here \(boom.py, line 3\)"),
    ("calls.py", "def f():\n    return 1 / 0\n\nf()\n",
     r"--import calls.py: ZeroDivisionError: division by zero \(calls.py, line 2\)"),
    ("no_such_module_here", None, "--import no_such_module_here: no module named "
                                  "'no_such_module_here'; give a file path"),
])
def test_an_import_that_fails_is_one_line_naming_the_file(capsys, tmp_path: Path, monkeypatch,
                                                          name: str, text: str | None,
                                                          pattern: str) -> None:
    monkeypatch.chdir(tmp_path)
    if text is not None:
        (tmp_path / name).write_text(text)
    rc, _, err = _run(capsys, "summary", "lecture", "--import", name)
    assert rc == 1
    assert re.search(pattern, _one_error_line(err, "summary")), err


def test_viz_filters_of_a_layer_inside_a_block(capsys, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "net.json").write_text(json.dumps({"input_shape": [1, 12, 12], "layers": [
        {"type": "conv", "filters": 4, "size": 3}, {"type": "relu"},
        {"type": "sequential", "layers": [{"type": "conv", "filters": 6, "size": 3},
                                          {"type": "relu"}]},
        {"type": "fc", "units": "classes"}]}))
    rc, out, err = _run(capsys, "viz", "filters", "net.json", "--layer", "all")
    assert rc == 0, err
    assert out.split() == ["filters-layer0.png", "filters-layer2.0.png"]
    assert "layer 2.0: " in err and "6 filters 3×3×4" in err
    rc, _, err = _run(capsys, "viz", "filters", "net.json", "--layer", "2.1")
    assert rc == 1
    assert "layer 2.1 is not a conv layer; conv layers: [0, 2.0]" in _one_error_line(err, "viz")
    rc, _, err = _run(capsys, "viz", "filters", "net.json", "--layer", "x")
    assert "--layer must be a layer index (3, or 3.1 inside block 3) or 'all', got 'x'" in err


def test_old_names_keep_working() -> None:
    import convscope.cli as cli
    import convscope.cli_export as cli_export
    import convscope.cli_inspect as cli_inspect
    from convscope.errors import CommandError

    assert cli.parse_augment("crop=3+flip") == {"crop_padding": 3, "hflip": True}
    table = cli.format_confusion(np.array([[3, 1], [0, 2]]), ["cat", "dog"]).splitlines()
    assert table[1].split() == ["0", "3", "1", "cat"]
    assert cli.CommandError is CommandError and cli.TRAIN.run.__module__ == "convscope.cli.train"
    assert cli_inspect.EXPLAIN.run.__module__ == "convscope.cli.explain"
    assert cli_inspect.write_confusion_png.__module__ == "convscope.cli.evaluate"
    assert cli_export is __import__("convscope.cli.export").cli.export
