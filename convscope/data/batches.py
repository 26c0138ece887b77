"""Batches: seeded shuffling, per-channel normalisation and augmentation.

Images stay uint8 (N, C, H, W) until a batch is produced; a batch is float32 NCHW. The
augmentations work on the uint8 batch before normalisation, so crop padding is pixel 0.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from .formats import DataError

__all__ = ["Normalizer", "Augment", "BatchLoader", "random_crop", "horizontal_flip", "to_float",
           "TTA", "tta_views"]


def _check_images(x: np.ndarray, what: str = "images") -> None:
    if not isinstance(x, np.ndarray) or x.ndim != 4:
        shape = getattr(x, "shape", None)
        raise DataError(f"{what} must be an array of shape (N, C, H, W), got shape {shape}")


def to_float(x: np.ndarray) -> np.ndarray:
    """uint8 images -> float32 in [0, 1]; float input is returned as float32 unchanged."""
    if x.dtype == np.uint8:
        out = x.astype(np.float32)
        out /= np.float32(255)
        return out
    return x.astype(np.float32, copy=False)


@dataclass(frozen=True)
class Normalizer:
    """Per-channel ``(x / 255 - mean) / std`` for uint8 images (mean, std on the [0, 1] scale).

    Serialises to a plain dict of lists (:meth:`to_dict`) for a model file's JSON metadata.
    """

    mean: tuple[float, ...]
    std: tuple[float, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "mean", tuple(float(v) for v in self.mean))
        object.__setattr__(self, "std", tuple(float(v) for v in self.std))
        if len(self.mean) != len(self.std) or not self.mean:
            raise DataError(f"Normalizer: mean and std need one value per channel, got "
                            f"{len(self.mean)} and {len(self.std)}")
        if any(not s > 0 for s in self.std):
            raise DataError(f"Normalizer: std must be > 0, got {list(self.std)}")

    @classmethod
    def fit(cls, x: np.ndarray, chunk: int = 4096) -> Normalizer:
        """Per-channel mean and std of images ``x`` (N, C, H, W): uint8, or float in [0, 1]."""
        _check_images(x)
        if len(x) == 0:
            raise DataError("Normalizer.fit: no images")
        c = x.shape[1]
        scale = 255.0 if x.dtype == np.uint8 else 1.0
        s1, s2 = np.zeros(c), np.zeros(c)
        for i in range(0, len(x), chunk):
            part = x[i:i + chunk].astype(np.float64) / scale
            s1 += part.sum(axis=(0, 2, 3))
            s2 += np.square(part).sum(axis=(0, 2, 3))
        n = x.shape[0] * x.shape[2] * x.shape[3]
        mean = s1 / n
        std = np.sqrt(np.maximum(s2 / n - mean ** 2, 0.0))
        std = np.where(std < 1e-6, 1.0, std)  # constant channel: leave it centred, unscaled
        return cls(tuple(float(m) for m in mean), tuple(float(s) for s in std))

    def __call__(self, x: np.ndarray) -> np.ndarray:
        """Normalise uint8 (or [0, 1] float) images (N, C, H, W) or (C, H, W) to float32."""
        xf = to_float(x)
        shape = (-1, 1, 1)
        if xf.shape[-3] != len(self.mean):
            raise DataError(f"Normalizer for {len(self.mean)} channels got images of shape {x.shape}")
        mean = np.asarray(self.mean, np.float32).reshape(shape)
        inv = (1 / np.asarray(self.std, np.float32)).reshape(shape)
        return (xf - mean) * inv

    def inverse(self, x: np.ndarray) -> np.ndarray:
        """Undo :meth:`__call__`: float32 images back on the [0, 1] scale."""
        mean = np.asarray(self.mean, np.float32).reshape(-1, 1, 1)
        std = np.asarray(self.std, np.float32).reshape(-1, 1, 1)
        return (np.asarray(x, np.float32) * std + mean).astype(np.float32)

    def to_dict(self) -> dict[str, list[float]]:
        """``{"mean": [...], "std": [...]}``, JSON-serialisable."""
        return {"mean": list(self.mean), "std": list(self.std)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Normalizer:
        """Inverse of :meth:`to_dict`."""
        try:
            return cls(tuple(float(v) for v in d["mean"]), tuple(float(v) for v in d["std"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise DataError(f"Normalizer.from_dict: expected {{'mean': [...], 'std': [...]}}, got {d!r}") from exc


def random_crop(x: np.ndarray, padding: int, rng: np.random.Generator) -> np.ndarray:
    """Pad each image by ``padding`` zeros on every side and crop it back at a random offset.

    Vectorised over the batch; ``x`` is (N, C, H, W), the result has the same shape and dtype.
    """
    _check_images(x)
    if padding <= 0:
        return x.copy()
    n, c, h, w = x.shape
    p = padding
    padded = np.pad(x, ((0, 0), (0, 0), (p, p), (p, p)))
    oy = rng.integers(0, 2 * p + 1, size=n)
    ox = rng.integers(0, 2 * p + 1, size=n)
    rows = (oy[:, None] + np.arange(h))[:, None, :, None]
    cols = (ox[:, None] + np.arange(w))[:, None, None, :]
    return padded[np.arange(n)[:, None, None, None], np.arange(c)[None, :, None, None], rows, cols]


def horizontal_flip(x: np.ndarray, rng: np.random.Generator, p: float = 0.5) -> np.ndarray:
    """Mirror each image left-right with probability ``p`` (vectorised over the batch)."""
    _check_images(x)
    out = x.copy()
    flip = rng.random(len(x)) < p
    out[flip] = x[flip][..., ::-1]
    return out


#: Test-time augmentation: ``none`` (each image once) or ``flip`` (each image and its mirror
#: image, the left-right flip that ``Augment(hflip=True)`` trains on).
TTA = ("none", "flip")


def tta_views(x: np.ndarray, tta: str) -> list[np.ndarray]:
    """The views of a batch (N, C, H, W) whose class probabilities test-time augmentation
    averages: ``[x]`` for ``none``, ``[x, x mirrored left-right]`` for ``flip``."""
    if tta == "none":
        return [x]
    if tta == "flip":
        return [x, x[..., ::-1]]
    raise ValueError(f"tta must be one of {', '.join(TTA)}, got {tta!r}")


@dataclass(frozen=True)
class Augment:
    """Training augmentation: random crop with ``crop_padding`` zero pixels, then flip."""

    crop_padding: int = 0
    hflip: bool = False

    def __call__(self, x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Augment a uint8 batch (N, C, H, W) with ``rng``."""
        if self.crop_padding:
            x = random_crop(x, self.crop_padding, rng)
        if self.hflip:
            x = horizontal_flip(x, rng)
        return x

    def to_dict(self) -> dict[str, Any]:
        """``{"crop_padding": int, "hflip": bool}``, JSON-serialisable."""
        return {"crop_padding": self.crop_padding, "hflip": self.hflip}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Augment:
        """Inverse of :meth:`to_dict`."""
        return cls(int(d.get("crop_padding", 0)), bool(d.get("hflip", False)))


