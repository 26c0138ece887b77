"""The Trainer: the loop against PyTorch, schedules, reproducibility, exact resume after a stop,
the NaN stop, best-model keeping, early stopping, the metrics log and callbacks."""

from __future__ import annotations

import json
import math
import os
import signal
from pathlib import Path

import numpy as np
import pytest

import convscope as cs
from convscope.data import BatchLoader, Normalizer
from convscope.io import CHECKPOINT_FORMAT, ModelFileError, load_model, read_safetensors
from convscope.models import build_model
from convscope.train import (TrainConfig, Trainer, TrainingDiverged, evaluate, learning_rate)
from convscope.layers.registry import unregister
from convscope.train.checkpoint import rng_to_array

torch = pytest.importorskip("torch")

ARCH = [{"type": "conv", "filters": 4, "size": 3, "pad": 1}, {"type": "batchnorm"},
        {"type": "relu"}, {"type": "pool", "size": 2}, {"type": "dropout", "p": 0.2},
        {"type": "fc", "units": 16}, {"type": "relu"}, {"type": "fc", "units": "classes"}]
TIMING = ("seconds", "images_per_second")


def _data(n: int, seed: int = 0, classes: int = 4) -> tuple[np.ndarray, np.ndarray]:
    """uint8 (n, 1, 8, 8) noise with a bright 3x3 blob in the corner that names the class."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, classes, n)
    x = rng.integers(0, 90, size=(n, 1, 8, 8))
    for i, k in enumerate(y):
        r, c = divmod(int(k), 2)
        x[i, 0, 1 + 4 * r:4 + 4 * r, 1 + 4 * c:4 + 4 * c] += 150
    return x.astype(np.uint8), y.astype(np.int64)


def _trainer(run_dir=None, seed: int = 0, callbacks=(), **cfg) -> Trainer:
    config = TrainConfig(**{"epochs": 3, "batch_size": 16, "lr": 3e-3, "seed": seed,
                            "augment": {"crop_padding": 1}, **cfg})
    model = build_model(ARCH, (1, 8, 8), 4, seed=seed)
    x, _ = _data(200)
    return Trainer(model, config, normalizer=Normalizer.fit(x), run_dir=run_dir,
                   classes=["a", "b", "c", "d"], callbacks=callbacks)


def _same_weights(a: Trainer, b: Trainer) -> None:
    sa, sb = a.model.state_dict(), b.model.state_dict()
    assert list(sa) == list(sb)
    for k in sa:
        np.testing.assert_array_equal(sa[k], sb[k], err_msg=k)


def _without_timing(history: list[dict]) -> list[dict]:
    return [{k: v for k, v in h.items() if k not in TIMING} for h in history]


# ---------------------------------------------------------------------------------------------
# schedules and the loop itself


@pytest.mark.parametrize("epochs,spe,min_lr", [(5, 7, 0.0), (3, 10, 1e-4)])
def test_cosine_schedule_matches_torch(epochs: int, spe: int, min_lr: float) -> None:
    cfg = TrainConfig(epochs=epochs, lr=0.1, schedule="cosine", min_lr=min_lr)
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=0.1)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs * spe, eta_min=min_lr)
    for step in range(epochs * spe):
        assert learning_rate(cfg, step, spe) == pytest.approx(opt.param_groups[0]["lr"], abs=1e-12)
        opt.step()
        sched.step()


def test_step_schedule_matches_torch() -> None:
    cfg = TrainConfig(epochs=9, lr=0.5, schedule="step", step_size=2, gamma=0.3)
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=0.5)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=2, gamma=0.3)
    spe = 4
    for epoch in range(9):
        for b in range(spe):
            assert learning_rate(cfg, epoch * spe + b, spe) == pytest.approx(
                opt.param_groups[0]["lr"], rel=1e-12)
        opt.step()
        sched.step()


def test_warmup_ramps_linearly_then_follows_the_schedule() -> None:
    cfg = TrainConfig(epochs=4, lr=0.2, schedule="constant", warmup_epochs=1)
    spe = 5
    assert [learning_rate(cfg, s, spe) for s in range(5)] == pytest.approx(
        [0.2 * (s + 1) / 5 for s in range(5)])
    assert learning_rate(cfg, 5, spe) == 0.2
    cos = TrainConfig(epochs=4, lr=0.2, schedule="cosine", warmup_epochs=1)
    assert learning_rate(cos, 5, spe) == pytest.approx(0.2)
    assert learning_rate(cos, 20, spe) == pytest.approx(0.0, abs=1e-12)


@pytest.mark.parametrize("optimizer,schedule", [("sgd", "cosine"), ("adamw", "step"),
                                                ("adam", "constant")])
def test_fit_matches_a_pytorch_training_loop(optimizer: str, schedule: str) -> None:
    """Two epochs of Trainer.fit give the weights of the textbook PyTorch loop (float64)."""
    x, y = _data(96, seed=1)
    arch = [{"type": "conv", "filters": 3, "size": 3}, {"type": "relu"},
            {"type": "pool", "size": 2}, {"type": "fc", "units": "classes"}]
    model = build_model(arch, (1, 8, 8), 4, seed=0, dtype=np.float64)
    tmodel = torch.nn.Sequential(torch.nn.Conv2d(1, 3, 3), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
                                 torch.nn.Flatten(), torch.nn.Linear(27, 4)).double()
    tmodel.load_state_dict({k: torch.from_numpy(v.copy()) for k, v in model.state_dict().items()})
    cfg = TrainConfig(epochs=2, batch_size=10, optimizer=optimizer, lr=0.05, momentum=0.9,
                      nesterov=optimizer == "sgd", weight_decay=1e-3, schedule=schedule,
                      step_size=1, gamma=0.5, label_smoothing=0.1, seed=3)
    norm = Normalizer.fit(x)
    Trainer(model, cfg, normalizer=norm).fit(x, y)

    topt = {"sgd": lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.9, nesterov=True,
                                             weight_decay=1e-3),
            "adam": lambda p: torch.optim.Adam(p, lr=0.05, weight_decay=1e-3),
            "adamw": lambda p: torch.optim.AdamW(p, lr=0.05, weight_decay=1e-3)}[optimizer](
        tmodel.parameters())
    loader = BatchLoader(x, y, 10, seed=3, normalizer=norm)
    step = 0
    for epoch in range(2):
        loader.epoch = epoch
        for xb, yb in loader:
            for group in topt.param_groups:
                group["lr"] = learning_rate(cfg, step, len(loader))
            topt.zero_grad()
            loss = torch.nn.functional.cross_entropy(tmodel(torch.from_numpy(xb).double()),
                                                     torch.from_numpy(yb), label_smoothing=0.1)
            loss.backward()
            topt.step()
            step += 1
    for k, v in tmodel.state_dict().items():
        np.testing.assert_allclose(model.state_dict()[k], v.numpy(), rtol=1e-9, atol=1e-11,
                                   err_msg=k)


def test_training_learns_and_logs_each_epoch(tmp_path: Path) -> None:
    seen, events = [], []

    class Hooks:
        def on_train_begin(self, trainer):
            events.append("begin")

        def on_epoch_end(self, trainer, metrics):
            events.append(metrics["epoch"])

        def on_train_end(self, trainer, result):
            events.append(result.status)

    x, y = _data(200)
    xv, yv = _data(100, seed=5)
    trainer = _trainer(tmp_path, epochs=4, lr=0.01,
                       callbacks=[lambda t, m: seen.append(m), Hooks()])
    result = trainer.fit(x, y, xv, yv)
    assert result.status == "completed" and result.epochs == 4
    assert events == ["begin", 1, 2, 3, 4, "completed"]
    lines = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [m["epoch"] for m in lines] == [1, 2, 3, 4]
    assert _without_timing(lines) == _without_timing(seen)
    for m in lines:
        assert {"lr", "train_loss", "train_accuracy", "val_loss", "val_accuracy", "seconds",
                "images_per_second", "best"} <= set(m)
    assert lines[-1]["train_loss"] < lines[0]["train_loss"]
    assert max(m["val_accuracy"] for m in lines) >= 0.9  # the blobs are easy to tell apart
    ev = trainer.evaluate(xv, yv)
    assert ev.accuracy == pytest.approx(result.best_val_accuracy)


def test_best_model_is_kept_and_saved(tmp_path: Path) -> None:
    x, y = _data(200)
    x[:, :, [0, -1], :] = x[:, :, :, [0, -1]] = 0  # black borders, as in MNIST
    xv, yv = _data(60, seed=9)
    trainer = _trainer(tmp_path, epochs=5, lr=0.05)  # a high rate: validation goes up and down
    result = trainer.fit(x, y, xv, yv)
    hist = result.history
    best = max(hist, key=lambda m: (m["val_accuracy"], -m["val_loss"]))
    assert result.best_epoch == best["epoch"]
    assert [m["epoch"] for m in hist if m["best"]][-1] == best["epoch"]
    saved = load_model(tmp_path / "model.safetensors")
    assert saved.background == 0  # the border grey of the training images, for predict()
    for k, v in trainer.model.state_dict().items():  # the model holds the best weights
        np.testing.assert_array_equal(saved.model.state_dict()[k], v)
    assert evaluate(trainer.model, xv, yv, normalizer=trainer.normalizer).accuracy == \
        pytest.approx(best["val_accuracy"])


def test_early_stopping_after_patience_epochs(tmp_path: Path) -> None:
    x, y = _data(120)
    xv, _ = _data(40, seed=2)
    yv = np.random.default_rng(0).integers(0, 4, 40)  # unlearnable: no lasting improvement
    trainer = _trainer(tmp_path, epochs=30, patience=2)
    result = trainer.fit(x, y, xv, yv)
    assert result.status == "early_stopped" and result.epochs < 30
    flags = [m["best"] for m in result.history]
    assert flags[-2:] == [False, False] and flags[-3]


def test_same_seed_repeats_exactly_and_another_seed_does_not() -> None:
    x, y = _data(120)
    runs = []
    for seed in (0, 0, 1):
        t = _trainer(seed=seed, augment={"crop_padding": 2, "hflip": True})
        t.fit(x, y)
        runs.append(t)
    _same_weights(runs[0], runs[1])
    assert _without_timing(runs[0].history) == _without_timing(runs[1].history)
    assert not np.array_equal(runs[0].model.state_dict()["0.weight"],
                              runs[2].model.state_dict()["0.weight"])


def test_evaluate_counts_and_loss() -> None:
    x, y = _data(50)
    t = _trainer()
    ev = evaluate(t.model, x, y, normalizer=t.normalizer, batch_size=7)
    scores = t.model.predict(t.normalizer(x)).astype(np.float64)
    pred = scores.argmax(1)
    assert ev.correct == int((pred == y).sum()) and ev.total == 50
    for i in range(4):
        for j in range(4):
            assert ev.confusion[i, j] == int(((y == i) & (pred == j)).sum())
    logp = scores - scores.max(1, keepdims=True)
    logp -= np.log(np.exp(logp).sum(1, keepdims=True))
    assert ev.loss == pytest.approx(-logp[np.arange(50), y].mean(), rel=1e-5)
    rows = ev.confusion.sum(1)
    np.testing.assert_allclose(ev.per_class_accuracy, np.diag(ev.confusion) / rows)


# ---------------------------------------------------------------------------------------------
# stopping and resuming


class _InterruptAfterEpoch:
    def __init__(self, epoch: int) -> None:
        self.epoch = epoch

    def on_epoch_end(self, trainer, metrics):
        if metrics["epoch"] == self.epoch:
            raise KeyboardInterrupt


@pytest.mark.parametrize("stop_epoch", [1, 2])
def test_resume_after_a_stop_at_an_epoch_end_gives_the_same_weights(tmp_path: Path,
                                                                      stop_epoch: int) -> None:
    x, y = _data(150)
    xv, yv = _data(50, seed=4)
    full = _trainer(tmp_path / "full", epochs=4)
    full.fit(x, y, xv, yv)

    first = _trainer(tmp_path / "cut", epochs=4, callbacks=[_InterruptAfterEpoch(stop_epoch)])
    result = first.fit(x, y, xv, yv)
    assert result.status == "interrupted" and result.epochs == stop_epoch
    _, meta = read_safetensors(tmp_path / "cut" / "checkpoint.safetensors", CHECKPOINT_FORMAT)
    assert (meta["epoch"], meta["batch"]) == (stop_epoch, 0)

    second = _trainer(tmp_path / "cut", epochs=4, seed=0)
    result = second.fit(x, y, xv, yv, resume=True)
    assert result.status == "completed" and result.epochs == 4
    _same_weights(full, second)
    assert _without_timing(second.history) == _without_timing(full.history)
    lines = (tmp_path / "cut" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in lines] == [1, 2, 3, 4]
    a = load_model(tmp_path / "full" / "model.safetensors").model.state_dict()
    b = load_model(tmp_path / "cut" / "model.safetensors").model.state_dict()
    assert all(np.array_equal(a[k], b[k]) for k in a)


def test_ctrl_c_mid_epoch_saves_that_batch_and_resumes_exactly(tmp_path: Path) -> None:
    x, y = _data(150)
    full = _trainer(tmp_path / "full", epochs=3)
    full.fit(x, y)

    class CtrlC:
        def on_batch_end(self, trainer, info):
            if info["step"] == 13:  # epoch 2, batch 3 of 10
                os.kill(os.getpid(), signal.SIGINT)

    cut = _trainer(tmp_path / "cut", epochs=3, callbacks=[CtrlC()])
    previous = signal.getsignal(signal.SIGINT)
    result = cut.fit(x, y)
    assert signal.getsignal(signal.SIGINT) is previous  # the handler is put back
    assert result.status == "interrupted"
    _, meta = read_safetensors(tmp_path / "cut" / "checkpoint.safetensors", CHECKPOINT_FORMAT)
    assert (meta["epoch"], meta["batch"], meta["step"]) == (1, 3, 13)

    resumed = _trainer(tmp_path / "cut", epochs=3)
    assert resumed.fit(x, y, resume=True).status == "completed"
    _same_weights(full, resumed)
    assert _without_timing(resumed.history) == _without_timing(full.history)


def test_resume_can_extend_the_epochs(tmp_path: Path) -> None:
    x, y = _data(100)
    _trainer(tmp_path, epochs=2).fit(x, y)
    more = _trainer(tmp_path, epochs=3)
    result = more.fit(x, y, resume=True)
    assert result.epochs == 3 and [m["epoch"] for m in result.history] == [1, 2, 3]


class _Jitter(cs.Layer):
    """A layer of one's own that draws random numbers: y = x + 0.1·noise in training."""

    stochastic = True

    def __init__(self) -> None:
        super().__init__()
        self.rng = np.random.default_rng(123)

    def forward(self, x):
        if not self.training:
            return x
        return x + 0.1 * self.rng.standard_normal(x.shape).astype(x.dtype)

    def backward(self, dy):
        return dy

    def rng_state(self):
        return self.rng.bit_generator.state

    def set_rng_state(self, state):
        self.rng = np.random.Generator(np.random.PCG64())
        self.rng.bit_generator.state = state


