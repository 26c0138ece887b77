"""What makes K workers one model: identical starting state, one weighted gradient sum per step.

The reduction of a step is one in-place Allreduce of one flat buffer::

    [ n_r·g_1 | n_r·g_2 | ... | n_r·g_P | n_r | loss_sum_r | correct_r | stop_r ]

Every parameter's gradient ``layer.grads[k]`` is a view into this buffer (DDP's
``gradient_as_bucket_view``): backward adds into it, nothing is copied in or out.  Rank r's
gradients are means over its n_r images (the loss is a mean), so scaling by n_r gives sums; after
the Allreduce, dividing by N = Σ n_r gives the mean over the global batch: exactly the gradient
one process computes on the whole batch, for any K and any split (n_r = 0 included).  No
learning-rate rescaling is needed when K changes.  The four slots carry the step's totals with
the same call, and the stop flag makes Ctrl-C and a NaN loss collective without another message.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from typing import Any, Iterator

import numpy as np

from ..runtime import synchronize, to_host, xp_of
from .comm import Communicator

__all__ = ["GradReducer", "StepTotals", "walk", "state_signature", "check_signature",
           "broadcast_state", "average_buffers", "check_replicas", "set_batch_shard",
           "ReplicaMismatch"]


class ReplicaMismatch(RuntimeError):
    """The workers' models are not the same (different architectures, or drifted apart)."""


def walk(layer: Any) -> Iterator[Any]:
    """``layer`` and every layer inside it, depth first (containers through ``children()``, or
    ``layers`` for containers that do not list children)."""
    yield layer
    kids = [child for _, child in layer.children()] if hasattr(layer, "children") else []
    if not kids:
        kids = list(getattr(layer, "layers", []) or [])
    for child in kids:
        yield from walk(child)


def _own_grads(model: Any) -> list[tuple[Any, str, np.ndarray]]:
    """(layer, name, grad) for every gradient array a layer holds itself, in state-dict order
    (containers' ``grads`` are merged views of their children's and are skipped)."""
    out = []
    for layer in walk(model):
        own = vars(layer).get("grads")
        if isinstance(own, dict):
            out.extend((layer, k, g) for k, g in own.items())
    return out


@dataclass(frozen=True)
class StepTotals:
    """A step's totals over every worker: images, summed loss, correct predictions, stop flag."""

    n: int
    loss_sum: float
    correct: int
    stop: bool

    @property
    def loss(self) -> float:
        """The global batch's mean loss (NaN when any worker's loss was not finite)."""
        return self.loss_sum / self.n if self.n else 0.0


