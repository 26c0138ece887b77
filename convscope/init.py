"""Weight initialisation: He/Kaiming (the default, for ReLU nets), Glorot, and PyTorch's default.

Why scale at all: a dot product of F·F·D inputs adds F·F·D variances; drawing weights with variance
2 / fan_in (He) keeps the activations' variance steady through ReLU layers, so a deep stack neither
explodes nor dies at the start of training.
"""

from __future__ import annotations

from typing import Any

import numpy as np

SCHEMES = ("kaiming", "glorot", "torch")
_default = {"rng": np.random.default_rng()}


def manual_seed(seed: int) -> None:
    """Seed the generator that layers use when given no ``seed``: reproducible models."""
    _default["rng"] = np.random.default_rng(seed)


def make_rng(seed: int | np.random.Generator | None = None) -> np.random.Generator:
    """A generator from a seed, a generator itself, or the global default one."""
    if seed is None:
        return _default["rng"]
    if isinstance(seed, np.random.Generator):
        return seed
    return np.random.default_rng(seed)


def check_scheme(scheme: str) -> str:
    """Validate an ``init=`` option."""
    if scheme not in SCHEMES:
        raise ValueError(f"init must be one of {SCHEMES}, got {scheme!r}")
    return scheme


def weight(shape: tuple[int, ...], fan_in: int, fan_out: int, scheme: str, rng: np.random.Generator,
           dtype: Any) -> np.ndarray:
    """A weight array of ``shape``.

    kaiming: normal, std = sqrt(2 / fan_in).  glorot: uniform, limit = sqrt(6 / (fan_in + fan_out)).
    torch: uniform, limit = 1 / sqrt(fan_in) (kaiming_uniform with a = sqrt(5), PyTorch's default).
    """
    check_scheme(scheme)
    if scheme == "kaiming":
        w = rng.normal(0.0, np.sqrt(2.0 / fan_in), size=shape)
    elif scheme == "glorot":
        limit = np.sqrt(6.0 / (fan_in + fan_out))
        w = rng.uniform(-limit, limit, size=shape)
    else:
        w = rng.uniform(-1.0, 1.0, size=shape) / np.sqrt(fan_in)
    return w.astype(dtype)


def bias(size: int, fan_in: int, scheme: str, rng: np.random.Generator, dtype: Any) -> np.ndarray:
    """Zeros, except PyTorch's default: uniform in ±1 / sqrt(fan_in)."""
    if scheme == "torch":
        return (rng.uniform(-1.0, 1.0, size=size) / np.sqrt(fan_in)).astype(dtype)
    return np.zeros(size, dtype=dtype)
