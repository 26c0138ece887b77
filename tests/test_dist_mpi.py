"""Data-parallel training through the real engine: mpirun, Open MPI and mpi4py from PyPI.

Each job runs with ``--bind-to none --oversubscribe`` (2 cores here), a timeout, and ranks that
yield when idle; ranks start as ``python -m mpi4py`` so that an exception aborts the job.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("mpi4py")
import convscope.distributed as dist  # noqa: E402

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent


def mpirun(k: int, *args: str, timeout: float = 60, module: bool = False
           ) -> subprocess.CompletedProcess:
    """Run ``python -m mpi4py <args>`` on k ranks (``module``: ``-m <args>``)."""
    env = dist.mpirun_env()
    env.update(OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", PYTHONUNBUFFERED="1",
               PYTHONPATH=os.pathsep.join([str(HERE), str(ROOT), env.get("PYTHONPATH", "")]))
    cmd = [dist.find_mpirun(), "--bind-to", "none", "--oversubscribe", "-np", str(k),
           sys.executable, "-m", "mpi4py"] + (["-m"] if module else []) + list(args)
    return subprocess.run(cmd, env=env, timeout=timeout, capture_output=True, text=True, cwd=ROOT)


@pytest.fixture(scope="module", params=[2, 3])
def equal_run(request: pytest.FixtureRequest) -> dict:
    k = request.param
    proc = mpirun(k, str(HERE / "mpi_worker.py"), "equal")
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["size"] == k
    return out


@pytest.mark.parametrize("name", ["f64_steps", "f64_epoch_uneven", "f64_last_batch_below_k"])
def test_workers_equal_one_process_float64(equal_run: dict, name: str) -> None:
    got = equal_run[name]
    assert got["diff"] <= 1e-12, got
    assert got["spread"] == 0.0  # every rank holds the same bits


def test_uneven_and_empty_slices_were_exercised(equal_run: dict) -> None:
    k = equal_run["size"]
    assert equal_run["f64_epoch_uneven"]["counts"][-1] == dist.split_sizes(13, k)[0]
    assert equal_run["f64_last_batch_below_k"]["counts"][3] == 1  # ranks 1.. had none


def test_workers_equal_one_process_float32(equal_run: dict) -> None:
    assert equal_run["f32_epoch"]["diff"] <= 1e-5 and equal_run["f32_epoch"]["spread"] == 0.0


def test_sync_bn_is_exact_and_local_bn_is_not(equal_run: dict) -> None:
    assert equal_run["sync_bn"]["diff"] <= 1e-12 and equal_run["sync_bn"]["spread"] == 0.0
    assert equal_run["negative_local_bn"] > 1e-3


def test_negative_control_ddp_mean_is_detected(equal_run: dict) -> None:
    assert equal_run["negative_ddp_mean"] > 1e-5  # 10 million times the tolerance


@pytest.mark.parametrize("how", ["raise", "kill"])
def test_a_failing_rank_ends_the_job_nonzero_within_seconds(how: str) -> None:
    t0 = time.perf_counter()
    proc = mpirun(2, str(HERE / "mpi_worker.py"), how, timeout=30)
    seconds = time.perf_counter() - t0
    assert proc.returncode != 0
    assert seconds < 20, f"the job took {seconds:.1f} s to end"
    if how == "raise":
        assert "rank 1 fails on purpose" in proc.stderr


# -- the Trainer with comm= ------------------------------------------------------------------------
def _trainer_run(k: int, run_dir: Path, epochs: int, *flags: str) -> dict:
    if k == 1:  # one plain process, no mpirun
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(HERE), str(ROOT)])}
        proc = subprocess.run([sys.executable, str(HERE / "mpi_trainer.py"), str(run_dir),
                               str(epochs), *flags], env=env, capture_output=True, text=True,
                              timeout=60, cwd=ROOT)
    else:
        proc = mpirun(k, str(HERE / "mpi_trainer.py"), str(run_dir), str(epochs), *flags)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _final(out: dict) -> dict:
    import numpy as np

    with np.load(out["final"]) as f:
        return {k: f[k] for k in f.files}


def _max_diff(a: dict, b: dict) -> float:
    import numpy as np

    assert a.keys() == b.keys()
    return max(float(np.max(np.abs(a[k] - b[k]))) if a[k].size else 0.0 for k in a)


def test_trainer_resumes_under_another_number_of_workers(tmp_path: Path) -> None:
    """2 epochs in one process against: 1 epoch on 2 workers, then resumed on 3 for epoch 2;
    and 1 epoch on 3 workers, resumed in one process.  Dropout, augmentation, validation and
    SGD's momentum included; float64; a constant rate (a cosine one follows the total epochs,
    which these resumes raise)."""
    ref = _final(_trainer_run(1, tmp_path / "one", 2))
    a = _trainer_run(2, tmp_path / "a", 1)
    assert a["other_rank_writes"] == [0] and len(set(a["crcs"])) == 1
    a2 = _trainer_run(3, tmp_path / "a", 2, "resume")
    assert a2["status"] == ["completed"] * 3 and len(set(a2["crcs"])) == 1
    assert a2["other_rank_writes"] == [0, 0]  # rank 0 alone writes
    assert [h["epoch"] for h in a2["history"]] == [1, 2]
    assert _max_diff(_final(a2), ref) <= 1e-12
    _trainer_run(3, tmp_path / "b", 1)
    b2 = _trainer_run(1, tmp_path / "b", 2, "resume")
    assert _max_diff(_final(b2), ref) <= 1e-12
    for name in ("checkpoint.safetensors", "model.safetensors", "metrics.jsonl"):
        assert (tmp_path / "a" / name).is_file()


def test_trainer_sync_bn_equals_one_process(tmp_path: Path) -> None:
    ref = _final(_trainer_run(1, tmp_path / "one", 1, "bn"))
    got = _trainer_run(3, tmp_path / "three", 1, "bn", "sync_bn")
    assert len(set(got["crcs"])) == 1
    assert _max_diff(_final(got), ref) <= 1e-12
    local = _trainer_run(2, tmp_path / "local", 1, "bn")  # per-worker statistics: not equal
    assert _max_diff(_final(local), ref) > 1e-3


def test_a_nan_loss_on_one_rank_stops_every_rank_at_the_same_step(tmp_path: Path) -> None:
    out = _trainer_run(2, tmp_path / "nan", 2, "nan")
    assert out["status"] == ["diverged at step 6"] * 2
