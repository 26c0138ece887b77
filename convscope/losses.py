"""Losses: ``loss = crit.forward(scores, targets)``, then ``dscores = crit.backward()``."""

from __future__ import annotations

from typing import Any

from .errors import ShapeError
from .ops.loss import cross_entropy
from .runtime import xp_of

Array = Any


class CrossEntropyLoss:
    """Mean softmax cross-entropy of scores (N, K) against integer labels (N,) in [0, K).

    loss = mean over images of -log softmax(z)[label]; with ``label_smoothing`` e the target puts
    1 - e on the label and e/K on every class (PyTorch's definition).
    """

    def __init__(self, label_smoothing: float = 0.0) -> None:
        if not 0.0 <= label_smoothing <= 1.0:
            raise ValueError(f"label_smoothing must be in [0, 1], got {label_smoothing!r}")
        self.label_smoothing = float(label_smoothing)
        self._grad: Array | None = None

    def forward(self, logits: Array, labels: Array) -> Array:
        """The loss, a 0-d array of the logits' dtype."""
        xp = xp_of(logits)
        if logits.ndim != 2:
            raise ShapeError(f"CrossEntropyLoss: scores must be (N, classes), got {tuple(logits.shape)}")
        labels = xp.asarray(labels)
        if labels.shape != logits.shape[:1]:
            raise ShapeError(f"CrossEntropyLoss: labels must be ({logits.shape[0]},) to match the "
                             f"scores {tuple(logits.shape)}, got {tuple(labels.shape)}")
        if labels.dtype.kind not in "iu":
            raise TypeError(f"CrossEntropyLoss: labels must be integers, got {labels.dtype}")
        if labels.size and (int(labels.min()) < 0 or int(labels.max()) >= logits.shape[1]):
            raise ValueError(f"CrossEntropyLoss: labels must be in [0, {logits.shape[1] - 1}], got "
                             f"values from {int(labels.min())} to {int(labels.max())}")
        loss, self._grad = cross_entropy(logits, labels, self.label_smoothing)
        return loss

    __call__ = forward

    def backward(self) -> Array:
        """d loss / d scores, (N, K)."""
        if self._grad is None:
            raise RuntimeError("CrossEntropyLoss: backward() needs a forward() first")
        return self._grad


class MSELoss:
    """Mean squared error: mean((prediction - target)^2); gradient 2·(prediction - target) / size."""

    def __init__(self) -> None:
        self._diff: Array | None = None

    def forward(self, prediction: Array, target: Array) -> Array:
        if tuple(prediction.shape) != tuple(target.shape):
            raise ShapeError(f"MSELoss: prediction {tuple(prediction.shape)} and target "
                             f"{tuple(target.shape)} must have the same shape")
        self._diff = prediction - xp_of(prediction).asarray(target, dtype=prediction.dtype)
        return (self._diff * self._diff).mean()

    __call__ = forward

    def backward(self) -> Array:
        if self._diff is None:
            raise RuntimeError("MSELoss: backward() needs a forward() first")
        return self._diff * (2.0 / self._diff.size)
