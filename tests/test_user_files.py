"""Issue 13, the user's files: no command writes over one of its inputs or over files it did not
create; a run folder is locked while a run uses it (two processes); a run that failed before its
first checkpoint can be retried; kill -9 during a write leaves no temporary file for good; files
honour the umask; a full disk and a folder in the way are errors naming the user's path."""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import textwrap
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from convscope.cli import main
from convscope.formats import files
from convscope.formats.architecture import build_model
from convscope.formats.files import TEMP_SUFFIX, atomic_write, clean_temp_files
from convscope.formats.model_file import save_model
from convscope.formats.run_folder import LOCK, RunLock, check_new_run, folder_state
from convscope.errors import RunFolderError

ROOT = Path(__file__).resolve().parents[1]
TINY = [{"type": "conv", "filters": 2, "size": 3}, {"type": "relu"}, {"type": "pool", "size": 2},
        {"type": "fc", "units": "classes"}]


def _train_args(tmp: Path, out: Path, *more: str) -> list[str]:
    arch = tmp / "tiny.json"
    arch.write_text(json.dumps(TINY))
    return ["train", "--arch", str(arch), "--limit", "60", "--epochs", "1", "--batch-size", "20",
            "--val-fraction", "0", "--seed", "1", "--quiet", "--out", str(out), *more]


def _cli(*argv: str, cwd: Path = ROOT, **kw) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen([sys.executable, "-m", "convscope.cli", *map(str, argv)], cwd=cwd,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            **kw)


def _run(capsys, *argv) -> tuple[int, str, str]:
    rc = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


def _one_line(err: str, command: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"convscope {command}: error: "), err
    return lines[0]


@pytest.fixture
def model_file(tmp_path: Path) -> Path:
    """An untrained digits model file (no training: the tests are about the files)."""
    model = build_model(TINY, (1, 28, 28), 10, seed=0)
    return save_model(tmp_path / "model.safetensors", model, [str(d) for d in range(10)],
                      dataset="digits")


def _temps(folder: Path) -> list[Path]:
    return [p for p in folder.iterdir() if p.name.endswith(TEMP_SUFFIX)]


# ---------------------------------------------------------------------------------------------
# no command writes over its inputs


@pytest.mark.parametrize("argv", [["export", "{m}", "--onnx", "{m}"],
                                  ["export", "{m}", "--torch", "{m}"],
                                  ["export", "{m}", "--torch", "{d}/../{d_name}/model.safetensors"],
                                  ["evaluate", "{m}", "--confusion", "{m}"],
                                  ["viz", "filters", "{m}", "--out", "{m}"]])
def test_no_command_overwrites_its_model(capsys, model_file: Path, argv: list[str]) -> None:
    before = model_file.read_bytes()
    d = model_file.parent
    rc, out, err = _run(capsys, *(a.format(m=model_file, d=d, d_name=d.name) for a in argv))
    assert rc == 1
    assert "that is the input" in _one_line(err, argv[0])
    assert model_file.read_bytes() == before


def test_export_never_overwrites_another_model_file(capsys, model_file: Path) -> None:
    other = model_file.parent / "other.safetensors"
    other.write_bytes(model_file.read_bytes())
    rc, out, err = _run(capsys, "export", model_file, "--torch", other)
    assert rc == 1 and "is a convscope model file; not overwritten" in _one_line(err, "export")
    assert other.read_bytes() == model_file.read_bytes()
    fresh = model_file.parent / "weights.safetensors"  # a new name is written
    assert _run(capsys, "export", model_file, "--torch", fresh)[0] == 0 and fresh.is_file()
    assert _run(capsys, "export", model_file, "--torch", fresh)[0] == 0  # its own export: again


def test_viz_never_overwrites_the_image_it_draws(capsys, model_file: Path) -> None:
    from PIL import Image

    img = model_file.parent / "digit.png"
    Image.fromarray(np.full((28, 28), 200, np.uint8)).save(img)
    before = img.read_bytes()
    rc, out, err = _run(capsys, "viz", "activations", model_file, img, "--out", img)
    assert rc == 1 and "that is the input" in _one_line(err, "viz")
    assert img.read_bytes() == before


# ---------------------------------------------------------------------------------------------
# run folders


