"""Compiled kernels (numba, optional): batch normalisation in two sweeps each way where NumPy
makes six; the machinery every kernel module shares (:func:`enable`, :func:`kernels`,
:func:`register`; the 2x2 max pool's kernels are in :mod:`.jit_pool`, the convolution's copies
in :mod:`.jit_conv`, ReLU's in :mod:`.jit_act`).

NumPy runs one operation per pass over memory: batch norm's training forward is a sum, x - mean,
a dot product, a multiply for x̂, a multiply and an add for y; its backward two reductions and
four element-wise passes.  Each pass over a ResNet's 128×16×28×28 activations reads and writes
6 MiB.  Here the forward is one sweep for the statistics (shifted sums in float64: with the
shift one of the channel's own values, Σ(x - s)² - (Σ(x - s))²/M does not cancel as E[x²] -
mean² would) and one that writes y alone: x̂ = (x - mean) / std is not stored but recomputed
from x in the backward, whose sweeps read x where they read x̂ (the layer keeps x, not x̂: the
same memory, one array fewer written).  The backward is one sweep for both sums and one that
writes dx.  The bench's 64×32×32×32 forward + backward: NumPy 15-21 ms; three sweeps forward
9.7-13.9 ms; two 7.1-9.4 ms (PyTorch 4-11 ms across these runs: compare within one run); x̂
recomputed, alternating processes, channels-first 10.9-11.3 -> 9.8-10.4 ms, channels-last
9.3-10.2 -> 6.2-7.7 ms.  The channels-last sums in blocks of 256 rows in x's dtype, not each
number in float64 (whose conversions and adds bounded the sweep), on 2 threads, the bench's
timing: 5.3-5.5 -> 4.1 ms (PyTorch 5.0-7.6 alongside).

Tried and dropped: im2col of channels-last inputs as a kernel (2x slower than NumPy's strided
copy, which runs near the memory's speed).  Batch norm over both cores lost while BLAS's own
threads held them (numba's threads, or a second Python thread on half the channels or rows:
the layer alone up to 1.3x faster, training steps 0.96-1.0x); it runs split now only inside
:func:`.threads.own_cores`, where BLAS is on one thread (:func:`sweep_runs`).  numba's
``parallel=True`` (GNU OpenMP) ran the layer in 2.7 ms against 4.2 on convscope's threads, but
its threads spin after each kernel, on the cores the direct convolutions' threads want:
ResNet-20's step 320 -> 490 ms, the CIFAR-style 42 -> 65 (alternating runs); with the spin off
(``GOMP_SPINCOUNT=0``, which PyTorch's OpenMP reads too) the layer took 4.5 ms.  Workers that
poll for their next task without the GIL (instead of sleeping): 4.2 against 4.5 ms, noise.

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

from .threads import owned, run, split

Array = Any
_state: dict[str, Any] = {"on": False, "kernels": None}
_registry: dict[str, Any] = {}  # name -> the Python function that numba compiles
_helpers: list[Any] = []  # functions the kernels call (see register)


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


def register(*fns: Any, helpers: tuple = ()) -> None:
    """Add kernels (plain Python functions) to those :func:`kernels` compiles, by name: each
    module of kernels registers its own (:mod:`.jit_pool`).  ``helpers``: functions that the
    kernels call; numba looks a kernel's globals up when it compiles it, so each helper is
    compiled too and bound in its module in place of its Python source (which it computes the
    same as)."""
    _registry.update({f.__name__: f for f in fns})
    _helpers.extend(helpers)


def kernels() -> SimpleNamespace | None:
    """The compiled kernels when turned on (compiling those not yet compiled on the call), else
    None."""
    if not _state["on"]:
        return None
    done = _state["kernels"]
    if done is None or len(vars(done)) < len(_registry):
        import numba

        jit = numba.njit(cache=True, nogil=True)
        for f in _helpers:
            if f.__globals__.get(f.__name__) is f:
                f.__globals__[f.__name__] = jit(f)
        have = {} if done is None else vars(done)
        _state["kernels"] = SimpleNamespace(**{name: have.get(name) or jit(f)
                                               for name, f in _registry.items()})
    return _state["kernels"]


# ---------------------------------------------------------------------------------------------
# batch normalisation: (M, C) rows of channels-last memory, or (N, C, L) channels-first


SUM_ROWS = 256  # rows summed in x's dtype before their float64 total (NumPy's path: 256 too)


def col_shifted_sums_mc(x: Array, shift: Array, out: Array) -> None:
    """out[0, j] += Σ_i (x[i, j] - shift[j]), out[1, j] += Σ_i (x[i, j] - shift[j])² over the
    rows of x (M, C), one sweep: blocks of :data:`SUM_ROWS` rows summed in x's dtype (shift in
    it too), their totals in float64.  With shift = one of the column's own values the variance
    Σ(x - s)²/M - (Σ(x - s)/M)² does not cancel as E[x²] - mean² would when the mean is large
    against the spread.  (Float64 all through: 1.1-1.3x the time of the sweep.)"""
    m, c = x.shape
    s1 = np.zeros(c, x.dtype)  # a block's sums, the loop over j vectorised
    s2 = np.zeros(c, x.dtype)
    for b in range((m + SUM_ROWS - 1) // SUM_ROWS):
        for i in range(b * SUM_ROWS, min(m, (b + 1) * SUM_ROWS)):
            for j in range(c):
                d = x[i, j] - shift[j]
                s1[j] += d
                s2[j] += d * d
        for j in range(c):
            out[0, j] += s1[j]
            out[1, j] += s2[j]
            s1[j] = 0
            s2[j] = 0


def normalise_mc(x: Array, mu: Array, inv: Array, gamma: Array, beta: Array, affine: bool,
                 xhat: Array, y: Array) -> None:
    """x̂ = (x - mu) · inv per column of x (M, C), in x's dtype (as NumPy's path computes it):
    y = x̂ · gamma + beta if affine (x̂ itself is not written: the backward recomputes it from
    x), else x̂ into ``xhat``."""
    m, c = x.shape
    for i in range(m):
        for j in range(c):
            v = (x[i, j] - mu[j]) * inv[j]
            if affine:
                y[i, j] = v * gamma[j] + beta[j]
            else:
                xhat[i, j] = v


def bn_forward_nci(x: Array, gamma: Array, beta: Array, eps: float, affine: bool, xhat: Array,
                   y: Array, stats: Array, mi: Array, k0: int, k1: int) -> None:
    """Batch norm's training forward on x (N, C, L), channels k0:k1 one by one: stats[0] = mean,
    stats[1] = biased variance over n and l (float64, one sweep of shifted sums as
    :func:`col_shifted_sums_mc`), then x̂ = (x - mean) / sqrt(var + eps) in a second (x's
    dtype), written as in :func:`normalise_mc`; mi[0], mi[1] = the mean and 1 / std used, in
    x's dtype."""
    n, _, ln = x.shape
    m = max(n * ln, 1)
    one = np.empty(2, x.dtype)
    for k in range(k0, k1):
        shift = x[0, k, 0] * 1.0 if n * ln else 0.0  # float64, as col_shifted_sums_mc
        s = 0.0
        s2 = 0.0
        for i in range(n):
            for j in range(ln):
                d = x[i, k, j] - shift
                s += d
                s2 += d * d
        mean = shift + s / m
        var = max(s2 / m - (s / m) ** 2, 0.0)
        stats[0, k], stats[1, k] = mean, var
        one[0] = mean  # x's dtype for the sweep below
        one[1] = 1.0 / math.sqrt(var + eps)
        mu, inv = one[0], one[1]
        mi[0, k], mi[1, k] = mu, inv
        for i in range(n):
            for j in range(ln):
                v = (x[i, k, j] - mu) * inv
                if affine:
                    y[i, k, j] = v * gamma[k] + beta[k]
                else:
                    xhat[i, k, j] = v


