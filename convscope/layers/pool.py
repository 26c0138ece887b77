"""Pooling: a window slides over each activation map on its own; no parameters.

Same size formula as the conv layer: a 2x2 window at stride 2 halves each side (28x28 -> 14x14).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..ops import pool as F
from ..runtime import grad_enabled, xp_of
from ..errors import ShapeError
from ..shapes import IntOrPair, check_fit, conv_output_shape, pair
from ..words import axes, fit_words, formula_words, pad_words, stride_words, volume
from .base import Array, Layer, Shape
from .pool_onnx import onnx_window, pool_from_onnx
from .registry import register_layer


class _Pool2D(Layer):
    has_dilation = True

    def __init__(self, kernel_size: IntOrPair, stride: IntOrPair | None = None,
                 padding: IntOrPair = 0, dilation: IntOrPair = 1, ceil_mode: bool = False,
                 fit: str = "floor") -> None:
        super().__init__()
        self.kernel_size = pair(kernel_size, f"{self.name} kernel_size")
        self.stride = self.kernel_size if stride is None else pair(stride, f"{self.name} stride")
        pad = pair(padding, f"{self.name} padding", minimum=0)
        self.dilation = pair(dilation, f"{self.name} dilation")
        for p, k in zip(pad, self.kernel_size):
            if p > k // 2:  # PyTorch's rule; more could leave a window with only padding
                raise ValueError(f"{self.name}: padding {padding} must be at most half the kernel "
                                 f"size {k}, i.e. <= {k // 2}")
        self.pads = ((pad[0], pad[0]), (pad[1], pad[1]))
        self.ceil_mode = bool(ceil_mode)
        self.fit = check_fit(fit)

    def output_shape(self, input_shape: Shape) -> Shape:
        if len(input_shape) != 3:
            raise ShapeError(f"{self!r}: needs a per-image shape (C, H, W), got {tuple(input_shape)}")
        c, h, w = input_shape
        oh, ow = conv_output_shape((h, w), self.kernel_size, self.stride, self.pads, self.dilation,
                                   self.fit, self.ceil_mode, what=repr(self))
        for n, o, k, s, p, d, axis in zip((h, w), (oh, ow), self.kernel_size, self.stride,
                                          self.pads, self.dilation, ("height", "width")):
            for i in range(o):  # dilated taps can step over a small input: a window of padding only
                if d > 1 and not any(0 <= i * s - p[0] + d * t < n for t in range(k)):
                    raise ShapeError(f"{self!r}: along the {axis} window {i} of the {n} input "
                                     f"pixels holds only padding (dilation {d}); use a smaller "
                                     "padding or dilation, or a larger input")
        return c, oh, ow

    def _out_hw(self, x: Array) -> tuple[int, int]:
        """(OH, OW) for x, checked once per input shape and configuration."""
        key = (x.shape[1:], self.kernel_size, self.stride, self.pads, self.dilation,
               self.ceil_mode, self.fit)
        memo = self.__dict__.get("_shape_memo")
        if memo is None or memo[0] != key:
            memo = self._shape_memo = (key, self.output_shape(tuple(x.shape[1:]))[1:])
        return memo[1]

    # -- explain --
    pool_word = ""  # 'max', 'average': the lecture's name of the window's function

    def explain(self, input_shape: Shape, ctx: Any) -> Any:
        """'POOL: max 2×2, stride 2, pad 0: (24 − 2 + 2·0) / 2 + 1 = 12 → 12×12×10; ...'; a stride
        that does not fit says what it drops."""
        note = ctx.misfit_note(self, input_shape)
        c, h, w = input_shape
        ah, aw = axes(self, h, w)
        out = (c, ah.out, aw.out)
        kh, kw = self.kernel_size
        head = (f"POOL: {self.pool_word or self.name} {kh}×{kw}, stride "
                f"{stride_words(self.stride)}, {pad_words(self.pads)}")
        if self.dilation != (1, 1):
            head += f", dilation {self.dilation}"
        fit, fits = fit_words(ah, aw)
        text = f"{head}: {formula_words(ah, aw)} → {volume(out)}"
        text += "" if fits else " (floored, as PyTorch does)"
        if fit:
            text += f"\n{fit}"
        text += f"\neach of the {c} maps on its own; no parameters"
        return ctx.told("POOL", text + note, out, 0, 0, fits, f"{formula_words(ah, aw)}: {fit}")

    def __repr__(self) -> str:
        kh, kw = self.kernel_size
        opts = [f"{kh}x{kw}"]
        if self.stride != self.kernel_size:
            opts.append(f"stride={self.stride[0] if self.stride[0] == self.stride[1] else self.stride}")
        if self.pads != ((0, 0), (0, 0)):
            opts.append(f"padding={self.pads[0][0], self.pads[1][0]}")
        if self.dilation != (1, 1):
            opts.append(f"dilation={self.dilation}")
        if self.ceil_mode:
            opts.append("ceil_mode=True")
        return f"{self.name}({', '.join(opts)})"


# -- JSON (shared by the pools) --
def _pool_kind(spec: Any, own: str) -> str:
    """"max" or "avg": the ``kind`` key of ``{"type": "pool"}``, which must agree with
    "maxpool" / "avgpool" where the type says it."""
    kind = spec.choice("kind", ("max", "avg"), "max" if spec.type == "pool" else own)
    if spec.type != "pool" and kind != own:
        raise spec.error(f"type {spec.type!r} contradicts kind {kind!r}")
    return kind


def _window(spec: Any, ctx: Any) -> tuple[Any, Any, Any]:
    """(size [2], stride [size], pad [0]) of a pool entry, on a volume."""
    if len(ctx.shape) != 3:
        raise spec.error(f"a pool layer needs a volume C x H x W, but it gets {ctx.shape}")
    size = spec.size(default=2)
    return size, spec.pair("stride", default=size), spec.pair("pad", default=0, minimum=0)


_POOL_KEYS = ("size", "sx", "sy", "stride", "pad", "kind", "dilation", "ceil_mode",
              "count_include_pad", "fit")


@register_layer("maxpool", aliases=("pool",), onnx_ops=("MaxPool",), torch=("MaxPool2d",))
class MaxPool2D(_Pool2D):
    """Max over each kH x kW window: (N, C, H, W) -> (N, C, H_out, W_out), sizes as in Conv2D.

    Padding is -inf (it never wins); the gradient goes to the first maximum of each window.
    """

    pool_word = "max"

    def forward(self, x: Array) -> Array:
        self._check(x, (4,), "(N, C, H, W)")
        oh, ow = self._out_hw(x)
        y, cache = F.maxpool2d_forward(x, self.kernel_size, self.stride, self.pads, self.dilation,
                                       (oh, ow), keep=grad_enabled())
        return self._keep(cache, y)

    def backward(self, dy: Array) -> Array:
        return F.maxpool2d_backward(dy, self._take(dy))

    # -- ONNX --
    def to_onnx(self, g: Any, x: str, input_shape: Shape) -> str:
        """MaxPool (kernel_shape, strides, pads, dilations, ceil_mode; see onnx_window)."""
        ceil, pads, _ = onnx_window(self, input_shape[1:])
        return g.node("MaxPool", [x], kernel_shape=list(self.kernel_size),
                      strides=list(self.stride), pads=pads, dilations=list(self.dilation),
                      ceil_mode=ceil)

    @classmethod
    def from_onnx(cls, node: Any, g: Any, input_shape: Shape) -> Layer:
        if len(node.output) > 1 and node.output[1]:
            raise ValueError("MaxPool with an Indices output is not supported")
        return pool_from_onnx(cls, node, g, input_shape)

    # -- PyTorch --
    def to_torch(self, torch: Any) -> Any:
        return torch.nn.MaxPool2d(self.kernel_size, self.stride,
                                  (self.pads[0][0], self.pads[1][0]), self.dilation,
                                  ceil_mode=self.ceil_mode)

    @classmethod
    def from_torch(cls, module: Any, torch: Any) -> Layer:
        if module.return_indices:
            raise torch.unsupported(module, "return_indices=True")
        return cls(module.kernel_size, module.stride, module.padding, module.dilation,
                   module.ceil_mode)

    # -- JSON --
    spec_keys = _POOL_KEYS

    def to_spec(self) -> dict[str, Any]:
        """size [kh, kw], stride, pad [h, w], dilation, ceil_mode, fit."""
        return {"size": list(self.kernel_size), "stride": list(self.stride),
                "pad": [self.pads[0][0], self.pads[1][0]], "dilation": list(self.dilation),
                "ceil_mode": self.ceil_mode, "fit": self.fit}

    @classmethod
    def from_spec(cls, spec: Any, ctx: Any) -> Layer:
        """Max pooling; ``{"type": "pool", "kind": "avg"}`` is average pooling."""
        if _pool_kind(spec, "max") == "avg":
            return AvgPool2D.from_spec(spec, ctx)
        if spec.has("count_include_pad"):
            raise spec.error("'count_include_pad' is for average pooling (\"kind\": \"avg\")")
        size, stride, pad = _window(spec, ctx)
        return cls(size, stride, pad, spec.pair("dilation", default=1),
                   spec.bool("ceil_mode", False), spec.fit())

    @classmethod
    def example(cls, dtype: Any = None) -> tuple[Layer, Shape]:
        return cls(3, 2, 1), (2, 5, 5)


@register_layer("avgpool", onnx_ops=("AveragePool",), torch=("AvgPool2d",))
class AvgPool2D(_Pool2D):
    """Mean over each kH x kW window: (N, C, H, W) -> (N, C, H_out, W_out).

    ``count_include_pad`` (PyTorch's default True) divides by the window size including padding.
    """

    pool_word = "average"

    def __init__(self, kernel_size: IntOrPair, stride: IntOrPair | None = None,
                 padding: IntOrPair = 0, ceil_mode: bool = False, count_include_pad: bool = True,
                 fit: str = "floor") -> None:
        super().__init__(kernel_size, stride, padding, 1, ceil_mode, fit)
        self.count_include_pad = bool(count_include_pad)

    def forward(self, x: Array) -> Array:
        self._check(x, (4,), "(N, C, H, W)")
        oh, ow = self._out_hw(x)
        y, cache = F.avgpool2d_forward(x, self.kernel_size, self.stride, self.pads, (oh, ow),
                                       self.count_include_pad)
        return self._keep(cache, y)

    def backward(self, dy: Array) -> Array:
        return F.avgpool2d_backward(dy, self._take(dy))

    # -- ONNX --
    def to_onnx(self, g: Any, x: str, input_shape: Shape) -> str:
        """AveragePool (kernel_shape, strides, pads, ceil_mode, count_include_pad; see
        onnx_window), after a zero Pad node where the padding must count as pixels."""
        ceil, pads, zero_pad = onnx_window(self, input_shape[1:])
        count_pad = self.count_include_pad
        if zero_pad:
            (t, b), (l, r) = self.pads
            amounts = g.tensor("pads", [0, 0, t, l, 0, 0, b, r], np.int64)
            x = g.node("Pad", [x, amounts], mode="constant")
            count_pad = False
        return g.node("AveragePool", [x], kernel_shape=list(self.kernel_size),
                      strides=list(self.stride), pads=pads, ceil_mode=ceil,
                      count_include_pad=int(count_pad))

    @classmethod
    def from_onnx(cls, node: Any, g: Any, input_shape: Shape) -> Layer:
        return pool_from_onnx(cls, node, g, input_shape)

    # -- PyTorch --
    def to_torch(self, torch: Any) -> Any:
        return torch.nn.AvgPool2d(self.kernel_size, self.stride,
                                  (self.pads[0][0], self.pads[1][0]), ceil_mode=self.ceil_mode,
                                  count_include_pad=self.count_include_pad)

    @classmethod
    def from_torch(cls, module: Any, torch: Any) -> Layer:
        if module.divisor_override is not None:
            raise torch.unsupported(module, f"divisor_override={module.divisor_override}")
        return cls(module.kernel_size, module.stride, module.padding, module.ceil_mode,
                   module.count_include_pad)

    # -- JSON --
    spec_keys = _POOL_KEYS

    def to_spec(self) -> dict[str, Any]:
        """size [kh, kw], stride, pad [h, w], ceil_mode, count_include_pad, fit."""
        return {"size": list(self.kernel_size), "stride": list(self.stride),
                "pad": [self.pads[0][0], self.pads[1][0]], "ceil_mode": self.ceil_mode,
                "count_include_pad": self.count_include_pad, "fit": self.fit}

    @classmethod
    def from_spec(cls, spec: Any, ctx: Any) -> Layer:
        _pool_kind(spec, "avg")
        size, stride, pad = _window(spec, ctx)
        if spec.get("dilation", default=1) not in (1, [1, 1]):
            raise spec.error("average pooling has no dilation")
        return cls(size, stride, pad, spec.bool("ceil_mode", False),
                   spec.bool("count_include_pad", True), spec.fit())

    @classmethod
    def example(cls, dtype: Any = None) -> tuple[Layer, Shape]:
        return cls(3, 2, 1, count_include_pad=False), (2, 5, 5)


@register_layer("gap", aliases=("globalavgpool",), onnx_ops=("GlobalAveragePool",),
                torch=("AdaptiveAvgPool2d",))
class GlobalAvgPool2D(Layer):
    """Mean of each whole activation map: (N, C, H, W) -> (N, C, 1, 1) (PyTorch's
    AdaptiveAvgPool2d(1)); follow it with Flatten before a Linear layer."""

    def output_shape(self, input_shape: Shape) -> Shape:
        if len(input_shape) != 3:
            raise ShapeError(f"{self!r}: needs a per-image shape (C, H, W), got {tuple(input_shape)}")
        return input_shape[0], 1, 1

    def forward(self, x: Array) -> Array:
        self._check(x, (4,), "(N, C, H, W)")
        return self._keep(x.shape, x.mean(axis=(2, 3), keepdims=True))

    # -- explain --
    def explain(self, input_shape: Shape, ctx: Any) -> Any:
        """'POOL: global average of each 10×10 map: 10×10×16 → 1×1×16; no parameters'."""
        out = self.output_shape(input_shape)
        return ctx.told("POOL", f"POOL: global average of each {input_shape[1]}×{input_shape[2]} "
                        f"map: {volume(input_shape)} → {volume(out)}; no parameters", out)

    def backward(self, dy: Array) -> Array:
        shape = self._take(dy)
        xp = xp_of(dy)
        return xp.broadcast_to(dy / (shape[2] * shape[3]), shape).copy()

    # -- ONNX --
    def to_onnx(self, g: Any, x: str, input_shape: Shape) -> str:
        return g.node("GlobalAveragePool", [x])

    @classmethod
    def from_onnx(cls, node: Any, g: Any, input_shape: Shape) -> Layer:
        return cls()

    # -- PyTorch --
    def to_torch(self, torch: Any) -> Any:
        return torch.nn.AdaptiveAvgPool2d(1)

    @classmethod
    def from_torch(cls, module: Any, torch: Any) -> Layer:
        if module.output_size not in (1, (1, 1), [1, 1]):
            raise torch.unsupported(module, f"output_size {module.output_size}; only 1 "
                                            "(global average pooling) is")
        return cls()

    # -- JSON --
    @classmethod
    def from_spec(cls, spec: Any, ctx: Any) -> Layer:
        if len(ctx.shape) != 3:
            raise spec.error(f"global average pooling needs a volume C x H x W, but it gets "
                             f"{ctx.shape}")
        return cls()

    @classmethod
    def example(cls, dtype: Any = None) -> tuple[Layer, Shape]:
        return cls(), (2, 3, 4)
