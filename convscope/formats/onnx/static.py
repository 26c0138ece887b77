"""The small shape computations exporters write in front of a Reshape, evaluated at import.

``x.view(x.size(0), -1)`` exports (with a dynamic batch) as Shape -> Gather -> Unsqueeze ->
Concat(·, [-1]) -> Reshape.  The reader evaluates such nodes twice, for a batch of 2 and of 3
(the per-image shape is known), so a value that follows the batch is told apart from a constant:
:func:`canonical_target` turns the pair into a Reshape target with 0 ("copy the batch axis")
where it follows the batch.  Anything that is neither is an error naming the node.
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np

__all__ = ["STATIC_OPS", "evaluate", "canonical_target", "BATCHES"]

#: The two batch sizes the shape nodes are evaluated for.
BATCHES = (2, 3)
Pair = tuple[np.ndarray, np.ndarray]


def _gather(a: dict, x: np.ndarray, i: np.ndarray) -> np.ndarray:
    return np.take(x, i, axis=int(a.get("axis", 0)))


def _unsqueeze(a: dict, x: np.ndarray, axes: np.ndarray | None = None) -> np.ndarray:
    axes = a.get("axes") if axes is None else axes
    out = x
    for ax in sorted(int(v) % (x.ndim + len(axes)) for v in axes):
        out = np.expand_dims(out, ax)
    return out


def _squeeze(a: dict, x: np.ndarray, axes: np.ndarray | None = None) -> np.ndarray:
    axes = a.get("axes") if axes is None else axes
    return np.squeeze(x) if axes is None else np.squeeze(x, tuple(int(v) for v in axes))


def _concat(a: dict, *xs: np.ndarray) -> np.ndarray:
    return np.concatenate(xs, axis=int(a.get("axis", 0)))


def _slice(a: dict, x: np.ndarray, starts: np.ndarray, ends: np.ndarray,
           axes: np.ndarray | None = None, steps: np.ndarray | None = None) -> np.ndarray:
    axes = range(len(starts)) if axes is None else axes
    steps = [1] * len(starts) if steps is None else steps
    index = [slice(None)] * x.ndim
    for s, e, ax, st in zip(starts, ends, axes, steps):
        index[int(ax)] = slice(int(s), int(e), int(st))
    return x[tuple(index)]


_BINARY = {"Mul": np.multiply, "Add": np.add, "Sub": np.subtract, "Div": np.floor_divide}

#: ONNX operator -> f(attrs, *inputs) on concrete arrays (Shape is handled by the reader).
STATIC_OPS: dict[str, Callable[..., np.ndarray]] = {
    "Gather": _gather, "Unsqueeze": _unsqueeze, "Squeeze": _squeeze, "Concat": _concat,
    "Slice": _slice, "Cast": lambda a, x: x, "Identity": lambda a, x: x,
    **{op: (lambda f: lambda a, x, y: f(x, y))(f) for op, f in _BINARY.items()},
}


def evaluate(op: str, attrs: dict[str, Any], inputs: list[Pair | None]) -> Pair:
    """One shape node for both batch sizes; ``inputs`` are (batch 2, batch 3) pairs (None: an
    omitted optional input)."""
    f = STATIC_OPS[op]
    return tuple(f(attrs, *[None if v is None else np.asarray(v[k]) for v in inputs])
                 for k in range(2))  # type: ignore[return-value]


def canonical_target(pair: Pair) -> np.ndarray:
    """A Reshape target as one int64 vector: 0 where it equals the batch (2, then 3), the value
    where it is the same for both; ValueError otherwise."""
    a, b = (np.asarray(v, np.int64).reshape(-1) for v in pair)
    out = []
    for u, v in zip(a, b):
        if u == v:
            out.append(int(u))
        elif (u, v) == BATCHES:
            out.append(0)
        else:
            raise ValueError(f"the Reshape target depends on the batch size ({a.tolist()} for a "
                             f"batch of {BATCHES[0]}, {b.tolist()} for {BATCHES[1]}); only "
                             "flattening to (N, -1) is supported")
    return np.array(out, np.int64)
