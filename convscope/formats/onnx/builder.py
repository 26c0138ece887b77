"""The objects handed to the layers' ONNX hooks: :class:`GraphBuilder` (export) and
:class:`GraphReader` (import), and the optional onnx package behind them.

A layer's ``to_onnx(g, x, input_shape)`` appends nodes with ``g.node(op, inputs, **attrs)`` and
initializers with ``g.tensor(suffix, value)``, both named after the layer's state-dict prefix
('3.weight', '3.Conv'), and returns its output tensor's name; a container emits each child with
``g.emit(name, child, x, shape)``.  A kind's ``from_onnx(node, g, input_shape)`` reads attributes
with ``g.attrs(node)`` and weights with ``g.const(node, i, what)``.  Layers never import onnx:
only these objects touch it.
"""

from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

import numpy as np

from ...errors import ShapeError
from ...layers.base import Layer, Shape
from ...layers.registry import require_kind
from ...shapes import effective_kernel

__all__ = ["GraphBuilder", "GraphReader", "onnx_module", "HINT"]

HINT = "install it with: pip install 'convscope[onnx]'"


def onnx_module() -> Any:
    """The onnx package, or ImportError saying how to install it."""
    try:
        import onnx  # noqa: PLC0415 - optional; imported only when ONNX is used
    except ImportError as e:
        raise ImportError(f"ONNX support needs the onnx package; {HINT} ({e})") from None
    return onnx


def _to_numpy(a: Any) -> np.ndarray:
    return a.get() if type(a).__module__.split(".")[0] == "cupy" else np.asarray(a)


class GraphBuilder:
    """Collects nodes and initializers while the layers' ``to_onnx`` hooks run.

    ``opset`` (the graph's operator set) and ``dtype`` (float32 or float64, the initializers'
    type) are read-only for hooks; ``prefix`` is the current layer's state-dict name.
    """

    def __init__(self, onnx: Any, dtype: np.dtype, opset: int) -> None:
        self.onnx, self.dtype, self.opset = onnx, dtype, opset
        self.nodes: list[Any] = []
        self.inits: list[Any] = []
        self.prefix = ""
        self._names: set[str] = set()
        self._failed = ""

    def _name(self, suffix: str) -> str:
        return f"{self.prefix}.{suffix}" if self.prefix else suffix

    def tensor(self, suffix: str, value: Any, dtype: Any = None) -> str:
        """Add an initializer named '<prefix>.<suffix>' (the graph's dtype unless ``dtype``);
        return its name.  0-d values stay 0-d."""
        name = self._name(suffix)
        arr = np.array(_to_numpy(value), dtype=dtype or self.dtype, order="C")
        self.inits.append(self.onnx.numpy_helper.from_array(arr, name))
        return name

    def node(self, op: str, inputs: Sequence[str], **attrs: Any) -> str:
        """Append node ``op`` reading ``inputs``; return its output's name ('<prefix>.<op>', made
        unique with '_1', '_2', ... when a layer emits the same operator twice)."""
        out = base = self._name(op)
        n = 0
        while out in self._names:
            n += 1
            out = f"{base}_{n}"
        self._names.add(out)
        self.nodes.append(self.onnx.helper.make_node(op, list(inputs), [out], name=out, **attrs))
        return out

    def emit(self, name: str, layer: Layer, x: str, input_shape: Shape) -> str:
        """Run ``layer.to_onnx`` on tensor ``x`` as child ``name`` of the current layer (its
        names become '<prefix>.<name>.*'); return the output's name.

        Only a registered kind is exported (an unregistered subclass of ReLU would come back
        as a ReLU); errors get 'layer <path>: ' in front, once, at the outermost layer.
        """
        outer = self.prefix
        self.prefix = self._name(name)
        try:
            require_kind(layer, "exported to ONNX")
            return layer.to_onnx(self, x, tuple(input_shape))
        except (TypeError, ValueError) as e:
            self._failed = self._failed or self.prefix  # the innermost layer's path
            if outer:
                raise
            where, self._failed = self._failed, ""
            raise type(e)(f"export_onnx: layer {where}: {e}") from None
        finally:
            self.prefix = outer

    @staticmethod
    def pads(pads: Any) -> list[int]:
        """convscope's ((top, bottom), (left, right)) as ONNX's [top, left, bottom, right]."""
        (t, b), (l, r) = pads
        return [int(t), int(l), int(b), int(r)]


