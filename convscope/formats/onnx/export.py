"""ONNX export and import: a convscope Sequential as an ONNX graph, and back.

Each layer becomes the ONNX operator that computes it, evaluated as at inference (``model.eval()``):

=================  =============================================================================
Conv2D             Conv (strides, pads, dilations, group); a padding_mode other than zeros adds a
                   Pad node first (reflect -> reflect, replicate -> edge, circular -> wrap, opset 19)
MaxPool2D          MaxPool (kernel_shape, strides, pads, dilations, ceil_mode)
AvgPool2D          AveragePool (kernel_shape, strides, pads, ceil_mode, count_include_pad); where
                   ceil_mode keeps a partial window on one axis and drops one on the other,
                   ceil_mode=0 with longer end padding (see :func:`_pool_window`)
GlobalAvgPool2D    GlobalAveragePool
BatchNorm2D/1D     BatchNormalization with the running statistics
ReLU ... Tanh      Relu, LeakyRelu (alpha), Sigmoid, Tanh
Flatten            Flatten (axis 1)
Linear             Gemm (transB = 1): y = x Wᵀ + b
Dropout            Dropout with its ratio (the identity at inference)
=================  =============================================================================

Initializers carry the state dict's names ('0.weight', '1.running_mean'); the graph has one input
(default name 'input', shape (batch, C, H, W)) and one output ('output'), the batch axis dynamic.
:func:`import_onnx` reads such graphs (and simple equivalent ones: Conv without pads after a Pad,
MatMul + Add, Reshape to (N, -1), Identity, Constant) back into a Sequential, so
export -> import -> export gives the same bytes.

onnx (and onnxruntime, for :func:`run_onnx`) are optional: ``pip install 'convscope[onnx]'``.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Sequence

import numpy as np

from ...errors import ShapeError
from ...layers import (AvgPool2D, BatchNorm1D, BatchNorm2D, Conv2D, Dropout, Flatten,
                     GlobalAvgPool2D, Layer, LeakyReLU, Linear, MaxPool2D, ReLU, Sigmoid, Tanh)
from ...layers.base import float_dtype
from ...layers.container import Sequential
from ...shapes import effective_kernel

if TYPE_CHECKING:  # pragma: no cover
    import onnx

__all__ = ["export_onnx", "import_onnx", "onnx_metadata", "run_onnx", "DEFAULT_OPSET",
           "MIN_OPSET"]

DEFAULT_OPSET = 19
MIN_OPSET = 17
PRODUCER = "convscope"
_PAD_MODES = {"reflect": "reflect", "replicate": "edge", "circular": "wrap"}
_HINT = "install it with: pip install 'convscope[onnx]'"


def _onnx() -> Any:
    try:
        import onnx  # noqa: PLC0415 - optional; imported only when ONNX is used
    except ImportError as e:
        raise ImportError(f"ONNX support needs the onnx package; {_HINT} ({e})") from None
    return onnx


def _to_numpy(a: Any) -> np.ndarray:
    return a.get() if type(a).__module__.split(".")[0] == "cupy" else np.asarray(a)


# ---------------------------------------------------------------------------------------------
# export


class _GraphBuilder:
    """Collects nodes and initializers; names follow the layer index ('3.weight', '3.Conv')."""

    def __init__(self, onnx: Any, dtype: np.dtype, opset: int) -> None:
        self.onnx, self.dtype, self.opset = onnx, dtype, opset
        self.nodes: list[Any] = []
        self.inits: list[Any] = []

    def tensor(self, name: str, value: Any, dtype: Any = None) -> str:
        arr = np.array(_to_numpy(value), dtype=dtype or self.dtype, order="C")  # keeps 0-d
        self.inits.append(self.onnx.numpy_helper.from_array(arr, name))
        return name

    def node(self, op: str, inputs: list[str], name: str, **attrs: Any) -> str:
        out = f"{name}.{op}"
        self.nodes.append(self.onnx.helper.make_node(op, inputs, [out], name=out, **attrs))
        return out


def _onnx_pads(pads: Any) -> list[int]:
    """((top, bottom), (left, right)) -> ONNX's [top, left, bottom, right]."""
    (t, b), (l, r) = pads
    return [int(t), int(l), int(b), int(r)]


