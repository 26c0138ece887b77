"""What the branching layers share (layers/residual.py, layers/concat.py): the branches as
``children()`` (each a :class:`~convscope.layers.container.Sequential`), the parameter, gradient and
buffer views under the branches' prefixes, modes, building through the branches, dtype, and the
helpers of their hooks (the merge without writing in place, the mismatch's arithmetic, the
nested JSON lists, the explain steps per branch).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Sequence

import numpy as np

from .. import workspace
from ..errors import ShapeError
from ..inspect.explain import ExplainContext
from ..inspect.explain import explain as explain_model
from ..runtime import xp_of
from ..words import volume
from .base import Array, Layer, Shape
from .container import Sequential
from .registry import require_kind

__all__ = ["Branching", "BlockLike", "as_block", "add_fresh", "channels_last", "arithmetic",
           "branch_steps", "kept_bytes", "branch_entries", "read_branch", "nested_context",
           "indent"]

BlockLike = Layer | Sequence[Layer]


def as_block(value: Any, owner: str, what: str) -> Sequential:
    """A branch as a Sequential: itself, a single layer wrapped, or a list of layers."""
    if isinstance(value, Sequential):
        return value
    if isinstance(value, Layer):
        return Sequential(value)
    if isinstance(value, (list, tuple)):
        for i, layer in enumerate(value):
            if not isinstance(layer, Layer):
                raise TypeError(f"{owner}: {what} item {i} is a {type(layer).__name__}, "
                                "not a layer")
        return Sequential(*value)
    raise TypeError(f"{owner}: {what} must be a layer, a Sequential or a list of layers, got "
                    f"{type(value).__name__}")


def channels_last(a: Array) -> bool:
    """Whether a 4-D array keeps its channels innermost (the merged output keeps that layout)."""
    s = a.strides
    return a.ndim == 4 and a.shape[1] > 1 and abs(s[1]) <= min(abs(s[2]), abs(s[3]))


def add_fresh(a: Array, b: Array) -> Array:
    """a + b in a fresh array: never in place, since a branch may keep its output for its
    backward (a Sigmoid) and the identity shortcut's b is the caller's x or dy."""
    xp = xp_of(a)
    return xp.add(a, b, out=workspace.empty(a.shape, a.dtype, xp, channels_last(a)))


def arithmetic(name: str, branch: Sequential, shape: Shape) -> str:
    """The lecture's walk of one branch on ``shape``, one line per layer, for a mismatch error."""
    if not branch.layers:
        return f"  {name}: the identity, {volume(shape)} → {volume(shape)}"
    try:
        leaves = explain_model(branch, shape).leaves()
    except ShapeError as e:
        return f"  {name}: {e}"
    return "\n".join(f"  [{name}.{s.label}] {s.text.splitlines()[0]}" for s in leaves)


