"""What a model costs, worked out from its shapes before any weight exists: parameters and
activation bytes per image (placeholder weights from ``Layer.build_virtual`` are enough), and
the check of both against the documented limits (convscope/limits.py)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from .. import limits
from ..errors import ArchitectureError, ShapeError
from ..layers.base import Layer, Shape
from ..layers.container import Sequential

__all__ = ["Cost", "cost_of", "check_cost"]



@dataclass(frozen=True)
class Cost:
    """What a model needs: ``params`` (parameters and buffers, numbers) and
    ``activation_bytes`` per image (the input and every layer's output, as in the summary),
    in ``itemsize``-byte numbers."""

    params: int
    activation_bytes: int
    itemsize: int


def _outputs(layer: Layer, shape: Shape) -> tuple[int, Shape]:
    """(numbers in every output inside ``layer`` on per-image ``shape``, its output shape).
    A Sequential's children run one after the other; any other container's (Residual's,
    Concat's branches) each on the container's input."""
    kids = layer.children()
    out = tuple(layer.output_shape(shape))
    if not kids:
        return math.prod(out), out
    total, inner = 0, tuple(shape)
    series = isinstance(layer, Sequential)
    for _, child in kids:
        try:
            n, inner = _outputs(child, inner if series else tuple(shape))
        except ShapeError:
            if series:
                raise
            n = 0  # a container whose children are wired otherwise: its own output only
        total += n
    return total + (0 if series else math.prod(out)), out


def cost_of(model: Layer, input_shape: Sequence[int]) -> Cost:
    """The :class:`Cost` of a built model (placeholder weights or real) on ``input_shape``:
    Python integers, so no size overflows."""
    itemsize = np.dtype(getattr(model, "dtype", None) or np.float32).itemsize
    params = sum(math.prod(np.shape(v)) for v in model.state_dict().values()) \
        if hasattr(model, "state_dict") else model.param_count()
    shape = tuple(int(s) for s in input_shape)
    numbers = _outputs(model, shape)[0] + math.prod(shape)
    return Cost(params, numbers * itemsize, itemsize)


def check_cost(cost: Cost, what: str, *, params: bool = True,
               error: type[Exception] = ArchitectureError) -> None:
    """Refuse (``error``, one line naming the value, the limit and its override) a cost over
    ``max_params`` (unless ``params`` is False: a model file brings its own weights) or
    ``max_activation_bytes``."""
    if params:
        limits.check("max_params", cost.params, f"{what}: its parameter count", error)
    limits.check("max_activation_bytes", cost.activation_bytes,
                 f"{what}: its activations per image", error)
