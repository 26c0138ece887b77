"""Communicators: the few collectives data-parallel training needs, over MPI, one process, or
threads.

A communicator has ``rank`` (0 .. size-1) and ``size`` and works on NumPy arrays in place:

- ``allreduce_(buf, op="sum")``: every rank's ``buf`` becomes the element-wise sum (or
  "min"/"max") over all ranks; identical bits on every rank.
- ``bcast_(buf, root=0)``: every rank's ``buf`` becomes root's.
- ``bcast_obj(obj)`` / ``allgather_obj(obj)``: small picklable metadata (signatures, settings).
- ``barrier()``, ``abort(code)``.

:class:`MPIComm` wraps mpi4py (``MPI.COMM_WORLD``): one blocking ``Allreduce(MPI.IN_PLACE, ...)``
per call, no pickling on the array path.  :class:`Local` is one process (every collective is the
identity).  :class:`ThreadComm` runs K ranks as threads of one process, for tests: the same
semantics as MPI, a rank that raises breaks the others' waits instead of hanging them.
"""

from __future__ import annotations

import os
import threading
from typing import Any, Callable, Sequence

import numpy as np

__all__ = ["Communicator", "Local", "ThreadComm", "MPIComm", "MPI_MISSING", "OPS"]

OPS = ("sum", "min", "max")
#: The one line a missing mpi4py gives.
MPI_MISSING = "data-parallel training needs mpi4py and Open MPI: pip install 'convscope[mpi]'"


def _check_buffer(buf: Any, what: str) -> None:
    if not isinstance(buf, np.ndarray) or not buf.flags.c_contiguous:
        got = "a strided view" if isinstance(buf, np.ndarray) else type(buf).__name__
        raise TypeError(f"{what}: needs a C-contiguous NumPy array, got {got}")


def _check_op(op: str) -> None:
    if op not in OPS:
        raise ValueError(f"allreduce_: op must be one of {', '.join(OPS)}, got {op!r}")


class Communicator:
    """The interface (and the single-process behaviour): ``rank`` 0 of ``size`` 1."""

    rank: int = 0
    size: int = 1

    @property
    def is_root(self) -> bool:
        """Rank 0: the one that writes files and prints."""
        return self.rank == 0

    def allreduce_(self, buf: np.ndarray, op: str = "sum") -> np.ndarray:
        """Reduce ``buf`` in place over every rank (sum, min or max); returns it."""
        _check_buffer(buf, "allreduce_")
        _check_op(op)
        return buf

    def bcast_(self, buf: np.ndarray, root: int = 0) -> np.ndarray:
        """Overwrite ``buf`` with root's ``buf``, in place; returns it."""
        _check_buffer(buf, "bcast_")
        return buf

    def bcast_obj(self, obj: Any, root: int = 0) -> Any:
        """Root's ``obj`` (pickled) on every rank."""
        return obj

    def allgather_obj(self, obj: Any) -> list[Any]:
        """Every rank's ``obj``, in rank order, on every rank."""
        return [obj]

    def barrier(self) -> None:
        """Wait until every rank has got here."""

    def abort(self, code: int = 1) -> None:
        """End every rank of the job with exit status ``code``."""
        raise SystemExit(code)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(rank={self.rank}, size={self.size})"


class Local(Communicator):
    """One process: every collective is the identity (the default of ``Trainer(comm=None)``)."""


