"""The train command's default thread count: the cores no other process runs on."""

from __future__ import annotations

import os

import pytest

from convscope.cli import _common


def test_idle_cores_is_between_one_and_the_core_count() -> None:
    n = _common.idle_cores(samples=2, interval=0.01)
    assert 1 <= n <= (os.cpu_count() or 1)


def test_idle_cores_subtracts_the_other_running_processes(monkeypatch: pytest.MonkeyPatch,
                                                          tmp_path: os.PathLike) -> None:
    readings = iter(["0.5 0.4 0.3 3/200 999\n", "0.5 0.4 0.3 2/200 999\n"])  # 2, then 1 other
    real_open = open

    def fake_open(path, *a, **k):  # noqa: ANN001 - open's own signature
        if path == "/proc/loadavg":
            f = tmp_path / "loadavg"
            f.write_text(next(readings))
            return real_open(f, *a, **k)
        return real_open(path, *a, **k)

    monkeypatch.setattr("builtins.open", fake_open)
    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    assert _common.idle_cores(samples=2, interval=0) == 1  # the fewest others seen: 1


def test_train_help_says_why_the_default() -> None:
    assert "no other process is running" in _common.TRAIN_THREADS_HELP
    assert "4-5x slower" in _common.TRAIN_THREADS_HELP
