"""Conv2D: the lecture's conv layer.

K filters of size F x F x D slide over the input with stride S after zero padding P; each position
gives one number w·x + b, each filter one activation map.  32x32x3 with six 5x5x3 filters gives
28x28x6, from 5·5·3·6 = 450 weights and 6 biases.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .. import functional as F
from .. import init as inits
from ..errors import ShapeError
from ..shapes import (IntOrPair, check_fit, conv_macs, conv_output_shape, conv_param_formula,
                      normalize_padding, pair)
from .base import Array, Layer, Shape, float_dtype, positive_int
from .registry import register_layer


@register_layer("conv", onnx_ops=("Conv",), torch=("Conv2d",))
class Conv2D(Layer):
    """2-D convolution (cross-correlation, as in PyTorch).

    Input (N, C_in, H, W) -> output (N, C_out, H_out, W_out) with
    H_out = (H + P_top + P_bottom - D·(F - 1) - 1) / S + 1 (floored, or an error with fit="error").
    ``weight`` (C_out, C_in / groups, kH, kW), ``bias`` (C_out,).  ``in_channels=None`` is inferred
    from the input shape given to :class:`Sequential`.
    """

    def __init__(self, in_channels: int | None = None, out_channels: int | None = None,
                 kernel_size: IntOrPair | None = None, stride: IntOrPair = 1,
                 padding: IntOrPair | str = 0, dilation: IntOrPair = 1, groups: int = 1,
                 bias: bool = True, padding_mode: str = "zeros", fit: str = "floor", *,
                 dtype: Any = np.float32, init: str = "kaiming",
                 seed: int | np.random.Generator | None = None) -> None:
        super().__init__()
        self.out_channels = positive_int(out_channels, "out_channels", "Conv2D")
        if kernel_size is None:
            raise ValueError("Conv2D: kernel_size is required, e.g. Conv2D(3, 6, kernel_size=5)")
        self.kernel_size = pair(kernel_size, "Conv2D kernel_size")
        self.stride = pair(stride, "Conv2D stride")
        self.dilation = pair(dilation, "Conv2D dilation")
        self.groups = positive_int(groups, "groups", "Conv2D")
        if self.out_channels % self.groups:
            raise ValueError(f"Conv2D: out_channels {self.out_channels} is not divisible by "
                             f"groups {self.groups}")
        self.padding = padding
        try:
            self.pads = normalize_padding(padding, self.kernel_size, self.dilation, self.stride)
        except ValueError as e:
            raise ValueError(f"Conv2D: {e}") from None
        if padding_mode not in F.PADDING_MODES:
            raise ValueError(f"Conv2D: padding_mode must be one of {F.PADDING_MODES}, "
                             f"got {padding_mode!r}")
        self.padding_mode = padding_mode
        self.fit = check_fit(fit)
        self.use_bias = bool(bias)
        self.dtype = float_dtype(dtype)
        self.init = inits.check_scheme(init)
        self.in_channels: int | None = None
        if in_channels is not None:
            self._create(positive_int(in_channels, "in_channels", "Conv2D"), inits.make_rng(seed))

    def _create(self, in_channels: int, rng: np.random.Generator) -> None:
        if in_channels % self.groups:
            fits = [g for g in range(1, in_channels + 1)
                    if in_channels % g == 0 and self.out_channels % g == 0]
            raise ShapeError(f"Conv2D: in_channels {in_channels} is not divisible by groups "
                             f"{self.groups}; groups that fit: {fits}")
        self.in_channels = in_channels
        self.reset_parameters(rng)

    def reset_parameters(self, rng: np.random.Generator) -> None:
        """Draw new weights (``init`` scheme) and biases."""
        kh, kw = self.kernel_size
        cg = self.in_channels // self.groups
        fan_in, fan_out = cg * kh * kw, self.out_channels // self.groups * kh * kw
        arrays = {"weight": inits.weight((self.out_channels, cg, kh, kw), fan_in, fan_out,
                                         self.init, rng, self.dtype)}
        if self.use_bias:
            arrays["bias"] = inits.bias(self.out_channels, fan_in, self.init, rng, self.dtype)
        self._set_params(**arrays)

    def build(self, input_shape: Shape, rng: np.random.Generator | None = None) -> Shape:
        if len(input_shape) != 3:
            raise ShapeError(f"{self!r}: needs a per-image shape (C, H, W), got {tuple(input_shape)}")
        if self.in_channels is None:
            self._create(int(input_shape[0]), inits.make_rng(rng))
        elif rng is not None:
            self.reset_parameters(rng)
        return self.output_shape(input_shape)

    def output_shape(self, input_shape: Shape) -> Shape:
        c, h, w = input_shape
        self._built()
        if c != self.in_channels:
            raise ShapeError(f"{self!r}: input has {c} channels ({c}x{h}x{w} per image), the layer "
                             f"needs {self.in_channels}")
        if self.padding_mode in ("reflect", "circular"):  # replicate repeats the edge at will
            for n, p, axis in ((h, self.pads[0], "height"), (w, self.pads[1], "width")):
                limit = n - 1 if self.padding_mode == "reflect" else n
                if max(p) > limit:
                    raise ShapeError(f"{self!r}: {self.padding_mode} padding {max(p)} needs an "
                                     f"input {axis} of at least {max(p) + (self.padding_mode == 'reflect')}, "
                                     f"got {n}")
        oh, ow = conv_output_shape((h, w), self.kernel_size, self.stride, self.pads, self.dilation,
                                   self.fit, what=repr(self))
        return self.out_channels, oh, ow

    def forward(self, x: Array) -> Array:
        """(N, C_in, H, W) -> (N, C_out, H_out, W_out)."""
        self._check(x, (4,), "(N, C, H, W)")
        key = (x.shape[1:], self.in_channels, self.kernel_size, self.stride, self.pads,
               self.dilation, self.padding_mode, self.fit)
        memo = self.__dict__.get("_shape_memo")
        if memo is None or memo[0] != key:  # shapes are checked once per input shape
            memo = self._shape_memo = (key, self.output_shape(tuple(x.shape[1:]))[1:])
        oh, ow = memo[1]
        y, cache = F.conv2d_forward(x, self.params["weight"], self.params.get("bias"), self.stride,
                                    self.pads, self.dilation, self.groups, (oh, ow),
                                    self.padding_mode)
        return self._keep(cache, y)

    def backward(self, dy: Array, input_grad: bool = True) -> Array | None:
        """dy (N, C_out, H_out, W_out) -> dx (N, C_in, H, W); adds dweight, dbias.

        ``input_grad=False`` skips dx (returns None): the first layer of a network needs none.
        """
        cache = self._take(dy)
        dx, dw, db = F.conv2d_backward(dy, self.params["weight"], cache, self.use_bias, input_grad)
        self._add_grad("weight", dw)
        if self.use_bias:
            self._add_grad("bias", db)
        return dx

    def _built(self) -> int:
        """in_channels, or a clear error while it is not known yet."""
        if self.in_channels is None:
            raise ShapeError(f"{self!r}: in_channels is not known yet; give it, or an input_shape "
                             "to Sequential")
        return self.in_channels

    def param_formula(self) -> str:
        return conv_param_formula(self._built(), self.out_channels, self.kernel_size,
                                  self.groups, self.use_bias)

    def macs(self, input_shape: Shape) -> int:
        _, oh, ow = self.output_shape(input_shape)
        return conv_macs((oh, ow), self.in_channels, self.out_channels, self.kernel_size, self.groups)

    def __repr__(self) -> str:
        kh, kw = self.kernel_size
        opts = [f"kernel_size={kh}x{kw}"]
        if self.stride != (1, 1):
            opts.append(f"stride={self.stride[0] if self.stride[0] == self.stride[1] else self.stride}")
        if self.pads != ((0, 0), (0, 0)):
            opts.append(f"padding={self.padding!r}")
        if self.dilation != (1, 1):
            opts.append(f"dilation={self.dilation}")
        if self.groups != 1:
            opts.append(f"groups={self.groups}")
        if not self.use_bias:
            opts.append("bias=False")
        if self.padding_mode != "zeros":
            opts.append(f"padding_mode={self.padding_mode!r}")
        return f"Conv2D({self.in_channels}, {self.out_channels}, {', '.join(opts)})"
