"""Compiled kernels (numba, optional): batch normalisation in three sweeps where NumPy makes six.

NumPy runs one operation per pass over memory: batch norm's training forward is a sum, x - mean,
a dot product, a multiply for x̂, a multiply and an add for y; its backward two reductions and
four element-wise passes.  Each pass over a ResNet's 128×16×28×28 activations reads and writes
6 MiB.  Here the forward is two sweeps for the statistics (summed in float64) and one that
writes x̂ and y; the backward one sweep for both sums and one that writes dx.  Measured forward
+ backward at 64×16×28×28, channels-last: NumPy 4.2-6.0 ms, these 2.4-2.7 ms.  im2col was tried
as a kernel too and lost (2x slower than NumPy's strided copy, which runs near the memory's
speed), as did running these over both cores (numba's threads against OpenBLAS's).

The kernels are plain Python loops, the sums to read and what the tests run where numba is not
installed, compiled by ``numba.njit(cache=True, nogil=True)`` on first use (a second or two per
dtype, once: numba keeps them on disk).  ``import convscope`` never imports numba.  They run
where turned on: :func:`enable`, or :class:`~convscope.train.Trainer` while it trains (so
``convscope train``); never on ``predict``'s path, whose batch norm uses running statistics
anyway.  ``CONVSCOPE_JIT=0`` keeps them off.  The NumPy path (:mod:`.norm`) stays the reference
that they are tested against.
"""

from __future__ import annotations

import contextlib
import importlib.util
import math
import os
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import numpy as np

Array = Any
_state: dict[str, Any] = {"on": False, "kernels": None}


def available() -> bool:
    """Whether numba can be imported (without importing it)."""
    return importlib.util.find_spec("numba") is not None


def enable(on: bool = True) -> bool:
    """Turn the compiled kernels on (or off); returns whether they are now in use, which is
    False where numba is not installed or ``CONVSCOPE_JIT=0``."""
    _state["on"] = bool(on) and os.environ.get("CONVSCOPE_JIT", "1") != "0" and available()
    return _state["on"]


@contextlib.contextmanager
def turned_on(on: bool = True) -> Iterator[bool]:
    """:func:`enable` for a ``with`` block, the state before restored after; yields whether the
    kernels are in use."""
    before = _state["on"]
    try:
        yield enable(on)
    finally:
        _state["on"] = before


def kernels() -> SimpleNamespace | None:
    """The compiled kernels when turned on (compiling them on the first call), else None."""
    if not _state["on"]:
        return None
    if _state["kernels"] is None:
        import numba

        jit = numba.njit(cache=True, nogil=True)
        _state["kernels"] = SimpleNamespace(**{f.__name__: jit(f) for f in KERNELS})
    return _state["kernels"]


# ---------------------------------------------------------------------------------------------
# batch normalisation: (M, C) rows of channels-last memory, or (N, C, L) channels-first


def bn_forward_mc(x: Array, gamma: Array, beta: Array, eps: float, affine: bool, xhat: Array,
                  y: Array, stats: Array) -> None:
    """stats[0] = mean, stats[1] = biased variance of each column of x (M, C), summed in float64
    (two sweeps: exact where E[x²] - mean² would cancel); xhat = (x - mean) / sqrt(var + eps)
    and, if affine, y = xhat · gamma + beta in a third."""
    m, c = x.shape
    s = np.zeros(c)
    for i in range(m):
        for j in range(c):
            s[j] += x[i, j]
    mean = s / max(m, 1)
    s[:] = 0
    for i in range(m):
        for j in range(c):
            d = x[i, j] - mean[j]
            s[j] += d * d
    var = s / max(m, 1)
    mu = np.empty(c, x.dtype)  # x's dtype for the sweep below, as NumPy's path computes it
    inv = np.empty(c, x.dtype)
    for j in range(c):
        mu[j] = mean[j]
        inv[j] = 1.0 / math.sqrt(var[j] + eps)
    for i in range(m):
        for j in range(c):
            v = (x[i, j] - mu[j]) * inv[j]
            xhat[i, j] = v
            if affine:
                y[i, j] = v * gamma[j] + beta[j]
    stats[0] = mean
    stats[1] = var


