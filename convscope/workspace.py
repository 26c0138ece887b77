"""Scratch buffers reused across calls: the convolution's im2col columns and padded input.

A training step on this kind of machine pays ~1.8 µs for every fresh 4 KiB page, so a
multi-megabyte temporary allocated on every call costs more than the arithmetic done in it.  The
convolution therefore writes its columns into one buffer per name, allocated once and reused, and
processes the batch in chunks of images whose columns fit in :func:`budget` bytes (16 MiB by
default; at least one image).  The memory the columns take is bounded by the budget whatever the
batch size; a larger budget means fewer, larger matrix multiplies.

Buffers are per thread (two threads never share one) and per array module (NumPy / CuPy) and
dtype.  Nothing here is visible in results: a buffer's contents are only ever read back by the
call that wrote them.
"""

from __future__ import annotations

import threading
from typing import Any

DEFAULT_BUDGET = 16 * 2**20  # bytes of im2col columns per chunk of the batch

_state = {"budget": DEFAULT_BUDGET}
_local = threading.local()


def budget() -> int:
    """Bytes the im2col columns of one chunk of the batch may take."""
    return _state["budget"]


def set_budget(nbytes: int) -> None:
    """Set the column budget in bytes (>= 1 MiB); frees the current buffers."""
    if isinstance(nbytes, bool) or not isinstance(nbytes, int) or nbytes < 2**20:
        raise ValueError(f"workspace budget must be an int of at least {2**20} bytes (1 MiB), "
                         f"got {nbytes!r}")
    _state["budget"] = nbytes
    clear()


def chunk_size(n: int, bytes_per_image: int) -> int:
    """Images per chunk: as many as fit in the budget (at least 1), spread evenly over the batch.

    64 images of 295 KiB columns with a 16 MiB budget: 56 fit, so 2 chunks of 32.
    """
    if n <= 1:
        return 1
    fit = max(1, min(n, budget() // max(1, bytes_per_image)))
    chunks = -(-n // fit)
    return -(-n // chunks)


def buffer(name: str, shape: tuple[int, ...], dtype: Any, xp: Any) -> Any:
    """A C-contiguous array of ``shape`` on the named reused buffer; contents are undefined.

    The buffer grows to the largest request seen; a later request reuses its first bytes.
    """
    pool = getattr(_local, "pool", None)
    if pool is None:
        pool = _local.pool = {}
    size = 1
    for s in shape:
        size *= int(s)
    key = (name, xp.__name__, str(dtype))
    flat = pool.get(key)
    if flat is None or flat.size < size:
        pool.pop(key, None)  # free the old one before allocating the new one
        flat = pool[key] = xp.empty(max(size, 1), dtype=dtype)
    return flat[:size].reshape(shape)


def clear() -> None:
    """Free this thread's buffers (they are reallocated on the next call that needs them)."""
    _local.pool = {}


def nbytes() -> int:
    """Bytes this thread's buffers hold now."""
    pool = getattr(_local, "pool", None) or {}
    return int(sum(a.nbytes for a in pool.values()))
