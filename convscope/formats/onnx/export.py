"""ONNX export: a convscope Sequential as an ONNX graph, evaluated as at inference (``eval()``).

Each layer writes itself through its ``to_onnx`` hook (in its own file, layers/*.py), which
appends the operator computing it:

=================  =============================================================================
Conv2D             Conv (strides, pads, dilations, group); a padding_mode other than zeros adds a
                   Pad node first (reflect -> reflect, replicate -> edge, circular -> wrap, opset 19)
MaxPool2D          MaxPool (kernel_shape, strides, pads, dilations, ceil_mode)
AvgPool2D          AveragePool (kernel_shape, strides, pads, ceil_mode, count_include_pad); where
                   ceil_mode keeps a partial window on one axis and drops one on the other,
                   ceil_mode=0 with longer end padding (layers/pool.py, ``onnx_window``)
GlobalAvgPool2D    GlobalAveragePool
BatchNorm2D/1D     BatchNormalization with the running statistics
ReLU ... Tanh      Relu, LeakyRelu (alpha), Sigmoid, Tanh
Flatten            Flatten (axis 1)
Linear             Gemm (transB = 1): y = x Wᵀ + b
Dropout            Dropout with its ratio (the identity at inference)
Sequential         its layers, named '<index>.<child index>'
=================  =============================================================================

Initializers carry the state dict's names ('0.weight', '1.running_mean'); the graph has one input
(default name 'input', shape (batch, C, H, W)) and one output ('output'), the batch axis dynamic.
:func:`import_onnx` (read.py) reads such graphs back, so export -> import -> export gives the
same bytes.  A layer of your own exports once it is registered and has a ``to_onnx`` hook.

onnx (and onnxruntime, for :func:`run_onnx`) are optional: ``pip install 'convscope[onnx]'``.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any, Mapping, Sequence

import numpy as np

from ..._version import __version__
from ...errors import ShapeError
from ...layers.base import float_dtype
from ...layers.container import Sequential
from ..files import atomic_write
from .builder import HINT, GraphBuilder, onnx_module
from .read import IMPORT_MIN_OPSET, import_onnx, load_proto, onnx_metadata

if TYPE_CHECKING:  # pragma: no cover
    import onnx

__all__ = ["export_onnx", "import_onnx", "onnx_metadata", "run_onnx", "DEFAULT_OPSET",
           "MIN_OPSET"]

DEFAULT_OPSET = 19
MIN_OPSET = 17
PRODUCER = "convscope"


def _check_name(value: str, what: str) -> str:
    if not isinstance(value, str) or not value:
        raise ValueError(f"export_onnx: {what} must be a non-empty string, got {value!r}")
    return value


def export_onnx(model: Sequential, path: str | os.PathLike | None = None, *,
                input_shape: Sequence[int] | None = None, opset: int = DEFAULT_OPSET,
                input_name: str = "input", output_name: str = "output",
                metadata: Mapping[str, Any] | None = None, dtype: Any = np.float32,
                check: bool = True) -> "onnx.ModelProto":
    """Write ``model`` as an ONNX graph (inference semantics) to ``path``; return the ModelProto.

    Input ``input_name`` of shape (batch, C, H, W) with ``batch`` dynamic, output ``output_name``
    (batch, ...).  ``input_shape`` (C, H, W) defaults to the model's.  ``opset`` >= 17 (circular
    padding needs 19).  ``metadata`` (str -> str, e.g. class names) goes to metadata_props.
    ``dtype`` float32 (default; onnxruntime's CPU Conv is float32 only) or float64.
    ``check`` runs ``onnx.checker.check_model(full_check=True)``.  A layer or option ONNX cannot
    express raises, naming it; the file is written atomically.
    """
    onnx = onnx_module()
    helper = onnx.helper
    if not isinstance(model, Sequential):
        raise TypeError(f"export_onnx: expected a convscope Sequential, got {type(model).__name__}")
    latest = onnx.defs.onnx_opset_version()
    if isinstance(opset, bool) or not isinstance(opset, int) or not MIN_OPSET <= opset <= latest:
        raise ValueError(f"export_onnx: opset must be an int from {MIN_OPSET} to {latest}, "
                         f"got {opset!r}")
    _check_name(input_name, "input_name")
    _check_name(output_name, "output_name")
    if input_name == output_name:
        raise ValueError(f"export_onnx: input_name and output_name must differ, both are "
                         f"{input_name!r}")
    dt = float_dtype(dtype)
    shape = tuple(int(s) for s in (input_shape or model._need_input_shape()))
    if len(shape) != 3:
        raise ShapeError(f"export_onnx: input_shape must be (C, H, W), got {shape}")
    out_shape = model.output_shape(shape)  # checks every layer fits

    g = GraphBuilder(onnx, dt, opset)
    cur = Sequential.to_onnx(model, g, input_name, shape)  # a subclass too, at the top
    if cur == input_name:
        g.nodes.append(helper.make_node("Identity", [cur], [output_name], name="Identity"))
    else:  # the last node writes the graph output directly
        g.nodes[-1].output[0] = output_name

    elem = helper.np_dtype_to_tensor_dtype(dt)
    graph = helper.make_graph(
        g.nodes, "convscope",
        [helper.make_tensor_value_info(input_name, elem, ["batch", *shape])],
        [helper.make_tensor_value_info(output_name, elem, ["batch", *out_shape])],
        initializer=g.inits)
    opsets = [helper.make_opsetid("", opset)]
    proto = helper.make_model(graph, opset_imports=opsets, producer_name=PRODUCER,
                              producer_version=__version__,
                              ir_version=helper.find_min_ir_version_for(opsets))
    if metadata:
        helper.set_model_props(proto, {str(k): str(v) for k, v in metadata.items()})
    if check:
        onnx.checker.check_model(proto, full_check=True)
    if path is not None:
        atomic_write(path, proto.SerializeToString())
    return proto


def run_onnx(source: Any, x: np.ndarray, providers: Sequence[str] | None = None) -> np.ndarray:
    """Outputs of an ONNX model (path, bytes or ModelProto) for x, computed by onnxruntime."""
    try:
        import onnxruntime as ort  # noqa: PLC0415 - optional
    except ImportError as e:
        raise ImportError(f"run_onnx needs onnxruntime; {HINT} ({e})") from None
    if not isinstance(source, (bytes, bytearray)):
        source = load_proto(source, "run_onnx").SerializeToString()
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    session = ort.InferenceSession(bytes(source), opts,
                                   providers=list(providers or ["CPUExecutionProvider"]))
    name = session.get_inputs()[0].name
    return session.run(None, {name: np.asarray(x)})[0]
