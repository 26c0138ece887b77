"""The exceptions convscope raises."""

from __future__ import annotations


class ShapeError(ValueError):
    """A shape that does not fit: wrong channels, rank, a stride that does not fit, ...

    The message names the layer, the shape it got and the shape it needs, and where it is the
    lecture's arithmetic, the formula filled in.
    """
