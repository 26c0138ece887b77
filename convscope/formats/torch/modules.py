"""PyTorch modules for what ``torch.nn`` has no layer for.

:class:`PaddedConv2d` is ``nn.Conv2d`` with asymmetric padding ((top, bottom), (left, right)) in any
padding mode, so a convscope Conv2D with such padding converts to one module whose state dict keys
(``weight``, ``bias``) stay PyTorch's.  The class is made on first use (``from
convscope.formats.torch.modules import PaddedConv2d`` imports torch then): importing this module
imports no torch, so the converter can import it at the top.  :class:`ConvscopeResidual` and
:class:`ConvscopeConcat` are convscope's Residual and Concat (layers/graph.py) in torch, made the
same way.
"""

from __future__ import annotations

from typing import Any

from ...ops.padding import PAD_MODES

__all__ = ["PaddedConv2d", "ConvscopeResidual", "ConvscopeConcat", "TORCH_PAD"]

#: convscope's padding_mode -> torch.nn.functional.pad's mode.
TORCH_PAD = {mode: names.torch for mode, names in PAD_MODES.items()}
_made: dict[str, type] = {}


def _padded_conv2d() -> type:
    import torch  # noqa: PLC0415 - optional; imported only when a PaddedConv2d is wanted
    import torch.nn.functional as tF  # noqa: PLC0415

    class PaddedConv2d(torch.nn.Conv2d):
        """y = conv2d(pad(x, pads, padding_mode), weight, bias, stride, dilation, groups).

        x (N, C_in, H, W) -> y (N, C_out, H_out, W_out),
        H_out = (H + top + bottom - D·(F - 1) - 1) / S + 1.  ``pads`` is ((top, bottom),
        (left, right)); ``padding_mode`` one of zeros/reflect/replicate/circular.
        """

        def __init__(self, in_channels: int, out_channels: int, kernel_size: Any,
                     pads: tuple[tuple[int, int], tuple[int, int]], stride: Any = 1,
                     dilation: Any = 1, groups: int = 1, bias: bool = True,
                     padding_mode: str = "zeros", device: Any = None, dtype: Any = None) -> None:
            super().__init__(in_channels, out_channels, kernel_size, stride, 0, dilation, groups,
                             bias, "zeros", device=device, dtype=dtype)
            if padding_mode not in TORCH_PAD:
                raise ValueError(f"PaddedConv2d: padding_mode must be one of "
                                 f"{tuple(TORCH_PAD)}, got {padding_mode!r}")
            (t, b), (l, r) = pads
            self.pads = ((int(t), int(b)), (int(l), int(r)))
            self.pad_mode = padding_mode

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            (t, b), (l, r) = self.pads
            return super().forward(tF.pad(x, (l, r, t, b), mode=TORCH_PAD[self.pad_mode]))

        def extra_repr(self) -> str:
            return super().extra_repr() + f", pads={self.pads}, pad_mode={self.pad_mode!r}"

    # pickles (torch.save of a whole model) find it by this module's name (see __getattr__)
    PaddedConv2d.__module__, PaddedConv2d.__qualname__ = __name__, "PaddedConv2d"
    return PaddedConv2d


def _branches() -> dict[str, type]:
    import torch  # noqa: PLC0415 - optional; imported only when a branch module is wanted

    class ConvscopeResidual(torch.nn.Module):
        """y = block(x) + shortcut(x), the shortcut the identity when None (convscope's
        Residual; state-dict keys 'block.*', 'shortcut.*')."""

        def __init__(self, block: Any, shortcut: Any = None) -> None:
            super().__init__()
            self.block = block
            self.shortcut = shortcut

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.block(x) + (x if self.shortcut is None else self.shortcut(x))

    class ConvscopeConcat(torch.nn.Module):
        """torch.cat([branch(x) for branch in branches], dim=1) (convscope's Concat; state-dict
        keys 'branches.<k>.*')."""

        def __init__(self, branches: Any) -> None:
            super().__init__()
            self.branches = torch.nn.ModuleList(branches)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.cat([branch(x) for branch in self.branches], dim=1)

    made = {"ConvscopeResidual": ConvscopeResidual, "ConvscopeConcat": ConvscopeConcat}
    for name, cls in made.items():  # pickles find them by this module's name (__getattr__)
        cls.__module__, cls.__qualname__ = __name__, name
    return made


def __getattr__(name: str) -> Any:
    if name == "PaddedConv2d":
        if name not in _made:
            _made[name] = _padded_conv2d()
        return _made[name]
    if name in ("ConvscopeResidual", "ConvscopeConcat"):
        if name not in _made:
            _made.update(_branches())
        return _made[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
