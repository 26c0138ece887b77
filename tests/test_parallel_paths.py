"""The speed paths of issue 14 against PyTorch and against the paths they sit beside.

The input gradient as a convolution of dY with the flipped filters (``ops.conv.TRANSPOSED``) and
col2im; the batch spread over worker threads (:mod:`convscope.threads`) and the caller's thread
alone; per-channel arithmetic on whole-image rows (``ops.layout.per_channel``) and broadcasting.
"""

from __future__ import annotations

import threading
from typing import Any, Iterator

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings

from convscope import threads, workspace
from convscope.ops import conv as conv_ops
from convscope.ops.layout import per_channel

pytest.importorskip("torch")
from test_speed_paths import LAYOUTS, arrange, conv_cases, run_conv  # noqa: E402

BASE = settings.default.max_examples
FIXTURE_OK = [HealthCheck.function_scoped_fixture]  # the fixture only sets module flags


@pytest.fixture
def path() -> Iterator[Any]:
    """Set (TRANSPOSED, workers, MIN_ITEMS) for one test, restored after."""
    saved = (conv_ops.TRANSPOSED, threads.workers(), threads.MIN_ITEMS)

    def choose(transposed: bool, workers: int, min_items: int = threads.MIN_ITEMS) -> None:
        conv_ops.TRANSPOSED = transposed
        threads.set_workers(workers)
        threads.MIN_ITEMS = min_items

    yield choose
    conv_ops.TRANSPOSED, threads.MIN_ITEMS = saved[0], saved[2]
    threads.set_workers(saved[1])


