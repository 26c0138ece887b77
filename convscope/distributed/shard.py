"""Which images each worker takes: slices of the global batch for training, disjoint shards for
evaluation.

Training: every rank draws the same permutation ``default_rng([seed, epoch]).permutation(N)``,
walks the same global batches of ``batch_size`` and takes the contiguous slice
``np.array_split(batch, K)[rank]`` (16 over 3 workers: 6, 5, 5; a last batch of 2 over 3: 1, 1,
0).  No padding, no dropped images: a worker with an empty slice still takes part in the step,
with zero gradients.  Augmentation draws for the whole global batch from the shared generator
before slicing, so the images are the same for any K.

Evaluation: rank r takes the contiguous shard r of the data (no image twice, none left out:
unlike DistributedSampler's padding), and the counts (confusion matrix, summed loss) are added
over the ranks: exact metrics.
"""

from __future__ import annotations

from typing import Any, Callable, Iterator

import numpy as np

from ..data.batches import to_float
from .comm import Communicator, split_sizes

__all__ = ["shard_bounds", "global_batches", "GlobalBatch", "evaluate_sharded", "reduce_counts"]


def shard_bounds(n: int, size: int, rank: int) -> tuple[int, int]:
    """``(start, stop)`` of rank ``rank``'s part of ``n`` items split ``size`` ways, as
    ``np.array_split``: the first ``n % size`` parts are one longer."""
    if not 0 <= rank < size:
        raise ValueError(f"shard_bounds: rank must be in 0..{size - 1}, got {rank}")
    sizes = split_sizes(n, size)
    start = sum(sizes[:rank])
    return start, start + sizes[rank]


class GlobalBatch:
    """This worker's slice of one global batch: ``x`` (n_local, C, H, W) float32, ``y``
    (n_local,), rows ``start:stop`` of a batch of ``total`` images."""

    __slots__ = ("x", "y", "start", "stop", "total")

    def __init__(self, x: np.ndarray, y: np.ndarray, start: int, stop: int, total: int) -> None:
        self.x, self.y, self.start, self.stop, self.total = x, y, start, stop, total

    @property
    def n_local(self) -> int:
        return self.stop - self.start


def global_batches(loader: Any, comm: Communicator) -> Iterator[GlobalBatch]:
    """One pass of a ``BatchLoader`` as this rank's slices of its batches.

    The same draws as ``iter(loader)`` (permutation, then augmentation of each whole batch,
    from ``default_rng([seed, epoch])``; ``loader.epoch`` advances), then the slice, which alone
    is normalised: concatenating the K slices gives the loader's batch exactly.
    """
    rng = np.random.default_rng([loader.seed, loader.epoch])
    loader.epoch += 1
    n = len(loader.x)
    order = rng.permutation(n) if loader.shuffle else np.arange(n)
    b = loader.batch_size
    for k in range(len(loader)):
        idx = order[k * b:(k + 1) * b]
        start, stop = shard_bounds(len(idx), comm.size, comm.rank)
        if loader.augment is not None:  # draws for the whole batch, then this rank's rows
            xb = loader.augment(loader.x[idx], rng)[start:stop]
        else:
            xb = loader.x[idx[start:stop]]
        xb = loader.normalizer(xb) if loader.normalizer is not None else to_float(xb)
        yield GlobalBatch(np.ascontiguousarray(xb, dtype=np.float32), loader.y[idx[start:stop]],
                          start, stop, len(idx))


def reduce_counts(comm: Communicator, confusion: np.ndarray, loss_sum: float
                  ) -> tuple[np.ndarray, float]:
    """Sum a confusion matrix (int counts) and a summed loss over the ranks, in one Allreduce
    (float64: counts are exact below 2^53)."""
    buf = np.empty(confusion.size + 1, np.float64)
    buf[:-1] = confusion.ravel()
    buf[-1] = loss_sum
    comm.allreduce_(buf)
    return np.rint(buf[:-1]).astype(np.int64).reshape(confusion.shape), float(buf[-1])


def evaluate_sharded(evaluate: Callable[..., Any], comm: Communicator, model: Any, x: np.ndarray,
                     y: np.ndarray, *, num_classes: int, **kwargs: Any) -> Any:
    """``evaluate(model, x, y, num_classes=..., **kwargs)`` (an ``Evaluation``: loss, accuracy,
    correct, total, confusion) over the whole data, each rank evaluating its own shard; every
    rank gets the same, exact result."""
    if comm.size == 1:
        return evaluate(model, x, y, num_classes=num_classes, **kwargs)
    start, stop = shard_bounds(len(y), comm.size, comm.rank)
    part = evaluate(model, x[start:stop], y[start:stop], num_classes=num_classes, **kwargs)
    confusion, loss_sum = reduce_counts(comm, part.confusion, part.loss * part.total)
    total = int(confusion.sum())
    correct = int(np.trace(confusion))
    return type(part)(loss_sum / max(total, 1), correct / max(total, 1), correct, total, confusion)
