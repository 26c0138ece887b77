"""The :class:`Dataset` record and :func:`load_dataset`: bundled, full and image-folder data."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from . import sources
from .formats import (CIFAR10_CLASSES, DataError, read_cifar_archive, read_cifar_binary,
                      read_cifar_python, read_idx)
from .images import choose_input_shape, image_folder_classes, load_image_folder

__all__ = ["Dataset", "load_dataset", "list_datasets", "stratified_split", "BUNDLED_DIR"]

#: Where the bundled datasets live: ``convscope/datasets/<name>.npz`` and ``<name>.json``.
BUNDLED_DIR = Path(__file__).resolve().parent.parent / "datasets"
BUNDLED = ("digits", "fashion-small")

FASHION_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                   "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
DIGIT_CLASSES = [str(d) for d in range(10)]


@dataclass
class Dataset:
    """Images as uint8 (N, C, H, W) and int64 labels indexing ``classes``, with provenance."""

    x_train: np.ndarray = field(repr=False)
    y_train: np.ndarray = field(repr=False)
    x_test: np.ndarray = field(repr=False)
    y_test: np.ndarray = field(repr=False)
    classes: list[str]
    name: str
    input_shape: tuple[int, int, int]
    licence: str = ""
    info: dict[str, Any] = field(default_factory=dict, repr=False)

    @property
    def num_classes(self) -> int:
        """Number of classes."""
        return len(self.classes)

    def __post_init__(self) -> None:
        for split in ("train", "test"):
            x, y = getattr(self, f"x_{split}"), getattr(self, f"y_{split}")
            if x.dtype != np.uint8 or x.ndim != 4 or tuple(x.shape[1:]) != tuple(self.input_shape):
                raise DataError(f"{self.name}: x_{split} must be uint8 (N, *{self.input_shape}), "
                                f"found {x.dtype} {x.shape}")
            if y.dtype != np.int64 or y.shape != (len(x),):
                raise DataError(f"{self.name}: y_{split} must be int64 ({len(x)},), found {y.dtype} {y.shape}")
            if len(y) and (y.min() < 0 or y.max() >= len(self.classes)):
                raise DataError(f"{self.name}: y_{split} has labels outside 0..{len(self.classes) - 1}")


def list_datasets() -> list[str]:
    """Names :func:`load_dataset` accepts (besides a path to an image folder)."""
    return [*BUNDLED, *sources.REGISTRY]


def stratified_split(y: np.ndarray, test_fraction: float,
                     seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Shuffled train and test indices with each class split ``1 - test_fraction``/``test_fraction``.

    Each class with at least 2 items puts at least one in each part. Same ``seed``, same split.
    """
    if not 0 < test_fraction < 1:
        raise DataError(f"test_fraction must be in (0, 1), got {test_fraction}")
    if not len(y):  # (np.concatenate would say "need at least one array to concatenate")
        raise DataError("no images to split: the dataset is empty")
    rng = np.random.default_rng(seed)
    train, test = [], []
    for c in np.unique(y):
        idx = rng.permutation(np.flatnonzero(y == c))
        k = int(round(len(idx) * test_fraction))
        if len(idx) >= 2:
            k = min(max(k, 1), len(idx) - 1)
        test.append(idx[:k])
        train.append(idx[k:])
    return rng.permutation(np.concatenate(train)), rng.permutation(np.concatenate(test))


def _load_bundled(name: str) -> Dataset:
    path = BUNDLED_DIR / f"{name}.npz"
    meta_path = BUNDLED_DIR / f"{name}.json"
    try:
        info = json.loads(meta_path.read_text(encoding="utf-8"))
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in ("x_train", "y_train", "x_test", "y_test", "classes")}
    except FileNotFoundError as exc:
        raise DataError(f"bundled dataset {name!r} is missing ({exc.filename}); the package "
                        "was installed without its data files: reinstall convscope") from None
    except (OSError, ValueError, KeyError) as exc:
        raise DataError(f"bundled dataset {name!r} is corrupt ({path}: {exc})") from exc
    x = arrays["x_train"]
    return Dataset(x, arrays["y_train"], arrays["x_test"], arrays["y_test"],
                   [str(c) for c in arrays["classes"]], name, tuple(x.shape[1:]),
                   info.get("licence", ""), info)


def _load_idx_dataset(name: str, paths: list[Path]) -> tuple[np.ndarray, ...]:
    x_train, y_train, x_test, y_test = (read_idx(p) for p in paths)
    out = []
    for x, y, px, py in ((x_train, y_train, paths[0], paths[1]), (x_test, y_test, paths[2], paths[3])):
        if x.dtype != np.uint8 or x.ndim != 3 or x.shape[1:] != (28, 28):
            raise DataError(f"{px}: expected uint8 images (N, 28, 28), found {x.dtype} {x.shape}")
        if y.ndim != 1 or len(y) != len(x):
            raise DataError(f"{py}: expected {len(x)} labels to match {px}, found shape {y.shape}")
        if len(y) and y.max() > 9:
            raise DataError(f"{py}: labels must be 0..9, found {y.max()}")
        out += [x[:, None], y.astype(np.int64)]
    return tuple(out)


