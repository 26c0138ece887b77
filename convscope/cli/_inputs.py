"""Models and datasets named on the command line: a model file, a preset or a JSON
architecture; a dataset name or an image folder.  Shared by the commands that take them."""

from __future__ import annotations

from typing import Any

from ..data import load_dataset
from ..formats.architecture import build_model, parse_shape, resolve_architecture
from ..formats.model_file import load_model
from ..formats.onnx import import_onnx  # imports no onnx until a .onnx file is read
from ._common import CommandError, say

__all__ = ["load_data", "check_trainable", "model_from", "names_no_input", "onnx_model"]


def load_data(s: dict[str, Any], input_shape: tuple[int, int, int] | None = None) -> Any:
    """The dataset ``s["data"]`` (found in ``s["data_dir"]``, downloaded if ``s["download"]``;
    an image folder resized to ``s["input_size"]``, "HxW", when given)."""
    size = s.get("input_size")
    if size is not None:
        parts = str(size).lower().split("x")
        if len(parts) != 2 or not all(p.strip().isdigit() and int(p) >= 1 for p in parts):
            raise CommandError(f"--input-size must be HxW, two whole numbers >= 1 such as 48x64, "
                               f"got {size!r}")
        size = (int(parts[0]), int(parts[1]))
    return load_dataset(s["data"], s["data_dir"], download=s["download"], input_shape=input_shape,
                        input_size=size)


def check_trainable(ds: Any) -> None:
    """A dataset a classifier can learn from: two classes or more, and training images (a
    one-class folder would "train" to 100%)."""
    if ds.num_classes < 2:
        raise CommandError(f"{ds.name}: only one class ({ds.classes[0]!r}); a classifier needs "
                           "two or more (one sub-folder of images per class)")
    if not len(ds.y_train):
        raise CommandError(f"{ds.name}: no training images")


def names_no_input(layers: Any, file_shape: Any) -> bool:
    """Whether a JSON architecture's layer list gives no input shape (no ``input_shape``, no
    ``{"type": "input"}`` entry): the command line must give one."""
    return layers is not None and file_shape is None and not any(
        isinstance(spec, dict) and spec.get("type") == "input" for spec in layers)


def onnx_model(path: str, shape: tuple[int, ...] | None) -> Any:
    """The convscope model of an ``.onnx`` file (import_onnx; Residual and Concat blocks where
    its paths fork and meet).  A final Softmax is left out, with a note: convscope shows the
    class scores and computes the probabilities itself."""
    try:
        return import_onnx(path, shape)
    except ValueError as exc:
        if "final_softmax='drop'" not in str(exc):
            raise
    say(f"{path}: its final Softmax is left out (convscope shows the class scores and computes "
        "the probabilities itself)")
    return import_onnx(path, shape, final_softmax="drop")


def model_from(arch: str, input_shape: str | None, classes: int | None, seed: int = 0,
               data: str | None = None, allocate: bool = True) -> tuple[Any, Any]:
    """(Sequential, SavedModel or None) for a model file, a preset or a JSON architecture;
    ``allocate=False``: a preset or JSON architecture with placeholder weights (build_model),
    enough for explain and summary."""
    shape = parse_shape(input_shape) if input_shape else None
    if classes is not None and classes < 1:
        raise CommandError(f"--classes must be >= 1, got {classes}")
    if str(arch).endswith(".safetensors"):
        if classes is not None:
            raise CommandError("a saved model has its own classes; leave out --classes")
        saved = load_model(arch)
        if shape is not None and shape != saved.input_shape:
            say(f"{arch} was trained on {'x'.join(map(str, saved.input_shape))} (C x H x W); "
                f"explaining it on {'x'.join(map(str, shape))}")
        return saved.model, saved
    if str(arch).endswith(".onnx"):
        if classes is not None or data:
            raise CommandError("an ONNX model has its own classes and input; leave out "
                               "--classes and --data")
        return onnx_model(arch, shape), None
    if data:
        ds = load_dataset(data, download=False, input_shape=shape)
        shape, classes = shape or tuple(ds.input_shape), classes or ds.num_classes
    name, layers, file_shape = resolve_architecture(arch)
    if shape is None and names_no_input(layers, file_shape):
        raise CommandError(f"{arch} names no input shape; give --input (e.g. 32x32x3 or 1x28x28)")
    return build_model(arch, shape, classes or 10, seed=seed, allocate=allocate), None
