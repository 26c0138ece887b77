"""The residual presets: ResNet-20 (He et al. 2015, CIFAR, 32×32×3), resnet_small and resnet9
(28×28 grey): their structure and parameter counts, the lecture's arithmetic through them, ONNX export
checked against onnxruntime, building by name from the CLI, and a short training run on the
bundled digits in which the loss falls and the accuracy rises.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import convscope as cs
from convscope.cli import main as convscope
from convscope.data import Normalizer, load_dataset
from convscope.formats.architecture import build_model
from convscope.formats.presets import list_presets
from convscope.train import TrainConfig, Trainer


def _weighted(model: cs.Layer) -> list[cs.Layer]:
    """Conv and fc layers, depth first (the layers ResNet-20's 20 counts)."""
    out = []
    for _, layer in model.children():
        if layer.children():
            out += _weighted(layer)
        elif isinstance(layer, (cs.Conv2D, cs.Linear)):
            out.append(layer)
    return out


def test_resnet20_is_he_et_al_s_cifar_net() -> None:
    model = build_model("resnet20", allocate=False)
    assert model.input_shape == (3, 32, 32) and model.output_shape((3, 32, 32)) == (10,)
    # option B: 1x1 projections where the shape changes (16 -> 32 -> 64 filters, 32 -> 16 -> 8):
    # 269,722 parameters as option A (the zero-padding shortcut) + 2 · (1x1 conv + BN)
    a = 269_722
    projections = (16 * 32 + 2 * 32) + (32 * 64 + 2 * 64)
    assert model.param_count() == a + projections == 272_474
    blocks = [layer for layer in model if isinstance(layer, cs.Residual)]
    assert len(blocks) == 9
    assert [b.shortcut is not None for b in blocks] == [False] * 3 + [True, False, False] * 2
    convs = _weighted(model)
    # 20 weighted layers: the first conv, 9 blocks × 2 convs, the fc (+ 2 projection shortcuts)
    assert len(convs) - 2 == 20
    shapes = [model[i].output_shape(s) for i, s in ((3, (16, 32, 32)), (9, (16, 32, 32)))]
    assert shapes == [(16, 32, 32), (32, 16, 16)]
    walk = model.explain()
    assert walk.total_params == 272_474 and walk.steps[-1].output_shape == (10,)
    assert "shortcut: 16×16×32 + 16×16×32 → 16×16×32" in str(walk)
    assert "shortcut: 8×8×64 + 8×8×64 → 8×8×64" in str(walk)


def test_resnet_small_is_for_28x28_grey_images() -> None:
    model = build_model("resnet_small", seed=0)
    assert model.input_shape == (1, 28, 28)
    assert sum(isinstance(layer, cs.Residual) for layer in model) == 6
    assert model.param_count() == 174_970
    widths = [b.block[0].out_channels for b in model if isinstance(b, cs.Residual)]
    assert widths == [16, 16, 32, 32, 64, 64]
    assert model.output_shape((1, 28, 28)) == (10,)
    steps = {s.label: s for s in model.explain().leaves()}
    assert steps["7.block.0"].output_shape == (32, 14, 14)
    assert steps["11.block.0"].output_shape == (64, 7, 7)
    assert steps["11.shortcut.0"].output_shape == (64, 7, 7)
    assert "(14 − 3 + 2·1) / 2 + 1 = 7.50 → 7×7×64" in steps["11.block.0"].text
    assert {"resnet_small", "resnet20"} <= set(list_presets())


def test_resnet9_is_page_s_plan_at_a_quarter_width() -> None:
    model = build_model("resnet9", seed=0)
    assert model.input_shape == (1, 28, 28) and model.output_shape((1, 28, 28)) == (10,)
    blocks = [layer for layer in model if isinstance(layer, cs.Residual)]
    assert [b.shortcut for b in blocks] == [None, None]  # identity shortcuts
    convs = [c.out_channels for c in _weighted(model) if isinstance(c, cs.Conv2D)]
    assert convs == [16, 32, 32, 32, 64, 128, 128, 128]
    # 3x3 convs without bias, each + batch norm (2 parameters per channel); fc 128 -> 10
    cin = [1, 16, 32, 32, 32, 64, 128, 128]
    expected = sum(9 * a * b + 2 * b for a, b in zip(cin, convs)) + 128 * 10 + 10
    assert model.param_count() == expected == 412_666
    sides = [s.output_shape for s in model.explain().steps]
    pools = [shape for step, shape in zip(model, sides) if isinstance(step, cs.MaxPool2D)]
    assert pools == [(32, 14, 14), (64, 7, 7), (128, 3, 3)]
    walk = str(model.explain())  # the last pool floors 7 -> 3, and the lecture says so
    assert "(7 − 2 + 2·0) / 2 + 1 = 3.50 → 3×3×128 (floored, as PyTorch does)" in walk
    assert "shortcut: 14×14×32 + 14×14×32 → 14×14×32" in walk


@pytest.mark.parametrize("name", ["resnet_small", "resnet9", "resnet20"])
def test_presets_export_to_onnx_as_onnxruntime_computes(name: str) -> None:
    pytest.importorskip("onnxruntime")
    from convscope.formats.onnx.export import export_onnx, run_onnx

    model = build_model(name, seed=0)
    rng = np.random.default_rng(1)
    for k, v in model.buffers.items():  # statistics away from 0 / 1, so BN is not a no-op
        if k.endswith("running_mean"):
            v[...] = rng.uniform(-0.2, 0.2, v.shape)
        elif k.endswith("running_var"):
            v[...] = rng.uniform(0.5, 1.5, v.shape)
    model.eval()
    proto = export_onnx(model)
    ops = [n.op_type for n in proto.graph.node]
    assert ops.count("Add") == sum(isinstance(layer, cs.Residual) for layer in model)
    x = rng.standard_normal((2, *model.input_shape)).astype(np.float32)
    np.testing.assert_allclose(run_onnx(proto, x), model.predict(x), rtol=1e-4, atol=1e-4)


def test_presets_by_name_from_the_cli(capsys: pytest.CaptureFixture) -> None:
    assert convscope(["summary", "resnet20"]) == 0
    out = capsys.readouterr().out
    assert "total: 272,474 parameters" in out and "3.block.0" in out
    assert convscope(["summary", "resnet_small"]) == 0
    assert "total: 174,970 parameters" in capsys.readouterr().out


def _digits(n_train: int, n_val: int) -> tuple[np.ndarray, ...]:
    """The bundled digits, 2x2-averaged to 14x14 (a quarter of the arithmetic)."""
    ds = load_dataset("digits")
    half = lambda x: x.reshape(len(x), 1, 14, 2, 14, 2).mean(axis=(3, 5)).astype(np.uint8)  # noqa: E731
    rng = np.random.default_rng(0)
    order = rng.permutation(len(ds.x_train))
    tr, va = order[:n_train], order[n_train:n_train + n_val]
    return half(ds.x_train[tr]), ds.y_train[tr], half(ds.x_train[va]), ds.y_train[va]


def test_resnet_small_trains_on_the_digits(tmp_path: Path) -> None:
    """The preset on 14x14 digits, 3 epochs of 256 images: the training loss falls, validation
    accuracy rises well above chance (10%)."""
    x, y, xv, yv = _digits(256, 128)
    model = build_model("resnet_small", (1, 14, 14), 10, seed=0)
    config = TrainConfig(epochs=3, batch_size=32, lr=3e-3, seed=0, augment=None)
    trainer = Trainer(model, config, normalizer=Normalizer.fit(x), run_dir=tmp_path,
                      classes=[str(i) for i in range(10)])
    before = trainer.evaluate(xv, yv).accuracy
    result = trainer.fit(x, y, xv, yv)
    lines = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert result.status == "completed" and len(lines) == 3
    assert lines[-1]["train_loss"] < 0.8 * lines[0]["train_loss"]
    assert lines[-1]["train_accuracy"] > lines[0]["train_accuracy"]
    assert result.best_val_accuracy >= max(0.5, before + 0.3), (before, lines)
