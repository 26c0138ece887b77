"""Model files: one ``.safetensors`` file holding a model and what inference needs around it.

Its tensors are the model's state dict ('0.weight', '0.bias', ...); its metadata
(formats/safetensors.py) holds the architecture (the canonical layer list of
:func:`convscope.formats.architecture.architecture_of`: each layer under its registered kind
name), input shape, class names, normalisation, dtype and training notes.  Loading parses JSON
and raw arrays only: nothing is ever executed from a file.  A missing, truncated or corrupt
file, another format version, a layer kind that is not registered, or weights that do not fit
the architecture raise :class:`ModelFileError` with a one-line reason.

Training checkpoints (``format`` "convscope.checkpoint") use the same container (train/).
"""

from __future__ import annotations

import datetime as _dt
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from .. import limits
from .._version import __version__
from ..data.batches import Normalizer, tta_views
from ..data.images import border_level, estimate_background, load_image_for_model
from ..errors import ArchitectureError, ModelFileError
from ..layers.container import Sequential
from ..ops.loss import softmax
from .architecture import architecture_of, build_model, unregistered_types
from .cost import check_cost, cost_of
from .files import atomic_write
from .safetensors import (CHECKPOINT_FORMAT, FORMAT_VERSION, MODEL_FORMAT, READ_VERSIONS,
                          read_safetensors, write_safetensors)

