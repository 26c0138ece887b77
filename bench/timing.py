"""Interleaved timing: contestants take turns, so a noisy neighbour slows them alike.

Each timed call comes right after an untimed call of the same function (``settle``): two
libraries in one process each keep a pool of threads that spin for a while after their work, and
without it one library's call would be timed while the other's threads still hold the cores.
Settled, each is timed as in its own training loop: its threads warm, the other's idle.
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
                min_seconds: float = 0.0, gap: float = 0.0, settle: bool = True
                ) -> dict[str, Timing]:
    """Time each function ``reps`` times, taking turns (the order flips every round), after
    ``warmup`` untimed rounds; garbage collection is off while timing.  ``settle``: an untimed
    call before each timed one (see above); ``gap``: seconds to sleep before each.

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
                if settle:  # one untimed call first: its own threads warm, the other's idle
                    fn()
                t0 = time.perf_counter()
                for _ in range(inner):
                    fn()
                times[name].append((time.perf_counter() - t0) / inner)
    finally:
        if enabled:
            gc.enable()
    return {name: Timing(tuple(t)) for name, t in times.items()}
