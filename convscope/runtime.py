"""Run-time state: the array module of an array (NumPy here, CuPy when the input lives on a
GPU), and grad mode.

Layers never hard-code ``numpy`` for array math; they ask ``xp_of(x)`` so that the same code runs
on CuPy arrays unchanged.

Grad mode (:func:`no_grad`, :func:`grad_enabled`) is per thread, as the workspace is: inference
in one thread never strips the forward caches of a training step in another.
"""

from __future__ import annotations

import contextlib
import threading
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


class _GradMode(threading.local):
    """Grad mode of the calling thread: each thread starts enabled (the class attribute), so
    ``no_grad`` in one thread never changes another's, as the workspace is per thread too."""

    enabled = True


_grad_mode = _GradMode()


def grad_enabled() -> bool:
    """Whether layers keep what their backward pass needs, in this thread (see :func:`no_grad`)."""
    return _grad_mode.enabled


@contextlib.contextmanager
def no_grad() -> Iterator[None]:
    """Within this block, ``forward`` in this thread keeps no caches: inference only, less
    memory.  Other threads keep their own mode."""
    previous = _grad_mode.enabled
    _grad_mode.enabled = False
    try:
        yield
    finally:
        _grad_mode.enabled = previous
