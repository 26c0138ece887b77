"""Loss, accuracy and the confusion matrix of a model on labelled images."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from ..data import Normalizer
from ..data.batches import to_float, tta_views
from ..layers.container import Sequential
from ..losses import CrossEntropyLoss
from ..ops.loss import softmax
from ..ops.threads import own_cores
from ..runtime import no_grad, to_device, to_host

__all__ = ["Evaluation", "evaluate", "model_dtype", "prepare", "check_images"]


@dataclass
class Evaluation:
    """Loss, accuracy and the confusion matrix (K, K) (rows: true class, columns: predicted)."""

    loss: float
    accuracy: float
    correct: int
    total: int
    confusion: np.ndarray = field(repr=False)

    @property
    def per_class_accuracy(self) -> np.ndarray:
        """Accuracy on each true class, confusion[k, k] / Σ_j confusion[k, j] (NaN for a class
        with no images)."""
        rows = self.confusion.sum(axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.diag(self.confusion) / rows


def model_dtype(model: Any) -> np.dtype:
    """The float dtype the model computes in: ``model.dtype`` where the model has one, else its
    first parameter's (float32 for a model without parameters)."""
    dtype = getattr(model, "dtype", None)
    if dtype is not None:
        return np.dtype(dtype)
    return next((p.dtype for p in model.params.values()), np.dtype(np.float32))


def prepare(x: np.ndarray, normalizer: Normalizer | None, dtype: np.dtype) -> np.ndarray:
    """Images (N, C, H, W) as the model's input: normalised (or pixels / 255), in ``dtype``."""
    out = normalizer(x) if normalizer is not None else to_float(x)
    return out.astype(dtype, copy=False)


def evaluate(model: Sequential, x: np.ndarray, y: np.ndarray, *,
             normalizer: Normalizer | None = None, num_classes: int | None = None,
             batch_size: int = 500, tta: str = "none") -> Evaluation:
    """Mean cross-entropy, accuracy and confusion matrix of ``model`` on images ``x``
    (N, C, H, W; uint8 or float) with labels ``y`` (N,), in evaluation mode.  A model on a
    device gets each batch copied there and sends back its predicted classes.

    ``tta="flip"``: each image's class probabilities are the mean of the softmax of its own
    scores and its mirror image's, p̄ = (softmax(f(x)) + softmax(f(flip x))) / 2; the class
    is argmax p̄ and the loss −log p̄[label].
    """
    y = np.asarray(y, dtype=np.int64)
    if len(x) != len(y):
        raise ValueError(f"evaluate: {len(x)} images but {len(y)} labels")
    tta_views(x[:0], tta)  # a bad tta fails before any work
    k = num_classes or int(model.output_shape(tuple(x.shape[1:]))[0])
    dtype, device = model_dtype(model), getattr(model, "device", "cpu")
    confusion = np.zeros((k, k), dtype=np.int64)
    loss_sum = 0.0
    loss_fn = CrossEntropyLoss()
    was_training = model.training
    model.eval()
    try:  # the cores to convscope's threads from the first direct convolution on (ops/threads.py)
        with no_grad(), own_cores(on_demand=True):
            for i in range(0, len(x), batch_size):
                xb, yb = x[i:i + batch_size], y[i:i + batch_size]
                if tta == "none":
                    scores = model.forward(to_device(prepare(xb, normalizer, dtype), device))
                    loss_sum += float(loss_fn.forward(scores, to_device(yb, device))) * len(yb)
                    np.add.at(confusion, (yb, to_host(scores.argmax(axis=1))), 1)
                    continue
                views = tta_views(xb, tta)
                probs = np.zeros((len(yb), k))
                for view in views:
                    scores = model.forward(to_device(prepare(view, normalizer, dtype), device))
                    probs += softmax(to_host(scores).astype(np.float64))
                probs /= len(views)
                p_true = probs[np.arange(len(yb)), yb]
                loss_sum += float(-np.log(np.maximum(p_true, np.finfo(np.float64).tiny)).sum())
                np.add.at(confusion, (yb, probs.argmax(axis=1)), 1)
    finally:
        model.train(was_training)
    total = int(len(y))
    correct = int(np.trace(confusion))
    return Evaluation(loss_sum / max(total, 1), correct / max(total, 1), correct, total, confusion)


def check_images(x: Any, y: Any, input_shape: Sequence[int], num_classes: int,
                 what: str) -> np.ndarray:
    """Labels ``y`` as int64 (N,) after checking that images ``x`` are (N, *input_shape) and
    the labels integers in 0..num_classes − 1; else a ValueError naming ``what``."""
    y = np.asarray(y)
    if not isinstance(x, np.ndarray) or x.ndim != 4:
        raise ValueError(f"fit: {what} images must be an array (N, C, H, W), got "
                         f"{getattr(x, 'shape', type(x).__name__)}")
    if y.shape != (len(x),) or len(x) == 0 or y.dtype.kind not in "iu":
        raise ValueError(f"fit: {len(x)} {what} images need {len(x)} integer labels, got "
                         f"{y.dtype} {y.shape}")
    if tuple(x.shape[1:]) != tuple(input_shape):
        raise ValueError(f"fit: {what} images are {tuple(x.shape[1:])} but the model takes "
                         f"{tuple(input_shape)}")
    if y.min() < 0 or y.max() >= num_classes:
        raise ValueError(f"fit: {what} labels must be in 0..{num_classes - 1}, got "
                         f"{y.min()}..{y.max()}")
    return y.astype(np.int64, copy=False)
