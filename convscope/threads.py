"""Both cores for one layer: the chunks of a batch spread over a small pool of threads.

BLAS threads only the matrix products; NumPy's element-wise loops (im2col's copies, the padding,
the output copies) run on one core, and on the lecture's kind of layer, few channels, those loops
are most of the time.  So a convolution hands its chunks of the batch to :func:`workers` threads
(NumPy releases the GIL inside its loops and BLAS calls): each thread copies its own columns into
its own scratch buffers (:mod:`convscope.workspace` is per thread) and runs its own GEMMs.

With more than one worker, NumPy's BLAS runs one thread per caller (:func:`set_workers` sets it,
and :func:`spread` checks it): OpenBLAS's idle threads spin for about 0.1 s after each call, and
a pool started in that time had three threads on two cores (measured: steps 1.2-1.6x slower and
erratic).  So the pool and BLAS never hold more than :func:`workers` cores between them.
Measured on 2 cores (bench/), a ResNet-14 training step at batch 128 ran 510 ms on 2 workers
against 560-680 ms on 2 BLAS threads.

One worker (the default for library calls) runs everything in the caller's thread, as before;
``convscope train --threads N`` sets N.  Work of less than :data:`MIN_ITEMS` numbers (one chunk
of columns at the workspace's default budget) runs in the caller's thread: handing it on cost
more than it saved (LeNet-5 at batch 64: 14 -> 17 ms a step with every layer spread).
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any, Callable, Sequence, TypeVar

if TYPE_CHECKING:
    from concurrent.futures import ThreadPoolExecutor

T = TypeVar("T")
R = TypeVar("R")

MIN_ITEMS = 1 << 21  # numbers of work (an im2col's columns) below which one thread runs it

_state: dict[str, Any] = {"workers": 1, "pool": None, "blas": None}
_lock = threading.Lock()
_local = threading.local()


def workers() -> int:
    """Threads a layer may spread its batch over (1: the caller's thread only)."""
    return _state["workers"]


def set_workers(n: int) -> None:
    """Let layers spread their batch over ``n`` threads (>= 1; 1 turns the pool off).  From 2 on,
    NumPy's BLAS runs one thread until the pool is turned off again, when it gets back the count
    it had."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"workers must be an int >= 1, got {n!r}")
    with _lock:
        old, was = _state["pool"], _state["workers"]
        _state["workers"], _state["pool"] = n, None
        if _state["blas"] is None and n > 1:
            _state["blas"] = _Blas()
        blas = _state["blas"]
        if n > 1 and was == 1:
            _state["pinned"] = blas.single()
        elif n == 1 and was > 1 and blas is not None:
            blas.restore(_state.pop("pinned", []))
    if old is not None:
        old.shutdown(wait=True)


def active(items: int) -> int:
    """Workers to use for ``items`` numbers of work here: 1 inside a worker, for small work, or
    when the pool is off."""
    n = _state["workers"]
    if n == 1 or items < MIN_ITEMS or getattr(_local, "inside", False):
        return 1
    return n


class _Blas:
    """BLAS's thread count, set to 1 while the pool runs (threadpoolctl's controllers, found
    once; none where threadpoolctl is missing)."""

    def __init__(self) -> None:
        try:
            from threadpoolctl import ThreadpoolController  # noqa: PLC0415 - optional, slow
            self.libs = [lib for lib in ThreadpoolController().select(user_api="blas")
                         .lib_controllers if "torch" not in str(lib.filepath)]  # NumPy's only
        except Exception:  # noqa: BLE001 - no control: the pool still runs, BLAS as it is
            self.libs = []

    def single(self) -> list[int]:
        before = [lib.get_num_threads() for lib in self.libs]
        for lib, n in zip(self.libs, before):
            if n != 1:
                lib.set_num_threads(1)
        return before

    def restore(self, before: list[int]) -> None:
        for lib, n in zip(self.libs, before):
            if n != 1:
                lib.set_num_threads(n)


def _pool_and_blas() -> tuple[ThreadPoolExecutor, _Blas]:
    from concurrent.futures import ThreadPoolExecutor  # noqa: PLC0415 - 10 ms to import: not
    # on predict's cold path, only where a pool runs
    with _lock:
        if _state["blas"] is None:
            _state["blas"] = _Blas()
        if _state["pool"] is None:
            _state["pool"] = ThreadPoolExecutor(_state["workers"] - 1,
                                                thread_name_prefix="convscope")
        return _state["pool"], _state["blas"]


def _inside(body: Callable[[Sequence[T]], R], part: Sequence[T]) -> R:
    _local.inside = True  # a worker never hands work on (no nested pools)
    try:
        return body(part)
    finally:
        _local.inside = False


def spread(items: Sequence[T], body: Callable[[Sequence[T]], R], n: int) -> list[R]:
    """``body(part)`` for ``n`` interleaved parts of ``items`` (items[0::n], items[1::n], ...),
    one per thread, the caller's thread taking the first; the results in that order.  An
    exception in any part is raised here after all parts have finished.  Inside a part, all
    runs in its own thread (a pool thread waiting on the pool could wait forever)."""
    n = 1 if getattr(_local, "inside", False) else min(n, len(items))
    if n <= 1:
        return [body(items)]
    pool, blas = _pool_and_blas()
    before = blas.single()
    try:
        futures = [pool.submit(_inside, body, items[i::n]) for i in range(1, n)]
        try:
            first = _inside(body, items[0::n])
        finally:
            for f in futures:
                f.exception()  # waits: every part finishes before anything is raised or returned
        return [first, *(f.result() for f in futures)]
    finally:
        blas.restore(before)
