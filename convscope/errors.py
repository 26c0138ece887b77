"""The exceptions convscope raises (every class lives here; old import paths re-export them)."""

from __future__ import annotations


class ShapeError(ValueError):
    """A shape that does not fit: wrong channels, rank, a stride that does not fit, ...

    The message names the layer, the shape it got and the shape it needs, and where it is the
    lecture's arithmetic, the formula filled in.
    """


class ArchitectureError(ValueError):
    """An architecture that cannot be built: unknown preset, layer type or key, bad value."""


class UnsupportedLayer(TypeError):
    """A layer a format cannot express: no ONNX export, no PyTorch mapping, not registered.

    The message names the layer and the hook or registration that would make it work.
    """
