"""Grad mode is per thread: ``no_grad`` in one thread never strips the forward caches of another.

The interleavings are forced with events, so each test fails for certain on a global grad mode.
"""

from __future__ import annotations

import threading
from typing import Any, Callable

import numpy as np
import pytest

import convscope as cs
from convscope import runtime

TIMEOUT = 30.0  # seconds any thread waits for the other; a wait that times out fails the test


def _run_threads(*targets: Callable[[], None]) -> None:
    """Run each target in its own thread; re-raise the first exception any of them raised."""
    errors: list[BaseException] = []

    def wrap(fn: Callable[[], None]) -> Callable[[], None]:
        def run() -> None:
            try:
                fn()
            except BaseException as e:  # noqa: BLE001 - handed back to the main thread
                errors.append(e)
        return run

    threads = [threading.Thread(target=wrap(t)) for t in targets]
    for t in threads:
        t.start()
    for t in threads:
        t.join(TIMEOUT)
        assert not t.is_alive(), "a thread hung: the events were never set"
    if errors:
        raise errors[0]


def _wait(event: threading.Event) -> None:
    assert event.wait(TIMEOUT), "timed out waiting for the other thread"


def _net(seed: int) -> cs.Sequential:
    f64 = np.float64
    return cs.Sequential(cs.Conv2D(3, 4, 3, padding=1, dtype=f64, seed=seed), cs.ReLU(),
                         cs.MaxPool2D(2), cs.Flatten(), cs.Linear(4 * 4 * 4, 5, dtype=f64, seed=seed),
                         input_shape=(3, 8, 8))


def test_no_grad_in_one_thread_keeps_another_threads_caches() -> None:
    """A enters no_grad and stays there while B runs forward and backward; B's gradients equal
    those of the same net run alone on the main thread."""
    x = np.random.default_rng(0).normal(size=(2, 3, 8, 8))
    ref = _net(1)
    dy = np.ones((2, 5))
    ref.backward(ref.forward(x) * 0 + dy)
    a_inside, b_done = threading.Event(), threading.Event()
    seen: dict[str, Any] = {}

    def thread_a() -> None:
        net = _net(2)
        with cs.no_grad():
            a_inside.set()
            _wait(b_done)  # B ran its whole step while this thread was under no_grad
            seen["a_enabled"] = runtime.grad_enabled()
            net.forward(x)
            seen["a_cache"] = net.layers[0]._cache
        seen["a_after"] = runtime.grad_enabled()

    def thread_b() -> None:
        _wait(a_inside)
        try:
            net = _net(1)
            seen["b_enabled"] = runtime.grad_enabled()
            y = net.forward(x)
            net.backward(y * 0 + dy)
            seen["b_grads"] = {name: g.copy() for name, _, g in net.parameters()}
        finally:
            b_done.set()

    _run_threads(thread_a, thread_b)
    assert seen["b_enabled"] is True and seen["a_enabled"] is False and seen["a_after"] is True
    assert seen["a_cache"] is None  # A's own forward kept nothing, as no_grad promises
    ref_grads = {name: g for name, _, g in ref.parameters()}
    assert ref_grads.keys() == seen["b_grads"].keys()
    for name, g in seen["b_grads"].items():
        np.testing.assert_allclose(g, ref_grads[name], rtol=1e-12, atol=0, err_msg=name)


def test_no_grad_exit_in_one_thread_does_not_reenable_another() -> None:
    """A enters no_grad, then B; A leaves while B is still inside: B stays in inference mode
    (a global mode would be restored to "enabled" by A's exit)."""
    a_inside, b_inside, a_left = threading.Event(), threading.Event(), threading.Event()
    seen: dict[str, bool] = {}

    def thread_a() -> None:
        with cs.no_grad():
            a_inside.set()
            _wait(b_inside)
        a_left.set()

    def thread_b() -> None:
        _wait(a_inside)
        with cs.no_grad():
            b_inside.set()
            _wait(a_left)
            seen["b"] = runtime.grad_enabled()
            layer = cs.ReLU()
            layer.forward(np.ones((1, 2)))
            seen["b_cache_kept"] = layer._out_shape is not None
        seen["b_after"] = runtime.grad_enabled()

    _run_threads(thread_a, thread_b)
    assert seen == {"b": False, "b_cache_kept": False, "b_after": True}


def test_every_new_thread_starts_with_grad_enabled() -> None:
    seen: list[bool] = []
    with cs.no_grad():
        assert not runtime.grad_enabled()
        _run_threads(lambda: seen.append(runtime.grad_enabled()))
    assert seen == [True] and runtime.grad_enabled()


def test_no_grad_restores_on_error_and_nests() -> None:
    with pytest.raises(KeyError):
        with cs.no_grad():
            with cs.no_grad():
                assert not runtime.grad_enabled()
            assert not runtime.grad_enabled()
            raise KeyError("x")
    assert runtime.grad_enabled()


def test_backend_is_the_runtime_module() -> None:
    import convscope.backend as backend

    assert backend is runtime and backend.no_grad is cs.no_grad
