"""The device path on a real GPU: CuPy against NumPy for every layer kind (float64 to 1e-10,
float32 to 1e-4), training steps and a Trainer epoch equal to the CPU's.  Marked ``gpu``;
skipped without CuPy and a GPU (``python -m pytest -m gpu tests/test_gpu.py``).  The checks are
scripts/gpu_check.py's, which also times the presets against PyTorch CUDA."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.gpu

_SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "gpu_check.py"
_spec = importlib.util.spec_from_file_location("gpu_check", _SCRIPT)
gpu_check = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(gpu_check)

_WHY = gpu_check.gpu_missing()
if _WHY is not None:
    pytest.skip(f"no GPU: {_WHY}", allow_module_level=True)

import convscope as cs  # noqa: E402
from convscope import runtime  # noqa: E402


def test_every_layer_kind_on_cupy_equals_numpy() -> None:
    rows = gpu_check.layer_rows()
    bad = [r for r in rows if not r["ok"]]
    assert rows and not bad, bad


def test_training_steps_and_a_trainer_epoch_equal_the_cpu() -> None:
    rows = gpu_check.step_rows()
    bad = [r for r in rows if not r["ok"]]
    assert len(rows) == 5 and not bad, bad


def test_the_model_moves_there_and_back() -> None:
    import cupy

    net = gpu_check.step_net(np.float32)
    before = {k: v.copy() for k, v in net.state_dict().items()}
    net.to("cuda")
    assert net.device.startswith("cuda")
    assert all(isinstance(v, cupy.ndarray) for v in net.state_dict().values())
    drop = cs.Dropout(0.5, seed=0).to("cuda")
    mask = drop.forward(cupy.ones((4, 100), cupy.float32))
    assert isinstance(mask, cupy.ndarray)  # drawn on the GPU
    net.to("cpu")
    for k, v in before.items():
        np.testing.assert_array_equal(net.state_dict()[k], v)
    assert runtime.device_of(net.params["0.weight"]) == "cpu"
