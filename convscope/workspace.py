"""Memory reused across calls: scratch buffers for the convolution, and recycled arrays.

A training step on this kind of machine pays ~1.5 µs for every fresh 4 KiB page, and glibc hands
large freed arrays back to the OS, so an array allocated on every step is paid for page by page:
over a thousand page faults per LeNet-5 step, a quarter of its time.  Two remedies live here.

Scratch buffers (:func:`buffer`): the convolution writes its im2col columns, its padded input and
its col2im sums into one buffer per name, allocated once and reused.  It processes the batch in
chunks of images whose columns fit in :func:`budget` bytes (8 MiB by default, at least one image):
the columns take that much memory whatever the batch size.  Measured (bench/): chunks that fit
in the caches run faster than whole-batch GEMMs (2-4 MiB best on one idle core), while every
chunk is one more point where BLAS's threads wait for each other, which is costly when other
work shares the cores (8 MiB best there); 8 MiB is the compromise.  A buffer's contents are only
read back by the call that wrote them.

Recycled arrays (:func:`empty`): layer outputs and gradients come from a pool of arrays of the
same shape allocated in earlier steps.  An array is handed out again only when nothing else
refers to it: its reference count (CPython's ``sys.getrefcount``) shows that the pool alone holds
it, so no caller, view or cache can see it change.  Anything a caller keeps (an activation map
saved for a plot, a view of it) is never reused.  The pool keeps at most :func:`pool_limit` bytes
of arrays (least recently used go first); small arrays (< 64 KiB) and CuPy arrays (CuPy has its
own memory pool) are plain allocations.

Both are per thread and per array module and dtype; :func:`clear` frees them.
"""

from __future__ import annotations

import math
import sys
import threading
from collections import OrderedDict
from typing import Any

import numpy as np

DEFAULT_BUDGET = 8 * 2**20  # bytes of im2col columns per chunk of the batch
DEFAULT_POOL_LIMIT = 128 * 2**20  # bytes of recycled arrays kept
POOL_MIN_BYTES = 64 * 2**10  # smaller arrays come from malloc's own free lists

_state = {"budget": DEFAULT_BUDGET, "pool_limit": DEFAULT_POOL_LIMIT}
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


def pool_limit() -> int:
    """Bytes of recycled arrays the pool may keep (0: no pool)."""
    return _state["pool_limit"]


def set_pool_limit(nbytes: int) -> None:
    """Set the pool's size in bytes (0 turns recycling off); frees the pooled arrays."""
    if isinstance(nbytes, bool) or not isinstance(nbytes, int) or nbytes < 0:
        raise ValueError(f"pool limit must be an int >= 0 (bytes), got {nbytes!r}")
    _state["pool_limit"] = nbytes
    clear()


def chunk_size(n: int, bytes_per_image: int) -> int:
    """Images per chunk: as many as fit in the budget (at least 1), spread evenly over the batch.

    64 images of 295 KiB columns with an 8 MiB budget: 27 fit, so 3 chunks of 22.
    """
    if n <= 1:
        return 1
    fit = max(1, min(n, budget() // max(1, bytes_per_image)))
    chunks = -(-n // fit)
    return -(-n // chunks)


def _size(shape: tuple[int, ...]) -> int:
    return int(math.prod(shape))


def buffer(name: str, shape: tuple[int, ...], dtype: Any, xp: Any) -> Any:
    """A C-contiguous array of ``shape`` on the named scratch buffer; contents are undefined.

    The buffer grows to the largest request seen; a later request reuses its first bytes.
    """
    pool = getattr(_local, "buffers", None)
    if pool is None:
        pool = _local.buffers = {}
    size = _size(shape)
    key = (name, xp.__name__, np.dtype(dtype))
    flat = pool.get(key)
    if flat is None or flat.size < size:
        pool.pop(key, None)  # free the old one before allocating the new one
        flat = pool[key] = xp.empty(max(size, 1), dtype=dtype)
    return flat[:size].reshape(shape)


# ---------------------------------------------------------------------------------------------
# recycled arrays


def _free_refcount() -> int | None:
    """sys.getrefcount of a pooled array that only the pool holds, as seen in :func:`_take`
    (None where reference counts are absent or not exact, PyPy or free-threaded CPython: then
    nothing is recycled)."""
    if not hasattr(sys, "getrefcount") or not getattr(sys, "_is_gil_enabled", lambda: True)():
        return None
    probe = [np.empty(1)]
    for a in probe:
        return sys.getrefcount(a)
    return None


_FREE = _free_refcount()


def _take(arrays: list) -> Any:
    """A free array of the list, or None."""
    for a in arrays:
        if sys.getrefcount(a) <= _FREE:  # only the pool's list holds it
            return a
    return None


def empty(shape: tuple[int, ...], dtype: Any, xp: Any = np, channels_last: bool = False) -> Any:
    """An array of ``shape`` with undefined contents, recycled when one is free (see above).

    ``channels_last`` (4-D shapes only): the (N, C, H, W) result is a view of (N, H, W, C) memory.
    """
    if channels_last and len(shape) == 4:
        n, c, h, w = shape
        return empty((n, h, w, c), dtype, xp).transpose(0, 3, 1, 2)
    dtype = np.dtype(dtype)
    nbytes = math.prod(shape) * dtype.itemsize
    limit = _state["pool_limit"]
    if nbytes < POOL_MIN_BYTES or xp is not np or _FREE is None or nbytes > limit:
        return xp.empty(shape, dtype=dtype)
    shape = tuple(int(s) for s in shape)
    pool = getattr(_local, "arrays", None)
    if pool is None:
        pool = _local.arrays = OrderedDict()
        _local.pooled_bytes = 0
    key = (shape, dtype.str)
    arrays = pool.get(key)
    if arrays:
        a = _take(arrays)
        if a is not None:
            pool.move_to_end(key)
            return a
    _make_room(pool, nbytes, limit)
    a = np.empty(shape, dtype=dtype)
    if _local.pooled_bytes + nbytes <= limit:
        pool.setdefault(key, []).append(a)
        pool.move_to_end(key)
        _local.pooled_bytes += nbytes
    return a


def _make_room(pool: OrderedDict, nbytes: int, limit: int) -> None:
    """Drop free arrays, least recently used shapes first, until nbytes more fit the limit."""
    if _local.pooled_bytes + nbytes <= limit:
        return
    for key in list(pool):
        arrays = pool[key]
        for a in list(arrays):
            if sys.getrefcount(a) <= _FREE + 1:  # the list and this loop's copy of it
                del arrays[next(i for i, b in enumerate(arrays) if b is a)]  # by identity:
                # list.remove compares with ==, which is ambiguous for arrays
                _local.pooled_bytes -= a.nbytes
        if not arrays:
            del pool[key]
        if _local.pooled_bytes + nbytes <= limit:
            return


def clear() -> None:
    """Free this thread's scratch buffers and pooled arrays (callers keep what they hold)."""
    _local.buffers = {}
    _local.arrays = OrderedDict()
    _local.pooled_bytes = 0


def nbytes() -> int:
    """Bytes this thread's scratch buffers hold now."""
    pool = getattr(_local, "buffers", None) or {}
    return int(sum(a.nbytes for a in pool.values()))


def pooled_nbytes() -> int:
    """Bytes of arrays this thread's pool keeps (in use or free)."""
    return int(getattr(_local, "pooled_bytes", 0))
