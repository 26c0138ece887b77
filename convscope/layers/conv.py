"""Conv2D: the lecture's conv layer.

K filters of size F x F x D slide over the input with stride S after zero padding P; each position
gives one number w·x + b, each filter one activation map.  32x32x3 with six 5x5x3 filters gives
28x28x6, from 5·5·3·6 = 450 weights and 6 biases.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..ops import conv as F
from .. import init as inits
from ..errors import ShapeError
from ..shapes import (IntOrPair, check_fit, conv_macs, conv_output_shape, conv_param_formula,
                      normalize_padding, pair)
from ..shapes import conv_param_count, effective_kernel, same_padding
from ..words import (axes, fit_words, formula_words, minus, nbytes_text, pad_words, plural,
                     same_words, stride_words, volume)
from ..ops.padding import PAD_MODES
from .base import Array, Layer, Shape, float_dtype, positive_int
from .registry import register_layer


@register_layer("conv", onnx_ops=("Conv",), torch=("Conv2d",))
class Conv2D(Layer):
    """2-D convolution (cross-correlation, as in PyTorch).

    Input (N, C_in, H, W) -> output (N, C_out, H_out, W_out) with
    H_out = (H + P_top + P_bottom - D·(F - 1) - 1) / S + 1 (floored, or an error with fit="error").
    ``weight`` (C_out, C_in / groups, kH, kW), ``bias`` (C_out,).  ``in_channels=None`` is inferred
    from the input shape given to :class:`Sequential`.

    Reading order of its math, each step tested equal to the next:

    1. the sliding filter as loops, one dot product w·x + b per output, and its backward:
       ``convscope.ops.conv_reference.conv2d_forward_loops`` / ``conv2d_backward_loops``;
    2. the textbook im2col + one GEMM: ``conv_reference.im2col``, ``conv2d_forward_simple`` /
       ``conv2d_backward_simple``;
    3. the fast path this layer runs, chunked im2col + one GEMM per chunk, channels-last:
       ``convscope.ops.conv.conv2d_forward`` / ``conv2d_backward``.
    """

    # -- traits --
    shows_filters = True        # params["weight"] (K, D, kH, kW): viz and report draw them
    input_grad_optional = True  # backward(dy, input_grad=False) skips dx

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

    def _create(self, in_channels: int, rng: np.random.Generator | None) -> None:
        """Set in_channels and draw the parameters from ``rng`` (None: placeholders, for
        build_virtual)."""
        if in_channels % self.groups:
            fits = [g for g in range(1, min(in_channels, self.out_channels) + 1)
                    if in_channels % g == 0 and self.out_channels % g == 0]
            raise ShapeError(f"Conv2D: in_channels {in_channels} is not divisible by groups "
                             f"{self.groups}; groups that fit: {fits}")
        self.in_channels = in_channels
        if rng is None:
            self._set_virtual(weight=(self.out_channels, in_channels // self.groups,
                                      *self.kernel_size),
                              **({"bias": (self.out_channels,)} if self.use_bias else {}))
        else:
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

    # -- memory --
    def build_virtual(self, input_shape: Shape) -> Shape:
        """build() with placeholder weight (C_out, C_in / groups, kH, kW) and bias (C_out,)."""
        if len(input_shape) != 3:
            raise ShapeError(f"{self!r}: needs a per-image shape (C, H, W), got {tuple(input_shape)}")
        if self.in_channels is None:
            self._create(int(input_shape[0]), None)
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

    # -- explain --
    def explain(self, input_shape: Shape, ctx: Any) -> Any:
        """'CONV: 6 filters 5×5×3, stride 1, pad 0: (32 − 5 + 2·0) / 1 + 1 = 28 → 28×28×6; ...',
        the dot products and the im2col matrix; a stride that does not fit says what it drops."""
        if len(input_shape) != 3:
            raise ShapeError(f"{self!r}: needs a per-image shape (C, H, W), got {tuple(input_shape)}")
        note = ctx.misfit_note(self, input_shape)
        c, h, w = input_shape
        ah, aw = axes(self, h, w)
        out = (self.out_channels, ah.out, aw.out)
        kh, kw = self.kernel_size
        depth = c // self.groups
        head = f"CONV: {plural(self.out_channels, 'filter')} {kh}×{kw}×{depth}"
        if self.groups > 1:
            head += f" (groups {self.groups}: each filter sees {depth} of the {c} channels)"
        head += f", stride {stride_words(self.stride)}, {pad_words(self.pads, self.padding_mode)}"
        if self.dilation != (1, 1):
            dil = self.dilation[1] if self.dilation[0] == self.dilation[1] else self.dilation
            head += (f", dilation {dil} (spans {effective_kernel(kh, self.dilation[0])}×"
                     f"{effective_kernel(kw, self.dilation[1])})")
        head += same_words(ah, aw)
        fit, fits = fit_words(ah, aw)
        weights = minus(conv_param_formula(c, self.out_channels, self.kernel_size, self.groups, False))
        params = conv_param_count(c, self.out_channels, self.kernel_size, self.groups, self.use_bias)
        text = f"{head}: {formula_words(ah, aw)} → {volume(out)}"
        text += "" if fits else " (floored, as PyTorch does)"
        text += (f"; weights {weights}, biases {self.out_channels if self.use_bias else 0} "
                 f"({params:,} parameters)")
        if fit:
            text += f"\n{fit}"
        macs = conv_macs((ah.out, aw.out), c, self.out_channels, self.kernel_size, self.groups)
        n_out = out[0] * out[1] * out[2]
        text += (f"\neach of the {aw.out}·{ah.out}·{self.out_channels} = {n_out:,} outputs is a "
                 f"{kh * kw * depth}-number dot product w·x + b: {macs:,} multiply-adds")
        rows, cols = c * kh * kw, ah.out * aw.out
        workspace = rows * cols * ctx.itemsize
        text += (f"\nim2col: the patches as a {rows:,} × {cols:,} matrix, {rows * cols:,} numbers "
                 f"({nbytes_text(workspace)})")
        return ctx.told("CONV", text + note, out, macs, workspace, fits,
                        f"{formula_words(ah, aw)}: {fit}")

    # -- JSON --
    spec_keys = ("filters", "size", "sx", "sy", "stride", "pad", "dilation", "groups", "bias",
                 "padding_mode", "fit", "activation")

    def to_spec(self) -> dict[str, Any]:
        """filters, size [kh, kw], stride, pad [[top, bottom], [left, right]], dilation, groups,
        bias, padding_mode, fit."""
        (t, b), (left, right) = self.pads
        return {"filters": self.out_channels, "size": list(self.kernel_size),
                "stride": list(self.stride), "pad": [[int(t), int(b)], [int(left), int(right)]],
                "dilation": list(self.dilation), "groups": self.groups, "bias": self.use_bias,
                "padding_mode": self.padding_mode, "fit": self.fit}

    @classmethod
    def from_spec(cls, spec: Any, ctx: Any) -> list[Layer]:
        """The conv layer (in_channels from the volume flowing in), then its ``activation``."""
        if len(ctx.shape) != 3:
            raise spec.error(f"a conv layer needs a volume C x H x W, but it gets {ctx.shape}")
        pad = spec.get("pad", default=0)
        if isinstance(pad, list):  # JSON lists -> the tuples Conv2D takes, plainest form first
            pad = tuple(tuple(p) if isinstance(p, list) else p for p in pad)
            if (len(pad) == 2 and all(isinstance(p, tuple) and len(p) == 2 and p[0] == p[1]
                                      for p in pad)):
                pad = (pad[0][0], pad[1][0])  # ((2, 2), (2, 2)) -> (2, 2): a plainer repr
            if len(pad) == 2 and pad[0] == pad[1] and isinstance(pad[0], int):
                pad = pad[0]
        layer = cls(None, spec.int("filters"), spec.size(), spec.pair("stride", default=1), pad,
                    spec.pair("dilation", default=1), spec.int("groups", default=1),
                    spec.bool("bias", True), spec.get("padding_mode", default="zeros"),
                    spec.fit(), dtype=ctx.dtype)
        return [layer, *spec.activation(ctx)]

    @classmethod
    def example(cls, dtype: Any = np.float32) -> tuple[Layer, Shape]:
        layer = cls(2, 4, 3, stride=2, padding=1, groups=2, dtype=dtype, init="torch", seed=0)
        return layer, (2, 5, 5)

    # -- ONNX --
    def to_onnx(self, g: Any, x: str, input_shape: Shape) -> str:
        """Conv (strides, pads, dilations, group); a padding_mode other than zeros pads first with
        a Pad node (reflect -> reflect, replicate -> edge, circular -> wrap, from opset 19)."""
        pads = self.pads
        if self.padding_mode != "zeros" and pads != ((0, 0), (0, 0)):
            if self.padding_mode == "circular" and g.opset < 19:
                raise ValueError(f"{self!r}: circular padding needs ONNX Pad mode 'wrap' from "
                                 f"opset 19; got opset {g.opset}, export with opset=19 or newer")
            (t, b), (l, r) = pads
            amounts = g.tensor("pads", [0, 0, t, l, 0, 0, b, r], np.int64)
            x = g.node("Pad", [x, amounts], mode=PAD_MODES[self.padding_mode].onnx)
            pads = ((0, 0), (0, 0))
        inputs = [x, g.tensor("weight", self.params["weight"])]
        if self.use_bias:
            inputs.append(g.tensor("bias", self.params["bias"]))
        return g.node("Conv", inputs, kernel_shape=list(self.kernel_size),
                      strides=list(self.stride), pads=g.pads(pads),
                      dilations=list(self.dilation), group=self.groups)

    @classmethod
    def from_onnx(cls, node: Any, g: Any, input_shape: Shape) -> Layer:
        """A Conv node (2-D, weight and bias constant), with the Pad node before it folded in."""
        w = g.const(node, 1, "Conv weight")
        if w.ndim != 4 or len(input_shape) != 3:
            raise ValueError(f"Conv with a {w.ndim}-D weight on a {len(input_shape) + 1}-D input: "
                             "only 2-D convolution (N, C, H, W) is supported")
        bias = g.const(node, 2, "Conv bias", required=False)
        a = g.attrs(node)
        kernel = list(a.get("kernel_shape", w.shape[2:]))
        stride, dilation = list(a.get("strides", [1, 1])), list(a.get("dilations", [1, 1]))
        pads = g.window_pads(node, input_shape[1:], kernel, stride, dilation)
        mode = "zeros"
        if (before := g.pad_before(node)) is not None:
            extra, mode = before
            if mode == "zeros":
                pads = [p + e for p, e in zip(pads, extra)]
            elif any(pads):
                raise ValueError(f"Conv pads {pads} after a {mode} Pad: convscope's Conv2D pads "
                                 "once, in one mode")
            else:
                pads = extra
        t, l, b, r = (int(v) for v in pads)
        group = int(a.get("group", 1))
        layer = cls(w.shape[1] * group, w.shape[0], tuple(kernel), tuple(stride),
                    t if t == l == b == r else (t, l) if (t, l) == (b, r) else ((t, b), (l, r)),
                    tuple(dilation), group,
                    bias is not None, mode, dtype=g.dtype, seed=0)
        return g.fill(layer, {"weight": w} | ({} if bias is None else {"bias": bias}))

    # -- PyTorch --
    def to_torch(self, torch: Any) -> Any:
        """nn.Conv2d; asymmetric padding: padding="same" where it is that, else PaddedConv2d."""
        if self.in_channels is None:
            raise ShapeError(f"{self!r}: in_channels is not known yet; build the model with an "
                             "input_shape first")
        pads, nn = self.pads, torch.nn
        common = dict(stride=self.stride, dilation=self.dilation, groups=self.groups,
                      bias=self.use_bias, dtype=torch.dtype_of(self))
        same = tuple(same_padding(k, d) for k, d in zip(self.kernel_size, self.dilation))
        if pads[0][0] == pads[0][1] and pads[1][0] == pads[1][1]:
            return nn.Conv2d(self.in_channels, self.out_channels, self.kernel_size,
                             padding=(pads[0][0], pads[1][0]), padding_mode=self.padding_mode,
                             **common)
        if self.stride == (1, 1) and pads == same:
            return nn.Conv2d(self.in_channels, self.out_channels, self.kernel_size,
                             padding="same", padding_mode=self.padding_mode, **common)
        return torch.PaddedConv2d(self.in_channels, self.out_channels, self.kernel_size, pads,
                                  padding_mode=self.padding_mode, **common)

    @classmethod
    def from_torch(cls, module: Any, torch: Any) -> Layer:
        """nn.Conv2d (any padding and padding_mode) or convscope's PaddedConv2d."""
        if isinstance(module, torch.PaddedConv2d):
            padding, mode = module.pads, module.pad_mode
        else:
            padding, mode = module.padding, module.padding_mode
        return cls(module.in_channels, module.out_channels, module.kernel_size, module.stride,
                   padding, module.dilation, module.groups, module.bias is not None, mode,
                   dtype=torch.np_dtype(module), seed=0)

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
