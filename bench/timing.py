"""Interleaved timing: contestants take turns, so a noisy neighbour slows them alike.

Two libraries in one process each keep a pool of threads that spin for a while after their
work (OpenBLAS about 0.1 s, PyTorch's OpenMP threads about 3 ms here) and hold the cores the
other's threads need.  So each timed call can follow a ``gap`` (the caller's choice: bench uses
0.11 s) and untimed calls of the same function lasting at least ``settle`` seconds (50 ms): each
library is timed as in its own training loop, its threads warm and the other's asleep.

Why 50 ms: after a gap, a core that slept runs slow for some 30-40 ms of work (measured on
this VM's virtual CPUs).  convscope's 3 -> 6 5×5 forward (64 images) after a 0.11 s sleep,
call by call on 2 threads: 2.2 ms, then 1.5-1.9 for 25 calls, then 1.1-1.2; back to back,
1.0.  With 5 ms of settle calls bench timed the slow calls: that forward 2.07 ms and
PyTorch's 2.22; with 50 ms, 1.12 and 1.47, as in a training loop.
"""

from __future__ import annotations

import gc
import statistics
import time
from dataclasses import dataclass
from typing import Callable


@dataclass(frozen=True)
class Timing:
    """Seconds of each repetition; figures in milliseconds."""

    seconds: tuple[float, ...]

    @property
    def median_ms(self) -> float:
        return 1e3 * statistics.median(self.seconds)

    @property
    def min_ms(self) -> float:
        return 1e3 * min(self.seconds)

    @property
    def max_ms(self) -> float:
        return 1e3 * max(self.seconds)

    def as_dict(self) -> dict:
        return {"median_ms": self.median_ms, "min_ms": self.min_ms, "max_ms": self.max_ms,
                "reps": len(self.seconds)}


def interleaved(fns: dict[str, Callable[[], object]], reps: int, warmup: int = 2,
                min_seconds: float = 0.0, gap: float = 0.0, settle: float = 0.05
                ) -> dict[str, Timing]:
    """Time each function ``reps`` times, taking turns (the order flips every round), after
    ``warmup`` untimed rounds; garbage collection is off while timing.  ``settle``: seconds of
    untimed calls before each timed one (at least one call; 0: none, see above); ``gap``:
    seconds to sleep before each.

    With ``min_seconds``, a very short function is called several times per repetition (the
    same count for every contestant) and the mean per call is recorded.
    """
    names = list(fns)
    for _ in range(warmup):
        for name in names:
            fns[name]()
    inner = 1
    if min_seconds > 0:
        t0 = time.perf_counter()
        for name in names:
            fns[name]()
        per_round = time.perf_counter() - t0
        inner = max(1, int(min_seconds * len(names) / max(per_round, 1e-9)))
    times: dict[str, list[float]] = {name: [] for name in names}
    enabled = gc.isenabled()
    gc.collect()
    gc.disable()
    try:
        for r in range(reps):
            for name in (names if r % 2 == 0 else names[::-1]):
                fn = fns[name]
                if gap:
                    time.sleep(gap)
                if settle:  # untimed calls first: its own threads warm, the other's idle
                    until = time.perf_counter() + settle
                    fn()
                    while time.perf_counter() < until:
                        fn()
                t0 = time.perf_counter()
                for _ in range(inner):
                    fn()
                times[name].append((time.perf_counter() - t0) / inner)
    finally:
        if enabled:
            gc.enable()
    return {name: Timing(tuple(t)) for name, t in times.items()}
