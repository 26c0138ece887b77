"""``convscope train --workers N``: the mpirun command it builds, and a real 2-worker run through
the CLI that equals the 1-process run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import convscope.distributed as dist
from convscope.distributed.launch import strip_option

ROOT = Path(__file__).resolve().parent.parent


def test_mpirun_command_for_one_machine_and_for_a_hostfile(tmp_path: Path) -> None:
    cmd = dist.mpirun_command(["train", "--epochs", "1"], 3, mpirun="/x/mpirun", python="/py")
    assert cmd == ["/x/mpirun", "--bind-to", "none", "--oversubscribe", "-np", "3", "/py", "-m",
                   "mpi4py", "-m", "convscope", "train", "--epochs", "1"]
    hosts = tmp_path / "hosts"
    hosts.write_text("a slots=4\nb slots=4\n")
    cmd = dist.mpirun_command(["train"], 8, hostfile=str(hosts), mpirun="mpirun", python="py")
    assert cmd[:5] == ["mpirun", "--bind-to", "none", "--hostfile", str(hosts)]
    assert "--oversubscribe" not in cmd
    with pytest.raises(FileNotFoundError, match="--hostfile nowhere: no such file"):
        dist.mpirun_command(["train"], 2, hostfile="nowhere", mpirun="mpirun")
    with pytest.raises(ValueError, match="--workers must be an int >= 1, got 0"):
        dist.mpirun_command(["train"], 0, mpirun="mpirun")


def test_mpirun_env_yields_and_keeps_explicit_settings() -> None:
    env = dist.mpirun_env({"OMPI_MCA_mpi_yield_when_idle": "0", "PATH": "/bin"})
    assert env["OMPI_MCA_mpi_yield_when_idle"] == "0" and env["PATH"] == "/bin"
    assert dist.mpirun_env({})["OMPI_MCA_mpi_yield_when_idle"] == "1"
    if os.geteuid() == 0:
        assert dist.mpirun_env({})["OMPI_ALLOW_RUN_AS_ROOT"] == "1"


def test_strip_option() -> None:
    argv = ["train", "--workers", "2", "--epochs", "1", "--workers=3", "--sync-bn", "--x"]
    assert strip_option(argv, ["--workers"]) == ["train", "--epochs", "1", "--sync-bn", "--x"]
    assert strip_option(argv, ["--sync-bn"], takes_value=False) == [
        "train", "--workers", "2", "--epochs", "1", "--workers=3", "--x"]


def test_world_size_from_the_launchers_environment() -> None:
    assert dist.world_size_from_env({"OMPI_COMM_WORLD_SIZE": "4"}) == 4
    assert dist.world_size_from_env({"PMI_SIZE": "2"}) == 2
    assert dist.world_size_from_env({}) is None


def test_a_missing_mpi4py_is_one_line_naming_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "mpi4py", None)  # import mpi4py now raises ImportError
    with pytest.raises(dist.MpiUnavailable) as info:
        dist.find_mpirun()
    assert str(info.value) == ("data-parallel training needs mpi4py and Open MPI: "
                               "pip install 'convscope[mpi]'")
    with pytest.raises(ImportError, match=r"pip install 'convscope\[mpi\]'"):
        dist.MPIComm()


# -- through the command line ---------------------------------------------------------------
TRAIN = ["train", "--limit", "300", "--epochs", "1", "--arch", "lecture", "--seed", "3",
         "--batch-size", "50", "--quiet"]


def test_workers_without_mpi4py_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    from convscope.cli import main

    monkeypatch.setitem(sys.modules, "mpi4py", None)
    assert main(TRAIN + ["--workers", "2", "--out", str(tmp_path / "r")]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["convscope train: error: data-parallel training needs mpi4py and Open MPI: "
                   "pip install 'convscope[mpi]'"]
    assert not (tmp_path / "r").exists()  # nothing written


@pytest.mark.parametrize("bad,msg", [(["--workers", "0"], "--workers must be >= 1, got 0"),
                                     (["--hostfile", "h"], "--hostfile needs --workers N")])
def test_bad_worker_options(bad: list, msg: str, tmp_path: Path,
                            capsys: pytest.CaptureFixture) -> None:
    from convscope.cli import main

    assert main(TRAIN + bad + ["--out", str(tmp_path / "r")]) == 1
    assert capsys.readouterr().err.strip() == f"convscope train: error: {msg}"


def test_two_workers_through_the_cli_equal_one_process(tmp_path: Path) -> None:
    pytest.importorskip("mpi4py")
    from convscope.cli import main
    from convscope.formats.model_file import load_model

    assert main(TRAIN + ["--out", str(tmp_path / "one")]) == 0
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "convscope", *TRAIN, "--workers", "2",
                           "--out", str(tmp_path / "two")], env=env, capture_output=True,
                          text=True, timeout=90, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("test accuracy:") == 1  # rank 0 alone prints
    assert json.loads((tmp_path / "two" / "config.json").read_text())["argv"][-4:] == [
        "--workers", "2", "--out", str(tmp_path / "two")]
    one = load_model(tmp_path / "one" / "model.safetensors").model.state_dict()
    two = load_model(tmp_path / "two" / "model.safetensors").model.state_dict()
    for k in one:
        np.testing.assert_allclose(two[k], one[k], rtol=1e-5, atol=1e-6)
    r1 = json.loads((tmp_path / "one" / "results.json").read_text())
    r2 = json.loads((tmp_path / "two" / "results.json").read_text())
    assert r2["test_images"] == r1["test_images"] == 300
    assert abs(r2["test_correct"] - r1["test_correct"]) <= 1
    lines = (tmp_path / "two" / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 1
