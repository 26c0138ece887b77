"""A short real training run for the explorer's tests (test_explore*, test_serve): LeNet-5 on
the bundled digits, saved as a run folder (model.safetensors, metrics.jsonl)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from convscope.data import Normalizer, load_dataset
from convscope.formats.architecture import build_model
from convscope.formats.model_file import save_model
from convscope.train import TrainConfig, Trainer

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]


def block_network(page: Any, foreign: list[str]) -> None:
    """Let a playwright page load file: and data: URLs only: every other request is recorded in
    ``foreign`` and aborted (the pages must work offline)."""

    def guard(route: Any) -> None:
        url = route.request.url
        if url.startswith(("file:", "data:")):
            route.continue_()
        else:
            foreign.append(url)
            route.abort()

    page.route("**/*", guard)


def make_run(run_dir: Path, arch: str = "lenet5", epochs: int = 2, images: int = 1200) -> Path:
    """Train ``arch`` briefly on digits into ``run_dir``; returns the folder."""
    ds = load_dataset("digits")
    x, y = ds.x_train[:images], ds.y_train[:images]
    norm = Normalizer.fit(x)
    model = build_model(arch, ds.input_shape, ds.num_classes, seed=0)
    cut = images * 9 // 10
    trainer = Trainer(model, TrainConfig(epochs=epochs, batch_size=64, lr=3e-3, seed=0),
                      normalizer=norm, run_dir=run_dir, classes=ds.classes,
                      model_info={"dataset": "digits", "arch_name": arch})
    trainer.fit(x[:cut], y[:cut], x[cut:], y[cut:])
    save_model(run_dir / "model.safetensors", model, ds.classes, normalization=norm,
               background=0, dataset="digits", arch_name=arch,
               training={"config": {"label_smoothing": 0.0}})
    if not (run_dir / "metrics.jsonl").is_file():  # a trainer that logs elsewhere: write one
        (run_dir / "metrics.jsonl").write_text("".join(
            json.dumps(h) + "\n" for h in trainer.history), encoding="utf-8")
    return run_dir


def padded(x: np.ndarray, pads: tuple[tuple[int, int], tuple[int, int]]) -> np.ndarray:
    """(C, H, W) zero-padded as the conv layer pads."""
    return np.pad(x, ((0, 0), pads[0], pads[1]))
