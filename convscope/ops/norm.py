"""Batch normalisation over every axis but the channel axis 1: per-channel statistics, the
normalisation y = (x - mean) / sqrt(var + eps) · gamma + beta, and its gradient.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..runtime import xp_of
from . import jit
from .layout import in_layout, is_channels_last, like, per_channel

Array = Any


def _channel_views(a: Array) -> tuple[str, Array] | None:
    """a (N, C, ...) as a matrix or 3-D view whose per-channel sums are one fast reduction:
    ('mc', (M, C)) for channels-innermost memory, ('nci', (N, C, L)) for C-contiguous, else None.
    (NumPy's a.sum(axis=(0, 2, 3)) walks the array in runs of one image row or one pixel's
    channels and is 3-8x slower than einsum's or a GEMV's single sweep.)"""
    if type(a) is not np.ndarray or a.ndim < 2:
        return None
    if a.ndim == 2 or (a.ndim == 4 and is_channels_last(a)):
        m = a if a.ndim == 2 else a.transpose(0, 2, 3, 1)
        if m.flags.c_contiguous or a.ndim == 2 and a.strides[1] == a.itemsize:
            return "mc", m.reshape(-1, a.shape[1])
        return None
    if a.flags.c_contiguous:
        return "nci", a.reshape(a.shape[0], a.shape[1], -1)
    return None


BLOCK = 256  # rows of a (M, C) view summed per partial: einsum adds in order, so the partial
# sums keep float32 rounding to that of 256-term sums (pairwise across the partials)


def _einsum_c(kind: str, *ops: Array) -> Array:
    """Per-channel sum (one operand) or dot product (two) of ('mc' or 'nci') views."""
    if kind == "nci":  # each (n, c) run summed alone, then the N partials pairwise
        return np.einsum(",".join(["nci"] * len(ops)) + "->nc", *ops).sum(axis=0)
    m, c = ops[0].shape
    whole = m - m % BLOCK
    parts = [np.einsum(",".join(["bmc"] * len(ops)) + "->bc",
                       *(o[:whole].reshape(-1, BLOCK, c) for o in ops))] if whole else []
    if whole < m:
        parts.append(np.einsum(",".join(["mc"] * len(ops)) + "->c", *(o[whole:] for o in ops))[None])
    return np.concatenate(parts).sum(axis=0) if len(parts) > 1 else parts[0].sum(axis=0)


def channel_sum(a: Array) -> Array:
    """Sum of a (N, C, ...) over every axis but 1: (C,), in a's dtype."""
    v = _channel_views(a)
    if v is None or v[1].size == 0:
        return a.sum(axis=(0,) + tuple(range(2, a.ndim)))
    return _einsum_c(v[0], v[1])


def channel_dot(a: Array, b: Array) -> Array:
    """Sum of a·b over every axis but 1, without a temporary array when both share a layout."""
    va, vb = _channel_views(a), _channel_views(b)
    if va is None or vb is None or va[0] != vb[0] or va[1].shape != vb[1].shape \
            or va[1].size == 0:
        return xp_of(a).multiply(a, b, out=like(a)).sum(axis=(0,) + tuple(range(2, a.ndim)))
    return _einsum_c(va[0], va[1], vb[1])


def batchnorm_stats(x: Array) -> tuple[Array, Array]:
    """Per-channel mean and biased variance of x (N, C, ...) over every axis but 1 (C values
    each); the variance as the mean of (x - mean)² (two sweeps: exact where E[x²] - mean²
    would cancel)."""
    mean, var, _ = _centred(x)
    return mean, var


def _centred(x: Array) -> tuple[Array, Array, Array]:
    """(mean, var, d = x - mean on a recycled array in x's layout)."""
    m = x.size // x.shape[1]  # 0 for an empty batch: NaN statistics, as x.mean gives
    mean = channel_sum(x) / x.dtype.type(m)
    d = per_channel("subtract", x, mean, like(x))
    return mean, channel_dot(d, d) / x.dtype.type(m), d


def _kernel_views(*arrays: Array) -> tuple[str, list[Array]] | None:
    """The ('mc' or 'nci') views of arrays that share one layout, C-contiguous and not empty,
    for the compiled kernels (:mod:`.jit`); None where they do not apply."""
    views = [_channel_views(a) for a in arrays]
    if any(v is None or v[0] != views[0][0] or not v[1].size or v[1].shape != views[0][1].shape
           or not v[1].flags.c_contiguous for v in views):
        return None
    return views[0][0], [v[1] for v in views]


