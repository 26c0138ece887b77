"""The train command's settings: defaults, what ``--augment`` means, and its parser."""

from __future__ import annotations

from typing import Any

from ._common import DEFAULT_ARCH, CommandError

__all__ = ["TRAIN_DEFAULTS", "DEFAULT_LR", "AUTO_AUGMENT", "parse_augment"]

TRAIN_DEFAULTS: dict[str, Any] = {
    "data": "digits", "arch": DEFAULT_ARCH, "epochs": 40, "batch_size": 64, "optimizer": "adam",
    "lr": None, "momentum": 0.9, "nesterov": False, "weight_decay": 0.0, "schedule": "cosine",
    "step_size": 0, "gamma": 0.1, "warmup": 0.0, "min_lr": 0.0, "label_smoothing": 0.1,
    "patience": None, "val_fraction": 0.1, "augment": "auto", "seed": None, "limit": None,
    "data_dir": None, "download": True, "threads": None, "sync_bn": False, "input_size": None,
    "tta": "none"}
DEFAULT_LR = {"sgd": 0.02, "adam": 3e-3, "adamw": 3e-3}
#: What ``--augment auto`` means for the known datasets (others: no augmentation).
AUTO_AUGMENT = {"digits": "crop=2", "mnist": "crop=2", "fashion-small": "flip",
                "fashion-mnist": "flip", "cifar10": "crop=4+flip"}


def parse_augment(spec: str) -> dict[str, Any] | None:
    """``"none"``, ``"crop"``, ``"crop=3"``, ``"flip"`` or ``"crop=2+flip"`` -> Augment settings."""
    if spec in ("none", ""):
        return None
    out = {"crop_padding": 0, "hflip": False}
    for part in spec.split("+"):
        name, _, value = part.partition("=")
        if name == "crop":
            try:
                out["crop_padding"] = int(value) if value else 2
            except ValueError:
                raise CommandError(f"--augment: crop=N needs a whole number of pixels, got "
                                   f"{part!r}") from None
            if out["crop_padding"] < 0:
                raise CommandError(f"--augment: crop padding must be >= 0, got {part!r}")
        elif name == "flip" and not value:
            out["hflip"] = True
        else:
            raise CommandError(f"--augment: unknown item {part!r}; use none, auto, crop, crop=N, "
                               "flip or a '+' list such as crop=2+flip")
    return out
