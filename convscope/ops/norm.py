"""Batch normalisation over every axis but the channel axis 1: per-channel statistics, the
normalisation y = (x - mean) / sqrt(var + eps) · gamma + beta, and its gradient.
"""

from __future__ import annotations

from typing import Any

from ..runtime import xp_of
from .layout import like

Array = Any


def batchnorm_stats(x: Array) -> tuple[Array, Array]:
    """Per-channel mean and biased variance of x (N, C, ...) over every axis but 1 (C values
    each); the variance as the mean of (x - mean)², on a recycled buffer."""
    xp = xp_of(x)
    axes = (0,) + tuple(range(2, x.ndim))
    mean = x.mean(axis=axes)
    d = xp.subtract(x, mean.reshape((1, -1) + (1,) * (x.ndim - 2)), out=like(x))
    xp.multiply(d, d, out=d)
    return mean, d.mean(axis=axes)


def batchnorm_forward(x: Array, mean: Array, var: Array, gamma: Array | None, beta: Array | None,
                      eps: float) -> tuple[Array, tuple]:
    """y = (x - mean) / sqrt(var + eps) · gamma + beta, statistics per channel (axis 1).

    x (N, C, ...) -> y of the same shape and memory layout; four passes, no temporaries.
    """
    xp = xp_of(x)
    shape = (1, -1) + (1,) * (x.ndim - 2)
    inv_std = 1.0 / xp.sqrt(var + eps)
    xhat = xp.subtract(x, mean.reshape(shape), out=like(x))
    xhat *= inv_std.reshape(shape)
    if gamma is None:
        return xhat, (xhat, inv_std, gamma)
    y = xp.multiply(xhat, gamma.reshape(shape), out=like(x))
    y += beta.reshape(shape)
    return y, (xhat, inv_std, gamma)


def batchnorm_backward(dy: Array, cache: tuple, batch_stats: bool) -> tuple[Array, Array, Array]:
    """(dx, dgamma, dbeta).  With batch statistics the mean and variance depend on x too:
    dx = gamma · inv_std · (dy - mean(dy) - xhat · mean(dy · xhat)), means over the M values
    of each channel (the same as inv_std / M · (M·dxhat - sum(dxhat) - xhat·sum(dxhat·xhat))
    with dxhat = gamma · dy)."""
    xp = xp_of(dy)
    xhat, inv_std, gamma = cache
    axes = (0,) + tuple(range(2, dy.ndim))
    shape = (1, -1) + (1,) * (dy.ndim - 2)
    dbeta = dy.sum(axis=axes)
    dx = xp.multiply(dy, xhat, out=like(xhat))
    dgamma = dx.sum(axis=axes)
    scale = inv_std if gamma is None else gamma * inv_std
    if not batch_stats:
        return xp.multiply(dy, scale.reshape(shape), out=dx), dgamma, dbeta
    m = dy.size // dy.shape[1]
    xp.multiply(xhat, (dgamma / m).reshape(shape), out=dx)
    xp.subtract(dy, dx, out=dx)
    dx -= (dbeta / m).reshape(shape)
    dx *= scale.reshape(shape)
    return dx, dgamma, dbeta