def test_train_refuses_a_folder_of_other_files_but_takes_an_empty_one(capsys, tmp_path: Path
                                                                         ) -> None:
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "model.safetensors").write_bytes(b"my own file")
    (mine / "notes.txt").write_text("keep me")
    rc, out, err = _run(capsys, *_train_args(tmp_path, mine))
    assert rc == 1 and "not a convscope run" in _one_line(err, "train")
    assert (mine / "model.safetensors").read_bytes() == b"my own file"
    assert sorted(p.name for p in mine.iterdir()) == ["model.safetensors", "notes.txt"]
    empty = tmp_path / "empty"
    empty.mkdir()
    rc, out, err = _run(capsys, *_train_args(tmp_path, empty))
    assert rc == 0, err
    assert folder_state(empty) == "trained"
    rc, out, err = _run(capsys, *_train_args(tmp_path, empty))  # a finished run: --resume
    assert rc == 1 and "already holds a run; continue it with --resume" in err


def test_folder_states() -> None:
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp) / "run"
        assert folder_state(d) == "missing"
        d.mkdir()
        assert folder_state(d) == "empty"
        (d / LOCK).write_text("")
        (d / f".x.1-abc{TEMP_SUFFIX}").write_text("")
        assert folder_state(d) == "empty"
        (d / "config.json").write_text(json.dumps({"settings": {}}))
        assert folder_state(d) == "started" and check_new_run(d) == "started"
        (d / "checkpoint.safetensors").write_bytes(b"")
        with pytest.raises(RunFolderError, match="already holds a run"):
            check_new_run(d)
        (d / "a.txt").write_text("")
        (d / LOCK).unlink()
        (d / "config.json").write_text("{}")
        with pytest.raises(RunFolderError, match="not a convscope run"):
            check_new_run(d)


def test_a_run_that_failed_before_its_first_checkpoint_can_be_retried(capsys, tmp_path: Path
                                                                        ) -> None:
    out = tmp_path / "run"
    rc, _, err = _run(capsys, *_train_args(tmp_path, out, "--optimizer", "sgd", "--lr", "1e30"))
    assert rc == 1 and "no checkpoint was written yet" in err
    assert (out / "config.json").is_file() and not (out / "checkpoint.safetensors").exists()
    rc, _, err = _run(capsys, *_train_args(tmp_path, out))  # the retry, with a sane rate
    assert rc == 0, err
    assert json.loads((out / "config.json").read_text())["settings"]["lr"] == 3e-3
    assert (out / "checkpoint.safetensors").is_file()


def test_a_failed_start_leaves_no_folder_behind(capsys, tmp_path: Path) -> None:
    from PIL import Image

    data = tmp_path / "one"
    (data / "cat").mkdir(parents=True)
    for i in range(3):
        Image.fromarray(np.full((8, 8), 40 * i, np.uint8)).save(data / "cat" / f"{i}.png")
    out = tmp_path / "run"
    rc, _, err = _run(capsys, "train", "--data", data, "--out", out, "--quiet")
    assert rc == 1 and "only one class" in err
    assert not out.exists()


def _wait_for_lock_holder(folder: Path, pid: int, proc: subprocess.Popen, timeout: float = 60
                          ) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        assert proc.poll() is None, proc.communicate()
        try:
            if json.loads((folder / LOCK).read_text())["pid"] == pid:
                return
        except (OSError, ValueError, KeyError):
            pass
        time.sleep(0.05)
    raise AssertionError("the first training never took the run lock")


def test_two_trainings_in_one_folder_the_second_is_refused_and_kill_9_frees_it(tmp_path: Path
                                                                                 ) -> None:
    out = tmp_path / "run"
    first = _cli(*_train_args(tmp_path, out)[:-2], "--epochs", "500", "--out", out)
    try:
        _wait_for_lock_holder(out, first.pid, first)
        second = _cli(*_train_args(tmp_path, out))
        sout, serr = second.communicate(timeout=120)
        assert second.returncode == 1, serr
        line = _one_line(serr, "train")
        assert "is in use by another convscope run" in line and f"pid {first.pid}" in line
        assert first.poll() is None  # the first goes on
    finally:
        first.send_signal(signal.SIGKILL)
        first.communicate(timeout=60)
    assert (out / LOCK).is_file()  # the file stays; the kernel released the lock with the process
    third = _cli("train", "--resume", out, "--epochs", "1", "--quiet")
    tout, terr = third.communicate(timeout=300)
    assert third.returncode == 0, terr


