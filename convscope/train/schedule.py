"""The learning-rate schedule: linear warm-up, then constant, step or cosine."""

from __future__ import annotations

import math

from .config import TrainConfig

__all__ = ["learning_rate"]


def learning_rate(config: TrainConfig, step: int, steps_per_epoch: int) -> float:
    """The learning rate for (0-based) optimiser ``step``, t = step / steps_per_epoch epochs in.

    Warm-up (t < w): lr · (step + 1) / (w · steps_per_epoch).  Then "constant": lr; "step":
    lr · gamma^floor(t / step_size) (step_size 0: a third of the epochs); "cosine": min_lr +
    (lr − min_lr) · ½ · (1 + cos(π (t − w) / (epochs − w))), as PyTorch's CosineAnnealingLR.
    """
    t = step / steps_per_epoch  # epochs done, fractional
    lr0, warm = config.lr, config.warmup_epochs
    if t < warm:
        return lr0 * (step + 1) / (warm * steps_per_epoch)
    if config.schedule == "constant":
        return lr0
    if config.schedule == "step":
        size = config.step_size or max(1, config.epochs // 3)
        return lr0 * config.gamma ** int(t // size)
    span = config.epochs - warm
    return config.min_lr + (lr0 - config.min_lr) * 0.5 * (1 + math.cos(math.pi * (t - warm) / span))
