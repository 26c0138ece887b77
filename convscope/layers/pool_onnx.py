"""The ONNX window arithmetic of the pooling layers' hooks (layers/pool.py): which ceil_mode and
pads an ONNX pool needs to have convscope's windows, and the way back.  Imports no onnx."""

from __future__ import annotations

from typing import Any

from ..shapes import effective_kernel
from .base import Layer, Shape

__all__ = ["onnx_window", "pool_from_onnx"]


def onnx_window(layer: Any, hw: tuple[int, ...]) -> tuple[int, list[int], bool]:
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
    (t, b), (l, r) = layer.pads
    pads = [t, l, b, r]
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
    if getattr(layer, "count_include_pad", False):  # the layer's pads go to a Pad node
        return 0, [0, 0, ends[0] - layer.pads[0][1], ends[1] - layer.pads[1][1]], True
    if any(e >= k for e, k in zip(ends, layer.kernel_size)):  # onnxruntime needs pads < kernel
        h, w = hw
        raise ValueError(f"{layer!r}: at a {h}x{w} input ceil_mode keeps a partial last window "
                         f"along one axis ({outs[0]}x{outs[1]} out) and drops one along the other; "
                         "ONNX has one ceil_mode for both axes and onnxruntime takes no end "
                         "padding as long as the kernel; use ceil_mode=False or another input size")
    return 0, [pads[0], pads[1], ends[0], ends[1]], False


def _onnx_pool_shape(shape: Shape, kernel: list[int], stride: list[int], pads: tuple[int, ...],
                     dilation: list[int], ceil: bool) -> Shape:
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


def pool_from_onnx(cls: type, node: Any, g: Any, shape: Shape) -> Layer:
    """MaxPool or AveragePool (2-D, symmetric pads, or the longer end padding onnx_window
    writes; for AveragePool a zero Pad before it is count_include_pad=1)."""
    op, a = node.op_type, g.attrs(node)
    kernel = list(a["kernel_shape"])
    if len(kernel) != 2:
        raise ValueError(f"{op} kernel_shape {kernel}: only 2-D pooling is supported")
    stride, dilation = list(a.get("strides", [1, 1])), list(a.get("dilations", [1, 1]))
    t, l, b, r = g.window_pads(node, shape[1:], kernel, stride, dilation)
    ceil = bool(a.get("ceil_mode", 0))
    cip = bool(a.get("count_include_pad", 0))
    if op == "AveragePool" and dilation != [1, 1]:
        raise ValueError(f"AveragePool dilations {dilation}: convscope's AvgPool2D has none")
    if (before := g.pad_before(node)) is not None:  # zeros padded first are pixels: counted
        (pt, pl, pb, pr), mode = before
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
                layer = cls(tuple(kernel), tuple(stride), (t, l), c, True)
                if layer.output_shape(shape) == size:
                    return layer
            raise ValueError(f"AveragePool after a zero Pad gives {size[1:]}, which no "
                             "convscope AvgPool2D gives")

    def make(ceil_mode: bool) -> Layer:
        if op == "MaxPool":
            return cls(tuple(kernel), tuple(stride), (t, l), tuple(dilation), ceil_mode)
        return cls(tuple(kernel), tuple(stride), (t, l), ceil_mode, cip)

    if (t, l) == (b, r):
        return make(ceil)
    # longer end padding (what onnx_window writes): the same windows as ceil_mode when the
    # padding itself is never counted and the output sizes agree
    if not ceil and b >= t and r >= l:
        candidate = make(True)
        if candidate.output_shape(shape) == _onnx_pool_shape(shape, kernel, stride,
                                                             (t, l, b, r), dilation, False):
            return candidate
    raise ValueError(f"{op} pads {[t, l, b, r]} are asymmetric; convscope's pooling pads "
                     "both sides equally")