def test_the_lock_is_reentrant_in_one_process_and_exclusive_between_processes(tmp_path: Path
                                                                                 ) -> None:
    with RunLock(tmp_path / "r"):
        with RunLock(tmp_path / "r"):  # the command and its Trainer
            pass
        code = ("import sys; from convscope.formats.run_folder import RunLock\n"
                "try:\n    RunLock(sys.argv[1]).acquire()\nexcept ValueError as e:\n"
                "    print(e); sys.exit(3)\n")
        other = subprocess.run([sys.executable, "-c", code, str(tmp_path / "r")], cwd=ROOT,
                               capture_output=True, text=True, timeout=60)
        assert other.returncode == 3 and "in use by another convscope run" in other.stdout
    other = subprocess.run([sys.executable, "-c", code, str(tmp_path / "r")], cwd=ROOT,
                           capture_output=True, text=True, timeout=60)
    assert other.returncode == 0, other.stdout + other.stderr


# ---------------------------------------------------------------------------------------------
# temporary files, permissions, errors


_KILLED_WRITER = """
import os, sys, time
from convscope.formats import files
def hang(fd):
    print("writing", flush=True)
    time.sleep(120)
files.os.fsync = hang
files.atomic_write(sys.argv[1], b"x" * 100_000)
"""


def test_kill_9_during_a_write_leaves_no_temporary_file_for_good(capsys, tmp_path: Path) -> None:
    out = tmp_path / "run"
    assert _run(capsys, *_train_args(tmp_path, out))[0] == 0
    before = (out / "metrics.jsonl").read_bytes()
    writer = subprocess.Popen([sys.executable, "-c", _KILLED_WRITER, str(out / "metrics.jsonl")],
                              cwd=ROOT, stdout=subprocess.PIPE, text=True)
    assert writer.stdout.readline().strip() == "writing"
    writer.send_signal(signal.SIGKILL)
    writer.wait(timeout=60)
    left = _temps(out)
    assert len(left) == 1 and left[0].name.startswith(".metrics.jsonl.")
    assert (out / "metrics.jsonl").read_bytes() == before  # the old file, whole
    rc, _, err = _run(capsys, "train", "--resume", out, "--epochs", "2", "--quiet")
    assert rc == 0, err
    assert _temps(out) == []


def test_a_live_writers_temporary_file_is_kept(tmp_path: Path) -> None:
    mine = tmp_path / f".f.{os.getpid()}-abcd{TEMP_SUFFIX}"
    dead = tmp_path / f".f.999999999-abcd{TEMP_SUFFIX}"
    mine.write_text("")
    dead.write_text("")
    assert clean_temp_files(tmp_path) == [dead]
    assert mine.exists()


@pytest.mark.parametrize("mask", [0o022, 0o027, 0o002])
def test_written_files_honour_the_umask(tmp_path: Path, mask: int) -> None:
    old = os.umask(mask)
    try:
        path = atomic_write(tmp_path / "a.json", "{}")
    finally:
        os.umask(old)
    assert path.stat().st_mode & 0o777 == 0o666 & ~mask
    os.chmod(path, 0o600)  # a file the user made private stays private when replaced
    atomic_write(path, "[]")
    assert path.stat().st_mode & 0o777 == 0o600


def test_a_cli_written_file_honours_the_umask(capsys, model_file: Path) -> None:
    old = os.umask(0o002)
    try:
        target = model_file.parent / "w.safetensors"
        assert _run(capsys, "export", model_file, "--torch", target)[0] == 0
    finally:
        os.umask(old)
    assert target.stat().st_mode & 0o777 == 0o664


