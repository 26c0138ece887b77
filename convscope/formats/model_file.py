"""Model files and training checkpoints: safetensors arrays plus JSON metadata, written atomically.

A model file is one ``.safetensors`` file.  Its tensors are the model's state dict ('0.weight',
'0.bias', ...); its header metadata holds ``format`` ("convscope.model"), ``format_version`` and
``convscope``: a JSON object with the architecture (the canonical layer list of
:func:`convscope.models.architecture_of`), input shape, class names, normalisation, dtype and
training notes.  Loading parses the header with ``json`` and the arrays with ``np.frombuffer``:
nothing is ever executed, and the safetensors library is not needed to read.  A file of another
format version, a truncated file, a corrupt header or weights that do not fit the architecture
raise :class:`ModelFileError` with a one-line reason.

A checkpoint (``format`` "convscope.checkpoint") is the same container with the whole training
state: model arrays, optimiser state, random generator states, and the trainer's counters.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import struct
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from ..errors import ModelFileError

from ..data import Normalizer, load_image
from ..layers.container import Sequential
from .architecture import ArchitectureError, architecture_of, build_model

__all__ = ["FORMAT_VERSION", "MODEL_FORMAT", "CHECKPOINT_FORMAT", "ModelFileError", "SavedModel",
           "Prediction", "save_model", "load_model", "read_metadata", "write_safetensors",
           "read_safetensors", "atomic_write", "estimate_background"]

FORMAT_VERSION = 1
MODEL_FORMAT = "convscope.model"
CHECKPOINT_FORMAT = "convscope.checkpoint"
_MAX_HEADER = 64 * 1024 * 1024

_DTYPES = {"F64": "<f8", "F32": "<f4", "F16": "<f2", "I64": "<i8", "I32": "<i4", "I16": "<i2",
           "I8": "i1", "U64": "<u8", "U32": "<u4", "U16": "<u2", "U8": "u1", "BOOL": "?"}




def _version() -> str:
    from .._version import __version__  # noqa: PLC0415

    return __version__


# ---------------------------------------------------------------------------------------------
# atomic files


def atomic_write(path: str | os.PathLike[str], data: bytes | str) -> Path:
    """Write ``data`` to ``path`` atomically: a temporary file in the same folder, flushed to
    disk, then ``os.replace``d over the target.  A crash leaves the old file or the new one,
    never a half-written one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    raw = data.encode("utf-8") if isinstance(data, str) else data
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(raw)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    return path


# ---------------------------------------------------------------------------------------------
# the safetensors container


def write_safetensors(path: str | os.PathLike[str], tensors: Mapping[str, np.ndarray],
                      kind: str, meta: Mapping[str, Any]) -> Path:
    """Write ``tensors`` with header metadata ``format=kind``, ``format_version`` and
    ``convscope=json(meta)``, atomically."""
    try:
        from safetensors.numpy import save  # noqa: PLC0415 - optional until a file is written
    except ImportError:  # pragma: no cover - safetensors is a dependency
        raise ImportError("writing model files needs safetensors: pip install safetensors") from None
    arrays = {k: np.array(v, order="C") for k, v in tensors.items()}  # keeps 0-d (ascontiguousarray makes 1-d)
    header = {"format": kind, "format_version": str(FORMAT_VERSION),
              "convscope": json.dumps(meta, separators=(",", ":"), allow_nan=False)}
    return atomic_write(path, save(arrays, metadata=header))


