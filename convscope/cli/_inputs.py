"""Models and datasets named on the command line: a model file, a preset or a JSON
architecture; a dataset name or an image folder.  Shared by the commands that take them."""

from __future__ import annotations

from typing import Any

from ..data import load_dataset
from ..formats.architecture import build_model, parse_shape, resolve_architecture
from ..formats.model_file import load_model
from ._common import CommandError, say

__all__ = ["load_data", "model_from", "names_no_input"]


def load_data(s: dict[str, Any], input_shape: tuple[int, int, int] | None = None) -> Any:
    """The dataset ``s["data"]`` (found in ``s["data_dir"]``, downloaded if ``s["download"]``)."""
    return load_dataset(s["data"], s["data_dir"], download=s["download"], input_shape=input_shape)


def names_no_input(layers: Any, file_shape: Any) -> bool:
    """Whether a JSON architecture's layer list gives no input shape (no ``input_shape``, no
    ``{"type": "input"}`` entry): the command line must give one."""
    return layers is not None and file_shape is None and not any(
        isinstance(spec, dict) and spec.get("type") == "input" for spec in layers)


def model_from(arch: str, input_shape: str | None, classes: int | None, seed: int = 0,
               data: str | None = None) -> tuple[Any, Any]:
    """(Sequential, SavedModel or None) for a model file, a preset or a JSON architecture."""
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
    if data:
        ds = load_dataset(data, download=False, input_shape=shape)
        shape, classes = shape or tuple(ds.input_shape), classes or ds.num_classes
    name, layers, file_shape = resolve_architecture(arch)
    if shape is None and names_no_input(layers, file_shape):
        raise CommandError(f"{arch} names no input shape; give --input (e.g. 32x32x3 or 1x28x28)")
    return build_model(arch, shape, classes or 10, seed=seed), None
