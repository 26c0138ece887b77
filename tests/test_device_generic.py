"""The device path proven on the CPU: every registered layer kind, a whole training step and the
Trainer run on a fake GPU (tests/fake_device.py) whose arrays refuse to meet host arrays, as
CuPy's do, and every copy between host and device is counted.

A step moves nothing: parameters, gradients, buffers, optimiser state and the Dropout mask
stay on the device (the mask used to be drawn with NumPy's generator: one host→device copy per
step, the negative control below).  The numbers equal the CPU's (the fake device computes with
NumPy through the engine's generic, non-NumPy paths): float64 to 1e-12, float32 to 1e-5.
"""

from __future__ import annotations

import copy
from typing import Any, Iterator

import numpy as np
import pytest

import convscope as cs
from convscope import runtime
from convscope.layers.registry import REGISTRY
from convscope.optim import SGD, Adam

import fake_device as fd

BUILT_IN = [name for name, k in REGISTRY.items() if k.cls.__module__.startswith("convscope.")]
TOL = {np.float64: 1e-12, np.float32: 1e-5}


@pytest.fixture(autouse=True)
def fake() -> Iterator[runtime.Device]:
    device = fd.register()
    fd.TRANSFERS.clear()
    yield device
    fd.unregister()


def on_device(a: np.ndarray) -> fd.FakeDeviceArray:
    return np.array(a, copy=True).view(fd.FakeDeviceArray)  # not counted: the test's own input


def host(a: Any) -> np.ndarray:
    return np.asarray(a.view(np.ndarray) if isinstance(a, fd.FakeDeviceArray) else a)


def close(a: Any, b: Any, dtype: Any) -> None:
    np.testing.assert_allclose(host(a), host(b), rtol=TOL[dtype], atol=TOL[dtype])


def all_on_device(layer: cs.Layer) -> None:
    for what in ("params", "grads", "buffers"):
        for k, v in getattr(layer, what).items():
            assert isinstance(v, fd.FakeDeviceArray), f"{layer!r}: {what}[{k!r}] is on the host"


# ---------------------------------------------------------------------------------------------
# the fake device itself (it must catch what CuPy refuses)


def test_the_fake_device_refuses_host_operands_as_cupy_does() -> None:
    d = on_device(np.ones(3))
    for mix in (lambda: d + np.ones(3), lambda: np.multiply(d, np.ones(3), out=d),
                lambda: d.__setitem__(slice(None), np.ones(3)),
                lambda: np.concatenate([d, np.ones(3)]),
                lambda: fd.NAMESPACE.add(np.ones(3), np.ones(3))):
        with pytest.raises(fd.HostArrayError, match="host numpy array of shape"):
            mix()
    assert isinstance(d * 2.0 + np.float64(1), fd.FakeDeviceArray)  # scalars are fine
    assert runtime.xp_of(d) is fd.NAMESPACE and runtime.device_of(d) == "fake"
    fd.NAMESPACE.asarray(np.ones(4))
    assert fd.TRANSFERS == [("h2d", "xp.asarray", (4,))]


# ---------------------------------------------------------------------------------------------
# every registered kind: forward, backward and an SGD step on the device, no copies, CPU's numbers


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("name", BUILT_IN)
def test_every_kind_steps_on_the_device(name: str, training: bool, dtype: Any) -> None:
    kind = REGISTRY[name]
    cpu, shape = kind.cls.example(dtype)
    dev = copy.deepcopy(cpu)  # an example may draw unseeded weights: the same ones on both
    for layer in (cpu, dev):
        layer.train(training)
    assert dev.to("fake") is dev and dev.device in ("fake", "cpu")
    x = np.random.default_rng(1).standard_normal((3, *shape)).astype(dtype)
    dy_host = np.random.default_rng(2).standard_normal(cpu.forward(x).shape).astype(dtype)
    cpu.zero_grad()
    dx_cpu = cpu.backward(dy_host)
    fd.TRANSFERS.clear()
    y = dev.forward(on_device(x))
    dx = dev.backward(on_device(dy_host))
    opt = SGD(dev, lr=0.1, momentum=0.9) if dev.params else None
    if opt is not None:
        opt.step()
        opt.step()
    assert fd.TRANSFERS == [], f"{name}: copies between host and device: {fd.TRANSFERS}"
    assert isinstance(y, fd.FakeDeviceArray) and isinstance(dx, fd.FakeDeviceArray)
    assert y.dtype == dtype and dx.dtype == dtype
    all_on_device(dev)
    if opt is not None:
        for state in opt.state.values():
            assert all(isinstance(v, fd.FakeDeviceArray) for v in state.values())
    if kind.cls.stochastic and training:  # the device draws its own mask: y = x·mask/(1 − p)
        scale = host(y) / np.where(x == 0, 1, x)
        dropped, kept = scale == 0, np.isclose(scale, 1 / (1 - dev.p), rtol=TOL[dtype])
        assert (dropped | kept).all() and dropped.any() and kept.any()
        close(dx, host(dy_host) * scale, dtype)
        return
    close(y, cpu.forward(x), dtype)
    cpu.zero_grad()
    close(dx, cpu.backward(dy_host), dtype)
    close(dx_cpu, dx, dtype)
    for k in cpu.grads:
        close(dev.grads[k], cpu.grads[k], dtype)