def bn_forward_nci(x: Array, gamma: Array, beta: Array, eps: float, affine: bool, xhat: Array,
                   y: Array, stats: Array) -> None:
    """:func:`bn_forward_mc` for x (N, C, L): statistics over n and l."""
    n, c, ln = x.shape
    m = max(n * ln, 1)
    mean = np.zeros(c)
    var = np.zeros(c)
    one = np.empty(2, x.dtype)
    for k in range(c):
        s = 0.0
        for i in range(n):
            for j in range(ln):
                s += x[i, k, j]
        mean[k] = s / m
        s2 = 0.0
        for i in range(n):
            for j in range(ln):
                d = x[i, k, j] - mean[k]
                s2 += d * d
        var[k] = s2 / m
        one[0] = mean[k]  # x's dtype for the sweep below
        one[1] = 1.0 / math.sqrt(var[k] + eps)
        mu, inv = one[0], one[1]
        for i in range(n):
            for j in range(ln):
                v = (x[i, k, j] - mu) * inv
                xhat[i, k, j] = v
                if affine:
                    y[i, k, j] = v * gamma[k] + beta[k]
    stats[0] = mean
    stats[1] = var


def bn_backward_mc(dy: Array, xhat: Array, scale: Array, batch_stats: bool, dx: Array,
                   sums: Array) -> None:
    """sums[0] = dbeta = Σ dy, sums[1] = dgamma = Σ dy·xhat per column (float64, one sweep);
    dx = scale · (dy - Σdy/M - xhat · Σ(dy·xhat)/M) with batch statistics, else dx = scale · dy
    (a second sweep)."""
    m, c = dy.shape
    sb = np.zeros(c)
    sg = np.zeros(c)
    for i in range(m):
        for j in range(c):
            sb[j] += dy[i, j]
            sg[j] += dy[i, j] * xhat[i, j]
    mb = np.empty(c, dy.dtype)  # dy's dtype for the sweep below
    mg = np.empty(c, dy.dtype)
    for j in range(c):
        mb[j] = sb[j] / max(m, 1)
        mg[j] = sg[j] / max(m, 1)
    for i in range(m):
        for j in range(c):
            if batch_stats:
                dx[i, j] = (dy[i, j] - mb[j] - xhat[i, j] * mg[j]) * scale[j]
            else:
                dx[i, j] = dy[i, j] * scale[j]
    sums[0] = sb
    sums[1] = sg


def bn_backward_nci(dy: Array, xhat: Array, scale: Array, batch_stats: bool, dx: Array,
                    sums: Array) -> None:
    """:func:`bn_backward_mc` for dy, xhat (N, C, L)."""
    n, c, ln = dy.shape
    m = max(n * ln, 1)
    one = np.empty(2, dy.dtype)
    for k in range(c):
        sb = 0.0
        sg = 0.0
        for i in range(n):
            for j in range(ln):
                sb += dy[i, k, j]
                sg += dy[i, k, j] * xhat[i, k, j]
        one[0] = sb / m  # dy's dtype for the sweep below
        one[1] = sg / m
        mb, mg = one[0], one[1]
        for i in range(n):
            for j in range(ln):
                if batch_stats:
                    dx[i, k, j] = (dy[i, k, j] - mb - xhat[i, k, j] * mg) * scale[k]
                else:
                    dx[i, k, j] = dy[i, k, j] * scale[k]
        sums[0, k] = sb
        sums[1, k] = sg


def bn_forward(kind: str, x: Array, xhat: Array, y: Array, gamma: Array | None,
               beta: Array | None, eps: float) -> tuple[Array, Array]:
    """Batch norm's training forward on ('mc' or 'nci') views: x̂ and y written in place (y
    ignored without gamma); returns (mean, var) in x's dtype."""
    stats = np.empty((2, x.shape[1]))
    none = np.empty(0, x.dtype)
    fn = kernels().bn_forward_mc if kind == "mc" else kernels().bn_forward_nci
    fn(x, none if gamma is None else gamma, none if beta is None else beta, float(eps),
       gamma is not None, xhat, y, stats)
    mean, var = stats.astype(x.dtype)
    return mean, var


def bn_backward(kind: str, dy: Array, xhat: Array, dx: Array, scale: Array, batch_stats: bool
                ) -> tuple[Array, Array]:
    """Batch norm's backward on ('mc' or 'nci') views: dx written in place; returns (dgamma,
    dbeta) in dy's dtype."""
    sums = np.empty((2, dy.shape[1]))
    fn = kernels().bn_backward_mc if kind == "mc" else kernels().bn_backward_nci
    fn(dy, xhat, scale, bool(batch_stats), dx, sums)
    dbeta, dgamma = sums.astype(dy.dtype)
    return dgamma, dbeta


KERNELS = (bn_forward_mc, bn_forward_nci, bn_backward_mc, bn_backward_nci)
