"""The model table (Keras' summary, with the lecture's formulas): per layer its per-image output
shape, parameters with their formula, multiply-adds and activation memory.

A block (a nested Sequential) is one row with its totals, its layers indented under it and
labelled '3.0', '3.1', ...; the totals add the model's own layers only, so nothing counts twice.
The numbers come from the walk of :func:`convscope.inspect.explain.explain` (the layers'
``explain`` hooks), so the table and the walk always agree.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from ..words import nbytes_text, plural
from .explain import Step, explain

Shape = tuple[int, ...]

__all__ = ["Summary", "SummaryRow", "summarize"]


@dataclass(frozen=True)
class SummaryRow:
    """One layer of a summary: its per-image output shape, parameters, multiply-adds, memory.

    ``index`` is its position in its container, ``label`` its place in the model ('3', or '3.1'
    inside block 3), ``depth`` 0 for the model's own layers, 1 inside a block, ...
    """

    index: int
    layer: str
    output_shape: Shape
    params: int
    formula: str
    macs: int
    activation_bytes: int
    label: str = ""
    depth: int = 0


@dataclass(frozen=True)
class Summary:
    """The model table; ``str()`` draws it.  Totals add the rows of depth 0 (a block's row holds
    the totals of the rows under it)."""

    input_shape: Shape
    rows: tuple[SummaryRow, ...]
    itemsize: int

    @property
    def total_params(self) -> int:
        return sum(r.params for r in self.rows if r.depth == 0)

    @property
    def total_macs(self) -> int:
        return sum(r.macs for r in self.rows if r.depth == 0)

    @property
    def activation_bytes(self) -> int:
        return sum(r.activation_bytes for r in self.rows if r.depth == 0)

    def __str__(self) -> str:
        head = ("#", "layer", "output", "params", "formula", "mult-adds", "activations")
        body = [(r.label or str(r.index), "  " * r.depth + r.layer,
                 "x".join(map(str, r.output_shape)), f"{r.params:,}", r.formula, f"{r.macs:,}",
                 nbytes_text(r.activation_bytes)) for r in self.rows]
        body.insert(0, ("", "input", "x".join(map(str, self.input_shape)), "", "", "",
                        nbytes_text(int(np.prod(self.input_shape)) * self.itemsize)))
        widths = [max(len(row[i]) for row in [head] + body) for i in range(len(head))]
        right = {3, 5, 6}

        def line(row: Sequence[str]) -> str:
            return "  ".join(c.rjust(w) if i in right else c.ljust(w)
                             for i, (c, w) in enumerate(zip(row, widths))).rstrip()

        rule = "-" * len(line(head))
        out = [line(head), rule] + [line(r) for r in body] + [rule]
        out.append(f"total: {self.total_params:,} parameters "
                   f"({nbytes_text(self.total_params * self.itemsize)}), {self.total_macs:,} "
                   f"mult-adds and {nbytes_text(self.activation_bytes)} of activations per image")
        return "\n".join(out)

    __repr__ = __str__


def summarize(model: Any, input_shape: Sequence[int] | None = None) -> Summary:
    """The table of ``model`` (a Sequential) on a per-image ``input_shape`` (default: the
    model's); byte counts in the model's ``dtype``."""
    walk = explain(model, input_shape)
    rows: list[SummaryRow] = []
    _rows(model.children(), walk.steps, 0, rows)
    return Summary(walk.input_shape, tuple(rows), walk.itemsize)


def _rows(children: Sequence[tuple[str, Any]], steps: Sequence[Step], depth: int,
          rows: list[SummaryRow]) -> None:
    for (_, layer), step in zip(children, steps):
        inner = layer.children()
        # a block (or any multi-line repr) is written by its class name and count of layers
        name = (f"{layer.name} ({plural(len(inner), 'layer')})" if inner or "\n" in step.layer
                else step.layer)
        rows.append(SummaryRow(step.index, name, step.output_shape, step.params,
                               layer.param_formula(), step.macs, step.activation_bytes,
                               step.label, depth))
        _rows(inner, step.steps, depth + 1, rows)
