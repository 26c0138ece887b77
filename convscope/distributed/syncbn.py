"""``--sync-bn``: batch norm over the global batch, exactly, however it is split.

By default each worker's batch norm uses its own slice's statistics (as DDP does): the same model
as one process only when the statistics of the slices happen to match.  With a synchroniser
attached (``layer.sync``), training batch norm uses the global batch's statistics:

forward, per channel over the M = Σ_r m_r values of every worker (two passes, as one process
computes them, so float32 loses nothing to cancellation)::

    mean = Σ_r Σ x / M                         (Allreduce of [Σx | m])
    var  = Σ_r Σ (x - mean)² / M               (Allreduce of [Σ(x - mean)²])

backward: with x̂ = (x - mean)/√(var + eps) and each worker's dy the gradient of its own mean
loss over its n_r images (n_r = the batch axis here), the sums the input gradient needs are in
the global loss's units after weighting by n_r::

    Sβ = Σ_r n_r Σ dy,   Sγ = Σ_r n_r Σ dy·x̂      (one Allreduce)
    dx = γ/√(var + eps) · (dy - (Sβ + x̂·Sγ) / (n·M))

dγ and dβ stay local (Σ dy·x̂, Σ dy): the gradient reducer's n_r weighting sums them.  Sums are in
float64.  A worker with an empty slice still joins both collectives.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .comm import Communicator
from .reducer import walk

__all__ = ["SyncBN", "enable_sync_bn", "disable_sync_bn"]


class SyncBN:
    """The synchroniser one batch-norm layer holds in ``layer.sync`` (one per layer)."""

    def __init__(self, comm: Communicator) -> None:
        self.comm = comm
        self.m = 0  # values per channel in the last global batch

    def stats(self, x: Any) -> tuple[Any, Any, int]:
        """(mean, biased var, M) per channel (axis 1) over every worker's ``x`` (n_r, C, ...)."""
        axes = (0,) + tuple(range(2, x.ndim))
        c = x.shape[1]
        m_local = x.size // c if c else 0
        buf = np.empty(c + 1, np.float64)
        buf[:c] = x.sum(axis=axes, dtype=np.float64)
        buf[c] = m_local
        self.comm.allreduce_(buf)
        m = int(round(buf[c]))
        mean64 = buf[:c] / max(m, 1)
        shape = (1, -1) + (1,) * (x.ndim - 2)
        d = x - mean64.astype(x.dtype).reshape(shape)
        d *= d
        sq = np.ascontiguousarray(d.sum(axis=axes, dtype=np.float64))
        self.comm.allreduce_(sq)
        self.m = m
        return mean64.astype(x.dtype), (sq / max(m, 1)).astype(x.dtype), m

    def backward(self, dy: Any, cache: tuple) -> tuple[Any, Any, Any]:
        """(dx, dgamma, dbeta) for this worker's ``dy``, ``cache`` = (x̂, 1/√(var+eps), γ) as
        ``functional.batchnorm_forward`` keeps it."""
        xhat, inv_std, gamma = cache
        axes = (0,) + tuple(range(2, dy.ndim))
        shape = (1, -1) + (1,) * (dy.ndim - 2)
        c = dy.shape[1]
        dbeta = dy.sum(axis=axes)
        dgamma = (dy * xhat).sum(axis=axes)
        n = dy.shape[0]
        buf = np.empty(2 * c, np.float64)
        buf[:c], buf[c:] = dbeta, dgamma
        buf *= n
        self.comm.allreduce_(buf)
        if n == 0:
            return np.zeros_like(dy), dgamma, dbeta
        k = 1.0 / (n * self.m)
        s_beta = (buf[:c] * k).astype(dy.dtype).reshape(shape)
        s_gamma = (buf[c:] * k).astype(dy.dtype).reshape(shape)
        scale = inv_std if gamma is None else gamma * inv_std
        dx = (dy - s_beta - xhat * s_gamma) * scale.reshape(shape)
        return dx, dgamma, dbeta


def _is_batchnorm(layer: Any) -> bool:
    """Batch-norm layers declare the ``sync`` slot (layers/norm.py)."""
    return hasattr(type(layer), "sync")


def enable_sync_bn(model: Any, comm: Communicator) -> int:
    """Give every batch-norm layer of ``model`` a :class:`SyncBN` on ``comm`` (``--sync-bn``);
    returns how many.  Nothing changes in the model's file or state dict."""
    count = 0
    for layer in walk(model):
        if _is_batchnorm(layer):
            layer.sync = SyncBN(comm)
            count += 1
    return count


def disable_sync_bn(model: Any) -> None:
    """Back to each batch's own statistics."""
    for layer in walk(model):
        if "sync" in vars(layer):
            del layer.sync
