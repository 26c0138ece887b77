"""SGD (momentum, dampening, nesterov, weight decay), Adam and AdamW step for step against
torch.optim: the same small network, the same batches, every parameter compared after each step."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
torch = pytest.importorskip("torch")

import convscope as cs

STEPS = 5


def make_pair(dtype: Any) -> tuple[cs.Sequential, torch.nn.Sequential]:
    """conv-bn-relu-pool-flatten-linear in convscope and the same weights in PyTorch.

    The conv has no bias: batch norm would cancel it, leaving a gradient of rounding noise that
    Adam's g / sqrt(v) blows up to full steps in both libraries, differently."""
    net = cs.Sequential(cs.Conv2D(2, 4, 3, padding=1, bias=False, init="torch", dtype=dtype),
                        cs.BatchNorm2D(dtype=dtype), cs.ReLU(), cs.MaxPool2D(2), cs.Flatten(),
                        cs.Linear(None, 3, init="torch", dtype=dtype),
                        input_shape=(2, 6, 6), seed=0)
    nn = torch.nn
    ref = nn.Sequential(nn.Conv2d(2, 4, 3, padding=1, bias=False), nn.BatchNorm2d(4), nn.ReLU(),
                        nn.MaxPool2d(2), nn.Flatten(), nn.Linear(36, 3))
    ref.to(torch.float32 if dtype == np.float32 else torch.float64)
    ref.load_state_dict({k: torch.tensor(np.array(v)) for k, v in net.state_dict().items()})
    return net, ref


def batches(dtype: Any, steps: int = STEPS) -> list[tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(0)
    return [(rng.standard_normal((4, 2, 6, 6)).astype(dtype), rng.integers(0, 3, 4))
            for _ in range(steps)]


def train_step(net: cs.Sequential, opt: Any, x: np.ndarray, y: np.ndarray) -> None:
    crit = cs.CrossEntropyLoss()
    opt.zero_grad()
    crit.forward(net.forward(x), y)
    net.backward(crit.backward())
    opt.step()


def torch_step(ref: torch.nn.Sequential, opt: torch.optim.Optimizer, x: np.ndarray,
               y: np.ndarray) -> None:
    opt.zero_grad()
    torch.nn.functional.cross_entropy(ref(torch.tensor(x)), torch.tensor(y)).backward()
    opt.step()


def assert_same_state(net: cs.Sequential, ref: torch.nn.Sequential, dtype: Any, what: str) -> None:
    ours, theirs = net.state_dict(), ref.state_dict()
    assert list(ours) == list(theirs)
    rtol, atol = (1e-4, 1e-6) if dtype == np.float32 else (1e-10, 1e-13)
    for k, v in ours.items():
        np.testing.assert_allclose(v, theirs[k].numpy(), rtol=rtol, atol=atol,
                                   err_msg=f"{what}: {k}")


CONFIGS = [
    ("SGD", dict(lr=0.1)),
    ("SGD", dict(lr=0.1, momentum=0.9)),
    ("SGD", dict(lr=0.1, momentum=0.9, dampening=0.5)),
    ("SGD", dict(lr=0.1, momentum=0.9, nesterov=True)),
    ("SGD", dict(lr=0.1, momentum=0.9, weight_decay=0.01)),
    ("SGD", dict(lr=0.05, momentum=0.5, dampening=0.1, weight_decay=0.1)),
    ("Adam", dict(lr=0.01)),
    ("Adam", dict(lr=0.01, weight_decay=0.1)),
    ("Adam", dict(lr=0.02, betas=(0.8, 0.99), eps=1e-6)),
    ("AdamW", dict(lr=0.01)),
    ("AdamW", dict(lr=0.01, weight_decay=0.3, betas=(0.5, 0.9))),
]


@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["float64", "float32"])
@pytest.mark.parametrize("name, options", CONFIGS, ids=lambda c: repr(c))
def test_step_for_step_with_torch(name: str, options: dict, dtype: Any) -> None:
    net, ref = make_pair(dtype)
    opt = getattr(cs, name)(net, **options)
    topt = getattr(torch.optim, name)(ref.parameters(), **options)
    for step, (x, y) in enumerate(batches(dtype)):
        train_step(net, opt, x, y)
        torch_step(ref, topt, x, y)
        assert_same_state(net, ref, dtype, f"{name} step {step + 1}")
    changed = [not np.allclose(v, w) for v, w in zip(net.params.values(),
                                                    make_pair(dtype)[0].params.values())]
    assert all(changed), "every parameter must have moved"


def test_changing_the_learning_rate_mid_run() -> None:
    net, ref = make_pair(np.float64)
    opt = cs.SGD(net, lr=0.1, momentum=0.9)
    topt = torch.optim.SGD(ref.parameters(), lr=0.1, momentum=0.9)
    for step, (x, y) in enumerate(batches(np.float64)):
        if step == 2:
            opt.lr = 0.01
            topt.param_groups[0]["lr"] = 0.01
        train_step(net, opt, x, y)
        torch_step(ref, topt, x, y)
    assert_same_state(net, ref, np.float64, "after the lr change")


@pytest.mark.parametrize("name, options", [("SGD", dict(lr=0.1, momentum=0.9)),
                                           ("Adam", dict(lr=0.01)), ("AdamW", dict(lr=0.01))])
def test_state_dict_resumes_exactly(name: str, options: dict) -> None:
    """Stopping after 2 steps and resuming from the state dicts gives the uninterrupted result."""
    data = batches(np.float64)
    straight, _ = make_pair(np.float64)
    opt = getattr(cs, name)(straight, **options)
    for x, y in data:
        train_step(straight, opt, x, y)

    first, _ = make_pair(np.float64)
    opt = getattr(cs, name)(first, **options)
    for x, y in data[:2]:
        train_step(first, opt, x, y)
    model_state = {k: v.copy() for k, v in first.state_dict().items()}
    opt_state = opt.state_dict()
    resumed, _ = make_pair(np.float64)
    resumed.load_state_dict(model_state)
    opt2 = getattr(cs, name)(resumed, **options)
    opt2.load_state_dict(opt_state)
    for x, y in data[2:]:
        train_step(first, opt, x, y)  # the original keeps going too: the states are copies
        train_step(resumed, opt2, x, y)
    for k, v in straight.state_dict().items():
        np.testing.assert_array_equal(resumed.state_dict()[k], v, err_msg=k)
        np.testing.assert_array_equal(first.state_dict()[k], v, err_msg=k)


def test_optimisers_accept_triples_and_update_in_place() -> None:
    w = np.array([1.0, -2.0])
    g = np.array([0.5, 0.5])
    opt = cs.SGD([("w", w, g)], lr=0.1)
    opt.step()
    np.testing.assert_allclose(w, [0.95, -2.05])
    opt.zero_grad()
    assert not g.any()