class _Hub:
    """What the threads of one ThreadComm group share."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.barrier = threading.Barrier(size)
        self.slots: list[Any] = [None] * size


class ThreadComm(Communicator):
    """Rank ``rank`` of ``size`` threads in this process (tests: MPI's semantics without mpirun).

    ``ThreadComm.run(3, fn)`` calls ``fn(comm)`` in 3 threads and returns their results in rank
    order; an exception in one rank breaks the others' waits and is raised from ``run``.  The
    sum is taken in rank order on every rank, so every rank gets the same bits.
    """

    def __init__(self, hub: _Hub, rank: int) -> None:
        self._hub, self.rank, self.size = hub, rank, hub.size

    @classmethod
    def group(cls, size: int) -> list["ThreadComm"]:
        """``size`` communicators of one group (one per thread)."""
        if isinstance(size, bool) or not isinstance(size, int) or size < 1:
            raise ValueError(f"ThreadComm.group: size must be an int >= 1, got {size!r}")
        hub = _Hub(size)
        return [cls(hub, r) for r in range(size)]

    @classmethod
    def run(cls, size: int, fn: Callable[["ThreadComm"], Any], timeout: float = 60.0) -> list[Any]:
        """Run ``fn(comm)`` on ``size`` threads; their return values in rank order."""
        comms = cls.group(size)
        results: list[Any] = [None] * size
        errors: list[BaseException | None] = [None] * size

        def body(c: ThreadComm) -> None:
            try:
                results[c.rank] = fn(c)
            except BaseException as exc:  # noqa: BLE001 - re-raised by run()
                errors[c.rank] = exc
                c._hub.barrier.abort()  # the others stop waiting (as MPI_Abort ends them)

        threads = [threading.Thread(target=body, args=(c,), daemon=True) for c in comms]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout)
        if any(t.is_alive() for t in threads):
            comms[0]._hub.barrier.abort()
            raise TimeoutError(f"ThreadComm.run: a rank still runs after {timeout} s (a hang)")
        first = next((e for e in errors if e is not None
                      and not isinstance(e, threading.BrokenBarrierError)), None)
        first = first or next((e for e in errors if e is not None), None)
        if first is not None:
            raise first
        return results

    def _exchange(self, value: Any) -> list[Any]:
        hub = self._hub
        hub.slots[self.rank] = value
        hub.barrier.wait()
        values = list(hub.slots)
        hub.barrier.wait()  # nobody overwrites a slot before everyone has read them all
        return values

    def allreduce_(self, buf: np.ndarray, op: str = "sum") -> np.ndarray:
        _check_buffer(buf, "allreduce_")
        _check_op(op)
        parts = self._exchange(buf.copy())
        out = parts[0].copy()
        fn = {"sum": np.add, "min": np.minimum, "max": np.maximum}[op]
        for p in parts[1:]:
            fn(out, p, out=out)
        buf[...] = out
        return buf

    def bcast_(self, buf: np.ndarray, root: int = 0) -> np.ndarray:
        _check_buffer(buf, "bcast_")
        parts = self._exchange(buf.copy() if self.rank == root else None)
        src = parts[root]
        if src.shape != buf.shape or src.dtype != buf.dtype:
            raise ValueError(f"bcast_: rank {self.rank} has {buf.dtype} {buf.shape}, the root "
                             f"{src.dtype} {src.shape}")
        buf[...] = src
        return buf

    def bcast_obj(self, obj: Any, root: int = 0) -> Any:
        return self._exchange(obj)[root]

    def allgather_obj(self, obj: Any) -> list[Any]:
        return self._exchange(obj)

    def barrier(self) -> None:
        self._hub.barrier.wait()

    def abort(self, code: int = 1) -> None:
        self._hub.barrier.abort()
        raise SystemExit(code)


class MPIComm(Communicator):
    """An MPI communicator through mpi4py (``MPI.COMM_WORLD`` unless ``comm`` is given).

    Buffers go straight to MPI (no pickling); the sum's order is MPI's, the same on every rank.
    """

    def __init__(self, comm: Any = None) -> None:
        try:
            from mpi4py import MPI  # noqa: PLC0415 - optional library, only under MPI
        except ImportError:
            raise ImportError(MPI_MISSING) from None
        self._MPI = MPI
        self._comm = comm if comm is not None else MPI.COMM_WORLD
        self.rank, self.size = int(self._comm.Get_rank()), int(self._comm.Get_size())
        self._ops = {"sum": MPI.SUM, "min": MPI.MIN, "max": MPI.MAX}

    def allreduce_(self, buf: np.ndarray, op: str = "sum") -> np.ndarray:
        _check_buffer(buf, "allreduce_")
        _check_op(op)
        if self.size > 1:
            self._comm.Allreduce(self._MPI.IN_PLACE, buf, op=self._ops[op])
        return buf

    def bcast_(self, buf: np.ndarray, root: int = 0) -> np.ndarray:
        _check_buffer(buf, "bcast_")
        if self.size > 1:
            self._comm.Bcast(buf, root=root)
        return buf

    def bcast_obj(self, obj: Any, root: int = 0) -> Any:
        return self._comm.bcast(obj, root=root) if self.size > 1 else obj

    def allgather_obj(self, obj: Any) -> list[Any]:
        return self._comm.allgather(obj) if self.size > 1 else [obj]

    def barrier(self) -> None:
        if self.size > 1:
            self._comm.Barrier()

    def abort(self, code: int = 1) -> None:
        self._comm.Abort(code)


def world_size_from_env(env: Any = None) -> int | None:
    """The job's size as mpirun (Open MPI, MPICH, PMIx, Slurm's PMI) tells its ranks, or None
    outside an MPI job."""
    env = os.environ if env is None else env
    for key in ("OMPI_COMM_WORLD_SIZE", "PMIX_SIZE", "PMI_SIZE", "MPI_LOCALNRANKS"):
        value = env.get(key)
        if value and value.isdigit():
            return int(value)
    return None


def split_sizes(n: int, size: int) -> Sequence[int]:
    """How ``np.array_split`` cuts ``n`` items into ``size`` parts: the first ``n % size`` parts
    one longer (16 over 3 -> 6, 5, 5; 2 over 3 -> 1, 1, 0)."""
    q, r = divmod(int(n), int(size))
    return [q + (i < r) for i in range(size)]
