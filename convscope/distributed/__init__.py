"""Data-parallel training on MPI: K workers that train exactly the model one process trains.

>>> import convscope.distributed as dist
>>> comm = dist.init()          # MPIComm under mpirun, Local otherwise
>>> # trainer = Trainer(model, config, comm=comm)

``--batch-size`` is the global batch B.  Every worker draws the same permutation, walks the same
batches and takes its contiguous slice (:mod:`.shard`); gradients are summed weighted by each
worker's image count in one flat in-place Allreduce and divided by B (:mod:`.reducer`); rank 0's
initial state is broadcast after a check that every worker built the same model; dropout and
augmentation draw for the whole global batch from the shared generator, then slice.  Batch norm
keeps each worker's statistics (as DDP) with the running statistics averaged before evaluation
and checkpoints; ``--sync-bn`` makes it exact (:mod:`.syncbn`).  Evaluation splits the data into
disjoint shards and sums the counts.  So the weights after any number of steps equal one
process's on the global batch (float64 to ~1e-15), for any K, and no learning rate needs
rescaling.

Communicators (:mod:`.comm`): :class:`MPIComm` (mpi4py), :class:`Local` (one process),
:class:`ThreadComm` (ranks as threads, for tests).  ``import convscope.distributed`` imports no
mpi4py: only :class:`MPIComm` (and :func:`init` under mpirun) does.
"""

from __future__ import annotations

from .comm import (MPI_MISSING, Communicator, Local, MPIComm, ThreadComm, split_sizes,
                   world_size_from_env)
from .parallel import DataParallel
from .launch import MpiUnavailable, find_mpirun, launch, mpirun_command, mpirun_env
from .reducer import (GradReducer, ReplicaMismatch, StepTotals, average_buffers,
                      broadcast_state, check_replicas, check_signature, clear_batch_shard,
                      set_batch_shard, state_signature, walk)
from .shard import GlobalBatch, evaluate_sharded, global_batches, reduce_counts, shard_bounds
from .syncbn import SyncBN, disable_sync_bn, enable_sync_bn

__all__ = ["init", "DataParallel", "Communicator", "Local", "MPIComm", "ThreadComm", "MPI_MISSING",
           "MpiUnavailable", "GradReducer", "StepTotals", "ReplicaMismatch", "broadcast_state",
           "check_signature", "check_replicas", "average_buffers", "state_signature",
           "set_batch_shard", "clear_batch_shard", "walk", "global_batches", "GlobalBatch",
           "shard_bounds", "evaluate_sharded", "reduce_counts", "SyncBN", "enable_sync_bn",
           "disable_sync_bn", "launch", "mpirun_command", "mpirun_env", "find_mpirun",
           "split_sizes", "world_size_from_env"]


def init() -> Communicator:
    """The communicator of this process: :class:`MPIComm` inside an MPI job of more than one
    rank (``mpirun -np N ...``), else :class:`Local`.  Inside such a job without mpi4py: an
    ImportError saying ``pip install 'convscope[mpi]'``."""
    size = world_size_from_env()
    if size is None or size <= 1:
        return Local()
    return MPIComm()
