"""The settings of a training run (:class:`TrainConfig`) and the optimisers they name."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any, Mapping

from ..data import Augment
from ..layers.container import Sequential
from ..optim import SGD, Adam, AdamW, Optimizer

__all__ = ["TrainConfig", "OPTIMIZERS", "SCHEDULES", "make_optimizer"]

OPTIMIZERS: dict[str, type[Optimizer]] = {"sgd": SGD, "adam": Adam, "adamw": AdamW}
SCHEDULES = ("constant", "step", "cosine")


@dataclass
class TrainConfig:
    """Hyper-parameters of a run (all JSON-serialisable; stored in every checkpoint).

    ``schedule``: "constant"; "step" (lr · gamma^floor(epoch / step_size), as PyTorch's
    StepLR); "cosine" (from lr down to min_lr over the run, per batch).  ``warmup_epochs``
    ramps the rate up linearly first.  ``patience``: stop after that many epochs without a
    better validation accuracy (None: never).  ``augment``: ``{"crop_padding": int, "hflip":
    bool}`` applied to training batches.
    """

    epochs: int = 10
    batch_size: int = 64
    optimizer: str = "adam"
    lr: float = 1e-3
    momentum: float = 0.9
    nesterov: bool = False
    weight_decay: float = 0.0
    schedule: str = "cosine"
    step_size: int = 0
    gamma: float = 0.1
    warmup_epochs: float = 0.0
    min_lr: float = 0.0
    label_smoothing: float = 0.0
    patience: int | None = None
    seed: int = 0
    augment: dict[str, Any] | None = None
    eval_batch_size: int = 500

    def __post_init__(self) -> None:
        def bad(name: str, need: str) -> ValueError:
            return ValueError(f"{name} must be {need}, got {getattr(self, name)!r}")

        for name in ("epochs", "batch_size", "eval_batch_size"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise bad(name, "an int >= 1")
        if self.optimizer not in OPTIMIZERS:
            raise bad("optimizer", f"one of {', '.join(OPTIMIZERS)}")
        if self.schedule not in SCHEDULES:
            raise bad("schedule", f"one of {', '.join(SCHEDULES)}")
        for name in ("lr", "weight_decay", "min_lr", "warmup_epochs"):
            v = getattr(self, name)
            if not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0:
                raise bad(name, "a finite number >= 0")
        if not self.lr > 0:
            raise bad("lr", "> 0")
        if not 0 <= self.momentum < 1:
            raise bad("momentum", "in [0, 1)")
        if not 0 < self.gamma <= 1:
            raise bad("gamma", "in (0, 1]")
        if not 0 <= self.label_smoothing < 1:
            raise bad("label_smoothing", "in [0, 1)")
        if isinstance(self.step_size, bool) or not isinstance(self.step_size, int) or self.step_size < 0:
            raise bad("step_size", "an int >= 0 (0: a third of the epochs)")
        if self.patience is not None and (not isinstance(self.patience, int) or self.patience < 1):
            raise bad("patience", "an int >= 1 or None")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise bad("seed", "an int >= 0")
        if self.warmup_epochs >= self.epochs:
            raise bad("warmup_epochs", f"less than epochs ({self.epochs})")
        if self.augment is not None:
            self.augment = Augment.from_dict(self.augment).to_dict()

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "TrainConfig":
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ValueError(f"TrainConfig: unknown settings {unknown}")
        return cls(**dict(d))

    def differences(self, other: "TrainConfig") -> list[str]:
        """``"name saved (this run: mine)"`` for each setting but ``epochs`` that differs from
        ``other`` (the settings a resumed run must keep)."""
        mine = self.to_dict()
        return [f"{k} {v!r} (this run: {mine[k]!r})" for k, v in other.to_dict().items()
                if k != "epochs" and mine[k] != v]


def make_optimizer(model: Sequential, config: TrainConfig) -> Optimizer:
    """The optimiser ``config`` names, on ``model``'s parameters."""
    if config.optimizer == "sgd":
        return SGD(model, config.lr, config.momentum, 0.0, config.nesterov, config.weight_decay)
    return OPTIMIZERS[config.optimizer](model, config.lr, weight_decay=config.weight_decay)
