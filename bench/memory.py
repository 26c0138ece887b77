"""Peak memory of training steps, each library in a fresh process.

``python -m bench.memory NET LIBRARY THREADS`` prints one JSON line.  After the model, the data
and the optimiser exist, the peak resident set (VmHWM) is reset (``/proc/self/clear_refs``) and
three training steps run; the figure is the peak minus the resident set before the first step:
everything the steps needed, workspaces and optimiser state included.  convscope runs with its
compiled kernels on where numba is installed, as ``convscope train`` does.  For convscope the
tracemalloc peak (NumPy reports its arrays to it) is given too.
"""

from __future__ import annotations

import json
import sys
import tracemalloc
from pathlib import Path

STEPS = 3


def _status_kib(field: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def _reset_peak() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def _load_kernels(net: str) -> None:
    """The compiled kernels on, as in ``convscope train``, and the ones this network's step
    uses loaded (from numba's cache, or compiled) by one step on one image before the peak is
    reset: the steps' peak is then their arrays', not the compiler's.  (Loading every kernel
    instead took minutes where none was cached, and the compiler's freed memory, reused by the
    steps, hid most of their peak: LeNet-5's read 3.1 MiB.)"""
    import torch

    from convscope.ops import jit

    from .cases import step_functions

    if jit.enable(True):
        jit.kernels()
        step_functions(torch, net, batch=1)[0]()


def measure(net: str, library: str, threads: int) -> dict:
    from threadpoolctl import threadpool_limits

    import torch

    from .cases import step_functions

    torch.set_num_threads(threads)
    if library == "convscope":
        _load_kernels(net)
    with threadpool_limits(limits=threads, user_api="blas"):
        ours, theirs = step_functions(torch, net)
        fn = ours if library == "convscope" else theirs
        del ours, theirs  # the other library's model and optimiser go with its closure
        rss0 = _status_kib("VmRSS")
        reset = _reset_peak()
        traced = library == "convscope"
        if traced:
            tracemalloc.start()
        for _ in range(STEPS):
            fn()
        traced_peak = tracemalloc.get_traced_memory()[1] if traced else None
        if traced:
            tracemalloc.stop()
        hwm = _status_kib("VmHWM")
    out = {"net": net, "library": library, "steps": STEPS, "peak_reset": reset,
           "rss_before_kib": rss0, "hwm_kib": hwm}
    if rss0 is not None and hwm is not None:
        out["step_peak_bytes"] = (hwm - rss0) * 1024
    if traced_peak is not None:
        out["traced_peak_bytes"] = traced_peak
    return out


def main(argv: list[str]) -> int:
    if len(argv) != 3 or argv[1] not in ("convscope", "torch"):
        print("usage: python -m bench.memory NET convscope|torch THREADS", file=sys.stderr)
        return 2
    print(json.dumps(measure(argv[0], argv[1], int(argv[2]))))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