def _pool_window(layer: Any, hw: Sequence[int]) -> tuple[int, list[int], bool]:
    """ONNX (ceil_mode, pads [t, l, b, r], zero-pad first) for a pooling layer at input ``hw``.

    PyTorch (and the ONNX spec) drop a ceil_mode window that would start in the right padding;
    onnx's shape inference does not.  So ceil_mode=1 is written only where PyTorch's count is the
    plain ceiling; where the rule drops a window on every axis, ceil_mode=0 has the same windows.
    When one axis keeps a partial window and the other drops one, ceil_mode=0 with a longer end
    padding on the first axis has the same windows: padding is never counted by max pooling and
    average pooling with count_include_pad=0; with count_include_pad=1 the layer's own padding
    becomes a zero Pad node first (then counted as pixels), the longer end padding is not.
    The exported size is always convscope's.
    """
    hw = tuple(int(v) for v in hw)
    pads = _onnx_pads(layer.pads)
    if not layer.ceil_mode:
        return 0, pads, False
    outs = layer.output_shape((1,) + hw)[1:]
    naive, floor, longer = [], [], []
    for n, o, k, s, p, d in zip(hw, outs, layer.kernel_size, layer.stride, layer.pads,
                                layer.dilation):
        keff = effective_kernel(k, d)
        span = n + p[0] + p[1] - keff
        naive.append(-(-span // s) + 1)
        floor.append(span // s + 1)
        longer.append((o - 1) * s + keff - n - p[0])  # end padding whose floor count is o
    if list(outs) == naive:
        return 1, pads, False
    if list(outs) == floor:
        return 0, pads, False
    ends = [lo if o != f else p[1] for o, f, lo, p in zip(outs, floor, longer, layer.pads)]
    if isinstance(layer, AvgPool2D) and layer.count_include_pad:  # the layer's pads go to a Pad node
        return 0, [0, 0, ends[0] - layer.pads[0][1], ends[1] - layer.pads[1][1]], True
    if any(e >= k for e, k in zip(ends, layer.kernel_size)):  # onnxruntime needs pads < kernel
        h, w = hw
        raise ValueError(f"{layer!r}: at a {h}x{w} input ceil_mode keeps a partial last window "
                         f"along one axis ({outs[0]}x{outs[1]} out) and drops one along the other; "
                         "ONNX has one ceil_mode for both axes and onnxruntime takes no end "
                         "padding as long as the kernel; use ceil_mode=False or another input size")
    return 0, [pads[0], pads[1], ends[0], ends[1]], False


def _emit(layer: Layer, name: str, cur: str, shape: tuple[int, ...], g: _GraphBuilder) -> str:
    """Append the nodes computing ``layer`` on tensor ``cur`` (per-image ``shape``); return the
    output tensor's name."""
    kind = type(layer)
    p = {k: v for k, v in layer.params.items()}
    if kind is Sequential:
        for j, sub in enumerate(layer.layers):
            cur = _emit(sub, f"{name}.{j}", cur, shape, g)
            shape = sub.output_shape(shape)
        return cur
    if kind is Conv2D:
        pads = layer.pads
        if layer.padding_mode != "zeros" and pads != ((0, 0), (0, 0)):
            if layer.padding_mode == "circular" and g.opset < 19:
                raise ValueError(f"{layer!r}: circular padding needs ONNX Pad mode 'wrap' from "
                                 f"opset 19; got opset {g.opset}, export with opset=19 or newer")
            (t, b), (l, r) = pads
            amounts = g.tensor(f"{name}.pads", [0, 0, t, l, 0, 0, b, r], np.int64)
            cur = g.node("Pad", [cur, amounts], name, mode=_PAD_MODES[layer.padding_mode])
            pads = ((0, 0), (0, 0))
        inputs = [cur, g.tensor(f"{name}.weight", p["weight"])]
        if layer.use_bias:
            inputs.append(g.tensor(f"{name}.bias", p["bias"]))
        return g.node("Conv", inputs, name, kernel_shape=list(layer.kernel_size),
                      strides=list(layer.stride), pads=_onnx_pads(pads),
                      dilations=list(layer.dilation), group=layer.groups)
    if kind is MaxPool2D:
        ceil, pads, _ = _pool_window(layer, shape[1:])
        return g.node("MaxPool", [cur], name, kernel_shape=list(layer.kernel_size),
                      strides=list(layer.stride), pads=pads, dilations=list(layer.dilation),
                      ceil_mode=ceil)
    if kind is AvgPool2D:
        ceil, pads, zero_pad = _pool_window(layer, shape[1:])
        count_pad = layer.count_include_pad
        if zero_pad:
            (t, b), (l, r) = layer.pads
            amounts = g.tensor(f"{name}.pads", [0, 0, t, l, 0, 0, b, r], np.int64)
            cur = g.node("Pad", [cur, amounts], name, mode="constant")
            count_pad = False
        return g.node("AveragePool", [cur], name, kernel_shape=list(layer.kernel_size),
                      strides=list(layer.stride), pads=pads, ceil_mode=ceil,
                      count_include_pad=int(count_pad))
    if kind is GlobalAvgPool2D:
        return g.node("GlobalAveragePool", [cur], name)
    if kind in (BatchNorm2D, BatchNorm1D):
        if not layer.track_running_stats:
            raise ValueError(f"{layer!r}: track_running_stats=False normalises with the batch's "
                             "own statistics even at inference; ONNX BatchNormalization needs "
                             "running statistics (build the layer with track_running_stats=True)")
        c = layer.num_features
        weight = p.get("weight", np.ones(c)) if layer.affine else np.ones(c)
        bias = p.get("bias", np.zeros(c)) if layer.affine else np.zeros(c)
        b = layer.buffers
        inputs = [cur, g.tensor(f"{name}.weight", weight), g.tensor(f"{name}.bias", bias),
                  g.tensor(f"{name}.running_mean", b["running_mean"]),
                  g.tensor(f"{name}.running_var", b["running_var"])]
        return g.node("BatchNormalization", inputs, name, epsilon=float(layer.eps))
    if kind is ReLU:
        return g.node("Relu", [cur], name)
    if kind is LeakyReLU:
        return g.node("LeakyRelu", [cur], name, alpha=float(layer.negative_slope))
    if kind is Sigmoid:
        return g.node("Sigmoid", [cur], name)
    if kind is Tanh:
        return g.node("Tanh", [cur], name)
    if kind is Flatten:
        return g.node("Flatten", [cur], name, axis=1)
    if kind is Linear:
        inputs = [cur, g.tensor(f"{name}.weight", p["weight"])]
        if layer.use_bias:
            inputs.append(g.tensor(f"{name}.bias", p["bias"]))
        return g.node("Gemm", inputs, name, transB=1)
    if kind is Dropout:
        return g.node("Dropout", [cur, g.tensor(f"{name}.ratio", layer.p)], name)
    raise TypeError(f"{layer!r} ({kind.__name__}) has no ONNX export; supported: "
                    f"{', '.join(c.__name__ for c in _LAYERS)}")


_LAYERS = (Conv2D, MaxPool2D, AvgPool2D, GlobalAvgPool2D, BatchNorm2D, BatchNorm1D, ReLU, LeakyReLU,
           Sigmoid, Tanh, Flatten, Linear, Dropout, Sequential)


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
    onnx = _onnx()
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

    g = _GraphBuilder(onnx, dt, opset)
    cur, s = input_name, shape
    for i, layer in enumerate(model.layers):
        try:
            cur = _emit(layer, str(i), cur, s, g)
        except (TypeError, ValueError) as e:
            raise type(e)(f"export_onnx: layer {i}: {e}") from None
        s = layer.output_shape(s)
    if cur == input_name:
        g.nodes.append(helper.make_node("Identity", [cur], [output_name], name="Identity"))
    else:  # the last node writes the graph output directly
        last = g.nodes[-1]
        last.output[0] = output_name

    elem = helper.np_dtype_to_tensor_dtype(dt)
    graph = helper.make_graph(
        g.nodes, "convscope",
        [helper.make_tensor_value_info(input_name, elem, ["batch", *shape])],
        [helper.make_tensor_value_info(output_name, elem, ["batch", *out_shape])],
        initializer=g.inits)
    opsets = [helper.make_opsetid("", opset)]
    from ..._version import __version__  # noqa: PLC0415

    proto = helper.make_model(graph, opset_imports=opsets, producer_name=PRODUCER,
                              producer_version=__version__,
                              ir_version=helper.find_min_ir_version_for(opsets))
    if metadata:
        helper.set_model_props(proto, {str(k): str(v) for k, v in metadata.items()})
    if check:
        onnx.checker.check_model(proto, full_check=True)
    if path is not None:
        from ..model_file import atomic_write  # noqa: PLC0415

        atomic_write(path, proto.SerializeToString())
    return proto


# ---------------------------------------------------------------------------------------------
# import


def _load(source: Any) -> "onnx.ModelProto":
    onnx = _onnx()
    if isinstance(source, onnx.ModelProto):
        return source
    if isinstance(source, (bytes, bytearray)):
        try:
            return onnx.load_model_from_string(bytes(source))
        except Exception as e:
            raise ValueError(f"import_onnx: the bytes are not an ONNX model ({e})") from None
    path = Path(source)
    if not path.is_file():
        raise FileNotFoundError(f"import_onnx: no file {str(path)!r}")
    try:
        return onnx.load_model(str(path), load_external_data=False)
    except Exception as e:
        raise ValueError(f"import_onnx: {str(path)!r} is not an ONNX model ({e})") from None


def onnx_metadata(source: Any) -> dict[str, str]:
    """The metadata_props of an ONNX model (a path, bytes or ModelProto) as a dict."""
    return {p.key: p.value for p in _load(source).metadata_props}


IMPORT_MIN_OPSET = 13
_SUPPORTED_OPS = ("Conv", "Pad (before Conv or AveragePool)", "MaxPool", "AveragePool", "GlobalAveragePool",
                  "BatchNormalization", "Relu", "LeakyRelu", "Sigmoid", "Tanh", "Flatten",
                  "Reshape (N, -1)", "Gemm", "MatMul (+ Add)", "Dropout", "Identity", "Constant")


class _Reader:
    """Walks a chain of nodes, turning each into a convscope layer."""

    def __init__(self, onnx: Any, graph: Any, dtype: np.dtype) -> None:
        self.onnx, self.graph, self.dtype = onnx, graph, dtype
        self.tensors = {t.name: onnx.numpy_helper.to_array(t) for t in graph.initializer}
        self.layers: list[Layer] = []
        self.pending_pad: tuple[list[int], str, float] | None = None
        self.cur = ""  # the name of the chain's current tensor
        self.used = {n for node in graph.node for n in node.input} | {o.name for o in graph.output}

    def const(self, node: Any, index: int, what: str, required: bool = True) -> np.ndarray | None:
        if index >= len(node.input) or not node.input[index]:
            if required:
                raise ValueError(f"{what} is missing")
            return None
        name = node.input[index]
        if name not in self.tensors:
            raise ValueError(f"{what} {name!r} is computed in the graph; convscope needs it as an "
                             "initializer or Constant")
        return self.tensors[name]

    @staticmethod
    def attrs(node: Any) -> dict[str, Any]:
        from onnx import helper  # noqa: PLC0415

        return {a.name: helper.get_attribute_value(a) for a in node.attribute}

    def fill(self, layer: Layer, arrays: Mapping[str, Any]) -> Layer:
        own = dict(layer.params) | dict(layer.buffers)
        for k, v in arrays.items():
            v = np.asarray(v)
            if v.shape != own[k].shape:
                raise ShapeError(f"{layer!r} '{k}' has shape {v.shape}, the layer needs "
                                 f"{own[k].shape}")
            np.copyto(own[k], v, casting="unsafe")
        return layer


def _f32(value: Any) -> float:
    """A float32 value (ONNX attributes are float32) as the shortest float printing it: 0.3, not
    0.30000001192092896; converting back to float32 gives the same bits."""
    return float(str(np.float32(value)))


def _window_pads(a: Mapping[str, Any], hw: Sequence[int], kernel: Sequence[int],
                 stride: Sequence[int], dilation: Sequence[int], op: str) -> list[int]:
    """ONNX pads [t, l, b, r], resolving the deprecated auto_pad for the input size ``hw``."""
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


def _onnx_pool_shape(shape: Sequence[int], kernel: Sequence[int], stride: Sequence[int],
                     pads: Sequence[int], dilation: Sequence[int], ceil: bool) -> tuple[int, ...]:
    """Per-image output shape of an ONNX pool by the spec (a ceil window starting in the end
    padding is dropped)."""
    out = [shape[0]]
    for n, k, s, p0, p1, d in zip(shape[1:], kernel, stride, pads[:2], pads[2:], dilation):
        span = n + p0 + p1 - effective_kernel(k, d)
        o = (-(-span // s) if ceil else span // s) + 1
        if ceil and (o - 1) * s >= n + p0:
            o -= 1
        out.append(o)
    return tuple(out)


def _padding(pads: Sequence[int]) -> Any:
    """ONNX [t, l, b, r] -> convscope's (ph, pw) when symmetric, else ((t, b), (l, r))."""
    t, l, b, r = (int(v) for v in pads)
    return (t, l) if (t, l) == (b, r) else ((t, b), (l, r))


def _read_node(rd: _Reader, node: Any, shape: tuple[int, ...]) -> Layer | None:
    """The layer for one node (None when the node only changes the reader's state)."""
    op, a, dt = node.op_type, _Reader.attrs(node), rd.dtype
    if op == "Pad":
        mode = a.get("mode", b"constant")
        mode = mode.decode() if isinstance(mode, bytes) else mode
        amounts = [int(v) for v in rd.const(node, 1, "Pad amounts")]
        axes = rd.const(node, 3, "Pad axes", required=False)
        if axes is not None:
            full = [0] * (2 * (len(shape) + 1))
            rank = len(shape) + 1
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
        modes = {"constant": "zeros", "reflect": "reflect", "edge": "replicate", "wrap": "circular"}
        if mode not in modes:
            raise ValueError(f"Pad mode {mode!r}: supported modes {sorted(modes)}")
        rd.pending_pad = ([amounts[2], amounts[3], amounts[6], amounts[7]], modes[mode], value)
        return None
    if rd.pending_pad is not None and op not in ("Conv", "AveragePool"):
        raise ValueError(f"a Pad node must be followed by Conv or AveragePool, got {op}")
    if op == "Conv":
        w = rd.const(node, 1, "Conv weight")
        if w.ndim != 4 or len(shape) != 3:
            raise ValueError(f"Conv with a {w.ndim}-D weight on a {len(shape) + 1}-D input: only "
                             "2-D convolution (N, C, H, W) is supported")
        bias = rd.const(node, 2, "Conv bias", required=False)
        kernel = list(a.get("kernel_shape", w.shape[2:]))
        stride, dilation = list(a.get("strides", [1, 1])), list(a.get("dilations", [1, 1]))
        pads = _window_pads(a, shape[1:], kernel, stride, dilation, "Conv")
        mode = "zeros"
        if rd.pending_pad is not None:
            extra, mode, _ = rd.pending_pad
            rd.pending_pad = None
            if mode == "zeros":
                pads = [x + y for x, y in zip(pads, extra)]
            elif any(pads):
                raise ValueError(f"Conv pads {pads} after a {mode} Pad: convscope's Conv2D pads "
                                 "once, in one mode")
            else:
                pads = extra
        group = int(a.get("group", 1))
        layer = Conv2D(w.shape[1] * group, w.shape[0], tuple(kernel), tuple(stride),
                       _padding(pads), tuple(dilation), group, bias is not None, mode,
                       dtype=dt, seed=0)
        return rd.fill(layer, {"weight": w} | ({} if bias is None else {"bias": bias}))
    if op in ("MaxPool", "AveragePool"):
        if len(node.output) > 1 and node.output[1]:
            raise ValueError("MaxPool with an Indices output is not supported")
        kernel = list(a["kernel_shape"])
        if len(kernel) != 2:
            raise ValueError(f"{op} kernel_shape {kernel}: only 2-D pooling is supported")
        stride, dilation = list(a.get("strides", [1, 1])), list(a.get("dilations", [1, 1]))
        t, l, b, r = _window_pads(a, shape[1:], kernel, stride, dilation, op)
        ceil = bool(a.get("ceil_mode", 0))
        cip = bool(a.get("count_include_pad", 0))
        if op == "AveragePool" and dilation != [1, 1]:
            raise ValueError(f"AveragePool dilations {dilation}: convscope's AvgPool2D has none")
        if rd.pending_pad is not None:  # zeros padded first are pixels: counted, as with cip=1
            (pt, pl, pb, pr), mode, _ = rd.pending_pad
            rd.pending_pad = None
            if mode != "zeros" or cip or (t, l) != (0, 0) or (pt, pl) != (pb, pr):
                raise ValueError(f"a {mode} Pad {[pt, pl, pb, pr]} before AveragePool (pads "
                                 f"{[t, l, b, r]}, count_include_pad={int(cip)}): only zero "
                                 "padding, symmetric, before a pool with no padding of its own "
                                 "and count_include_pad=0 is average pooling with "
                                 "count_include_pad=1")
            t, l, b, r, cip = pt, pl, b + pb, r + pr, True
            if (b, r) == (t, l):  # both ceil modes count the same pixels; the sizes must agree
                size = _onnx_pool_shape(shape, kernel, stride, (t, l, b, r), dilation, ceil)
                for c in (ceil, not ceil):
                    layer = AvgPool2D(tuple(kernel), tuple(stride), (t, l), c, True)
                    if layer.output_shape(shape) == size:
                        return layer
                raise ValueError(f"AveragePool after a zero Pad gives {size[1:]}, which no "
                                 "convscope AvgPool2D gives")

        def make(ceil_mode: bool) -> Layer:
            if op == "MaxPool":
                return MaxPool2D(tuple(kernel), tuple(stride), (t, l), tuple(dilation), ceil_mode)
            return AvgPool2D(tuple(kernel), tuple(stride), (t, l), ceil_mode, cip)

        if (t, l) == (b, r):
            return make(ceil)
        # longer end padding (what _pool_window writes): the same windows as ceil_mode when the
        # padding itself is never counted and the output sizes agree
        if not ceil and b >= t and r >= l:
            candidate = make(True)
            if candidate.output_shape(shape) == _onnx_pool_shape(shape, kernel, stride,
                                                                 (t, l, b, r), dilation, False):
                return candidate
        raise ValueError(f"{op} pads {[t, l, b, r]} are asymmetric; convscope's pooling pads "
                         "both sides equally")
    if op == "GlobalAveragePool":
        return GlobalAvgPool2D()
    if op == "BatchNormalization":
        if a.get("training_mode", 0):
            raise ValueError("BatchNormalization with training_mode=1 is not an inference graph")
        if len(node.output) > 1 and any(o in rd.used for o in node.output[1:]):
            raise ValueError("BatchNormalization's running-statistics outputs are used")
        names = ("weight", "bias", "running_mean", "running_var")
        arrays = {k: rd.const(node, j + 1, f"BatchNormalization {k}") for j, k in enumerate(names)}
        cls = BatchNorm2D if len(shape) == 3 else BatchNorm1D
        layer = cls(len(arrays["running_mean"]), _f32(a.get("epsilon", 1e-5)), dtype=dt)
        return rd.fill(layer, arrays)
    if op == "Relu":
        return ReLU()
    if op == "LeakyRelu":
        return LeakyReLU(_f32(a.get("alpha", 0.01)))
    if op == "Sigmoid":
        return Sigmoid()
    if op == "Tanh":
        return Tanh()
    if op == "Flatten":
        if int(a.get("axis", 1)) != 1:
            raise ValueError(f"Flatten axis {a['axis']}: only axis 1 (keep the batch axis) is "
                             "supported")
        return Flatten()
    if op == "Reshape":
        target = [int(v) for v in rd.const(node, 1, "Reshape shape")]
        flat = int(np.prod(shape))
        if target not in ([0, -1], [-1, flat]) and not (len(target) == 2 and target[1] == flat
                                                         and target[0] in (0, -1)):
            raise ValueError(f"Reshape to {target}: only flattening to (N, -1) is supported")
        return Flatten()
    if op == "Gemm":
        if a.get("transA", 0):
            raise ValueError("Gemm with transA=1 is not supported")
        b = rd.const(node, 1, "Gemm B")
        c = rd.const(node, 2, "Gemm C", required=False)
        w = b if a.get("transB", 0) else b.T
        alpha, beta = float(a.get("alpha", 1.0)), float(a.get("beta", 1.0))
        if alpha != 1.0:
            w = w * alpha
        out = w.shape[0]
        layer = Linear(w.shape[1], out, c is not None, dtype=dt, seed=0)
        arrays = {"weight": w}
        if c is not None:
            if c.size not in (1, out):
                raise ValueError(f"Gemm C of shape {c.shape} does not broadcast to ({out},)")
            arrays["bias"] = np.broadcast_to(c.reshape(-1) * beta if beta != 1.0 else c.reshape(-1),
                                             (out,))
        return rd.fill(layer, arrays)
    if op == "MatMul":
        b = rd.const(node, 1, "MatMul B")
        if b.ndim != 2:
            raise ValueError(f"MatMul with a {b.ndim}-D B: only (in, out) matrices are supported")
        return rd.fill(Linear(b.shape[0], b.shape[1], False, dtype=dt, seed=0), {"weight": b.T})
    if op == "Add":
        prev = rd.layers[-1] if rd.layers else None
        if not (isinstance(prev, Linear) and not prev.use_bias):
            raise ValueError("Add is supported only as the bias after a MatMul")
        other = node.input[1] if node.input[0] == rd.cur else node.input[0]
        if other not in rd.tensors:
            raise ValueError(f"Add of {other!r}: the bias must be an initializer or Constant")
        bias = np.broadcast_to(rd.tensors[other].reshape(-1), (prev.out_features,))
        layer = Linear(prev.in_features, prev.out_features, True, dtype=dt, seed=0)
        rd.layers.pop()
        return rd.fill(layer, {"weight": prev.params["weight"], "bias": bias})
    if op == "Dropout":
        training = rd.const(node, 2, "Dropout training_mode", required=False)
        if training is not None and bool(np.asarray(training).reshape(-1)[0]):
            raise ValueError("Dropout with training_mode=True is not an inference graph")
        if len(node.output) > 1 and node.output[1] in rd.used:
            raise ValueError("Dropout's mask output is used")
        ratio = rd.const(node, 1, "Dropout ratio", required=False)
        if ratio is None:
            return Dropout(0.5)
        ratio = np.asarray(ratio).reshape(-1)[0]
        return Dropout(_f32(ratio) if ratio.dtype == np.float32 else float(ratio))
    raise ValueError(f"operator {op} is not supported; supported: {', '.join(_SUPPORTED_OPS)}")


def import_onnx(source: Any, input_shape: Sequence[int] | None = None) -> Sequential:
    """A convscope Sequential (in eval mode) from an ONNX model: a path, bytes or ModelProto.

    The graph must be a chain (each node reads the previous one's output) of supported operators
    with weights as initializers.  ``input_shape`` (C, H, W) is needed only when the graph's input
    has no static C, H, W.  Anything else raises ValueError naming the node.
    """
    onnx = _onnx()
    proto = _load(source)
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

    rd = _Reader(onnx, graph, np.dtype(elem))
    rd.cur = inputs[0].name
    cur_shape = shape
    for k, node in enumerate(graph.node):
        where = f"import_onnx: node {k} ({node.name or node.op_type}, {node.op_type})"
        if node.op_type == "Constant":
            a = _Reader.attrs(node)
            if "value" not in a:
                raise ValueError(f"{where}: only Constant nodes with a tensor 'value' are supported")
            rd.tensors[node.output[0]] = onnx.numpy_helper.to_array(a["value"])
            continue
        if not node.input or node.input[0] != rd.cur:
            if not (node.op_type == "Add" and rd.cur in node.input):
                raise ValueError(f"{where}: reads {list(node.input)}, not the previous output "
                                 f"{rd.cur!r}; only a chain of layers is supported")
        if node.op_type != "Identity":
            try:
                layer = _read_node(rd, node, cur_shape)
            except (ValueError, KeyError) as e:
                raise type(e)(f"{where}: {e}") from None
            if layer is not None:
                try:
                    if node.op_type != "Add":  # an Add replaces the MatMul's layer: same shape
                        cur_shape = layer.output_shape(cur_shape)
                except ShapeError as e:
                    raise ShapeError(f"{where}: {e}") from None
                rd.layers.append(layer)
        rd.cur = node.output[0]
    if rd.pending_pad is not None:
        raise ValueError("import_onnx: the graph ends with a Pad node; convscope needs a Conv or "
                         "AveragePool after it")
    if rd.cur != graph.output[0].name:
        raise ValueError(f"import_onnx: the graph output {graph.output[0].name!r} is not the end of "
                         f"the chain ({rd.cur!r})")
    model = Sequential(*rd.layers, input_shape=shape)
    out_dims = [d.dim_value if d.HasField("dim_value") else None
                for d in graph.output[0].type.tensor_type.shape.dim]
    out = model.output_shape(shape)
    if out_dims and (len(out_dims) != len(out) + 1
                     or any(d is not None and d != o for d, o in zip(out_dims[1:], out))):
        raise ShapeError(f"import_onnx: the graph declares output shape {out_dims}, convscope "
                         f"computes (batch, {', '.join(map(str, out))})")
    return model.eval()


# ---------------------------------------------------------------------------------------------
# running


def run_onnx(source: Any, x: np.ndarray, providers: Sequence[str] | None = None) -> np.ndarray:
    """Outputs of an ONNX model (path, bytes or ModelProto) for x, computed by onnxruntime."""
    try:
        import onnxruntime as ort  # noqa: PLC0415
    except ImportError as e:
        raise ImportError(f"run_onnx needs onnxruntime; {_HINT} ({e})") from None
    if not isinstance(source, (bytes, bytearray)):
        source = _load(source).SerializeToString()
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    session = ort.InferenceSession(bytes(source), opts,
                                   providers=list(providers or ["CPUExecutionProvider"]))
    name = session.get_inputs()[0].name
    return session.run(None, {name: np.asarray(x)})[0]

