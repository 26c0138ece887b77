"""Walking a model's layers, blocks included, and seeing what each one computes.

Labels name a layer's place: '3' for the model's fourth layer, '3.1' for the second layer inside
block 3 (its ``children()`` names).  Nothing here names a layer class: containers are walked
through ``children()``, so any container (a nested Sequential, issue 10's Residual) is seen into.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from ..runtime import no_grad

__all__ = ["layers_of", "filter_layers", "position", "layer_outputs", "record", "same_numbers"]


def layers_of(model: Any) -> list[tuple[str, Any]]:
    """Every layer of ``model`` depth first, with its label: [('0', conv), ('3', block),
    ('3.0', conv), ...] (walking ``children()``); a single layer is [('0', layer)]."""
    top = model.children() if getattr(model, "layers", None) is not None else [("0", model)]
    return _walk(top, "")


def _walk(children: Sequence[tuple[str, Any]], prefix: str) -> list[tuple[str, Any]]:
    out = []
    for name, layer in children:
        label = f"{prefix}.{name}" if prefix else str(name)
        out.append((label, layer))
        out.extend(_walk(layer.children(), label))
    return out


def filter_layers(model: Any) -> list[tuple[str, Any]]:
    """(label, layer) of every layer with filters to draw (the ``shows_filters`` trait: a
    ``weight`` (K, D, kH, kW)), depth first."""
    return [(label, layer) for label, layer in layers_of(model) if layer.shows_filters]


def position(label: str) -> int | str:
    """A label as ``Panel.layer`` holds it: 3 for the model's own layer, '3.1' inside a block."""
    return int(label) if label.isdigit() else label


def layer_outputs(model: Any, x: np.ndarray) -> list[np.ndarray]:
    """Every layer's output for one input, in evaluation mode: [out_0, out_1, ...], batch axis
    dropped.  ``x`` is (C, H, W) or (1, C, H, W), as the model takes it."""
    seen = record(model, x)
    return [seen[label][1] for label, _ in model.children()]


def record(model: Any, x: np.ndarray) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """label -> (input, output) of every layer (inside blocks too) for one image, batch axis
    dropped, from one forward pass of the whole model in evaluation mode.

    Each layer's ``forward`` is wrapped for the pass (an instance attribute, removed after), so
    a container computes as it always does, whatever it does with its layers.
    """
    x = np.asarray(x)
    if x.ndim == 3:
        x = x[None]
    if x.ndim != 4 or x.shape[0] != 1:
        raise ValueError(f"expected one image (C, H, W) or (1, C, H, W), got shape {x.shape}")
    seen: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    wrapped = []
    for label, layer in layers_of(model):
        if "forward" in layer.__dict__:  # already wrapped: the same layer twice in the model
            continue

        def forward(a: Any, _forward: Any = layer.forward, _label: str = label) -> Any:
            inp = np.array(a[0])  # copies: the workspace recycles the arrays
            y = _forward(a)
            seen[_label] = (inp, np.array(y[0]))
            return y

        layer.forward = forward
        wrapped.append(layer)
    was = model.training
    model.eval()
    try:
        with no_grad():
            model.forward(x)
    finally:
        model.train(was)
        for layer in wrapped:
            del layer.__dict__["forward"]
    return seen


def same_numbers(inp: np.ndarray, out: np.ndarray) -> bool:
    """A reshape (Flatten): another shape, the same numbers in the same order."""
    return (inp.shape != out.shape and inp.size == out.size
            and np.array_equal(inp.reshape(-1), out.reshape(-1)))