class GradReducer:
    """The flat gradient buffer of ``model`` and its one Allreduce per step.

    ``GradReducer(model, comm, optimizer)`` moves every gradient into one buffer (the layers'
    ``grads`` become views into it, and the optimiser's triples are rebound to them).  Each step:
    ``zero_grad()``, forward and backward on this worker's n_local images, then
    ``totals = reducer.reduce(n_local, loss_sum, correct, stop)``: the gradients are then the
    global batch's mean gradient on every rank, ``totals`` the global sums.
    """

    SLOTS = 4  # n_local, loss_sum, correct, stop

    def __init__(self, model: Any, comm: Communicator, optimizer: Any = None) -> None:
        self.model, self.comm = model, comm
        entries = _own_grads(model)
        if not entries:
            raise ValueError("GradReducer: the model has no parameters; build it (give "
                             "input_shape) first")
        dtypes = sorted({str(g.dtype) for _, _, g in entries})
        if len(dtypes) != 1:
            raise TypeError(f"GradReducer: parameters of one dtype needed, the model mixes "
                            f"{', '.join(dtypes)}")
        self.dtype = entries[0][2].dtype
        self.count = int(sum(g.size for _, _, g in entries))
        self.buffer = xp_of(entries[0][2]).zeros(self.count + self.SLOTS, self.dtype)  # grads' device
        self.grads = self.buffer[:self.count]     # every gradient, flat
        self.slots = self.buffer[self.count:]
        self._views: list[np.ndarray] = []
        offset = 0
        for layer, name, g in entries:
            view = self.buffer[offset:offset + g.size].reshape(g.shape)
            view[...] = g
            layer.grads[name] = view
            self._views.append(view)
            offset += g.size
        self._entries = [(layer, name) for layer, name, _ in entries]
        if optimizer is not None:
            self.rebind(optimizer)

    def rebind(self, optimizer: Any) -> None:
        """Point ``optimizer``'s (name, param, grad) triples at the buffer's views."""
        fresh = list(self.model.parameters())
        if [n for n, _, _ in fresh] != [n for n, _, _ in optimizer.params]:
            raise ValueError("GradReducer.rebind: the optimiser holds other parameters than the "
                             "model")
        optimizer.params = fresh

    def _check_views(self) -> None:
        for (layer, name), view in zip(self._entries, self._views):
            if layer.grads.get(name) is not view:
                raise RuntimeError(f"{layer!r}: its gradient '{name}' was replaced after the "
                                   "GradReducer was made (rebuilt or re-initialised?); make the "
                                   "reducer after building the model")

    def zero_grad(self) -> None:
        """Zero every gradient (one fill of the buffer)."""
        self.buffer[...] = 0

    def reduce(self, n_local: int, loss_sum: float = 0.0, correct: int = 0,
               stop: bool = False) -> StepTotals:
        """Turn this worker's mean gradients over ``n_local`` images into the global batch's
        mean gradient on every rank: grads ← (Σ_r n_r·grads_r) / Σ_r n_r.  Returns the global
        totals; ``stop`` is true on every rank when any rank asked to stop."""
        self._check_views()
        g = self.grads
        if self.comm.size == 1:  # one process: the gradients are already the mean
            return StepTotals(int(n_local), float(loss_sum), int(correct), bool(stop))
        if n_local:
            g *= n_local
        else:  # no images here: contribute exact zeros (not 0 · whatever backward left)
            g[...] = 0
        s = self.slots
        s[0], s[1], s[2], s[3] = n_local, loss_sum, correct, float(bool(stop))
        staged(self.comm.allreduce_, self.buffer)
        n = int(round(float(s[0])))
        if n:
            g /= n
        return StepTotals(n, float(s[1]), int(round(float(s[2]))), bool(s[3] > 0))


# ---------------------------------------------------------------------------------------------
# start-up: the same model everywhere


def state_signature(model: Any, optimizer: Any = None) -> list[tuple[str, tuple[int, ...], str]]:
    """(key, shape, dtype) of every parameter, buffer and optimiser-state array."""
    sig = [(f"model.{k}", tuple(np.shape(v)), str(v.dtype)) for k, v in model.state_dict().items()]
    if optimizer is not None:
        arrays = optimizer.state_dict()["arrays"]
        sig += [(f"optim.{k}", tuple(np.shape(v)), str(v.dtype)) for k, v in sorted(arrays.items())]
    return sig


def check_signature(model: Any, comm: Communicator, optimizer: Any = None) -> None:
    """Raise :class:`ReplicaMismatch` (on every rank, the same line) when any rank's model or
    optimiser state differs in names, shapes or dtypes from rank 0's."""
    sigs = comm.allgather_obj(state_signature(model, optimizer))
    ref = sigs[0]
    for r, sig in enumerate(sigs[1:], 1):
        if sig == ref:
            continue
        mine, theirs = dict((k, (s, d)) for k, s, d in ref), dict((k, (s, d)) for k, s, d in sig)
        extra = sorted(set(theirs) - set(mine))
        missing = sorted(set(mine) - set(theirs))
        if extra or missing:
            raise ReplicaMismatch(f"rank {r}'s model differs from rank 0's: it has "
                                  f"{extra[:3] or 'nothing'} more and {missing[:3] or 'nothing'} "
                                  "less; start every worker with the same architecture")
        key = next(k for k in mine if mine[k] != theirs[k])
        raise ReplicaMismatch(f"rank {r}'s model differs from rank 0's: {key!r} is "
                              f"{theirs[key][1]} {theirs[key][0]} there, {mine[key][1]} "
                              f"{mine[key][0]} on rank 0; start every worker with the same "
                              "architecture and dtype")