# ---------------------------------------------------------------------------------------------
# a whole step: conv, batch norm, pool, dropout, linear, cross-entropy, SGD or Adam


def lecture_net(dtype: Any = np.float64, p: float = 0.3) -> cs.Sequential:
    # no conv bias: before batch norm its gradient is 0 up to rounding, which Adam would amplify
    return cs.Sequential(cs.Conv2D(3, 6, 5, bias=False, dtype=dtype, seed=0), cs.BatchNorm2D(6, dtype=dtype),
                         cs.ReLU(), cs.MaxPool2D(2), cs.Flatten(), cs.Dropout(p, seed=4),
                         cs.Linear(None, 10, dtype=dtype, seed=1), input_shape=(3, 12, 12))


def cpu_twin(net: cs.Sequential) -> cs.Sequential:
    """The same net on the CPU, its dropout drawing from the generator the device's is seeded
    with (Dropout._device_rng: one draw from its own generator), so the masks are equal."""
    twin = copy.deepcopy(net)
    for layer in twin:
        if isinstance(layer, cs.Dropout):
            layer.rng = np.random.default_rng(int(copy.deepcopy(layer.rng).integers(2 ** 63)))
    return twin


def steps(net: cs.Sequential, make_opt: Any, batches: list, device: bool) -> list[float]:
    opt, loss_fn, losses = make_opt(net), cs.CrossEntropyLoss(0.1), []
    for x, y in batches:
        if device:
            x, y = on_device(x), on_device(y)
        net.zero_grad()
        losses.append(float(loss_fn.forward(net.forward(x), y)))
        net.backward(loss_fn.backward(), input_grad=False)
        opt.step()
    return losses


OPTIMISERS = {"sgd": lambda m: SGD(m, lr=0.05, momentum=0.9, nesterov=True, weight_decay=1e-3),
              "adam": lambda m: Adam(m, lr=1e-2, weight_decay=1e-3)}


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("optimiser", list(OPTIMISERS))
def test_a_training_step_makes_no_host_copies_and_equals_the_cpu(optimiser: str, dtype: Any
                                                                 ) -> None:
    rng = np.random.default_rng(0)
    batches = [(rng.standard_normal((8, 3, 12, 12)).astype(dtype), rng.integers(0, 10, 8))
               for _ in range(3)]
    net = lecture_net(dtype)
    cpu = cpu_twin(net)
    net.to("fake")
    fd.TRANSFERS.clear()
    got = steps(net, OPTIMISERS[optimiser], batches, device=True)
    assert fd.TRANSFERS == [], f"copies in a step: {fd.TRANSFERS}"
    all_on_device(net)
    want = steps(cpu, OPTIMISERS[optimiser], batches, device=False)
    np.testing.assert_allclose(got, want, rtol=TOL[dtype])
    for k, v in cpu.state_dict().items():
        close(net.state_dict()[k], v, dtype)


def test_a_mask_drawn_on_the_host_is_one_copy_per_step(monkeypatch: pytest.MonkeyPatch) -> None:
    """Negative control: Dropout drawing with NumPy's generator (as before this device path)
    is caught, one host→device copy of the mask per step."""
    monkeypatch.setattr(cs.Dropout, "_device_rng", lambda self, xp: self.rng)
    rng = np.random.default_rng(0)
    batches = [(rng.standard_normal((4, 3, 12, 12)), rng.integers(0, 10, 4)) for _ in range(3)]
    net = lecture_net().to("fake")
    fd.TRANSFERS.clear()
    steps(net, OPTIMISERS["sgd"], batches, device=True)
    assert [(kind, shape) for kind, _, shape in fd.TRANSFERS] == [("h2d", (4, 96))] * 3