class Branching(Layer):
    """What Residual and Concat share: the branches as ``children()``, the parameter, gradient
    and buffer views under their prefixes, modes, building, dtype."""

    # -- traits --
    input_grad_optional = True  # backward(dy, input_grad=False) lets every branch skip dx

    # -- the views ------------------------------------------------------------------------------
    def _view(self, what: str) -> dict[str, Array]:
        return {f"{name}.{k}": v for name, branch in self.children()
                for k, v in getattr(branch, what).items()}

    @property  # type: ignore[override]
    def params(self) -> dict[str, Array]:
        """Every parameter, keyed '<branch>.<index>.<name>' as in PyTorch; the arrays themselves."""
        return self._view("params")

    @params.setter
    def params(self, value: dict) -> None:  # Layer.__init__ assigns {}; the branches hold them
        pass

    @property  # type: ignore[override]
    def grads(self) -> dict[str, Array]:
        return self._view("grads")

    @grads.setter
    def grads(self, value: dict) -> None:
        pass

    @property  # type: ignore[override]
    def buffers(self) -> dict[str, Array]:
        return self._view("buffers")

    @buffers.setter
    def buffers(self, value: dict) -> None:
        pass

    @property  # type: ignore[override]
    def dtype(self) -> np.dtype:
        """Its parameters' (or float buffers') dtype; float32 when it has none."""
        for v in (*self.params.values(), *self.buffers.values()):
            if np.dtype(v.dtype).kind == "f":
                return np.dtype(v.dtype)
        return np.dtype(np.float32)

    def train(self, mode: bool = True) -> "Branching":
        self.training = mode
        for _, branch in self.children():
            branch.train(mode)
        return self

    def zero_grad(self) -> None:
        for _, branch in self.children():
            branch.zero_grad()

    def reset_parameters(self, rng: np.random.Generator) -> None:
        """Draw new weights for every layer inside, depth first (Sequential(..., seed=...))."""
        stack = [layer for _, layer in reversed(self.children())]
        while stack:
            layer = stack.pop()
            if hasattr(layer, "reset_parameters") and layer.params and not layer.children():
                layer.reset_parameters(rng)
            stack.extend(child for _, child in reversed(layer.children()))

    # -- shapes ----------------------------------------------------------------------------------
    def build(self, input_shape: Shape, rng: np.random.Generator | None = None) -> Shape:
        """Build every branch on ``input_shape`` (in_channels inferred), then check they meet."""
        shape = tuple(int(s) for s in input_shape)
        for name, branch in self.children():
            try:
                branch.build(shape, rng)
            except ShapeError as e:
                raise ShapeError(f"{self.name} {name}: {e}") from None
        return self.output_shape(shape)

    def build_virtual(self, input_shape: Shape) -> Shape:
        """build() with every parameter a placeholder (Layer.build_virtual)."""
        shape = tuple(int(s) for s in input_shape)
        for name, branch in self.children():
            try:
                branch.build_virtual(shape)
            except ShapeError as e:
                raise ShapeError(f"{self.name} {name}: {e}") from None
        return self.output_shape(shape)

    def _branch_shapes(self, input_shape: Shape) -> list[Shape]:
        shape, out = tuple(input_shape), []
        for name, branch in self.children():
            try:
                out.append(tuple(branch.output_shape(shape)))
            except ShapeError as e:
                raise ShapeError(f"{self.name} {name}: {e}") from None
        return out

    def _forward(self, name: str, branch: Sequential, x: Array) -> Array:
        try:
            return branch.forward(x)
        except ShapeError as e:
            raise ShapeError(f"{self.name} {name}: {e}") from None

    @staticmethod
    def _backward(branch: Sequential, dy: Array, input_grad: bool) -> Array | None:
        return branch.backward(dy, input_grad=input_grad)

    # -- the lecture's arithmetic --------------------------------------------------------------
    def param_formula(self) -> str:
        """The branches' parameter counts added up: 'block 9,248 + shortcut 576 = 9,824',
        'branch 0 27 + branch 2 74 = 101'; '' when none has parameters."""
        counted = [(name.replace("branches.", "branch "), b.param_count())
                   for name, b in self.children() if b.param_count()]
        if not counted:
            return ""
        if len(counted) == 1:
            return f"{counted[0][0]} {counted[0][1]:,}"
        return " + ".join(f"{name} {n:,}" for name, n in counted) + f" = {self.param_count():,}"

    def macs(self, input_shape: Shape) -> int:
        """Multiply-adds per image: the sum over the branches (the merge's additions are not
        multiply-adds and are not counted, as PyTorch's counters do)."""
        return sum(b.macs(tuple(input_shape)) for _, b in self.children())


def branch_steps(layer: Layer, shape: Shape, ctx: ExplainContext) -> list[Any]:
    """One step per branch, each walked from the same input (labels '<label>.<branch>')."""
    steps = []
    for i, (name, branch) in enumerate(layer.children()):
        (step,) = ctx.walk([(name, branch)], shape)
        steps.append(dataclasses.replace(step, index=i))
    return steps


def kept_bytes(steps: Sequence[Any], out: Shape, ctx: ExplainContext) -> int:
    """Bytes per image the branches keep plus the merged output (a new array)."""
    return sum(s.activation_bytes for s in steps) + int(np.prod(out)) * ctx.itemsize


def branch_entries(branch: Sequential) -> list[dict[str, Any]]:
    """A branch's JSON list: each layer's kind name and its ``to_spec``."""
    return [{"type": require_kind(layer, "saved").name, **layer.to_spec()}
            for layer in branch.layers]


def read_branch(spec: Any, key: str, value: Any, empty: bool) -> list[Any]:
    """A branch's layer list from a JSON entry, or the entry's error."""
    if not isinstance(value, list) or (not value and not empty):
        raise spec.error(f"'{key}' must be a {'' if empty else 'non-empty '}list of layer dicts, "
                         f"got {value!r}")
    return value


def nested_context(ctx: Any, name: str) -> Any:
    """The spec context for a branch: entries named '<entry>.<name>.<i>'."""
    return dataclasses.replace(ctx, prefix=f"{ctx.prefix}{name}.")


def indent(text: str) -> str:
    return text.replace("\n", "\n  ")