def broadcast_state(model: Any, comm: Communicator, optimizer: Any = None) -> None:
    """Copy rank 0's parameters, buffers and optimiser state to every rank (in place), after
    :func:`check_signature`.  Different seeds on different ranks then do not matter."""
    check_signature(model, comm, optimizer)
    if comm.size == 1:
        return
    arrays = list(model.state_dict().values())
    if optimizer is not None:
        arrays += [v for _, v in sorted(optimizer.state_dict()["arrays"].items())]
    for a in arrays:
        if type(a) is np.ndarray and a.flags.c_contiguous:
            comm.bcast_(a)
        else:  # a 0-d or strided array: through a contiguous copy (a device's: via the host)
            staged(comm.bcast_, a)


def average_buffers(model: Any, comm: Communicator) -> int:
    """Replace every floating-point buffer (batch norm's running mean and variance) by its mean
    over the ranks, as timm's ``distribute_bn``: before evaluating and before a checkpoint, so
    both see one model.  Returns how many values were averaged."""
    if comm.size == 1:
        return 0
    floats = [v for v in model.buffers.values() if np.issubdtype(v.dtype, np.floating)]
    if not floats:
        return 0
    flat = np.concatenate([to_host(v).ravel().astype(np.float64) for v in floats])
    comm.allreduce_(flat)
    flat /= comm.size
    offset = 0
    for v in floats:
        v[...] = xp_of(v).asarray(flat[offset:offset + v.size].reshape(v.shape), dtype=v.dtype)
        offset += v.size
    return int(flat.size)


def _checksum(model: Any) -> int:
    crc = 0
    for v in model.state_dict().values():
        crc = zlib.crc32(np.ascontiguousarray(to_host(v)).tobytes(), crc)
    return crc


def check_replicas(model: Any, comm: Communicator, what: str = "parameters") -> None:
    """Raise :class:`ReplicaMismatch` on every rank when the ranks' states are not bit for bit
    the same (one Allreduce of a CRC-32; cheap once an epoch)."""
    if comm.size == 1:
        return
    c = float(_checksum(model))
    span = comm.allreduce_(np.array([c, -c]), "max")
    if span[0] != -span[1]:
        raise ReplicaMismatch(f"the workers' {what} have drifted apart (CRC-32 from "
                              f"{int(-span[1]):08x} to {int(span[0]):08x}); this is a bug: "
                              "please report it")


def staged(collective: Any, buf: Any) -> Any:
    """``collective(buf)`` (``comm.allreduce_`` or ``comm.bcast_``) on a contiguous host copy
    of ``buf``, written back: how a GPU's arrays go through an MPI that is not CUDA-aware (the
    PyPI Open MPI).  The device's queued kernels finish first (``synchronize``), or MPI would
    read memory they have not written yet (pylops-mpi PR #182).  Returns ``buf``."""
    if type(buf) is np.ndarray and buf.flags.c_contiguous:
        return collective(buf)
    if type(buf) is not np.ndarray:
        synchronize(buf)
    host = np.ascontiguousarray(to_host(buf))
    collective(host)
    buf[...] = host if type(buf) is np.ndarray else xp_of(buf).asarray(host)
    return buf


def set_batch_shard(model: Any, start: int, stop: int, total: int) -> None:
    """Tell every layer that draws per image (Dropout) that this worker holds rows
    ``start:stop`` of a global batch of ``total``: it draws for all ``total`` and keeps its rows,
    so the random numbers do not depend on the number of workers."""
    shard = (int(start), int(stop), int(total))
    for layer in walk(model):
        if hasattr(type(layer), "shard"):
            layer.shard = shard


def clear_batch_shard(model: Any) -> None:
    """Undo :func:`set_batch_shard` (single-process training and inference)."""
    for layer in walk(model):
        if "shard" in vars(layer):
            del layer.shard
