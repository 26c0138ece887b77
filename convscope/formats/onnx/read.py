"""ONNX import: a chain of ONNX nodes back into a convscope Sequential.

Two steps.  :func:`canonical_chain` walks the graph once and reduces simple equivalent forms to
one node per layer: Constant nodes become constants, Identity nodes vanish, a Pad folds into the
Conv or AveragePool after it, an Add of a constant after a MatMul becomes that MatMul's bias.
Then each node becomes one layer through the ``from_onnx`` hook of the kinds whose ``onnx_ops``
name its operator (layers/registry.py); the first that does not return None wins
(BatchNormalization: BatchNorm2D on (C, H, W), BatchNorm1D on (C,) and (C, L)).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from ...errors import ShapeError
from ...layers.base import Layer
from ...layers.container import Sequential
from ...layers.registry import kinds_for_onnx_op, supported
from ...ops.padding import PAD_MODES
from .builder import GraphReader, onnx_module

if TYPE_CHECKING:  # pragma: no cover
    import onnx

__all__ = ["import_onnx", "onnx_metadata", "load_proto", "canonical_chain", "IMPORT_MIN_OPSET"]

IMPORT_MIN_OPSET = 13
#: What the reader folds away before the layers' hooks see the graph (for "supported: ...").
CANONICAL = ("Pad (before Conv or AveragePool)", "Add (the bias after MatMul)", "Identity",
             "Constant")
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
    """One node of the canonical chain; ``index`` is its position in the graph (for errors)."""

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


def canonical_chain(rd: GraphReader, input_name: str, rank: int) -> list[Step]:
    """The graph's nodes as a chain of one node per layer (see the module's docstring).

    Each node must read the previous one's output (an Add may read it second); ``rank`` is the
    input's rank (4: N, C, H, W).  Errors name the node.
    """
    onnx, steps, cur = rd.onnx, [], input_name
    pad: tuple[Step, tuple[list[int], str]] | None = None
    for k, node in enumerate(rd.graph.node):
        step = Step(k, node)
        op = node.op_type
        if op == "Constant":
            a = rd.attrs(node)
            if "value" not in a:
                raise ValueError(f"{step.where}: only Constant nodes with a tensor 'value' are "
                                 "supported")
            rd.tensors[node.output[0]] = onnx.numpy_helper.to_array(a["value"])
            continue
        if not node.input or node.input[0] != cur:
            if not (op == "Add" and cur in node.input):
                raise ValueError(f"{step.where}: reads {list(node.input)}, not the previous "
                                 f"output {cur!r}; only a chain of layers is supported")
        try:
            if pad is not None and op not in ("Conv", "AveragePool", "Identity"):
                raise ValueError(f"a Pad node must be followed by Conv or AveragePool, got {op}")
            if op == "Pad":
                pad = (step, _read_pad(rd, node, rank))
            elif op == "Add":
                steps[-1:] = [_bias_after_matmul(rd, steps[-1] if steps else None, node, cur)]
            elif op != "Identity":
                if pad is not None:
                    rd.set_pad_before(node, pad[1])
                    pad = None
                steps.append(step)
        except (ValueError, KeyError) as e:
            raise type(e)(f"{step.where}: {e}") from None
        cur = node.output[0]
    if pad is not None:
        raise ValueError("import_onnx: the graph ends with a Pad node; convscope needs a Conv or "
                         "AveragePool after it")
    if cur != rd.graph.output[0].name:
        raise ValueError(f"import_onnx: the graph output {rd.graph.output[0].name!r} is not the "
                         f"end of the chain ({cur!r})")
    return steps


def _bias_after_matmul(rd: GraphReader, prev: Step | None, node: Any, cur: str) -> Step:
    """MatMul(x, B) then Add(·, c) as one MatMul(x, B, c) node (c: its bias)."""
    if prev is None or prev.node.op_type != "MatMul" or len(prev.node.input) > 2:
        raise ValueError("Add is supported only as the bias after a MatMul")
    other = node.input[1] if node.input[0] == cur else node.input[0]
    if other not in rd.tensors:
        raise ValueError(f"Add of {other!r}: the bias must be an initializer or Constant")
    m = prev.node
    merged = rd.onnx.helper.make_node("MatMul", [m.input[0], m.input[1], other],
                                      [node.output[0]], name=m.name)
    return Step(prev.index, merged)


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


def import_onnx(source: Any, input_shape: Sequence[int] | None = None) -> Sequential:
    """A convscope Sequential (in eval mode) from an ONNX model: a path, bytes or ModelProto.

    The graph must be a chain (each node reads the previous one's output) of supported operators
    with weights as initializers.  ``input_shape`` (C, H, W) is needed only when the graph's input
    has no static C, H, W.  Anything else raises ValueError naming the node.
    """
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
    layers, cur = [], shape
    for step in canonical_chain(rd, inp.name, len(shape) + 1):
        try:
            layer = layer_for(rd, step.node, cur)
            cur = layer.output_shape(cur)
        except (ValueError, KeyError) as e:  # ShapeError is a ValueError
            raise type(e)(f"{step.where}: {e}") from None
        layers.append(layer)
    model = Sequential(*layers, input_shape=shape)
    out_dims = [d.dim_value if d.HasField("dim_value") else None
                for d in graph.output[0].type.tensor_type.shape.dim]
    out = model.output_shape(shape)
    if out_dims and (len(out_dims) != len(out) + 1
                     or any(d is not None and d != o for d, o in zip(out_dims[1:], out))):
        raise ShapeError(f"import_onnx: the graph declares output shape {out_dims}, convscope "
                         f"computes (batch, {', '.join(map(str, out))})")
    return model.eval()