def _load_full(name: str, data_dir: str | os.PathLike[str] | None, download: bool,
               verify: bool) -> Dataset:
    src = sources.REGISTRY[name]
    paths = sources.fetch(name, data_dir, download)
    checks: dict[str, str] = {}
    digests = {f.name: f for f in src.files}
    for p in paths:
        official = digests.get(p.name) or digests.get(p.name + ".gz")
        if verify and official is not None:
            checks[p.name] = sources.verify_file(p, official)
        else:
            checks[p.name] = "not checked"
    if name == "cifar10":
        if len(paths) == 1:
            arrays = read_cifar_archive(paths[0])
        else:
            reader = read_cifar_binary if paths[0].suffix == ".bin" else read_cifar_python
            x_tr, y_tr = reader(paths[:5])
            x_te, y_te = reader(paths[5])
            arrays = (x_tr, y_tr, x_te, y_te)
        classes, shape = list(CIFAR10_CLASSES), (3, 32, 32)
    else:
        arrays = _load_idx_dataset(name, paths)
        classes = FASHION_CLASSES if name == "fashion-mnist" else DIGIT_CLASSES
        shape = (1, 28, 28)
    info = {"name": name, "source": src.homepage, "licence": src.licence,
            "files": [str(p) for p in paths], "checksums": checks}
    return Dataset(*arrays, classes=list(classes), name=name, input_shape=shape,
                   licence=src.licence, info=info)


def _load_folder(root: Path, input_shape: tuple[int, int, int] | None, test_fraction: float,
                 seed: int, input_size: tuple[int, int] | None = None) -> Dataset:
    info: dict[str, Any] = {"name": root.name, "source": str(root), "licence": "user data"}
    split = (root / "train").is_dir() and (root / "test").is_dir()
    if input_shape is None:  # from the images' headers: large photos get a smaller default
        _, files = image_folder_classes(root / "train" if split else root)
        input_shape, note = choose_input_shape([p for g in files for p in g], input_size)
        if note:
            info["input_note"] = f"{root}: {note}"
    if split:
        x_train, y_train, classes = load_image_folder(root / "train", input_shape)
        x_test, y_test, test_classes = load_image_folder(root / "test", input_shape)
        if test_classes != classes:
            raise DataError(f"{root}: train classes {classes} differ from test classes {test_classes}")
        info["split"] = "train/ and test/ folders"
    else:
        x, y, classes = load_image_folder(root, input_shape)
        tr, te = stratified_split(y, test_fraction, seed)
        x_train, y_train, x_test, y_test = x[tr], y[tr], x[te], y[te]
        info["split"] = f"stratified, test_fraction={test_fraction}, seed={seed}"
    return Dataset(x_train, y_train, x_test, y_test, classes, root.name,
                   tuple(x_train.shape[1:]), "user data", info)


def load_dataset(name: str | os.PathLike[str], data_dir: str | os.PathLike[str] | None = None,
                 download: bool = True, *, verify: bool = False,
                 input_shape: tuple[int, int, int] | None = None,
                 test_fraction: float = 0.2, seed: int = 0,
                 input_size: tuple[int, int] | None = None) -> Dataset:
    """Load a dataset by name or from an image folder.

    ``name``: ``"digits"`` or ``"fashion-small"`` (bundled, no files needed); ``"mnist"``,
    ``"fashion-mnist"`` or ``"cifar10"`` (official files found in ``data_dir``,
    ``$CONVSCOPE_DATA``, the user cache or ``/usr/share/datasets``, else downloaded when
    ``download``; ``verify`` checks local files against the official SHA-256); or a folder
    with one sub-folder of images per class, either split into ``train/`` and ``test/`` or
    split here (stratified, ``test_fraction``, ``seed``), resized to ``input_shape`` (or to
    ``input_size`` (H, W), the channels from the images; by default their own size, scaled to
    64 on the longer side when larger: ``info["input_note"]`` says so).
    Raises DataError when the data is missing or malformed.
    """
    key = str(name)
    if input_size is not None and not Path(key).expanduser().is_dir():
        raise DataError(f"an input size ({'x'.join(map(str, input_size))}) is for an image "
                        f"folder; {key!r} is a dataset with images of its own size")
    if key in BUNDLED:
        return _load_bundled(key)
    if key in sources.REGISTRY:
        return _load_full(key, data_dir, download, verify)
    root = Path(key).expanduser()
    if root.is_dir():
        return _load_folder(root, input_shape, test_fraction, seed, input_size)
    raise DataError(f"unknown dataset {key!r}: not one of {list_datasets()} and not a folder")
