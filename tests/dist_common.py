"""Shared by the data-parallel tests: a small ConvNet, data, and the two training loops (one
process on the global batch; K workers on their slices) written with convscope.distributed's
pieces, so the MPI script and the ThreadComm tests run the same code."""

from __future__ import annotations

from typing import Any

import numpy as np

import convscope as cs
import convscope.distributed as dist
from convscope.data import BatchLoader


def make_model(seed: int, dtype: Any = np.float64, bn: bool = False, dropout: float = 0.25
               ) -> cs.Sequential:
    """Conv(1→4, 3, pad 1) → [BN] → ReLU → MaxPool 2 → Conv(4→6, 3) → ReLU → Flatten →
    Dropout → Linear(→3) [→ BN1d] on 1×8×8 images.  ``seed`` draws the weights; the dropout
    generator is seeded alike everywhere (the shared generator)."""
    layers: list[Any] = [cs.Conv2D(1, 4, 3, padding=1, dtype=dtype)]
    if bn:
        layers.append(cs.BatchNorm2D(4, dtype=dtype))
    layers += [cs.ReLU(), cs.MaxPool2D(2), cs.Conv2D(4, 6, 3, dtype=dtype), cs.ReLU(),
               cs.Flatten(), cs.Dropout(dropout, seed=11), cs.Linear(None, 3, dtype=dtype)]
    if bn:
        layers.append(cs.BatchNorm1D(3, dtype=dtype))
    return cs.Sequential(*layers, input_shape=(1, 8, 8), seed=seed)


def make_data(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 256, size=(n, 1, 8, 8), dtype=np.uint8)
    y = rng.integers(0, 3, size=n)
    return x, y


def _optimizer(model: cs.Sequential) -> cs.SGD:
    return cs.SGD(model, lr=0.05, momentum=0.9, weight_decay=1e-4)


def single_process(x: np.ndarray, y: np.ndarray, *, batch_size: int, steps: int,
                   dtype: Any = np.float64, bn: bool = False, augment: Any = None,
                   dropout: float = 0.25) -> dict[str, np.ndarray]:
    """The reference: one process, the whole global batch each step."""
    model = make_model(0, dtype, bn, dropout)
    opt = _optimizer(model)
    loss_fn = cs.CrossEntropyLoss()
    loader = BatchLoader(x, y, batch_size, seed=3, augment=augment)
    done = 0
    while done < steps:
        for xb, yb in loader:
            opt.zero_grad()
            scores = model.forward(xb.astype(dtype))
            loss_fn.forward(scores, yb)
            model.backward(loss_fn.backward(), input_grad=False)
            opt.step()
            done += 1
            if done == steps:
                break
    return {k: np.array(v) for k, v in model.state_dict().items()}


def data_parallel(comm: dist.Communicator, x: np.ndarray, y: np.ndarray, *, batch_size: int,
                  steps: int, dtype: Any = np.float64, bn: bool = False, sync_bn: bool = False,
                  augment: Any = None, dropout: float = 0.25, mode: str = "weighted",
                  broadcast: bool = True) -> dict[str, Any]:
    """K workers: rank r builds its model from seed r (the broadcast makes them one), takes its
    slice of each global batch, and reduces.  ``mode="ddp_mean"`` averages the K mean
    gradients instead (the negative control); ``broadcast=False`` skips the initial broadcast."""
    model = make_model(comm.rank, dtype, bn, dropout)
    opt = _optimizer(model)
    if broadcast:
        dist.broadcast_state(model, comm)
    reducer = dist.GradReducer(model, comm, opt)
    if sync_bn:
        dist.enable_sync_bn(model, comm)
    loss_fn = cs.CrossEntropyLoss()
    loader = BatchLoader(x, y, batch_size, seed=3, augment=augment)
    done, losses, counts = 0, [], []
    while done < steps:
        for gb in dist.global_batches(loader, comm):
            reducer.zero_grad()
            dist.set_batch_shard(model, gb.start, gb.stop, gb.total)
            loss_sum = 0.0
            # an empty slice runs too: dropout's draws and sync-BN's collectives stay in step
            scores = model.forward(gb.x.astype(dtype))
            if gb.n_local:
                loss_sum = float(loss_fn.forward(scores, gb.y)) * gb.n_local
                dscores = loss_fn.backward()
            else:
                dscores = np.zeros_like(scores)
            model.backward(dscores, input_grad=False)
            if mode == "ddp_mean":
                if not gb.n_local:
                    reducer.grads[...] = 0
                comm.allreduce_(reducer.grads)
                reducer.grads[...] /= comm.size
            else:
                totals = reducer.reduce(gb.n_local, loss_sum)
                losses.append(totals.loss)
            counts.append(gb.n_local)
            opt.step()
            done += 1
            if done == steps:
                break
    return {"state": {k: np.array(v) for k, v in model.state_dict().items()},
            "losses": losses, "counts": counts}


def max_diff(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> float:
    assert a.keys() == b.keys()
    return max(float(np.max(np.abs(np.asarray(a[k], np.float64) - np.asarray(b[k], np.float64))))
               if np.size(a[k]) else 0.0 for k in a)
