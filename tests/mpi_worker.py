"""Run under mpirun by tests/test_dist_mpi.py: ``python -m mpi4py tests/mpi_worker.py MODE``.

``equal``: K workers (the real MPI engine) against one process with the global batch, for
several scenarios; rank 0 prints one JSON object: per scenario the largest |w_K - w_1| (rank 0's
weights), the spread across ranks (0: bit for bit equal) and the negative controls.
``raise`` / ``kill``: rank 1 fails after a first collective (an exception; SIGKILL); the others
go on into the next collective and must be ended by the job, not hang.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
import zlib

import numpy as np

import convscope.distributed as dist
from convscope.data import Augment

from dist_common import data_parallel, make_data, max_diff, single_process


def _spread(comm: dist.Communicator, state: dict) -> float:
    """0.0 when every rank holds the same bits, else the largest difference from rank 0."""
    crc = 0
    for v in state.values():
        crc = zlib.crc32(np.ascontiguousarray(v).tobytes(), crc)
    crcs = comm.allgather_obj(crc)
    if len(set(crcs)) == 1:
        return 0.0
    states = comm.allgather_obj(state)
    return max(max_diff(states[0], s) for s in states[1:])


def equal(comm: dist.Communicator) -> dict:
    aug = Augment(crop_padding=1, hflip=True)
    out: dict = {"size": comm.size}
    scenarios = {
        # name: (n, steps, options); batch 16: 61 -> ..., 13 (uneven); 49 -> ..., 1 (< K)
        "f64_steps": (61, 6, {"augment": aug}),
        "f64_epoch_uneven": (61, 4, {"augment": aug}),   # one epoch: 16, 16, 16, 13
        "f64_last_batch_below_k": (49, 8, {}),           # two epochs, each ending on 1 image
        "f32_epoch": (61, 4, {"dtype": np.float32}),
        "sync_bn": (50, 5, {"bn": True, "sync_bn": True}),  # last batch 2: slices 1, 1 (, 0)
    }
    for name, (n, steps, opts) in scenarios.items():
        x, y = make_data(n)
        ref_opts = {k: v for k, v in opts.items() if k != "sync_bn"}
        ref = (single_process(x, y, batch_size=16, steps=steps, **ref_opts)
               if comm.rank == 0 else None)
        got = data_parallel(comm, x, y, batch_size=16, steps=steps, **opts)
        out[name] = {"diff": max_diff(got["state"], ref) if ref is not None else None,
                     "spread": _spread(comm, got["state"]), "counts": got["counts"]}
        if name == "f64_epoch_uneven":
            ddp = data_parallel(comm, x, y, batch_size=16, steps=steps, mode="ddp_mean", **opts)
            out["negative_ddp_mean"] = max_diff(ddp["state"], ref) if ref is not None else None
        if name == "sync_bn":
            # per-worker statistics (the default) on full batches: not the global batch's
            local = data_parallel(comm, x, y, batch_size=16, steps=3, bn=True)
            ref3 = single_process(x, y, batch_size=16, steps=3, bn=True) if comm.rank == 0 else None
            out["negative_local_bn"] = max_diff(local["state"], ref3) if ref3 is not None else None
    return out


def fail(comm: dist.Communicator, how: str) -> None:
    buf = np.ones(4)
    comm.allreduce_(buf)
    if comm.rank == 1:
        if how == "kill":
            os.kill(os.getpid(), signal.SIGKILL)
        raise RuntimeError("rank 1 fails on purpose")
    time.sleep(0.2)
    comm.allreduce_(buf)  # waits for rank 1, which is gone
    time.sleep(60)        # never reached while the job ends as it should


def main() -> None:
    mode = sys.argv[1]
    comm = dist.init()
    if mode == "equal":
        result = equal(comm)
        if comm.rank == 0:
            print(json.dumps(result), flush=True)
    else:
        fail(comm, mode)


if __name__ == "__main__":
    main()
