"""ONNX import: a graph of ONNX nodes back into a convscope Sequential, with Residual and
Concat blocks where its paths fork and meet again.

Three steps.  :class:`_Walk` reads the nodes once, in order, reducing equivalent forms: Constant
nodes become constants, Identity nodes vanish, a Pad folds into the Conv or AveragePool after
it, an Add of a constant after a MatMul becomes that MatMul's bias, the shape arithmetic in
front of a Reshape (Shape, Gather, Unsqueeze, Concat, ...) is evaluated (static.py).  Every
other node becomes one layer through the ``from_onnx`` hook of the kinds whose ``onnx_ops`` name
its operator (layers/registry.py; the first that does not return None wins: BatchNormalization
is BatchNorm2D on (C, H, W), BatchNorm1D on (C,) and (C, L)), on the per-image shape flowing in;
an Add of two computed tensors and a Concat along the channels are merges.  The result is a
DAG (formats/graph.py), whose forks and merges :func:`~convscope.formats.graph.decompose`
turns into nested blocks.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from ...errors import ShapeError
from ...layers.base import Layer
from ...layers.container import Sequential
from ...layers.registry import kinds_for_onnx_op, supported
from ...ops.padding import PAD_MODES
from ..graph import Graph, Node, assemble, decompose
from .builder import GraphReader, onnx_module
from .static import BATCHES, STATIC_OPS, Pair, canonical_target, evaluate

if TYPE_CHECKING:  # pragma: no cover
    import onnx

__all__ = ["import_onnx", "onnx_metadata", "load_proto", "layer_for", "IMPORT_MIN_OPSET"]

IMPORT_MIN_OPSET = 13
#: What the reader folds away before the layers' hooks see the graph (for "supported: ...").
CANONICAL = ("Pad (before Conv or AveragePool)", "Identity", "Constant",
             "Shape arithmetic before a Reshape (Add and Concat of paths from one fork are "
             "Residual and Concat blocks; an Add of a constant after MatMul is its bias)")
#: ONNX Pad modes in convscope's padding_mode words.
ONNX_PAD_MODES = {names.onnx: mode for mode, names in PAD_MODES.items()}


def load_proto(source: Any, who: str = "import_onnx") -> "onnx.ModelProto":
    """A ModelProto from a path, bytes or a ModelProto (external data is not loaded)."""
    onnx = onnx_module()
    if isinstance(source, onnx.ModelProto):
        return source
    if isinstance(source, (bytes, bytearray)):
        try:
            return onnx.load_model_from_string(bytes(source))
        except Exception as e:
            raise ValueError(f"{who}: the bytes are not an ONNX model ({e})") from None
    path = Path(source)
    if not path.is_file():
        raise FileNotFoundError(f"{who}: no file {str(path)!r}")
    try:
        return onnx.load_model(str(path), load_external_data=False)
    except Exception as e:
        raise ValueError(f"{who}: {str(path)!r} is not an ONNX model ({e})") from None


def onnx_metadata(source: Any) -> dict[str, str]:
    """The metadata_props of an ONNX model (a path, bytes or ModelProto) as a dict."""
    return {p.key: p.value for p in load_proto(source).metadata_props}


@dataclass
class Step:
    """One node of the graph; ``index`` is its position in the graph (for errors)."""

    index: int
    node: Any

    @property
    def where(self) -> str:
        n = self.node
        return f"import_onnx: node {self.index} ({n.name or n.op_type}, {n.op_type})"


def _read_pad(rd: GraphReader, node: Any, rank: int) -> tuple[list[int], str]:
    """A Pad node as ([top, left, bottom, right], padding mode), or ValueError."""
    a = rd.attrs(node)
    mode = a.get("mode", b"constant")
    mode = mode.decode() if isinstance(mode, bytes) else mode
    amounts = [int(v) for v in rd.const(node, 1, "Pad amounts")]
    axes = rd.const(node, 3, "Pad axes", required=False)
    if axes is not None:
        full = [0] * (2 * rank)
        for j, ax in enumerate(int(v) % rank for v in axes):
            full[ax], full[ax + rank] = amounts[j], amounts[j + len(axes)]
        amounts = full
    value = rd.const(node, 2, "Pad value", required=False)
    value = 0.0 if value is None else float(np.asarray(value).reshape(-1)[0])
    if len(amounts) != 8 or any(amounts[k] for k in (0, 1, 4, 5)) or min(amounts) < 0:
        raise ValueError(f"Pad {amounts}: only non-negative padding of the two spatial axes "
                         "of an (N, C, H, W) tensor is supported")
    if mode == "constant" and value != 0.0:
        raise ValueError(f"Pad with constant value {value}: convscope's Conv2D pads with zeros")
    if mode not in ONNX_PAD_MODES:
        raise ValueError(f"Pad mode {mode!r}: supported modes {sorted(ONNX_PAD_MODES)}")
    return [amounts[2], amounts[3], amounts[6], amounts[7]], ONNX_PAD_MODES[mode]


class _Walk:
    """The graph's nodes, in order, as a :class:`~convscope.formats.graph.Graph` of layers and
    merges (see the module's docstring).  ``data`` maps a tensor to the graph node computing
    it; ``static`` holds the shape values, one per batch size (formats/onnx/static.py)."""

    def __init__(self, rd: GraphReader, input_name: str, shape: tuple[int, ...],
                 final_softmax: str) -> None:
        self.rd, self.final_softmax = rd, final_softmax
        self.nodes = [Node("import_onnx: the graph input")]
        self.shapes = [tuple(shape)]
        self.data: dict[str, int] = {input_name: 0}
        self.static: dict[str, Pair] = {}
        self.pads: dict[str, tuple[Step, tuple[list[int], str], str]] = {}
        self.steps: dict[int, Step] = {}
        self.uses = Counter(n for node in rd.graph.node for n in node.input)
        self.uses.update(o.name for o in rd.graph.output)
        self.out_name = rd.graph.output[0].name
        self.dropped: Step | None = None

    def run(self) -> Graph:
        for k, node in enumerate(self.rd.graph.node):
            step = Step(k, node)
            try:
                self._node(step)
            except (ValueError, KeyError) as e:  # ShapeError is a ValueError
                msg = str(e.args[0]) if isinstance(e, KeyError) and e.args else str(e)
                if msg.startswith("import_onnx: "):
                    raise
                raise type(e)(f"{step.where}: {msg}") from None
        if self.out_name in self.pads:
            raise ValueError("import_onnx: the graph ends with a Pad node; convscope needs a "
                             "Conv or AveragePool after it")
        if self.out_name not in self.data:
            raise ValueError(f"import_onnx: the graph output {self.out_name!r} is not computed "
                             "from the input by supported nodes")
        return Graph(self.nodes, self.data[self.out_name])

    def _node(self, step: Step) -> None:
        rd, node, op = self.rd, step.node, step.node.op_type
        ins, out = list(node.input), node.output[0] if node.output else ""
        if op == "Constant":
            a = rd.attrs(node)
            if "value" not in a:
                raise ValueError("only Constant nodes with a tensor 'value' are supported")
            value = rd.onnx.numpy_helper.to_array(a["value"])
            rd.tensors[out] = value
            self.static[out] = (value, value)
        elif op == "Shape":
            x = self._data(ins[0], op)
            a = rd.attrs(node)
            lo, hi = a.get("start", 0), a.get("end", None)
            self._set_static(out, tuple(np.array([b, *self.shapes[x]], np.int64)[lo:hi]
                                        for b in BATCHES))
        elif op in STATIC_OPS and ins and all(not i or self._is_static(i) for i in ins):
            self._set_static(out, evaluate(op, rd.attrs(node),
                                           [self._static(i) if i else None for i in ins]))
        elif op == "Identity":
            self.data[out] = self._data(ins[0], op)
        elif op == "Pad":
            self.pads[out] = (step, _read_pad(rd, node, len(self.shapes[0]) + 1), ins[0])
            self._data(ins[0], op)
        elif op == "Add" and sum(i in self.data or i in self.pads for i in ins) == 2:
            a, b = (self._data(i, op) for i in ins)
            if self.shapes[a] != self.shapes[b]:
                raise ShapeError(f"Add of {_text(self.shapes[a])} ({ins[0]}) and "
                                 f"{_text(self.shapes[b])} ({ins[1]}): a Residual adds two "
                                 "results of one shape")
            self._add(Node(step.where, (a, b), merge="add"), self.shapes[a], out)
        elif op == "Add":
            self._bias_after_matmul(step, ins, out)
        elif op == "Concat" and any(i in self.data for i in ins):
            self._concat(step, ins, out)
        elif op == "Softmax" and out == self.out_name and self.final_softmax == "drop" \
                and len(self.shapes[self._data(ins[0], op)]) == 1 \
                and int(rd.attrs(node).get("axis", -1)) in (1, -1):
            self.dropped, self.data[out] = step, self._data(ins[0], op)
        else:
            self._layer(step, ins, out)

    # -- helpers -------------------------------------------------------------------------------
    def _is_static(self, name: str) -> bool:
        return name in self.static or name in self.rd.tensors

    def _static(self, name: str) -> Pair:
        if name not in self.static:
            value = self.rd.tensors[name]
            self.static[name] = (value, value)
        return self.static[name]

    def _set_static(self, name: str, pair: Pair) -> None:
        self.static[name] = pair
        if np.array_equal(pair[0], pair[1]):  # the same for every batch: a constant
            self.rd.tensors[name] = np.asarray(pair[0])

    def _data(self, name: str, op: str) -> int:
        """The graph node computing tensor ``name``, read by an ``op`` node."""
        if name in self.pads:
            raise ValueError(f"a Pad node must be followed by Conv or AveragePool, got {op}")
        if name in self.data:
            return self.data[name]
        if name in self.static or name in self.rd.tensors:
            raise ValueError(f"{op} reads {name!r} as its data input, which is a constant or a "
                             "shape, not computed from the image")
        raise ValueError(f"reads {name!r}, which no node before it computes")

    def _add(self, node: Node, shape: tuple[int, ...], out: str) -> None:
        self.nodes.append(node)
        self.shapes.append(tuple(shape))
        self.data[out] = len(self.nodes) - 1

    def _layer(self, step: Step, ins: list[str], out: str) -> None:
        rd, node, op = self.rd, step.node, step.node.op_type
        x = ins[0] if ins else ""
        if x in self.pads:
            pad_step, pad, x = self.pads.pop(ins[0])
            if op not in ("Conv", "AveragePool") or self.uses[ins[0]] != 1:
                raise ValueError(f"a Pad node must be followed by Conv or AveragePool (and read "
                                 f"by it alone), got {op}")
            rd.set_pad_before(node, pad)
        src = self._data(x, op)
        if op == "Softmax" and out == self.out_name and len(self.shapes[src]) == 1:
            raise ValueError("operator Softmax is not supported; a final Softmax turns the class "
                             "scores into probabilities, which convscope's losses and predict do "
                             "themselves: import_onnx(..., final_softmax='drop') reads the "
                             "model without it (outputs: the scores)")
        if not kinds_for_onnx_op(op):
            layer_for(rd, node, ())  # the error naming what is supported
        extra = [i for i in ins[1:] if i in self.data]
        if extra:
            raise ValueError(f"{op} reads a second computed tensor {extra[0]!r}; convscope "
                             "reads weights as initializers or Constants")
        if op == "Reshape" and len(ins) > 1 and ins[1] in self.static:
            rd.tensors[ins[1]] = canonical_target(self.static[ins[1]])
        layer = layer_for(rd, node, self.shapes[src])
        self.steps[len(self.nodes)] = step
        self._add(Node(step.where, (src,), item=layer), layer.output_shape(self.shapes[src]), out)

    def _bias_after_matmul(self, step: Step, ins: list[str], out: str) -> None:
        """MatMul(x, B) then Add(·, c) as one MatMul(x, B, c) node (c: its bias)."""
        k = next((self.data[i] for i in ins if i in self.data), None)
        prev = self.steps.get(k) if k is not None else None
        if prev is None or prev.node.op_type != "MatMul" or len(prev.node.input) > 2 \
                or self.uses[prev.node.output[0]] != 1:
            raise ValueError("Add is supported only as the bias after a MatMul or as the merge "
                             "of two paths (a Residual)")
        other = ins[1] if self.data.get(ins[0]) == k else ins[0]
        if other not in self.rd.tensors:
            raise ValueError(f"Add of {other!r}: the bias must be an initializer or Constant")
        m = prev.node
        merged = self.rd.onnx.helper.make_node("MatMul", [m.input[0], m.input[1], other], [out],
                                               name=m.name)
        src = self.nodes[k].inputs[0]
        try:
            self.nodes[k].item = layer_for(self.rd, merged, self.shapes[src])
        except (ValueError, KeyError) as e:
            raise type(e)(f"{prev.where}: {e}") from None
        self.data[out] = k

    def _concat(self, step: Step, ins: list[str], out: str) -> None:
        srcs = [self._data(i, "Concat") for i in ins]
        shapes = [self.shapes[s] for s in srcs]
        axis = int(self.rd.attrs(step.node).get("axis", 0))
        rank = len(shapes[0]) + 1
        if axis % rank != 1:
            raise ValueError(f"Concat along axis {axis}: convscope's Concat joins the channels "
                             "(axis 1)")
        rest = {s[1:] for s in shapes}
        if len({len(s) for s in shapes}) != 1 or len(rest) != 1:
            raise ShapeError(f"Concat of {', '.join(_text(s) for s in shapes)}: the branches "
                             "must agree in every axis but the channels")
        shape = (sum(s[0] for s in shapes), *shapes[0][1:])
        self._add(Node(step.where, tuple(srcs), merge="concat"), shape, out)


def _text(shape: tuple[int, ...]) -> str:
    return "×".join(map(str, (*shape[1:], shape[0]))) if len(shape) == 3 else \
        "×".join(map(str, shape))


def layer_for(rd: GraphReader, node: Any, shape: tuple[int, ...]) -> Layer:
    """The layer one canonical node becomes: the first kind reading its operator whose
    ``from_onnx`` does not return None."""
    kinds = kinds_for_onnx_op(node.op_type)
    if not kinds:
        raise ValueError(f"operator {node.op_type} is not supported; supported: "
                         f"{supported('onnx')}, {', '.join(CANONICAL)}")
    for kind in kinds:
        layer = kind.cls.from_onnx(node, rd, shape)
        if layer is not None:
            return layer
    names = ", ".join(k.cls.__name__ for k in kinds)
    raise ValueError(f"{node.op_type} on a per-image input {shape}: none of {names} reads it")


def _input_shape(onnx: Any, graph: Any, input_shape: Sequence[int] | None
                 ) -> tuple[Any, tuple[int, ...], np.dtype]:
    inits = {t.name for t in graph.initializer}
    inputs = [v for v in graph.input if v.name not in inits]
    if len(inputs) != 1 or len(graph.output) != 1:
        raise ValueError(f"import_onnx: the graph needs one input and one output, it has "
                         f"{[v.name for v in inputs]} and {[v.name for v in graph.output]}")
    ttype = inputs[0].type.tensor_type
    elem = onnx.helper.tensor_dtype_to_np_dtype(ttype.elem_type) if ttype.elem_type else None
    if elem not in (np.float32, np.float64):
        raise ValueError(f"import_onnx: input {inputs[0].name!r} is {elem}; convscope reads "
                         "float32 or float64 graphs")
    dims = [d.dim_value if d.HasField("dim_value") else None for d in ttype.shape.dim]
    if input_shape is not None:
        shape = tuple(int(s) for s in input_shape)
        if len(dims) == 4 and any(d is not None and d != s for d, s in zip(dims[1:], shape)):
            raise ShapeError(f"import_onnx: input_shape {shape} does not match the graph's input "
                             f"{dims[1:]}")
    elif len(dims) == 4 and None not in dims[1:]:
        shape = tuple(dims[1:])
    else:
        raise ShapeError(f"import_onnx: the graph's input {inputs[0].name!r} has shape {dims}; "
                         "pass input_shape=(C, H, W)")
    if len(shape) != 3:
        raise ShapeError(f"import_onnx: input_shape must be (C, H, W), got {shape}")
    return inputs[0], shape, np.dtype(elem)


def import_onnx(source: Any, input_shape: Sequence[int] | None = None, *,
                final_softmax: str = "error") -> Sequential:
    """A convscope Sequential (in eval mode) from an ONNX model: a path, bytes or ModelProto.

    The graph (one input, one output, weights as initializers) is a DAG of supported operators;
    forks that meet again at an Add become Residual blocks, at a Concat (axis 1) Concat blocks
    (formats/graph.py).  ``input_shape`` (C, H, W) is needed only when the graph's input has no
    static C, H, W.  ``final_softmax='drop'`` leaves out a Softmax over the class scores at the
    very end (the model then outputs the scores); by default it is an error saying so.  Anything
    else convscope cannot run raises one ValueError naming the node, never a wrong model.
    """
    if final_softmax not in ("error", "drop"):
        raise ValueError(f"import_onnx: final_softmax must be 'error' or 'drop', got "
                         f"{final_softmax!r}")
    onnx = onnx_module()
    proto = load_proto(source)
    graph = proto.graph
    versions = {o.domain: o.version for o in proto.opset_import}
    opset = versions.get("", versions.get("ai.onnx", 0))
    if opset < IMPORT_MIN_OPSET:
        raise ValueError(f"import_onnx: the graph uses opset {opset}; convscope reads opset "
                         f"{IMPORT_MIN_OPSET} or newer (convert it with onnx.version_converter."
                         "convert_version(model, 17))")
    for node in graph.node:
        if node.domain not in ("", "ai.onnx"):
            raise ValueError(f"import_onnx: node {node.name or node.op_type} uses operator domain "
                             f"{node.domain!r}; only the standard ONNX operators are supported")
    inp, shape, dtype = _input_shape(onnx, graph, input_shape)
    rd = GraphReader(onnx, graph, dtype, opset)
    model = assemble(decompose(_Walk(rd, inp.name, shape, final_softmax).run()), shape)
    out_dims = [d.dim_value if d.HasField("dim_value") else None
                for d in graph.output[0].type.tensor_type.shape.dim]
    out = model.output_shape(shape)
    if out_dims and (len(out_dims) != len(out) + 1
                     or any(d is not None and d != o for d, o in zip(out_dims[1:], out))):
        raise ShapeError(f"import_onnx: the graph declares output shape {out_dims}, convscope "
                         f"computes (batch, {', '.join(map(str, out))})")
    return model.eval()