class GraphReader:
    """What the ``from_onnx`` hooks read: attributes, constant inputs and the graph's uses.

    ``dtype`` is the graph's float type (the layers' dtype); ``opset`` its operator set.
    """

    def __init__(self, onnx: Any, graph: Any, dtype: np.dtype, opset: int) -> None:
        self.onnx, self.graph, self.dtype, self.opset = onnx, graph, dtype, opset
        self.tensors = {t.name: onnx.numpy_helper.to_array(t) for t in graph.initializer}
        self.used = {n for node in graph.node for n in node.input} | {o.name for o in graph.output}
        self._pads: dict[int, tuple[list[int], str]] = {}

    def attrs(self, node: Any) -> dict[str, Any]:
        """The node's attributes as Python values (ints, floats, lists, bytes)."""
        get = self.onnx.helper.get_attribute_value
        return {a.name: get(a) for a in node.attribute}

    def const(self, node: Any, index: int, what: str, required: bool = True) -> np.ndarray | None:
        """Input ``index`` of ``node`` as an array: it must be an initializer or a Constant;
        None when it is absent and not ``required``."""
        if index >= len(node.input) or not node.input[index]:
            if required:
                raise ValueError(f"{what} is missing")
            return None
        name = node.input[index]
        if name not in self.tensors:
            raise ValueError(f"{what} {name!r} is computed in the graph; convscope needs it as an "
                             "initializer or Constant")
        return self.tensors[name]

    def output_used(self, node: Any, index: int) -> bool:
        """Whether output ``index`` of ``node`` (a mask, running statistics) is read anywhere."""
        return index < len(node.output) and bool(node.output[index]) \
            and node.output[index] in self.used

    def pad_before(self, node: Any) -> tuple[list[int], str] | None:
        """The Pad node folded into this Conv or AveragePool: ([top, left, bottom, right], mode
        in convscope's words: zeros, reflect, replicate, circular), or None."""
        return self._pads.get(id(node))

    def set_pad_before(self, node: Any, pad: tuple[list[int], str]) -> None:
        self._pads[id(node)] = pad

    def window_pads(self, node: Any, hw: Sequence[int], kernel: Sequence[int],
                    stride: Sequence[int], dilation: Sequence[int]) -> list[int]:
        """ONNX pads [t, l, b, r] of a Conv or pool node, resolving the deprecated auto_pad
        for the input size ``hw`` (SAME_UPPER puts the odd pixel at the end)."""
        a, op = self.attrs(node), node.op_type
        auto = a.get("auto_pad", b"NOTSET")
        auto = auto.decode() if isinstance(auto, bytes) else auto
        if auto in ("NOTSET", ""):
            pads = list(a.get("pads", [0, 0, 0, 0]))
            if len(pads) != 4:
                raise ValueError(f"{op}: pads {pads} is not 2-D ([top, left, bottom, right])")
            return pads
        if auto == "VALID":
            return [0, 0, 0, 0]
        if auto not in ("SAME_UPPER", "SAME_LOWER"):
            raise ValueError(f"{op}: unknown auto_pad {auto!r}")
        before, after = [], []
        for n, k, s, d in zip(hw, kernel, stride, dilation):
            total = max((math.ceil(n / s) - 1) * s + effective_kernel(k, d) - n, 0)
            small, big = total // 2, total - total // 2
            before.append(small if auto == "SAME_UPPER" else big)
            after.append(big if auto == "SAME_UPPER" else small)
        return before + after

    @staticmethod
    def f32(value: Any) -> float:
        """A float32 value (ONNX attributes are float32) as the shortest float printing it: 0.3,
        not 0.30000001192092896; converting back to float32 gives the same bits."""
        return float(str(np.float32(value)))

    @staticmethod
    def fill(layer: Layer, arrays: Mapping[str, Any]) -> Layer:
        """Copy ``arrays`` into the layer's parameters and buffers of the same names (cast to
        their dtype); a shape mismatch raises ShapeError naming the array."""
        own = dict(layer.params) | dict(layer.buffers)
        for k, v in arrays.items():
            v = np.asarray(v)
            if v.shape != own[k].shape:
                raise ShapeError(f"{layer!r} '{k}' has shape {v.shape}, the layer needs "
                                 f"{own[k].shape}")
            np.copyto(own[k], v, casting="unsafe")
        return layer
