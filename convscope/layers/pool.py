"""Pooling: a window slides over each activation map on its own; no parameters.

Same size formula as the conv layer: a 2x2 window at stride 2 halves each side (28x28 -> 14x14).
"""

from __future__ import annotations

from .. import functional as F
from ..runtime import grad_enabled, xp_of
from ..errors import ShapeError
from ..shapes import IntOrPair, check_fit, conv_output_shape, pair
from .base import Array, Layer, Shape
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


@register_layer("maxpool", aliases=("pool",), onnx_ops=("MaxPool",), torch=("MaxPool2d",))
class MaxPool2D(_Pool2D):
    """Max over each kH x kW window: (N, C, H, W) -> (N, C, H_out, W_out), sizes as in Conv2D.

    Padding is -inf (it never wins); the gradient goes to the first maximum of each window.
    """

    def forward(self, x: Array) -> Array:
        self._check(x, (4,), "(N, C, H, W)")
        oh, ow = self._out_hw(x)
        y, cache = F.maxpool2d_forward(x, self.kernel_size, self.stride, self.pads, self.dilation,
                                       (oh, ow), keep=grad_enabled())
        return self._keep(cache, y)

    def backward(self, dy: Array) -> Array:
        return F.maxpool2d_backward(dy, self._take(dy))


@register_layer("avgpool", onnx_ops=("AveragePool",), torch=("AvgPool2d",))
class AvgPool2D(_Pool2D):
    """Mean over each kH x kW window: (N, C, H, W) -> (N, C, H_out, W_out).

    ``count_include_pad`` (PyTorch's default True) divides by the window size including padding.
    """

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

    def backward(self, dy: Array) -> Array:
        shape = self._take(dy)
        xp = xp_of(dy)
        return xp.broadcast_to(dy / (shape[2] * shape[3]), shape).copy()