def col_grad_sums_mc(dy: Array, xs: Array, mu: Array, inv: Array, out: Array) -> None:
    """out[0, j] += Σ_i dy (dbeta), out[1, j] += Σ_i dy · x̂ (dgamma) over the rows of dy and
    xs (M, C), one sweep, summed as :func:`col_shifted_sums_mc`; x̂ = (xs - mu) · inv (xs = x̂
    itself for mu = 0, inv = 1: exact)."""
    m, c = dy.shape
    sb = np.zeros(c, dy.dtype)
    sg = np.zeros(c, dy.dtype)
    for b in range((m + SUM_ROWS - 1) // SUM_ROWS):
        for i in range(b * SUM_ROWS, min(m, (b + 1) * SUM_ROWS)):
            for j in range(c):
                sb[j] += dy[i, j]
                sg[j] += dy[i, j] * ((xs[i, j] - mu[j]) * inv[j])
        for j in range(c):
            out[0, j] += sb[j]
            out[1, j] += sg[j]
            sb[j] = 0
            sg[j] = 0


def input_grad_mc(dy: Array, xs: Array, mu: Array, inv: Array, mb: Array, mg: Array,
                  scale: Array, batch_stats: bool, dx: Array) -> None:
    """dx = scale · (dy - mb - x̂ · mg) with batch statistics (mb = Σdy/M, mg = Σdy·x̂/M),
    else dx = scale · dy, per column of dy (M, C), in dy's dtype; x̂ as in
    :func:`col_grad_sums_mc`."""
    m, c = dy.shape
    for i in range(m):
        for j in range(c):
            if batch_stats:
                v = (xs[i, j] - mu[j]) * inv[j]
                dx[i, j] = (dy[i, j] - mb[j] - v * mg[j]) * scale[j]
            else:
                dx[i, j] = dy[i, j] * scale[j]


def bn_backward_nci(dy: Array, xs: Array, mu: Array, inv: Array, scale: Array,
                    batch_stats: bool, dx: Array, sums: Array, k0: int, k1: int) -> None:
    """Batch norm's backward on dy, xs (N, C, L), channels k0:k1 one by one: sums[0] = Σ dy,
    sums[1] = Σ dy · x̂ (float64, one sweep), then dx as in :func:`input_grad_mc`, x̂ as in
    :func:`col_grad_sums_mc`."""
    n, _, ln = dy.shape
    m = max(n * ln, 1)
    one = np.empty(2, dy.dtype)
    for k in range(k0, k1):
        sb = 0.0
        sg = 0.0
        for i in range(n):
            for j in range(ln):
                sb += dy[i, k, j]
                sg += dy[i, k, j] * ((xs[i, k, j] - mu[k]) * inv[k])
        one[0] = sb / m  # dy's dtype for the sweep below
        one[1] = sg / m
        mb, mg = one[0], one[1]
        for i in range(n):
            for j in range(ln):
                if batch_stats:
                    v = (xs[i, k, j] - mu[k]) * inv[k]
                    dx[i, k, j] = (dy[i, k, j] - mb - v * mg) * scale[k]
                else:
                    dx[i, k, j] = dy[i, k, j] * scale[k]
        sums[0, k] = sb
        sums[1, k] = sg


def bn_forward(kind: str, x: Array, xhat: Array, y: Array, gamma: Array | None,
               beta: Array | None, eps: float) -> tuple[Array, Array, Array, Array]:
    """Batch norm's training forward on ('mc' or 'nci') views: y written in place (x̂ into
    ``xhat`` without gamma, y ignored then); returns (mean, var, mu, inv) in x's dtype, the last
    two what x̂ = (x - mu) · inv was computed with (the backward recomputes x̂ from them).
    Large arrays are split over convscope's threads (:mod:`.threads`): channels for 'nci', and
    for 'mc' rows, the sums over :data:`PARTS` runs of rows added in order."""
    k, c = kernels(), x.shape[1]
    g = np.empty(0, x.dtype) if gamma is None else gamma
    b = np.empty(0, x.dtype) if beta is None else beta
    stats = np.empty((2, c))
    affine = gamma is not None
    if kind == "nci":
        mi = np.empty((2, c), x.dtype)
        run(k.bn_forward_nci, [(x, g, b, float(eps), affine, xhat, y, stats, mi, c0, c1)
                               for c0, c1 in sweep_runs(c, x.size)], owned())
        mu, inv = mi
    else:
        m = max(x.shape[0], 1)
        shift = x[0].copy() if len(x) else np.zeros(c, x.dtype)  # d = x - shift in x's dtype
        rows = split(x.shape[0], PARTS)
        sums = np.zeros((len(rows), 2, c))
        run(k.col_shifted_sums_mc, [(x[r0:r1], shift, sums[i]) for i, (r0, r1) in enumerate(rows)],
            owned())
        s1, s2 = sum(sums[1:], sums[0]) / m
        stats[0] = shift + s1
        stats[1] = np.maximum(s2 - s1 * s1, 0.0)
        mu, inv = stats[0].astype(x.dtype), (1.0 / np.sqrt(stats[1] + eps)).astype(x.dtype)
        run(k.normalise_mc, [(x[r0:r1], mu, inv, g, b, affine, xhat if affine else xhat[r0:r1],
                              y[r0:r1] if affine else y)
                             for r0, r1 in sweep_runs(x.shape[0], x.size)], owned())
    mean, var = stats.astype(x.dtype)
    return mean, var, mu, inv


def bn_backward(kind: str, dy: Array, xs: Array, dx: Array, scale: Array, batch_stats: bool,
                mu_inv: tuple[Array, Array] | None = None) -> tuple[Array, Array]:
    """Batch norm's backward on ('mc' or 'nci') views: dx written in place; returns (dgamma,
    dbeta) in dy's dtype.  ``xs``: x̂, or with ``mu_inv`` = (mu, inv) x itself, x̂ = (x - mu)
    · inv recomputed in the sweeps.  Split over threads as :func:`bn_forward`."""
    k, c = kernels(), dy.shape[1]
    mu, inv = mu_inv if mu_inv is not None else (np.zeros(c, xs.dtype), np.ones(c, xs.dtype))
    if kind == "nci":
        sums = np.zeros((2, c))
        run(k.bn_backward_nci, [(dy, xs, mu, inv, scale, bool(batch_stats), dx, sums, c0, c1)
                                for c0, c1 in sweep_runs(c, dy.size)], owned())
    else:
        rows = split(dy.shape[0], PARTS)
        parts = np.zeros((len(rows), 2, c))
        run(k.col_grad_sums_mc, [(dy[r0:r1], xs[r0:r1], mu, inv, parts[i])
                                 for i, (r0, r1) in enumerate(rows)], owned())
        sums = sum(parts[1:], parts[0])
        mb, mg = (sums / max(dy.shape[0], 1)).astype(dy.dtype)
        run(k.input_grad_mc, [(dy[r0:r1], xs[r0:r1], mu, inv, mb, mg, scale, bool(batch_stats),
                               dx[r0:r1]) for r0, r1 in sweep_runs(dy.shape[0], dy.size)], owned())
    dbeta, dgamma = sums.astype(dy.dtype)
    return dgamma, dbeta


PARTS = 4  # runs of rows whose sums are added (fixed: the sums do not depend on the threads)
SPLIT_FROM = 1 << 16  # numbers from which a sweep is split over the threads


def sweep_runs(n: int, size: int, align: int = 1) -> list[tuple[int, int]]:
    """(start, stop) runs of 0:n for a sweep that needs no sum over ``size`` numbers: one per
    thread of a :func:`.threads.own_cores` block from :data:`SPLIT_FROM` numbers on, else one;
    cut at multiples of ``align``."""
    t = len(split(n, owned())) if size >= SPLIT_FROM else 1
    cuts = [n * i // t // align * align for i in range(t)] + [n]
    return [(a, b) for a, b in zip(cuts, cuts[1:]) if b > a] or [(0, n)]


KERNELS = (col_shifted_sums_mc, normalise_mc, bn_forward_nci, col_grad_sums_mc,
           input_grad_mc, bn_backward_nci)
register(*KERNELS)
