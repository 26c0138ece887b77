"""PyTorch modules for what ``torch.nn`` has no layer for; imported only by :mod:`convscope.interop`.

:class:`PaddedConv2d` is ``nn.Conv2d`` with asymmetric padding ((top, bottom), (left, right)) in any
padding mode, so a convscope Conv2D with such padding converts to one module whose state dict keys
(``weight``, ``bias``) stay PyTorch's.  This module imports torch: never import it from convscope's
core.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as tF
from torch import nn

_TORCH_PAD = {"zeros": "constant", "reflect": "reflect", "replicate": "replicate",
              "circular": "circular"}


class PaddedConv2d(nn.Conv2d):
    """y = conv2d(pad(x, pads, padding_mode), weight, bias, stride, dilation, groups).

    x (N, C_in, H, W) -> y (N, C_out, H_out, W_out), H_out = (H + top + bottom - D·(F - 1) - 1) / S + 1.
    ``pads`` is ((top, bottom), (left, right)); ``padding_mode`` one of zeros/reflect/replicate/circular.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: Any,
                 pads: tuple[tuple[int, int], tuple[int, int]], stride: Any = 1, dilation: Any = 1,
                 groups: int = 1, bias: bool = True, padding_mode: str = "zeros",
                 device: Any = None, dtype: Any = None) -> None:
        super().__init__(in_channels, out_channels, kernel_size, stride, 0, dilation, groups, bias,
                         "zeros", device=device, dtype=dtype)
        if padding_mode not in _TORCH_PAD:
            raise ValueError(f"PaddedConv2d: padding_mode must be one of {tuple(_TORCH_PAD)}, "
                             f"got {padding_mode!r}")
        (t, b), (l, r) = pads
        self.pads = ((int(t), int(b)), (int(l), int(r)))
        self.pad_mode = padding_mode

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        (t, b), (l, r) = self.pads
        return super().forward(tF.pad(x, (l, r, t, b), mode=_TORCH_PAD[self.pad_mode]))

    def extra_repr(self) -> str:
        return super().extra_repr() + f", pads={self.pads}, pad_mode={self.pad_mode!r}"