class BatchLoader:
    """Iterate over ``(x, y)`` in float32 NCHW batches with int64 labels.

    Each pass (epoch) shuffles with ``np.random.default_rng([seed, epoch])`` and then
    augments, so a loader built with the same arguments yields the same batches; ``epoch``
    counts passes and may be set to resume. Without a ``normalizer`` pixels are scaled to
    [0, 1].
    """

    def __init__(self, x: np.ndarray, y: np.ndarray, batch_size: int = 64, *,
                 shuffle: bool = True, seed: int = 0, normalizer: Normalizer | None = None,
                 augment: Augment | None = None, drop_last: bool = False) -> None:
        _check_images(x)
        y = np.asarray(y)
        if y.ndim != 1 or len(y) != len(x):
            raise DataError(f"BatchLoader: {len(x)} images but labels of shape {y.shape}")
        if batch_size < 1:
            raise DataError(f"BatchLoader: batch_size must be >= 1, got {batch_size}")
        self.x, self.y = x, y.astype(np.int64, copy=False)
        self.batch_size, self.shuffle, self.seed = int(batch_size), shuffle, int(seed)
        self.normalizer, self.augment, self.drop_last = normalizer, augment, drop_last
        self.epoch = 0

    def __len__(self) -> int:
        """Number of batches per pass."""
        n, b = len(self.x), self.batch_size
        return n // b if self.drop_last else -(-n // b)

    def __iter__(self) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        rng = np.random.default_rng([self.seed, self.epoch])
        self.epoch += 1
        order = rng.permutation(len(self.x)) if self.shuffle else np.arange(len(self.x))
        for k in range(len(self)):
            idx = order[k * self.batch_size:(k + 1) * self.batch_size]
            xb = self.x[idx]
            if self.augment is not None:
                xb = self.augment(xb, rng)
            xb = self.normalizer(xb) if self.normalizer is not None else to_float(xb)
            yield np.ascontiguousarray(xb, dtype=np.float32), self.y[idx]