def _read_header(path: Path, raw: bytes) -> tuple[dict[str, Any], int]:
    if len(raw) < 8:
        raise ModelFileError(f"{path}: {len(raw)} bytes is too short for a safetensors file "
                             "(truncated or not a model file)")
    (n,) = struct.unpack("<Q", raw[:8])
    if n > _MAX_HEADER:
        raise ModelFileError(f"{path}: corrupt header (it claims {n:,} bytes); not a safetensors "
                             "model file")
    if 8 + n > len(raw):
        raise ModelFileError(f"{path}: truncated: the header needs {n:,} bytes but only "
                             f"{len(raw) - 8:,} follow")
    try:
        header = json.loads(raw[8:8 + n].decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelFileError(f"{path}: corrupt header ({exc})") from None
    if not isinstance(header, dict):
        raise ModelFileError(f"{path}: corrupt header (not a JSON object)")
    return header, 8 + n


def _check_meta(path: Path, header: dict[str, Any], kind: str) -> dict[str, Any]:
    meta = header.get("__metadata__")
    fmt = meta.get("format") if isinstance(meta, dict) else None
    if fmt != kind:
        if fmt == CHECKPOINT_FORMAT:
            raise ModelFileError(f"{path}: this is a training checkpoint, not a model file; use "
                                 f"the model.safetensors next to it")
        if fmt == MODEL_FORMAT:
            raise ModelFileError(f"{path}: this is a model file, not a training checkpoint")
        raise ModelFileError(f"{path}: a safetensors file but not a convscope "
                             f"{kind.split('.')[1]} (its metadata has format {fmt!r})")
    version = meta.get("format_version")
    if version != str(FORMAT_VERSION):
        raise ModelFileError(f"{path}: format version {version} but this convscope "
                             f"({_version()}) reads version {FORMAT_VERSION}; use the convscope "
                             "that wrote it, or retrain")
    try:
        info = json.loads(meta.get("convscope", ""))
    except json.JSONDecodeError as exc:
        raise ModelFileError(f"{path}: corrupt metadata ({exc})") from None
    if not isinstance(info, dict):
        raise ModelFileError(f"{path}: corrupt metadata (not a JSON object)")
    return info


def read_safetensors(path: str | os.PathLike[str], kind: str = MODEL_FORMAT
                     ) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """``(tensors, meta)`` from a file written by :func:`write_safetensors`, every offset,
    dtype and shape checked first.  Raises :class:`ModelFileError`."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise ModelFileError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise ModelFileError(f"{path}: is a folder, not a model file") from None
    except OSError as exc:
        raise ModelFileError(f"{path}: cannot read ({exc.strerror})") from None
    header, start = _read_header(path, raw)
    info = _check_meta(path, header, kind)
    data = memoryview(raw)[start:]
    tensors: dict[str, np.ndarray] = {}
    end_max = 0
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        try:
            dtype = np.dtype(_DTYPES[entry["dtype"]])
            shape = tuple(int(s) for s in entry["shape"])
            begin, end = (int(o) for o in entry["data_offsets"])
        except (KeyError, TypeError, ValueError):
            raise ModelFileError(f"{path}: corrupt header entry for {name!r}: {entry!r}") from None
        count = int(np.prod(shape)) if shape else 1
        if min(shape, default=0) < 0 or begin < 0 or end - begin != count * dtype.itemsize:
            raise ModelFileError(f"{path}: corrupt header entry for {name!r}: shape {list(shape)} "
                                 f"of {entry['dtype']} does not fill bytes {begin}..{end}")
        if end > len(data):
            raise ModelFileError(f"{path}: truncated: tensor {name!r} needs bytes up to {end:,} "
                                 f"of the data, the file holds {len(data):,}")
        end_max = max(end_max, end)
        native = dtype.newbyteorder("=")
        tensors[name] = (np.frombuffer(data, dtype, count, begin).reshape(shape).astype(native)
                         if count else np.empty(shape, native))
    if end_max < len(data):
        raise ModelFileError(f"{path}: corrupt: {len(data) - end_max:,} bytes after the last "
                             "tensor")
    return tensors, info


# ---------------------------------------------------------------------------------------------
# model files


@dataclass
class Prediction:
    """Top-k classes of one image: ``labels[i]`` with probability ``probabilities[i]``."""

    source: str
    labels: list[str]
    indices: list[int]
    probabilities: list[float]
    inverted: bool = False


@dataclass
class SavedModel:
    """A loaded model file: the built model and what inference needs around it."""

    model: Sequential
    classes: list[str]
    input_shape: tuple[int, int, int]
    architecture: list[dict[str, Any]]
    normalization: Normalizer | None = None
    background: int | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    path: Path | None = None

    def preprocess(self, images: np.ndarray) -> np.ndarray:
        """uint8 images (N, C, H, W) -> the model's float input (normalised as in training)."""
        dtype = self.model.layers[0].dtype if self.model.layers else None
        if self.normalization is not None:
            x = self.normalization(images)
        else:
            x = images.astype(np.float32) / 255 if images.dtype == np.uint8 else images
        return x.astype(dtype or np.float32, copy=False)

    def predict_proba(self, images: np.ndarray, batch_size: int = 256) -> np.ndarray:
        """Class probabilities (N, classes) of uint8 images (N, C, H, W): softmax of the scores."""
        shape = tuple(images.shape[1:])
        if images.ndim != 4 or shape != self.input_shape:
            raise ValueError(f"the model takes images of shape (N, "
                             f"{', '.join(map(str, self.input_shape))}), got {tuple(images.shape)}")
        scores = self.model.predict(self.preprocess(images), batch_size).astype(np.float64)
        scores -= scores.max(axis=1, keepdims=True)
        e = np.exp(scores)
        return e / e.sum(axis=1, keepdims=True)

    def load_images(self, paths: Sequence[str | os.PathLike[str]], fit: str = "stretch",
                    invert: str = "auto") -> tuple[np.ndarray, list[bool]]:
        """Image files of any size and colour -> uint8 (N, C, H, W) for this model.

        Transparent parts go over white for dark strokes and black for light ones; ``invert``
        ("auto", "yes", "no") flips the grey levels; auto flips an image whose border is far
        from the training images' background (a black digit on white paper for MNIST's white
        on black).  Returns the images and which were inverted.
        """
        if invert not in ("auto", "yes", "no"):
            raise ValueError(f"invert must be 'auto', 'yes' or 'no', got {invert!r}")
        out, flipped = [], []
        for p in paths:
            img = _load_for_model(p, self.input_shape, fit)
            flip = invert == "yes" or (invert == "auto" and self.background is not None
                                       and abs(_border_level(img) - self.background) > 127)
            out.append(255 - img if flip else img)
            flipped.append(flip)
        return np.stack(out) if out else np.zeros((0, *self.input_shape), np.uint8), flipped

    def predict_files(self, paths: Sequence[str | os.PathLike[str]], top_k: int = 3,
                      fit: str = "stretch", invert: str = "auto") -> list[Prediction]:
        """Top-``top_k`` labels with probabilities for each image file."""
        if top_k < 1:
            raise ValueError(f"top_k must be >= 1, got {top_k}")
        x, flipped = self.load_images(paths, fit, invert)
        probs = self.predict_proba(x)
        k = min(top_k, len(self.classes))
        preds = []
        for p, row, flip in zip(paths, probs, flipped):
            order = np.argsort(-row, kind="stable")[:k]
            preds.append(Prediction(str(p), [self.classes[i] for i in order],
                                    [int(i) for i in order], [float(row[i]) for i in order], flip))
        return preds


def _border_level(img: np.ndarray) -> float:
    """Median grey level of an image's one-pixel border (uint8 (C, H, W))."""
    grey = img.astype(np.float64).mean(axis=0)
    border = np.concatenate([grey[0], grey[-1], grey[:, 0], grey[:, -1]])
    return float(np.median(border))


def estimate_background(images: np.ndarray, sample: int = 2000) -> int | None:
    """The grey level of the training images' borders (0 for MNIST's black), or None when the
    borders do not share one (photos).  ``images`` uint8 (N, C, H, W).

    The median of the one-pixel borders of up to ``sample`` images, kept when at least 80% of
    those border pixels lie within 32 grey levels of it."""
    if images.ndim != 4 or len(images) == 0:
        return None
    idx = np.linspace(0, len(images) - 1, min(sample, len(images))).astype(int)
    grey = images[idx].astype(np.float32).mean(axis=1)
    border = np.concatenate([grey[:, 0].ravel(), grey[:, -1].ravel(), grey[:, :, 0].ravel(),
                             grey[:, :, -1].ravel()])
    level = float(np.median(border))
    return int(round(level)) if np.mean(np.abs(border - level) <= 32) >= 0.8 else None


def _luma(rgb: np.ndarray) -> np.ndarray:
    """ITU-R 601 luma of RGB (3, H, W) floats, as Pillow's convert('L')."""
    return rgb[0] * 0.299 + rgb[1] * 0.587 + rgb[2] * 0.114


def _load_for_model(path: str | os.PathLike[str], shape: tuple[int, int, int], fit: str
                    ) -> np.ndarray:
    """One image as uint8 ``shape``.  A transparent background goes under the strokes in the
    contrasting grey (white under dark strokes, black under light ones); ``fit="pad"`` pads
    with the image's own background (its border's grey level)."""
    c, h, w = shape
    if c == 4:
        return load_image(path, shape, fit)
    rgba = load_image(path, (4, h, w), "stretch").astype(np.float64)  # to look at, not to keep
    alpha = rgba[3] / 255.0
    if alpha.min() >= 1.0:
        level = _border_level(np.round(_luma(rgba[:3]))[None])
        return load_image(path, shape, fit, background=int(round(level)))
    weight = alpha.sum()
    level = float((_luma(rgba[:3]) * alpha).sum() / weight) if weight > 0 else 0.0
    bg = 255 if level < 128 else 0
    if fit != "stretch":
        rgba = load_image(path, (4, h, w), fit, background=bg).astype(np.float64)
        alpha = rgba[3] / 255.0
    rgb = rgba[:3] * alpha + bg * (1 - alpha)
    out = _luma(rgb)[None] if c == 1 else rgb
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def save_model(path: str | os.PathLike[str], model: Sequential, classes: Sequence[str], *,
               normalization: Normalizer | Mapping[str, Any] | None = None,
               background: int | None = None, dataset: str | None = None,
               arch_name: str | None = None, training: Mapping[str, Any] | None = None) -> Path:
    """Write ``model`` (built, with ``input_shape``) as one ``.safetensors`` model file.

    The metadata holds the architecture, input shape, ``classes``, ``normalization`` (mean/std
    per channel), the training images' ``background`` grey level, the dataset and free-form
    ``training`` notes.  Written atomically; returns the path.
    """
    if model.input_shape is None:
        raise ValueError("save_model: the model has no input_shape; build it first")
    out_dim = model.output_shape(model.input_shape)
    if out_dim != (len(classes),):
        raise ValueError(f"save_model: the model gives {out_dim} scores per image but "
                         f"{len(classes)} class names were given")
    if isinstance(normalization, Normalizer):
        normalization = normalization.to_dict()
    dtype = next((str(p.dtype) for p in model.params.values()), "float32")
    meta = {"architecture": architecture_of(model), "arch_name": arch_name,
            "input_shape": list(model.input_shape), "classes": [str(c) for c in classes],
            "dtype": dtype, "normalization": dict(normalization) if normalization else None,
            "background": background, "dataset": dataset,
            "convscope_version": _version(),
            "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "training": dict(training or {})}
    tensors = {k: np.asarray(v) for k, v in model.state_dict().items()}
    return write_safetensors(path, tensors, MODEL_FORMAT, meta)


def read_metadata(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The JSON metadata of a model file, without building the model."""
    return read_safetensors(path, MODEL_FORMAT)[1]


def load_model(path: str | os.PathLike[str]) -> SavedModel:
    """Load a model file written by :func:`save_model`.

    Raises :class:`ModelFileError` for a missing, truncated or corrupt file, another format
    version, an unbuildable architecture, or weights whose names or shapes do not match it.
    """
    path = Path(path)
    tensors, meta = read_safetensors(path, MODEL_FORMAT)
    try:
        classes = [str(c) for c in meta["classes"]]
        shape = tuple(int(s) for s in meta["input_shape"])
        arch = meta["architecture"]
        dtype = np.dtype(meta.get("dtype", "float32"))
    except (KeyError, TypeError, ValueError) as exc:
        raise ModelFileError(f"{path}: metadata lacks a valid {exc}") from None
    try:
        model = build_model(arch, shape, len(classes), seed=0, dtype=dtype)
    except (ArchitectureError, ValueError, TypeError) as exc:
        raise ModelFileError(f"{path}: its architecture cannot be built: {exc}") from None
    own = model.state_dict()
    missing = [k for k in own if k not in tensors]
    extra = [k for k in tensors if k not in own]
    if missing or extra:
        raise ModelFileError(f"{path}: weights do not match the architecture: missing "
                             f"{missing or 'none'}, unexpected {extra or 'none'}")
    for k, target in own.items():
        if tuple(tensors[k].shape) != tuple(target.shape):
            raise ModelFileError(f"{path}: weights do not match the architecture: {k!r} is "
                                 f"{tuple(tensors[k].shape)}, the architecture needs "
                                 f"{tuple(target.shape)}")
    if model.output_shape(shape) != (len(classes),):
        raise ModelFileError(f"{path}: the architecture gives {model.output_shape(shape)} "
                             f"scores but the file names {len(classes)} classes")
    model.load_state_dict(tensors)
    model.eval()
    norm = meta.get("normalization")
    try:
        normalizer = Normalizer.from_dict(norm) if norm else None
    except ValueError as exc:
        raise ModelFileError(f"{path}: bad normalization metadata ({exc})") from None
    bg = meta.get("background")
    return SavedModel(model, classes, shape, arch, normalizer,
                      int(bg) if bg is not None else None, meta, path)