@pytest.mark.parametrize("transposed,workers", [(False, 1), (True, 1), (True, 2), (False, 3)])
@settings(max_examples=BASE // 2, deadline=None, suppress_health_check=FIXTURE_OK)
@given(cfg=conv_cases())
def test_every_conv_path_matches_torch(path: Any, transposed: bool, workers: int,
                                       cfg: dict) -> None:
    path(transposed, workers, min_items=1)  # spread even the smallest batch
    run_conv(cfg, np.float64)


@settings(max_examples=BASE // 4, deadline=None, suppress_health_check=FIXTURE_OK)
@given(cfg=conv_cases())
def test_spread_chunks_of_a_small_budget_match_torch(path: Any, cfg: dict) -> None:
    path(True, 2, min_items=1)
    old = workspace.budget()
    workspace.set_budget(2**20)
    try:
        run_conv(dict(cfg, n=cfg["n"] * 16), np.float32)
    finally:
        workspace.set_budget(old)


def test_the_transposed_input_gradient_is_taken_where_it_applies(path: Any) -> None:
    """Stride 1, groups 1, padding within the filter's reach: dx comes from the forward path
    run on dY (spied), equal to col2im's to float64 rounding; stride 2 keeps col2im."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((3, 16, 9, 9))
    w = rng.standard_normal((16, 16, 3, 3))
    real = conv_ops.conv2d_forward
    for stride in (1, 2):
        oh = (9 + 2 - 3) // stride + 1
        dy = rng.standard_normal((3, 16, oh, oh))
        dxs = []
        for transposed in (False, True):
            path(transposed, 1)
            _, cache = real(x, w, None, (stride, stride), ((1, 1), (1, 1)), (1, 1), 1, (oh, oh))
            calls: list[tuple] = []

            def spy(*a: Any, **k: Any) -> Any:
                calls.append(a[0].shape)
                return real(*a, **k)

            conv_ops.conv2d_forward = spy
            try:
                dxs.append(np.array(conv_ops.conv2d_backward(dy, w, cache, False)[0]))
            finally:
                conv_ops.conv2d_forward = real
            assert calls == ([dy.shape] if transposed and stride == 1 else [])
        np.testing.assert_allclose(dxs[1], dxs[0], rtol=1e-10, atol=1e-10)


# ---------------------------------------------------------------------------------------------
# threads


def test_spread_returns_the_parts_in_order_and_runs_them_on_other_threads(path: Any) -> None:
    path(True, 3)
    seen: list[tuple[int, ...]] = []
    names: set[str] = set()
    nested: list[int] = []

    def body(part: Any) -> int:
        seen.append(tuple(part))
        names.add(threading.current_thread().name)
        nested.append(threads.active(10**9))
        return sum(part)

    items = list(range(10))
    assert threads.spread(items, body, 3) == [sum(items[0::3]), sum(items[1::3]),
                                              sum(items[2::3])]
    assert sorted(seen) == sorted([tuple(items[i::3]) for i in range(3)])
    assert nested == [1, 1, 1]  # no pool inside a part: a part never hands work on
    assert threading.current_thread().name in names and len(names) >= 2  # a pool thread may
    # take two parts when the first finishes quickly
    assert threads.spread([], body, 3) == [0]  # an empty batch still runs the body once
    assert threads.spread([5], body, 3) == [5]


def test_an_error_in_a_worker_is_raised_after_every_part_finished(path: Any) -> None:
    path(True, 2)
    finished = []

    def body(part: Any) -> None:
        if part[0] == 1:
            raise ValueError("part one failed")
        finished.append(part[0])

    with pytest.raises(ValueError, match="part one failed"):
        threads.spread([0, 1], body, 2)
    assert finished == [0]
    assert threads.spread([0, 2], lambda part: part[0], 2) == [0, 2]  # the pool still works


def test_blas_runs_one_thread_per_worker_and_gets_its_count_back(path: Any) -> None:
    threadpoolctl = pytest.importorskip("threadpoolctl")

    def blas_threads() -> set[int]:
        return {lib["num_threads"] for lib in threadpoolctl.threadpool_info()
                if lib["user_api"] == "blas"}

    with threadpoolctl.threadpool_limits(2, user_api="blas"):
        path(True, 2)
        assert blas_threads() == {1}
        assert threads.spread([0, 1], lambda part: blas_threads(), 2) == [{1}, {1}]
        threadpoolctl.threadpool_limits(2, user_api="blas")  # someone raises it meanwhile:
        assert threads.spread([0, 1], lambda part: blas_threads(), 2) == [{1}, {1}]
        assert blas_threads() == {2}  # spread gives it back
        path(True, 1)
        assert blas_threads() == {2}


def test_small_work_and_one_worker_stay_in_the_callers_thread(path: Any) -> None:
    path(True, 2)
    assert threads.active(threads.MIN_ITEMS - 1) == 1
    assert threads.active(threads.MIN_ITEMS) == 2
    path(True, 1)
    assert threads.active(10**9) == 1


@pytest.mark.parametrize("bad", [0, -1, 1.5, True, "2"])
def test_workers_reject_bad_values(bad: Any) -> None:
    with pytest.raises(ValueError, match="workers must be an int >= 1"):
        threads.set_workers(bad)


# ---------------------------------------------------------------------------------------------
# per-channel arithmetic


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("op", ["add", "subtract", "multiply"])
@pytest.mark.parametrize("shape", [(2, 3, 4, 5), (1, 16, 1, 1), (3, 32, 7, 9), (2, 8, 70, 130),
                                   (0, 4, 3, 3)])
def test_per_channel_equals_broadcasting(layout: str, op: str, shape: tuple) -> None:
    rng = np.random.default_rng(1)
    a = arrange(rng.standard_normal(shape).astype(np.float32), layout)
    v = rng.standard_normal(shape[1]).astype(np.float32)
    want = getattr(np, op)(a, v.reshape(1, -1, 1, 1))
    out = np.empty_like(a)  # empty_like keeps the layout
    assert per_channel(op, a, v, out) is out
    np.testing.assert_array_equal(out, want)
    inplace = a.copy(order="K")
    per_channel(op, inplace, v, inplace)
    np.testing.assert_array_equal(inplace, want)


def test_per_channel_on_vectors_and_matrices() -> None:
    a = np.arange(12.0).reshape(4, 3)
    out = np.empty_like(a)
    np.testing.assert_array_equal(per_channel("multiply", a, np.array([1.0, 2, 3]), out),
                                  a * [1, 2, 3])