def _nested(seed: int = 0) -> cs.Sequential:
    """Dropout inside a nested block (prefix "2.0") and a stochastic layer that is no Dropout."""
    return cs.Sequential(cs.Conv2D(1, 4, 3, padding=1), cs.ReLU(),
                         cs.Sequential(cs.Dropout(0.3), cs.Flatten()), _Jitter(),
                         cs.Linear(None, 4), input_shape=(1, 8, 8), seed=seed)


@pytest.fixture
def jitter_kind():
    """_Jitter registered (model files name their kinds) for one test, unregistered after it."""
    cs.register_layer("test_jitter")(_Jitter)
    yield
    unregister("test_jitter")


def test_stochastic_layers_at_any_depth_are_seeded_and_resume_exactly(tmp_path: Path,
                                                                      jitter_kind) -> None:
    x, y = _data(120)
    cfg = {"epochs": 3, "batch_size": 16, "lr": 3e-3, "seed": 7}

    def trainer(run_dir, callbacks=()):
        return Trainer(_nested(), TrainConfig(**cfg), normalizer=Normalizer.fit(x),
                       run_dir=run_dir, callbacks=callbacks)

    full = trainer(tmp_path / "full")
    keys = [k for k, _ in full.stochastic]
    assert keys == ["2.0", "3"]
    # each generator is default_rng([seed, 1, *position]): the masks depend on the seed alone
    expected = np.random.default_rng([7, 1, 2, 0]).random(5)
    np.testing.assert_array_equal(full.model.layers[2].layers[0].rng.random(5), expected)
    full = trainer(tmp_path / "full")
    full.fit(x, y)

    class CtrlC:
        def on_batch_end(self, trainer, info):
            if info["step"] == 11:  # epoch 2, batch 3 of 8
                os.kill(os.getpid(), signal.SIGINT)

    cut = trainer(tmp_path / "cut", [CtrlC()])
    assert cut.fit(x, y).status == "interrupted"
    arrays, _ = read_safetensors(tmp_path / "cut" / "checkpoint.safetensors", CHECKPOINT_FORMAT)
    assert sorted(k for k in arrays if k.startswith("rng.")) == ["rng.2.0", "rng.3"]
    # the checkpoint holds where each generator had got to, not the seed's start
    again = trainer(tmp_path / "again")
    jitter = again.model.layers[3]
    fresh = jitter.rng_state()
    again.load_checkpoint(tmp_path / "cut" / "checkpoint.safetensors")
    assert jitter.rng_state() != fresh
    np.testing.assert_array_equal(rng_to_array(jitter.rng_state()), arrays["rng.3"])
    resumed = trainer(tmp_path / "cut")
    assert resumed.fit(x, y, resume=True).status == "completed"
    _same_weights(full, resumed)
    assert _without_timing(resumed.history) == _without_timing(full.history)