def test_the_cpu_mask_stream_is_unchanged() -> None:
    """On the CPU Dropout draws as it always did: rng.random(shape, dtype) >= p, so existing
    seeds and checkpoints reproduce."""
    layer = cs.Dropout(0.3, seed=5)
    x = np.ones((4, 7), np.float32)
    y = layer.forward(x)
    keep = np.random.default_rng(5).random((4, 7), dtype=np.float32) >= 0.3
    np.testing.assert_array_equal(y, keep / np.float32(0.7))


def test_dropout_reseeds_its_device_generator_from_its_own() -> None:
    a, b = cs.Dropout(0.5, seed=3).to("fake"), cs.Dropout(0.5, seed=3).to("fake")
    x = on_device(np.ones((2, 50)))
    state = a.rng_state()
    first = host(a.forward(x))
    np.testing.assert_array_equal(first, host(b.forward(x)))  # same seed, same mask
    assert not np.array_equal(first, host(a.forward(x)))  # the stream goes on
    a.set_rng_state(state)  # restored: the device generator is seeded again from it
    np.testing.assert_array_equal(host(a.forward(x)), first)


# ---------------------------------------------------------------------------------------------
# moving: to() and back, optimiser state, the runtime's functions


def test_to_and_back_keeps_every_number_and_moves_optimiser_state() -> None:
    net = lecture_net()
    before = {k: v.copy() for k, v in net.state_dict().items()}
    net.to("fake")
    assert net.device == "fake"
    same = net.params["0.weight"]
    assert net.to("fake").params["0.weight"] is same  # already there: not copied
    opt = Adam(net, lr=1e-3)
    x, y = on_device(np.ones((2, 3, 12, 12))), on_device(np.array([1, 2]))
    loss = cs.CrossEntropyLoss()
    loss.forward(net.forward(x), y)
    net.backward(loss.backward())
    opt.step()
    net.to("cpu")
    opt.to("cpu")
    assert net.device == "cpu"
    for state in opt.state.values():
        assert all(type(v) is np.ndarray for v in state.values())
    for k in before:
        assert type(net.state_dict()[k]) is np.ndarray
    opt.step()  # the triples were taken again: the CPU arrays are updated
    net.to("fake")
    with pytest.raises(ValueError, match=r"parameter '0.weight' is on fake; move the model first"):
        opt.to("cpu")
    saved = Adam(net, lr=1e-3)
    saved.load_state_dict(opt.state_dict())  # host state lands where the parameters are
    assert all(isinstance(v, fd.FakeDeviceArray) for s in saved.state.values() for v in s.values())


def test_runtime_device_functions() -> None:
    a = np.arange(3.0)
    d = runtime.to_device(a, "fake")
    assert isinstance(d, fd.FakeDeviceArray) and runtime.to_device(d, "fake") is d
    assert runtime.to_host(a) is a and type(runtime.to_host(d)) is np.ndarray
    assert [k for k, _, _ in fd.TRANSFERS] == ["h2d", "d2h"]
    with pytest.raises(ValueError, match=r"device must be 'cpu', 'cuda' or 'cuda:N'.*got 'gpu'"):
        runtime.get_device("gpu")
    with pytest.raises(ValueError, match="got 'gpu'"):
        lecture_net().to("gpu")


def test_cuda_without_cupy_says_how_to_install_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(__import__("sys").modules, "cupy", None)  # as if not installed
    monkeypatch.delitem(runtime._DEVICES, "cuda", raising=False)
    with pytest.raises(ImportError, match=r"pip install 'convscope\[gpu\]'"):
        lecture_net().to("cuda")


def test_local_rank_picks_the_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in runtime.LOCAL_RANK_VARS:
        monkeypatch.delenv(var, raising=False)
    assert runtime.local_rank() == 0
    monkeypatch.setenv("OMPI_COMM_WORLD_LOCAL_RANK", "3")
    assert runtime.local_rank() == 3


# ---------------------------------------------------------------------------------------------
# the Trainer on the device: each step copies its batch there and nothing else; files, the
# checkpoint and resume work from host copies; the weights equal the CPU's


def trainer_net(bn: bool = True) -> cs.Sequential:
    norm = [cs.BatchNorm2D(4, dtype=np.float64)] if bn else []  # per-rank statistics with K > 1
    return cs.Sequential(cs.Conv2D(1, 4, 3, padding=1, bias=False, dtype=np.float64),
                         *norm, cs.ReLU(), cs.MaxPool2D(2),
                         cs.Flatten(), cs.Linear(None, 3, dtype=np.float64),
                         input_shape=(1, 8, 8), seed=0)


class Copies:
    """on_batch_end: the copies made since the previous batch ended."""

    def __init__(self) -> None:
        self.per_step: list[list[tuple[str, tuple[int, ...]]]] = []
        self.seen = 0

    def on_batch_end(self, trainer: Any, info: Any) -> None:
        self.per_step.append([(k, s) for k, _, s in fd.TRANSFERS[self.seen:]])
        self.seen = len(fd.TRANSFERS)


