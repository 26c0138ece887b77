"""Run under mpirun (or alone) by tests/test_dist_mpi.py: the Trainer with a communicator.

    python -m mpi4py tests/mpi_trainer.py RUN_DIR EPOCHS [resume] [bn] [sync_bn] [nan]

Trains dist_common's float64 model (with dropout; ``bn``: batch norm) on dist_common's data for
EPOCHS epochs in all (``resume``: continuing RUN_DIR's checkpoint, whatever number of workers
wrote it).  Rank 0 prints one JSON object: the final weights' file, how many files the other
ranks replaced (must be 0: rank 0 alone writes), the status, and the ranks' CRC-32s.
``nan``: rank 0's weights become NaN after step 5 (a callback, run on rank 0 only): every rank
must stop with TrainingDiverged at the same step.
"""

from __future__ import annotations

import json
import os
import sys
import zlib
from pathlib import Path

import numpy as np

import convscope.distributed as dist
from convscope.errors import TrainingDiverged
from convscope.train import TrainConfig, Trainer

from dist_common import make_data, make_model

N_TRAIN, N_VAL = 61, 23


def run(run_dir: str, epochs: int, flags: set[str], comm: dist.Communicator) -> dict:
    writes: list[str] = []
    if comm.rank != 0:  # count what the other ranks would write
        real = os.replace

        def replace(src, dst, *a, **k):  # noqa: ANN001, ANN002, ANN003
            writes.append(str(dst))
            return real(src, dst, *a, **k)

        os.replace = replace  # type: ignore[assignment]
    x, y = make_data(N_TRAIN + N_VAL)
    model = make_model(comm.rank, bn="bn" in flags)  # rank r's own seed: the broadcast unifies
    cfg = TrainConfig(epochs=epochs, batch_size=16, optimizer="sgd", lr=0.05, momentum=0.9,
                      weight_decay=1e-4, schedule="constant", seed=0,
                      augment={"crop_padding": 1, "hflip": True})
    trainer = Trainer(model, cfg, run_dir=run_dir, comm=comm, sync_bn="sync_bn" in flags)
    if "nan" in flags and comm.rank == 0:  # callbacks run on rank 0 only
        def poison(tr, info):  # noqa: ANN001
            if info["step"] == 5:
                tr.model.params["0.weight"][...] = np.nan
        trainer.callbacks.append(type("Poison", (), {"on_batch_end": staticmethod(poison)})())
    status = "completed"
    try:
        result = trainer.fit(x[:N_TRAIN], y[:N_TRAIN], x[N_TRAIN:], y[N_TRAIN:],
                             resume="resume" in flags)
        status = result.status
    except TrainingDiverged as exc:
        status = f"diverged at step {exc.step}"
    state = {k: np.array(v) for k, v in model.state_dict().items()}
    crc = 0
    for v in state.values():
        crc = zlib.crc32(np.ascontiguousarray(v).tobytes(), crc)
    crcs = comm.allgather_obj(crc)
    others = comm.allgather_obj(len(writes))
    statuses = comm.allgather_obj(status)
    out = {"size": comm.size, "status": statuses, "crcs": crcs, "other_rank_writes": others[1:],
           "history": trainer.history}
    if comm.rank == 0:
        path = Path(run_dir) / f"final-{comm.size}.npz"
        np.savez(path, **state)
        out["final"] = str(path)
    return out


def main() -> None:
    run_dir, epochs, flags = sys.argv[1], int(sys.argv[2]), set(sys.argv[3:])
    comm = dist.init()
    out = run(run_dir, epochs, flags, comm)
    if comm.rank == 0:
        print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