def test_dropout_rng_state_round_trips() -> None:
    a, b = cs.Dropout(0.5, seed=1), cs.Dropout(0.5, seed=2)
    a.rng.random(7)  # somewhere inside the stream
    b.set_rng_state(a.rng_state())
    x = np.ones((4, 9), np.float32)
    np.testing.assert_array_equal(a.forward(x), b.forward(x))
    assert a.rng is not b.rng  # b got its own generator in that state
    with pytest.raises(ValueError, match="unknown bit generator 'Nope'"):
        b.set_rng_state({"bit_generator": "Nope"})


def test_resume_refuses_other_settings_or_data(tmp_path: Path) -> None:
    x, y = _data(100)
    _trainer(tmp_path, epochs=2).fit(x, y)
    with pytest.raises(ModelFileError, match=r"trained with lr 0.003 \(this run: 0.01\)"):
        _trainer(tmp_path, epochs=2, lr=0.01).fit(x, y, resume=True)
    with pytest.raises(ModelFileError, match="different data"):
        _trainer(tmp_path, epochs=3).fit(x[:90], y[:90], resume=True)
    with pytest.raises(ModelFileError, match="no such file"):
        _trainer(tmp_path / "none", epochs=2).fit(x, y, resume=True)


def test_nan_loss_stops_naming_the_step_and_keeps_the_last_good_checkpoint(tmp_path: Path) -> None:
    x, y = _data(80)
    kept = {}

    def explode_after_epoch_1(trainer, metrics):
        if metrics["epoch"] == 1:
            kept["bytes"] = (tmp_path / "checkpoint.safetensors").read_bytes()
            trainer.config.lr = 1e30  # the next steps blow the weights up

    trainer = _trainer(tmp_path, epochs=3, optimizer="sgd", lr=0.01,
                       callbacks=[explode_after_epoch_1])
    with pytest.raises(TrainingDiverged) as info:
        trainer.fit(x, y)
    msg = str(info.value)
    err = info.value
    assert err.epoch == 2 and err.step > 5
    assert f"at step {err.step} (epoch 2, batch {err.step - 5} of 5)" in msg
    assert "lower learning rate" in msg and "checkpoint.safetensors, epoch 1) is kept" in msg
    assert (tmp_path / "checkpoint.safetensors").read_bytes() == kept["bytes"]
    assert "\n" not in msg
    assert all(np.isfinite(v).all() for v in load_model(tmp_path / "model.safetensors")
               .model.state_dict().values())