def fit(device: str | None, epochs: int, run_dir: Any, resume: bool = False,
        callbacks: tuple = (), comm: Any = None, bn: bool = True) -> cs.Sequential:
    from dist_common import make_data
    from convscope.train import TrainConfig, Trainer

    x, y = make_data(40)
    cfg = TrainConfig(epochs=epochs, batch_size=16, optimizer="sgd", lr=0.05, momentum=0.9,
                      weight_decay=1e-4, seed=2, schedule="constant")
    model = trainer_net(bn)
    trainer = Trainer(model, cfg, run_dir=run_dir, device=device, callbacks=list(callbacks),
                      comm=comm)
    if comm is not None:
        assert isinstance(trainer.dp.reducer.buffer, fd.FakeDeviceArray)
    trainer.fit(x[:32], y[:32], x[32:], y[32:], resume=resume)
    return model


def test_the_trainer_on_the_device_copies_only_its_batches_and_equals_the_cpu(tmp_path: Any
                                                                             ) -> None:
    from convscope.formats.model_file import load_model

    want = fit(None, 3, tmp_path / "cpu")
    copies = Copies()
    fit("fake", 2, tmp_path / "dev", callbacks=(copies,))
    steps_after_first = copies.per_step[1:]  # the first also saw the start-up's copies
    assert steps_after_first and all(
        c == [("h2d", (16, 1, 8, 8)), ("h2d", (16,))] for c in steps_after_first
        if len(c) == 2), steps_after_first
    assert sum(len(c) == 2 for c in steps_after_first) >= 2
    got = fit("fake", 3, tmp_path / "dev", resume=True)  # optimiser state back on the device
    assert got.device == "fake"
    for k, v in want.state_dict().items():
        close(got.state_dict()[k], v, np.float64)
    saved = load_model(tmp_path / "dev" / "model.safetensors")  # written from host copies
    assert saved.model.device == "cpu"


def test_data_parallel_on_the_device_stages_through_the_host() -> None:
    """Two ranks on the device equal one process on the CPU; MPI (here ThreadComm) only ever
    sees host buffers: the flat gradient buffer lives on the device and goes through host
    memory (the PyPI Open MPI is not CUDA-aware)."""
    import convscope.distributed as dist

    want = fit(None, 2, None, bn=False)
    seen: list[str] = []

    def body(comm: dist.ThreadComm) -> cs.Sequential:
        raw = comm.allreduce_

        def allreduce_(buf: Any, op: str = "sum") -> Any:
            seen.append(type(buf).__name__)
            return raw(buf, op)

        comm.allreduce_ = allreduce_  # type: ignore[method-assign]
        return fit("fake", 2, None, comm=comm, bn=False)

    results = dist.ThreadComm.run(2, body)
    assert len(seen) > 8 and set(seen) == {"ndarray"}  # never a device array
    for got in results:
        assert got.device == "fake"
        for k, v in want.state_dict().items():
            close(got.state_dict()[k], v, np.float64)


def test_the_command_line_trains_evaluates_and_predicts_on_the_device(tmp_path: Any,
                                                                       capsys: Any) -> None:
    """--device for train, evaluate and predict (the fake device stands in for cuda): the model
    file is written from host copies, and evaluates on the device as on the CPU."""
    import json

    from PIL import Image

    from convscope.cli import main

    out = tmp_path / "run"
    assert main(["train", "--arch", "lecture", "--quiet", "--seed", "1", "--epochs", "1",
                 "--limit", "60", "--augment", "none", "--out", str(out), "--device",
                 "fake"]) == 0
    results = json.loads((out / "results.json").read_text())
    model = out / "model.safetensors"
    capsys.readouterr()
    assert main(["evaluate", str(model), "--device", "fake", "--json", "--limit", "50"]) == 0
    on_device = json.loads(capsys.readouterr().out)
    assert main(["evaluate", str(model), "--json", "--limit", "50"]) == 0
    on_cpu = json.loads(capsys.readouterr().out)
    assert on_cpu["confusion"] == on_device["confusion"]
    assert abs(on_cpu["loss"] - on_device["loss"]) < 1e-6 and results["test_images"] == 60
    Image.fromarray(np.full((8, 8), 200, np.uint8)).save(tmp_path / "digit.png")
    assert main(["predict", str(model), str(tmp_path / "digit.png"), "--device", "fake",
                 "--json"]) == 0
    assert len(json.loads(capsys.readouterr().out)[0]["labels"]) == 3