def test_disk_full_names_the_users_path_and_leaves_nothing(capsys, model_file: Path,
                                                          monkeypatch) -> None:
    def full(fd: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(files.os, "fsync", full)
    target = model_file.parent / "w.safetensors"
    rc, _, err = _run(capsys, "export", model_file, "--torch", target)
    line = _one_line(err, "export")
    assert rc == 1 and f"{target}: no space left on the device" in line
    assert TEMP_SUFFIX not in line and ".tmp" not in line
    assert not target.exists() and _temps(model_file.parent) == []


def test_a_folder_in_the_way_names_the_users_path(capsys, model_file: Path) -> None:
    target = model_file.parent / "out.onnx"
    target.mkdir()
    rc, _, err = _run(capsys, "export", model_file, "--onnx", target, "--no-check")
    line = _one_line(err, "export")
    assert rc == 1 and line.endswith(f"{target}: is a folder; give a file name")
    assert _temps(model_file.parent) == []


# ---------------------------------------------------------------------------------------------
# Ctrl-C


def test_an_interrupt_in_the_middle_of_a_step_claims_no_checkpoint(tmp_path: Path) -> None:
    """The second Ctrl-C lands inside a step: nothing is saved, and nothing is said to be."""
    from convscope.cli._outputs import interrupted_line
    from convscope.data import load_dataset
    from convscope.train import TrainConfig, Trainer

    ds = load_dataset("digits")
    model = build_model(TINY, (1, 28, 28), 10, seed=0)
    trainer = Trainer(model, TrainConfig(epochs=1, batch_size=20, seed=0), run_dir=tmp_path / "r")
    calls = {"n": 0}
    backward = model.backward

    def interrupted_backward(grad):
        calls["n"] += 1
        if calls["n"] == 3:
            trainer._request_stop()  # the first Ctrl-C ...
            raise KeyboardInterrupt  # ... and the second, milliseconds later, mid-step
        return backward(grad)

    model.backward = interrupted_backward
    result = trainer.fit(ds.x_train[:100], ds.y_train[:100])
    assert result.status == "interrupted" and trainer.saved_at is None
    assert not (tmp_path / "r" / "checkpoint.safetensors").exists()
    line = interrupted_line(trainer, tmp_path / "r")
    assert "checkpoint saved" not in line and "nothing saved" in line


def test_double_ctrl_c_never_claims_a_checkpoint_that_was_not_written(tmp_path: Path) -> None:
    out = tmp_path / "run"
    proc = _cli(*_train_args(tmp_path, out)[:-3], "--limit", "2000", "--epochs", "50",
                "--out", out)
    try:
        end = time.monotonic() + 120
        while not (out / "config.json").is_file() and time.monotonic() < end:
            time.sleep(0.05)
        time.sleep(1.0)  # into the first epoch
        proc.send_signal(signal.SIGINT)
        time.sleep(0.002)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err
    if "checkpoint saved" in err:  # then it is there, at the point it names
        from convscope.formats.model_file import CHECKPOINT_FORMAT, read_safetensors

        meta = read_safetensors(out / "checkpoint.safetensors", CHECKPOINT_FORMAT)[1]
        at = (f"at batch {meta['batch']} of epoch {meta['epoch'] + 1}" if meta["batch"]
              else f"after epoch {meta['epoch']}")
        assert f"checkpoint saved {at}" in err
    else:
        assert "interrupted" in err


def test_ctrl_c_during_matplotlibs_import_leaves_the_next_picture_working() -> None:
    """A second Ctrl-C that lands while the epoch's report imports matplotlib: the report the
    interrupted run writes next imports it again, which half-loaded modules would break."""
    code = textwrap.dedent("""
        import sys
        from convscope.inspect import canvas

        def tracer(frame, event, arg):  # Ctrl-C inside matplotlib/collections.py, once its
            if (event == "call" and frame.f_code.co_name == "<module>"  # classes exist
                    and frame.f_code.co_filename.endswith("collections.py")
                    and "matplotlib" in frame.f_code.co_filename):
                return line
            return None

        def line(frame, event, arg):
            if event == "line" and "PolyCollection" in frame.f_globals:
                sys.settrace(None)
                raise KeyboardInterrupt
            return line

        sys.settrace(tracer)
        try:
            canvas.require()
        except KeyboardInterrupt:
            print("interrupted")
        figure, agg = canvas.require()
        print(figure.__name__, agg.__name__)
    """)
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                         env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["interrupted", "Figure", "FigureCanvasAgg"]
