"""Softmax cross-entropy on integer labels: the loss and its gradient wrt the scores."""

from __future__ import annotations

from typing import Any

from ..runtime import xp_of

Array = Any


def log_softmax(z: Array) -> Array:
    """log softmax over axis 1, stable: shift by the row maximum first."""
    xp = xp_of(z)
    shifted = z - z.max(axis=1, keepdims=True)
    return shifted - xp.log(xp.exp(shifted).sum(axis=1, keepdims=True))


def softmax(z: Array) -> Array:
    """softmax over axis 1: exp(z − max) / Σ exp(z − max), each row summing to 1."""
    xp = xp_of(z)
    e = xp.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def cross_entropy(logits: Array, labels: Array, label_smoothing: float = 0.0) -> tuple[Array, Array]:
    """Mean softmax cross-entropy on integer labels, and its gradient wrt the logits.

    With smoothing e the target is (1 - e)·onehot + e/K:  loss = (1 - e)·nll + e·mean_k(-log p_k).
    Gradient: (softmax(z) - target) / N.
    """
    xp = xp_of(logits)
    n, k = logits.shape
    logp = log_softmax(logits)
    rows = xp.arange(n)
    nll = -logp[rows, labels]
    loss = ((1 - label_smoothing) * nll - label_smoothing * logp.mean(axis=1)).mean()
    grad = xp.exp(logp)
    grad -= label_smoothing / k
    grad[rows, labels] -= 1 - label_smoothing
    grad /= n
    return loss.astype(logits.dtype), grad