def test_non_finite_validation_loss_also_stops(tmp_path: Path) -> None:
    x, y = _data(16)  # one batch per epoch: the weights blow up after the check of its loss
    with pytest.raises(TrainingDiverged, match=r"validation loss became (nan|inf) after step 1 "
                                               r"\(epoch 1, batch 1 of 1\).*no checkpoint"):
        _trainer(tmp_path, optimizer="sgd", lr=1e30, schedule="constant").fit(x, y, x, y)
    assert not (tmp_path / "checkpoint.safetensors").exists()


def test_nan_loss_on_the_first_steps(tmp_path: Path) -> None:
    x, y = _data(80)
    with pytest.raises(TrainingDiverged, match=r"loss became (nan|inf) at step \d+ \(epoch 1, "
                                               r"batch \d+ of 5\) with learning rate 1e\+30.*no "
                                               r"checkpoint was written yet.*lower learning rate"):
        _trainer(tmp_path, optimizer="sgd", lr=1e30, schedule="constant").fit(x, y)
    assert not (tmp_path / "checkpoint.safetensors").exists()


@pytest.mark.parametrize("bad,pattern", [
    ({"optimizer": "rmsprop"}, "optimizer must be one of sgd, adam, adamw, got 'rmsprop'"),
    ({"lr": 0}, "lr must be > 0, got 0"),
    ({"lr": math.nan}, "lr must be a finite number"),
    ({"epochs": 0}, "epochs must be an int >= 1, got 0"),
    ({"schedule": "linear"}, "schedule must be one of constant, step, cosine"),
    ({"patience": 0}, "patience must be an int >= 1 or None, got 0"),
    ({"warmup_epochs": 3, "epochs": 3}, "warmup_epochs must be less than epochs"),
])
def test_config_errors(bad: dict, pattern: str) -> None:
    with pytest.raises(ValueError, match=pattern):
        TrainConfig(**bad)


def test_fit_refuses_mismatched_data() -> None:
    t = _trainer()
    x, y = _data(20)
    with pytest.raises(ValueError, match=r"images are \(1, 9, 9\) but the model takes \(1, 8, 8\)"):
        t.fit(np.zeros((4, 1, 9, 9), np.uint8), y[:4])
    with pytest.raises(ValueError, match="training labels must be in 0..3"):
        t.fit(x, y + 4)
