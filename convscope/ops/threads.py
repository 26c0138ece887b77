"""convscope's own threads: the direct convolutions (:mod:`.direct`) split the batch's output
rows over them, and inside :func:`own_cores` batch norm and ReLU split their sweeps too.

How many: :func:`threads`, BLAS's thread count now (threadpoolctl reads it, so ``--threads`` and
``threadpool_limits`` set it for both), or inside :func:`own_cores` the count it was given.

Why :func:`own_cores`: after each multi-threaded GEMM, OpenBLAS's threads spin, waiting for the
next one, for about 2^28 cycles (0.1 s), on the cores our threads want.  A ResNet-20 step whose
stride-1 convolutions ran direct on 2 threads, alternating in one process: 586 ms with BLAS on
2 threads (its other convolutions' GEMMs waking the spinners), 416 with BLAS on 1 thread and
our 2 (and 524 all by im2col on BLAS's 2).  So while a network's convolutions run direct, the
trainer gives the cores to convscope's threads and BLAS one (:mod:`convscope.train.trainer`);
outside such a block the element-wise kernels stay on one thread (:func:`owned`).
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterator
from typing import Any

_state: dict[str, Any] = {"executor": None, "workers": 0, "blas": None}
_local = threading.local()  # per thread: own (the count inside own_cores), armed (to take)
_claims = {"count": 0, "blas": None}  # the main thread's blocks holding BLAS, its count before
_lock = threading.Lock()


def _forget_pool() -> None:
    """In a forked child: the parent's worker threads do not exist there."""
    _state["executor"], _state["workers"] = None, 0


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_pool)


def _blas() -> Any:
    """threadpoolctl's controller of the first BLAS library loaded, or None."""
    if _state["blas"] is None:
        try:
            from threadpoolctl import ThreadpoolController  # noqa: PLC0415 - optional
            libs = ThreadpoolController().select(user_api="blas").lib_controllers
        except ImportError:
            libs = []
        _state["blas"] = libs[:1]
    return _state["blas"][0] if _state["blas"] else None


def threads() -> int:
    """The threads the kernels split work over: :func:`own_cores`' count inside it, else
    BLAS's thread count now (1 where threadpoolctl cannot tell)."""
    own = getattr(_local, "own", None)
    if own is not None:
        return own
    blas = _blas()
    return max(1, int(blas.num_threads)) if blas is not None else 1


def owned() -> int:
    """The threads of a :func:`own_cores` block that holds the cores now, else 1: what the
    element-wise kernels split over (outside such a block BLAS's threads may be spinning on the
    other cores, and a split of a few milliseconds' work lost to them)."""
    return getattr(_local, "own", None) or 1


def held() -> int:
    """The threads of the :func:`own_cores` block around this call, whether it holds the cores
    (BLAS is on one thread) or waits for its first direct convolution to take them; else 0."""
    return getattr(_local, "own", None) or getattr(_local, "armed", None) or 0


@contextlib.contextmanager
def own_cores(n: int | None = None, on_demand: bool = False) -> Iterator[None]:
    """convscope's threads, ``n`` of them (None: BLAS's count on entry), and BLAS on one thread
    inside the block, BLAS's count restored after.  ``on_demand``: only from the block's first
    direct convolution on (:func:`take`; a network with none keeps BLAS's threads for its
    GEMMs).  Only the main thread changes BLAS's count (OpenBLAS ignored a count set from
    another thread); in another, the block sets that thread's count alone."""
    saved = (getattr(_local, "own", None), getattr(_local, "armed", None),
             getattr(_local, "claimed", False))
    _local.armed, _local.claimed = max(1, int(n if n is not None else threads())), False
    if not on_demand:
        _claim()
    try:
        yield
    finally:
        if _local.claimed:
            _claims["count"] -= 1
            blas = _blas()
            if not _claims["count"] and blas is not None:
                blas.set_num_threads(_claims["blas"])
        _local.own, _local.armed, _local.claimed = saved


def _claim() -> None:
    """Take the cores that :func:`own_cores` armed: ours the armed count and, on the main
    thread, BLAS on one (the outermost block saves BLAS's count)."""
    _local.own, _local.armed = _local.armed, None
    if threading.current_thread() is threading.main_thread():
        blas = _blas()
        if not _claims["count"] and blas is not None:
            _claims["blas"] = int(blas.num_threads)
            blas.set_num_threads(1)
        _claims["count"] += 1
        _local.claimed = True


# multiply-adds per thread at least (:func:`count_for`): waking a thread costs tens of
# microseconds.  LeNet-5's inference on one image (its convs 118 and 240 thousand) took
# 0.70-1.02x PyTorch's time with them split over 2 threads, 0.60-0.70x on one
SPLIT_WORK = 2**20


def count_for(work: int) -> int:
    """Threads for ``work`` multiply-adds: :func:`threads`, fewer where each would get less
    than :data:`SPLIT_WORK`; at least one."""
    return min(threads(), max(1, work // SPLIT_WORK))


def split(n: int, parts: int | None = None) -> list[tuple[int, int]]:
    """Items 0:n as (start, stop) in ``parts`` nearly equal runs (None: one per thread), at
    most n of them, at least one."""
    t = max(1, min(parts or threads(), n))
    return [(n * i // t, n * (i + 1) // t) for i in range(t)]


def take() -> None:
    """Where an ``on_demand`` :func:`own_cores` block is waiting for its first direct
    convolution: take the cores now."""
    if getattr(_local, "armed", None) is not None:
        _claim()


def run(fn: Any, calls: list[tuple], count: int | None = None) -> None:
    """fn(*args) for every args in ``calls``, over ``count`` threads (None: :func:`threads`;
    this one and the pool's); calls[i] runs on thread i mod that count, in order."""
    t = max(1, min(threads() if count is None else count, len(calls)))
    if t == 1:
        for args in calls:
            fn(*args)
        return
    with _lock:
        if _state["workers"] < t - 1:
            from concurrent.futures import ThreadPoolExecutor  # noqa: PLC0415 - 12 ms to import

            old = _state["executor"]
            _state["executor"] = ThreadPoolExecutor(t - 1, thread_name_prefix="convscope")
            _state["workers"] = t - 1
            if old is not None:
                old.shutdown(wait=False)  # its queued work still runs
        executor = _state["executor"]

    def share(i: int) -> None:
        for args in calls[i::t]:
            fn(*args)

    futures = [executor.submit(share, i) for i in range(1, t)]
    share(0)
    for f in futures:
        f.result()
