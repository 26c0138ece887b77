"""The array module of an array: NumPy here, CuPy when the input lives on a GPU.

Layers never hard-code ``numpy`` for array math; they ask ``xp_of(x)`` so that the same code runs
on CuPy arrays unchanged.
"""

from __future__ import annotations

import contextlib
from typing import Any, Iterator

import numpy as np


def xp_of(*arrays: Any) -> Any:
    """The array namespace (``numpy`` or ``cupy``) of the first array given."""
    if len(arrays) == 1 and type(arrays[0]) is np.ndarray:  # the common case, fast
        return np
    for a in arrays:
        if a is not None and type(a).__module__.split(".")[0] == "cupy":
            import cupy  # noqa: PLC0415 - only when a CuPy array is actually passed

            return cupy
    return np


class _GradMode:
    enabled = True


def grad_enabled() -> bool:
    """Whether layers keep what their backward pass needs (see :func:`no_grad`)."""
    return _GradMode.enabled


@contextlib.contextmanager
def no_grad() -> Iterator[None]:
    """Within this block, ``forward`` keeps no caches: inference only, less memory."""
    previous = _GradMode.enabled
    _GradMode.enabled = False
    try:
        yield
    finally:
        _GradMode.enabled = previous
