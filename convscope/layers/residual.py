"""Residual: y = block(x) + shortcut(x), ResNet's building block (He et al. 2015).

The shortcut is the identity (None) or a layer list such as a 1×1 strided conv + batch norm
(option B); state-dict keys 'block.<i>.*' and 'shortcut.<i>.*'.  Backward: dx = d block +
d shortcut, the gradient flowing down both branches and adding up where they met.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..errors import ShapeError
from ..inspect.explain import ExplainContext, Explanation, Told
from ..inspect.explain import explain as explain_model
from ..words import volume
from .base import Array, Layer, Shape
from .branching import (BlockLike, Branching, add_fresh, arithmetic, as_block, branch_entries,
                        branch_steps, indent, kept_bytes, nested_context, read_branch)
from .container import Sequential
from .registry import lookup, register_layer

__all__ = ["Residual"]


@register_layer("residual", onnx_ops=("Add",), torch=("ConvscopeResidual",))
class Residual(Branching):
    """y = block(x) + shortcut(x), the shortcut the identity when None (He et al. 2015).

    x (N, C, H, W) -> y (N, C', H', W'), the shape both branches give (a mismatch is a
    ShapeError with each branch's arithmetic).  A shortcut that changes the shape is a layer such
    as ``Sequential(Conv2D(C, C', 1, stride=2, bias=False), BatchNorm2D(C'))`` (ResNet's
    option B).  Backward: dx = block.backward(dy) + shortcut.backward(dy) (+ dy for the
    identity).  ``block`` and ``shortcut`` are Sequentials (a layer or list is wrapped).
    """

    def __init__(self, block: BlockLike, shortcut: BlockLike | None = None) -> None:
        super().__init__()
        self.block = as_block(block, "Residual", "block")
        self.shortcut = None if shortcut is None else as_block(shortcut, "Residual", "shortcut")

    def children(self) -> list[tuple[str, Layer]]:
        """[('block', block), ('shortcut', shortcut)]; no shortcut entry for the identity."""
        return [("block", self.block)] + ([] if self.shortcut is None else
                                          [("shortcut", self.shortcut)])

    def output_shape(self, input_shape: Shape) -> Shape:
        shape = tuple(input_shape)
        shapes = self._branch_shapes(shape)
        b = shapes[0]
        s = shapes[1] if self.shortcut is not None else shape
        if b != s:
            raise self._mismatch(shape, b, s)
        return b

    def _mismatch(self, shape: Shape, b: Shape, s: Shape) -> ShapeError:
        what = "the shortcut" if self.shortcut is not None else "the identity shortcut (x itself)"
        fix = ("" if self.shortcut is not None else "; give a shortcut that maps x to the "
               "block's shape, e.g. Sequential(Conv2D(C, C', 1, stride=S, bias=False), "
               "BatchNorm2D(C'))")
        lines = [f"Residual: the block gives {volume(b)} but {what} gives {volume(s)} "
                 f"from {volume(shape)}; y = block(x) + shortcut(x) needs them equal{fix}",
                 arithmetic("block", self.block, shape)]
        if self.shortcut is not None:
            lines.append(arithmetic("shortcut", self.shortcut, shape))
        return ShapeError("\n".join(lines))

    # -- the protocol --------------------------------------------------------------------------
    def forward(self, x: Array) -> Array:
        """(N, C, H, W) -> block(x) + shortcut(x), (N, C', H', W')."""
        a = self._forward("block", self.block, x)
        b = x if self.shortcut is None else self._forward("shortcut", self.shortcut, x)
        if a.shape != b.shape:
            raise self._mismatch(tuple(x.shape[1:]), tuple(a.shape[1:]), tuple(b.shape[1:]))
        return self._keep(None, add_fresh(a, b))

    def backward(self, dy: Array, input_grad: bool = True) -> Array | None:
        """dy (N, C', H', W') -> dx = d block + d shortcut (N, C, H, W); adds every branch's
        parameter gradients.  ``input_grad=False`` skips dx (returns None)."""
        self._take(dy)
        da = self._backward(self.block, dy, input_grad)
        if self.shortcut is None:
            return add_fresh(da, dy) if input_grad else None
        db = self._backward(self.shortcut, dy, input_grad)
        return add_fresh(da, db) if input_grad else None

    # -- explain --
    def explain(self, input_shape: Shape | None = None, ctx: ExplainContext | bool | None = None,
                *, strict: bool = False) -> Explanation | Told:
        """``res.explain(shape)``: the lecture's walk (an Explanation).  As the hook: the block's
        steps ('3.block.0', ...) and the shortcut's ('3.shortcut.0', ...) under the merge,
        'shortcut: 16×16×32 + 16×16×32 → 16×16×32'."""
        if not isinstance(ctx, ExplainContext):
            return explain_model(self, input_shape, strict or bool(ctx))
        shape = tuple(int(s) for s in input_shape)
        steps = branch_steps(self, shape, ctx)
        b = steps[0].output_shape
        s = steps[1].output_shape if self.shortcut is not None else shape
        if b != s:
            raise self._mismatch(shape, b, s)
        macs = sum(step.macs for step in steps)
        what = ("x + block(x)" if self.shortcut is None else "block(x) + shortcut(x)")
        text = (f"RESIDUAL: y = {what}: {volume(shape)} → {volume(b)}; "
                f"{self.param_count():,} parameters, {macs:,} multiply-adds (the "
                f"{'block' if self.shortcut is None else 'block and the shortcut'} below)")
        n = int(np.prod(b))
        short = ("x itself, the identity" if self.shortcut is None else
                 f"the shortcut's output ({steps[1].label} below)")
        text += (f"\nshortcut: {volume(b)} + {volume(s)} → {volume(b)}: the block's output plus "
                 f"{short}, {n:,} additions; the gradient flows back down both and adds up")
        return ctx.told("RESIDUAL", text, b, macs, steps=steps,
                        activation_bytes=kept_bytes(steps, b, ctx))

    # -- ONNX --
    def to_onnx(self, g: Any, x: str, input_shape: Shape) -> str:
        """The block's nodes ('<prefix>.block.*'), the shortcut's ('<prefix>.shortcut.*'), then
        Add."""
        shape = tuple(input_shape)
        a = g.emit("block", self.block, x, shape)
        b = x if self.shortcut is None else g.emit("shortcut", self.shortcut, x, shape)
        return g.node("Add", [a, b])

    @classmethod
    def from_onnx(cls, node: Any, g: Any, input_shape: Shape) -> Layer | None:
        """None: an Add node alone is not a Residual; the graph importer finds the two paths
        that meet at it and builds ``Residual(block, shortcut)`` from them."""
        return None

    # -- PyTorch --
    def to_torch(self, torch: Any) -> Any:
        """convscope's ConvscopeResidual (formats/torch/modules.py): block + shortcut or x."""
        short = None if self.shortcut is None else torch.child_module("shortcut", self.shortcut)
        return torch.ConvscopeResidual(torch.child_module("block", self.block), short)

    @classmethod
    def from_torch(cls, module: Any, torch: Any) -> Layer:
        short = module.shortcut
        return cls(torch.child_layer("block", module.block),
                   None if short is None else torch.child_layer("shortcut", short))

    # -- JSON --
    spec_keys = ("block", "shortcut")

    def to_spec(self) -> dict[str, Any]:
        """block: its layers' entries; shortcut: the same, or null for the identity."""
        return {"block": branch_entries(self.block),
                "shortcut": None if self.shortcut is None else branch_entries(self.shortcut)}

    @classmethod
    def from_spec(cls, spec: Any, ctx: Any) -> Layer:
        """``{"type": "residual", "block": [...], "shortcut": [...] | null}``, each list built on
        the shape flowing in (entries named '3.block.0', '3.shortcut.0')."""
        block = read_branch(spec, "block", spec.get("block"), empty=False)
        short = spec.get("shortcut")
        short = None if short is None else read_branch(spec, "shortcut", short, empty=False)
        made = Sequential(*nested_context(ctx, "block").build(block))
        return cls(made, None if short is None else
                   Sequential(*nested_context(ctx, "shortcut").build(short)))

    @classmethod
    def example(cls, dtype: Any = np.float32) -> tuple[Layer, Shape]:
        """A ResNet basic block with a stride-2 projection shortcut on 5×5×2 (-> 3×3×4)."""
        conv, bn, relu = lookup("conv").cls, lookup("batchnorm").cls, lookup("relu").cls
        block = Sequential(conv(2, 4, 3, stride=2, padding=1, bias=False, dtype=dtype,
                                init="torch", seed=0), bn(4, dtype=dtype), relu(),
                           conv(4, 4, 3, padding=1, dtype=dtype, init="torch", seed=1))
        short = Sequential(conv(2, 4, 1, stride=2, bias=False, dtype=dtype, init="torch", seed=2),
                           bn(4, dtype=dtype))
        layer = cls(block, short)
        layer.build((2, 5, 5))
        return layer, (2, 5, 5)

    def __repr__(self) -> str:
        inner = indent(repr(self.block))
        short = "identity" if self.shortcut is None else indent(repr(self.shortcut))
        return f"Residual(\n  (block) {inner}\n  (shortcut) {short}\n)"
