"""The data-parallel side of one training run, in the order the trainer needs it.

``dp = DataParallel(model, optimizer, comm, sync_bn=False)`` (gradients into the flat buffer,
batch norm synchronised with ``sync_bn``); ``dp.start()`` once the state is final (after a
resume): the signature check and rank 0's broadcast; per epoch ``dp.batches(loader)`` gives this
rank's slices; per step ``dp.reduce(n, loss_sum, correct, stop)`` after backward; before
validation and checkpoints ``dp.sync_buffers()``; ``dp.any(flag)`` makes one rank's wish (a
Ctrl-C between steps) everyone's.  With one process every call costs nothing and changes
nothing, so a trainer can use it always.
"""

from __future__ import annotations

from typing import Any, Iterator

import numpy as np

from .comm import Communicator, Local
from .reducer import (GradReducer, StepTotals, average_buffers, broadcast_state, check_replicas,
                      clear_batch_shard, set_batch_shard)
from .shard import global_batches
from .syncbn import disable_sync_bn, enable_sync_bn

__all__ = ["DataParallel"]


class DataParallel:
    """Data-parallel training of ``model`` with ``optimizer`` over ``comm`` (see the module)."""

    def __init__(self, model: Any, optimizer: Any, comm: Communicator | None = None, *,
                 sync_bn: bool = False) -> None:
        self.model, self.optimizer = model, optimizer
        self.comm = comm if comm is not None else Local()
        self.parallel = self.comm.size > 1
        self.sync_bn = bool(sync_bn) and self.parallel
        self.reducer = GradReducer(model, self.comm, optimizer) if self.parallel else None
        if self.sync_bn:
            enable_sync_bn(model, self.comm)

    @property
    def is_root(self) -> bool:
        """Whether this rank writes files and prints (rank 0; always with one process)."""
        return self.comm.rank == 0

    def start(self) -> None:
        """Check every rank built the same model and optimiser state; copy rank 0's to all."""
        if self.parallel:
            broadcast_state(self.model, self.comm, self.optimizer)

    def batches(self, loader: Any) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """``(x, y)`` of this rank's slice of each batch of one pass of ``loader`` (the loader's
        own batches with one process); stochastic layers are told their rows before each."""
        if not self.parallel:
            yield from loader
            return
        try:
            for gb in global_batches(loader, self.comm):
                set_batch_shard(self.model, gb.start, gb.stop, gb.total)
                yield gb.x, gb.y
        finally:
            clear_batch_shard(self.model)

    def zero_grad(self) -> None:
        if self.reducer is not None:
            self.reducer.zero_grad()
        else:
            self.optimizer.zero_grad()

    def reduce(self, n_local: int, loss_sum: float, correct: int, stop: bool = False
               ) -> StepTotals:
        """After backward: the global batch's mean gradient on every rank, and the totals."""
        if self.reducer is None:
            return StepTotals(int(n_local), float(loss_sum), int(correct), bool(stop))
        return self.reducer.reduce(n_local, loss_sum, correct, stop)

    def any(self, flag: bool) -> bool:
        """True on every rank when ``flag`` is true on any."""
        if not self.parallel:
            return bool(flag)
        return bool(self.comm.allreduce_(np.array([float(bool(flag))]), "max")[0] > 0)

    def sync_buffers(self) -> None:
        """Average the running statistics over the ranks (not needed with sync_bn: they are
        the same everywhere already); then check the ranks hold the same bits."""
        if self.parallel:
            if not self.sync_bn:
                average_buffers(self.model, self.comm)
            check_replicas(self.model, self.comm)

    def barrier(self) -> None:
        """After rank 0 wrote a file: nobody reads it before it is complete."""
        if self.parallel:
            self.comm.barrier()

    def close(self) -> None:
        """Leave the model as a single-process model (no shards, no synchronised BN)."""
        clear_batch_shard(self.model)
        if self.sync_bn:
            disable_sync_bn(self.model)
