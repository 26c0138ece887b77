"""What a model file records of the image folder it was trained on, and finding that folder again.

A named dataset (``digits``, ``mnist``, ...) is found again by its name.  An image folder is
recorded as ``{"kind": "folder", "name", "path", "classes", "counts", "split"}``: its absolute
path, and a fingerprint (the class names, the images per class in each split) that tells the
same folder from another of the same name or from one that changed since.  ``evaluate``,
``report`` and ``viz --index`` use it, from any working directory.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from .dataset import Dataset, load_dataset
from .formats import DataError

__all__ = ["data_record", "record_differences", "find_dataset", "trained_on"]


def _counts(y: np.ndarray, k: int) -> list[int]:
    return [int(c) for c in np.bincount(np.asarray(y, dtype=np.int64), minlength=k)[:k]]


def data_record(ds: Dataset, source: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The record of ``ds`` loaded from ``source`` when it is an image folder, else None.

    ``counts``: images per class, ``{"train": [n_0, ...], "test": [...]}``, before ``--limit``.
    """
    root = Path(source).expanduser()
    if not root.is_dir():
        return None
    k = len(ds.classes)
    return {"kind": "folder", "name": ds.name, "path": str(root.resolve()),
            "classes": list(ds.classes), "split": ds.info.get("split"),
            "counts": {"train": _counts(ds.y_train, k), "test": _counts(ds.y_test, k)}}


def record_differences(record: Mapping[str, Any], ds: Dataset) -> str | None:
    """How ``ds`` differs from the folder ``record`` describes (None: the same classes and
    counts)."""
    if list(record.get("classes") or []) != list(ds.classes):
        return f"classes {_short(ds.classes)}, trained on {_short(record.get('classes') or [])}"
    k = len(ds.classes)
    got = {"train": _counts(ds.y_train, k), "test": _counts(ds.y_test, k)}
    was = record.get("counts")
    if got != was:
        def total(c: Any) -> list[int]:
            return [a + b for a, b in zip(c.get("train", []), c.get("test", []))]
        return (f"images per class {total(got)}, trained on "
                f"{total(was) if isinstance(was, dict) else 'unknown counts'}")
    return None


def _short(names: Any) -> str:
    names = [str(n) for n in names]
    return repr(names[:8])[:-1] + (", ...]" if len(names) > 8 else "]")


def _folder(record: Any) -> dict[str, Any] | None:
    if isinstance(record, dict) and record.get("kind") == "folder" and record.get("path"):
        return record
    return None


def find_dataset(meta: Mapping[str, Any], given: str | None = None,
                 data_dir: str | os.PathLike[str] | None = None, *, download: bool = False,
                 input_shape: tuple[int, int, int] | None = None,
                 classes: Sequence[str] | None = None) -> Dataset:
    """The dataset a command uses for a model whose file metadata is ``meta``.

    ``given`` (``--data``) wins, except that a bare name equal to the recorded folder's name
    means that folder (wherever the command runs), and a folder of that name elsewhere whose
    classes or counts differ is refused.  Without ``given``: the recorded folder (refused when
    it is gone or changed), else the dataset the model names.  Image folders are loaded at
    ``input_shape`` (default: the model's).  ``classes``: refuse a dataset with other classes
    (another dataset's labels would be scored against this model's).  Raises DataError.
    """
    ds = _find(meta, given, data_dir, download, input_shape or _model_shape(meta))
    if classes is not None and list(ds.classes) != [str(c) for c in classes]:
        raise DataError(f"{ds.name} has classes {_short(ds.classes)} but the model was trained "
                        f"on {_short(classes)}; give the dataset it was trained on")
    return ds


def trained_on(meta: Mapping[str, Any], ds: Dataset) -> bool:
    """Whether ``ds`` is the data the model of ``meta`` was trained on (then only its test
    split is unseen); an image folder is compared by its path when the model records one."""
    source = Path(str(ds.info.get("source", "")))
    rec = _folder(meta.get("data"))
    if ds.info.get("licence") == "user data" and source.is_dir() and rec is not None:
        return source.resolve() == Path(rec["path"])
    return meta.get("dataset") == ds.name


def _model_shape(meta: Mapping[str, Any]) -> tuple[int, int, int] | None:
    try:
        shape = tuple(int(v) for v in meta["input_shape"])
    except (KeyError, TypeError, ValueError):
        return None
    return shape if len(shape) == 3 else None  # type: ignore[return-value]


def _find(meta: Mapping[str, Any], given: str | None, data_dir: Any, download: bool,
          shape: tuple[int, int, int] | None) -> Dataset:
    rec = _folder(meta.get("data"))
    if given is None:
        if rec is None:
            name = meta.get("dataset")
            if not name:
                raise DataError("the model file does not name its dataset; give --data")
            return load_dataset(name, data_dir, download=download, input_shape=shape)
        root = Path(rec["path"])
        if not root.is_dir():
            raise DataError(f"the model was trained on the image folder {root}, which is not "
                            "there now; give --data DIR")
        ds = load_dataset(root, input_shape=shape)
        diff = record_differences(rec, ds)
        if diff:
            raise DataError(f"{root} has changed since the model was trained on it ({diff}); "
                            f"give --data {root} to use it as it is now")
        return ds
    here = Path(given).expanduser()
    if rec is not None and here.name == rec["name"] and (
            not here.is_dir() or here.resolve() != Path(rec["path"])):
        if not here.is_dir():  # the bare name, from another directory: the recorded folder
            return _find(meta, None, data_dir, download, shape)
        ds = load_dataset(here, input_shape=shape)
        diff = record_differences(rec, ds)
        if diff:
            raise DataError(f"--data {given} is {here.resolve()}, not the folder the model was "
                            f"trained on ({rec['path']}), and it differs ({diff}); give the "
                            "path of the folder you mean")
        return ds
    return load_dataset(given, data_dir, download=download, input_shape=shape)
