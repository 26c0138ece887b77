"""Concat: parallel branches on the same input, joined along the channels (Inception's module,
Szegedy et al. 2014; DenseNet's concat(x, f(x)) with an empty branch).

State-dict keys 'branches.<k>.<i>.*' (a torch ModuleList named ``branches``).  Backward: branch k
gets its own channels of dy, dx = Σ_k d branch_k.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from .. import workspace
from ..errors import ShapeError
from ..inspect.explain import ExplainContext, Explanation, Told
from ..inspect.explain import explain as explain_model
from ..runtime import xp_of
from ..words import volume
from .base import Array, Layer, Shape
from .branching import (BlockLike, Branching, add_fresh, arithmetic, as_block, branch_entries,
                        branch_steps, channels_last, indent, kept_bytes, nested_context,
                        read_branch)
from .container import Sequential
from .registry import lookup, register_layer

__all__ = ["Concat"]


@register_layer("concat", onnx_ops=("Concat",), torch=("ConvscopeConcat",))
class Concat(Branching):
    """Parallel branches on the same x, their outputs joined along the channels (Inception).

    x (N, C, H, W) -> y (N, C_0 + C_1 + ..., H', W'): every branch must give the same H' × W'
    (a mismatch is a ShapeError with each branch's arithmetic); any rank >= 2 joins on axis 1.
    Backward: branch k gets its own channels of dy, dx = Σ_k branch_k.backward(dy_k).  An empty
    branch (``Sequential()``) is the identity: DenseNet's concat(x, f(x)).
    """

    def __init__(self, *branches: BlockLike) -> None:
        super().__init__()
        if not branches:
            raise ValueError("Concat: needs at least one branch, e.g. Concat(Conv2D(None, 8, 1), "
                             "Conv2D(None, 8, 3, padding=1))")
        self.branch_list = [as_block(b, "Concat", f"branch {i}") for i, b in enumerate(branches)]

    def children(self) -> list[tuple[str, Layer]]:
        """[('branches.0', branch 0), ('branches.1', branch 1), ...]."""
        return [(f"branches.{i}", b) for i, b in enumerate(self.branch_list)]

    def output_shape(self, input_shape: Shape) -> Shape:
        shape = tuple(input_shape)
        shapes = self._branch_shapes(shape)
        first = shapes[0]
        if len(first) < 1 or any(len(s) != len(first) or s[1:] != first[1:] for s in shapes):
            raise self._mismatch(shape, shapes)
        return (sum(s[0] for s in shapes), *first[1:])

    def _mismatch(self, shape: Shape, shapes: Sequence[Shape]) -> ShapeError:
        got = ", ".join(f"branch {i} gives {volume(s)}" for i, s in enumerate(shapes))
        lines = [f"Concat: from {volume(shape)}, {got}; joining along the channels needs "
                 "every other side equal (the same height × width)"]
        lines += [arithmetic(name, b, shape) for name, b in self.children()]
        return ShapeError("\n".join(lines))

    # -- the protocol --------------------------------------------------------------------------
    def forward(self, x: Array) -> Array:
        """(N, C, H, W) -> (N, Σ C_k, H', W'): each branch's output in its own channels."""
        outs = [self._forward(name, b, x) for name, b in self.children()]
        first = outs[0]
        if first.ndim < 2 or any(o.ndim != first.ndim or o.shape[2:] != first.shape[2:]
                                 or o.shape[0] != first.shape[0] for o in outs):
            raise self._mismatch(tuple(x.shape[1:]), [tuple(o.shape[1:]) for o in outs])
        xp = xp_of(first)
        sizes = [int(o.shape[1]) for o in outs]
        y = workspace.empty((first.shape[0], sum(sizes), *first.shape[2:]), first.dtype, xp,
                            all(channels_last(o) for o in outs))
        start = 0
        for o, c in zip(outs, sizes):
            y[:, start:start + c] = o
            start += c
        return self._keep(sizes, y)

    def backward(self, dy: Array, input_grad: bool = True) -> Array | None:
        """dy (N, Σ C_k, H', W') -> dx = Σ_k branch_k.backward(dy[:, channels of k]) (N, C, H, W);
        ``input_grad=False`` skips dx (returns None)."""
        sizes = self._take(dy)
        dx, start = None, 0
        for (_, b), c in zip(self.children(), sizes):
            d = self._backward(b, dy[:, start:start + c], input_grad)
            start += c
            if input_grad:
                dx = d if dx is None else add_fresh(dx, d)
        if dx is not None and len(sizes) == 1 and not self.branch_list[0].layers:
            dx = xp_of(dy).array(dx)  # the identity's dx is a view of dy: hand back an own array
        return dx

    # -- explain --
    def explain(self, input_shape: Shape | None = None, ctx: ExplainContext | bool | None = None,
                *, strict: bool = False) -> Explanation | Told:
        """``cat.explain(shape)``: the lecture's walk (an Explanation).  As the hook: each
        branch's steps ('3.branches.0.0', ...) under the join, '5×5×3 + 5×5×2 → 5×5×5'."""
        if not isinstance(ctx, ExplainContext):
            return explain_model(self, input_shape, strict or bool(ctx))
        shape = tuple(int(s) for s in input_shape)
        steps = branch_steps(self, shape, ctx)
        outs = [step.output_shape for step in steps]
        out = self.output_shape(shape)  # a mismatch raises, with each branch's arithmetic
        macs = sum(step.macs for step in steps)
        many = "es" if len(steps) > 1 else ""
        text = (f"CONCAT: {len(steps)} branch{many} side by side: {volume(shape)} → "
                f"{volume(out)}; {self.param_count():,} parameters, {macs:,} multiply-adds (each "
                "branch below)")
        depth = " + ".join(str(o[0]) for o in outs)
        joined = " + ".join(volume(o) for o in outs)
        text += (f"\njoin: {joined} → {volume(out)}: the depths add, "
                 f"{depth} = {out[0]}; each branch gets its own slice of the gradient back")
        return ctx.told("CONCAT", text, out, macs, steps=steps,
                        activation_bytes=kept_bytes(steps, out, ctx))

    # -- ONNX --
    def to_onnx(self, g: Any, x: str, input_shape: Shape) -> str:
        """Each branch's nodes ('<prefix>.branches.<k>.*'), then Concat on axis 1."""
        shape = tuple(input_shape)
        outs = [g.emit(name, b, x, shape) for name, b in self.children()]
        return g.node("Concat", outs, axis=1)

    @classmethod
    def from_onnx(cls, node: Any, g: Any, input_shape: Shape) -> Layer | None:
        """None: the graph importer finds the paths that meet at a Concat node and builds
        ``Concat(*branches)`` from them."""
        return None

    # -- PyTorch --
    def to_torch(self, torch: Any) -> Any:
        """convscope's ConvscopeConcat (formats/torch/modules.py): torch.cat of the branches."""
        return torch.ConvscopeConcat([torch.child_module(name, b) for name, b in self.children()])

    @classmethod
    def from_torch(cls, module: Any, torch: Any) -> Layer:
        return cls(*[torch.child_layer(f"branches.{k}", b)
                     for k, b in enumerate(module.branches)])

    # -- JSON --
    spec_keys = ("branches",)

    def to_spec(self) -> dict[str, Any]:
        """branches: one list of layer entries per branch ([] for the identity)."""
        return {"branches": [branch_entries(b) for b in self.branch_list]}

    @classmethod
    def from_spec(cls, spec: Any, ctx: Any) -> Layer:
        """``{"type": "concat", "branches": [[...], [...]]}``, each list built on the shape
        flowing in (entries named '3.branches.0.0', ...)."""
        branches = spec.get("branches")
        if not isinstance(branches, list) or not branches:
            raise spec.error(f"'branches' must be a non-empty list of layer lists, got "
                             f"{branches!r}")
        return cls(*[Sequential(*nested_context(ctx, f"branches.{k}").build(
            read_branch(spec, f"branches[{k}]", b, empty=True))) for k, b in enumerate(branches)])

    @classmethod
    def example(cls, dtype: Any = np.float32) -> tuple[Layer, Shape]:
        """Inception-like on 5×5×2: a 1×1 conv (3), a 3×3 conv + tanh (2), a 3×3 max pool (2):
        -> 5×5×7."""
        conv = lookup("conv").cls
        layer = cls(conv(2, 3, 1, dtype=dtype, init="torch", seed=0),
                    [conv(2, 2, 3, padding=1, dtype=dtype, init="torch", seed=1),
                     lookup("tanh").cls()],
                    lookup("maxpool").cls(3, 1, 1))
        layer.build((2, 5, 5))
        return layer, (2, 5, 5)

    def __repr__(self) -> str:
        inner = "\n".join(f"  ({i}) {indent(repr(b))}" for i, b in enumerate(self.branch_list))
        return f"Concat(\n{inner}\n)"