# atomic_write, the container and estimate_background are re-exported: their old home was here
__all__ = ["FORMAT_VERSION", "READ_VERSIONS", "MODEL_FORMAT", "CHECKPOINT_FORMAT",
           "ModelFileError", "SavedModel", "Prediction", "save_model", "load_model",
           "read_metadata", "write_safetensors", "read_safetensors", "atomic_write",
           "estimate_background"]


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
        if self.normalization is not None:
            x = self.normalization(images)
        else:
            x = images.astype(np.float32) / 255 if images.dtype == np.uint8 else images
        return x.astype(self.model.dtype, copy=False)  # not layers[0]'s: a Flatten has none

    def predict_proba(self, images: np.ndarray, batch_size: int = 256,
                      tta: str = "none") -> np.ndarray:
        """Class probabilities (N, classes) of uint8 images (N, C, H, W): softmax of the
        scores; with ``tta="flip"`` the mean of the image's and its mirror image's."""
        shape = tuple(images.shape[1:])
        if images.ndim != 4 or shape != self.input_shape:
            raise ValueError(f"the model takes images of shape (N, "
                             f"{', '.join(map(str, self.input_shape))}), got {tuple(images.shape)}")
        views = tta_views(images, tta)
        # as many images at a time as keep the activations under max_activation_bytes
        per_image = cost_of(self.model, self.input_shape).activation_bytes
        batch_size = max(1, min(batch_size, limits.limit("max_activation_bytes") // per_image))
        return sum(softmax(self.model.predict(self.preprocess(v), batch_size).astype(np.float64))
                   for v in views) / len(views)

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
            img = load_image_for_model(p, self.input_shape, fit)
            flip = invert == "yes" or (invert == "auto" and self.background is not None
                                       and abs(border_level(img) - self.background) > 127)
            out.append(255 - img if flip else img)
            flipped.append(flip)
        return np.stack(out) if out else np.zeros((0, *self.input_shape), np.uint8), flipped

    def predict_files(self, paths: Sequence[str | os.PathLike[str]], top_k: int = 3,
                      fit: str = "stretch", invert: str = "auto",
                      tta: str = "none") -> list[Prediction]:
        """Top-``top_k`` labels with probabilities for each image file (``tta``: as in
        :meth:`predict_proba`)."""
        if top_k < 1:
            raise ValueError(f"top_k must be >= 1, got {top_k}")
        x, flipped = self.load_images(paths, fit, invert)
        probs = self.predict_proba(x, tta=tta)
        k = min(top_k, len(self.classes))
        preds = []
        for p, row, flip in zip(paths, probs, flipped):
            order = np.argsort(-row, kind="stable")[:k]
            preds.append(Prediction(str(p), [self.classes[i] for i in order],
                                    [int(i) for i in order], [float(row[i]) for i in order], flip))
        return preds


def save_model(path: str | os.PathLike[str], model: Sequential, classes: Sequence[str], *,
               normalization: Normalizer | Mapping[str, Any] | None = None,
               background: int | None = None, dataset: str | None = None,
               arch_name: str | None = None, training: Mapping[str, Any] | None = None,
               data: Mapping[str, Any] | None = None) -> Path:
    """Write ``model`` (built, with ``input_shape``) as one ``.safetensors`` model file.

    The metadata holds the architecture, input shape, ``classes``, ``normalization`` (mean/std
    per channel), the training images' ``background`` grey level, the dataset, free-form
    ``training`` notes and ``data``: the record of an image folder (its absolute path, class
    names and counts: convscope/data/record.py) that finds it again.  Written atomically;
    returns the path.  Weights that are not all finite are refused (they could not be loaded).
    """
    if model.input_shape is None:
        raise ValueError("save_model: the model has no input_shape; build it first")
    out_dim = model.output_shape(model.input_shape)
    if out_dim != (len(classes),):
        raise ValueError(f"save_model: the model gives {out_dim} scores per image but "
                         f"{len(classes)} class names were given")
    if isinstance(normalization, Normalizer):
        normalization = normalization.to_dict()
    dtype = str(model.dtype)
    meta = {"architecture": architecture_of(model), "arch_name": arch_name,
            "input_shape": list(model.input_shape), "classes": [str(c) for c in classes],
            "dtype": dtype, "normalization": dict(normalization) if normalization else None,
            "background": background, "dataset": dataset,
            "convscope_version": __version__,
            "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "training": dict(training or {}), "data": dict(data) if data else None}
    tensors = {k: np.asarray(v) for k, v in model.state_dict().items()}
    # -- never a model file that load_model refuses: NaN or infinite weights --
    bad = next((k for k, v in tensors.items() if v.dtype.kind == "f" and not np.isfinite(v).all()),
               None)
    if bad is not None:
        raise ValueError(f"save_model: tensor {bad!r} holds NaN or infinite values; not written")
    return write_safetensors(path, tensors, MODEL_FORMAT, meta)


def read_metadata(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The JSON metadata of a model file, without building the model."""
    return read_safetensors(path, MODEL_FORMAT)[1]


def _shape3(value: Any) -> tuple[int, int, int]:
    shape = tuple(int(v) for v in value)
    if len(shape) != 3 or min(shape) < 1 or any(float(v) != int(v) for v in value):
        raise ValueError(value)
    return shape  # type: ignore[return-value]


def _meta_field(path: Path, meta: Mapping[str, Any], key: str, parse: Any, needs: str,
                default: Any = None) -> Any:
    """``parse(meta[key])``, or a ModelFileError naming the field and what it needs."""
    if key not in meta and default is None:
        raise ModelFileError(f"{path}: the metadata has no {key!r} ({needs}); not a model file "
                             "of convscope train, or a damaged one")
    value = meta.get(key, default)
    try:
        return parse(value)
    except (TypeError, ValueError, OverflowError):
        raise ModelFileError(f"{path}: the metadata's {key!r} is {json.dumps(value)[:60]}; it "
                             f"must be {needs}") from None


def load_model(path: str | os.PathLike[str]) -> SavedModel:
    """Load a model file written by :func:`save_model`.

    Raises :class:`ModelFileError` for a missing, truncated or corrupt file, another format
    version, an unbuildable architecture, or weights whose names or shapes do not match it.
    """
    path = Path(path)
    tensors, meta = read_safetensors(path, MODEL_FORMAT)
    classes = _meta_field(path, meta, "classes", lambda v: [str(c) for c in v], "a list of names")
    shape = _meta_field(path, meta, "input_shape", _shape3, "3 whole numbers C, H, W")
    arch = _meta_field(path, meta, "architecture", lambda v: v, "a list of layers")
    dtype = _meta_field(path, meta, "dtype", np.dtype, "float32 or float64", "float32")
    try:
        unknown = unregistered_types(arch)
    except (ArchitectureError, RecursionError) as exc:
        raise ModelFileError(f"{path}: its architecture cannot be built: "
                             f"{exc if isinstance(exc, ArchitectureError) else 'nested too deeply'}"
                             ) from None
    if unknown:
        raise ModelFileError(f"{path}: model file names layer kind {unknown[0]!r}, which is not "
                             "registered; import the module that defines it")
    try:  # placeholder weights: the file's tensors are checked against them before any is made
        model = build_model(arch, shape, len(classes), seed=0, dtype=dtype, allocate=False)
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
    limits.check("max_pixels", shape[1] * shape[2], f"its input {'x'.join(map(str, shape))} "
                 "(C x H x W): the pixels", ModelFileError, f"{path}: ")
    check_cost(cost_of(model, shape), str(path), params=False, error=ModelFileError)
    # -- H2: no wrong answers: each tensor of the architecture's dtype, and finite --
    for k, target in own.items():
        if tensors[k].dtype != target.dtype:
            raise ModelFileError(f"{path}: tensor {k!r} is stored as {tensors[k].dtype}, the "
                                 f"architecture's weights are {target.dtype}; corrupt header")
        if tensors[k].dtype.kind == "f" and not np.isfinite(tensors[k]).all():
            raise ModelFileError(f"{path}: tensor {k!r} holds NaN or infinite values; the "
                                 "model cannot predict (retrain, or use an earlier model file)")
    model.adopt(tensors)  # the file's arrays become the weights: none is drawn, none copied twice
    model.eval()
    norm = meta.get("normalization")
    try:
        normalizer = Normalizer.from_dict(norm) if norm else None
    except (ValueError, TypeError, KeyError, AttributeError) as exc:
        raise ModelFileError(f"{path}: bad normalization metadata ({exc})") from None
    bg = meta.get("background")
    if bg is not None and (isinstance(bg, bool) or not isinstance(bg, int) or not 0 <= bg <= 255):
        raise ModelFileError(f"{path}: bad background metadata: {bg!r}, expected a grey level "
                             "0..255 or null")
    return SavedModel(model, classes, shape, arch, normalizer, bg, meta, path)