def batchnorm_train_forward(x: Array, gamma: Array | None, beta: Array | None, eps: float
                            ) -> tuple[Array, tuple, Array, Array]:
    """Batch statistics and the normalisation in one go: (y, cache, mean, var), the same
    numbers as :func:`batchnorm_stats` then :func:`batchnorm_forward`, with x - mean computed
    once and turned into x̂ in place (four sweeps over x where those two took eight; two with
    the compiled kernel, its sums in float64, which writes y alone and leaves x̂ to be
    recomputed from x in the backward: the cache then holds x and (mu, inv) too)."""
    if jit.kernels() is not None and _kernel_views(x) is not None:
        y = like(x)
        views = _kernel_views(x, y, y)
        if views is not None:  # x̂ written only without gamma (then it is y); else recomputed
            mean, var, mu, inv = jit.bn_forward(views[0], *views[1], gamma, beta, eps)
            inv_std = 1.0 / xp_of(x).sqrt(var + eps)
            if gamma is None:
                return y, (y, inv_std, gamma), mean, var
            return y, (x, inv_std, gamma, (mu, inv)), mean, var
    mean, var, d = _centred(x)
    y, cache = _normalise(d, var, gamma, beta, eps)
    return y, cache, mean, var


def batchnorm_forward(x: Array, mean: Array, var: Array, gamma: Array | None, beta: Array | None,
                      eps: float) -> tuple[Array, tuple]:
    """y = (x - mean) / sqrt(var + eps) · gamma + beta, statistics per channel (axis 1).

    x (N, C, ...) -> y of the same shape and memory layout; four passes, no temporaries.
    """
    return _normalise(per_channel("subtract", x, mean, like(x)), var, gamma, beta, eps)


def _normalise(d: Array, var: Array, gamma: Array | None, beta: Array | None, eps: float
               ) -> tuple[Array, tuple]:
    """x̂ = d / sqrt(var + eps) in place of d, then y = x̂ · gamma + beta."""
    xp = xp_of(d)
    inv_std = 1.0 / xp.sqrt(var + eps)
    per_channel("multiply", d, inv_std, d)
    if gamma is None:
        return d, (d, inv_std, gamma)
    y = per_channel("multiply", d, gamma, like(d))
    return per_channel("add", y, beta, y), (d, inv_std, gamma)


def batchnorm_backward(dy: Array, cache: tuple, batch_stats: bool) -> tuple[Array, Array, Array]:
    """(dx, dgamma, dbeta).  With batch statistics the mean and variance depend on x too:
    dx = gamma · inv_std · (dy - mean(dy) - xhat · mean(dy · xhat)), means over the M values
    of each channel (the same as inv_std / M · (M·dxhat - sum(dxhat) - xhat·sum(dxhat·xhat))
    with dxhat = gamma · dy)."""
    xp = xp_of(dy)
    xhat, inv_std, gamma = cache[:3]
    mu_inv = cache[3] if len(cache) > 3 else None  # then xhat holds x: x̂ = (x - mu) · inv
    dy = in_layout(dy, is_channels_last(xhat)) if dy.ndim == 4 else dy  # one layout: one sweep
    scale = inv_std if gamma is None else gamma * inv_std
    dx = like(xhat)
    views = _kernel_views(dy, xhat, dx) if jit.kernels() is not None else None
    if views is not None:  # both sums in one sweep, dx in a second
        dgamma, dbeta = jit.bn_backward(views[0], *views[1], scale, batch_stats, mu_inv)
        return dx, dgamma, dbeta
    if mu_inv is not None:  # the kernels were turned off since the forward: x̂ from x
        xhat = per_channel("subtract", xhat, mu_inv[0], like(xhat))
        per_channel("multiply", xhat, mu_inv[1], xhat)
    dbeta = channel_sum(dy)
    dgamma = channel_dot(dy, xhat)
    if not batch_stats:
        return per_channel("multiply", dy, scale, dx), dgamma, dbeta
    m = dy.size // dy.shape[1]
    per_channel("multiply", xhat, dgamma / m, dx)
    per_channel("add", dx, dbeta / m, dx)
    xp.subtract(dy, dx, out=dx)
    return per_channel("multiply", dx, scale, dx), dgamma, dbeta
