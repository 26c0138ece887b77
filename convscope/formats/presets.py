"""Preset architectures: functions of the per-image input shape and the number of classes,
giving JSON layer lists (formats/architecture.py builds them); and input shapes read from
text or JSON.

``lecture`` (the lecture's CONV-RELU-CONV-RELU-POOL-FC), ``lenet5``, ``cifar``, ``fashion``, and
the residual nets ``resnet_small`` and ``resnet9`` (28×28 grey) and ``resnet20`` (He et al.'s
CIFAR ResNet-20).
"""

from __future__ import annotations

import difflib
from typing import Any, Callable, Sequence

from ..errors import ArchitectureError

Shape3 = tuple[int, int, int]
Spec = dict[str, Any]

__all__ = ["PRESETS", "PRESET_INPUT_SHAPES", "list_presets", "preset", "shape3", "parse_shape",
           "did_you_mean"]


def did_you_mean(word: Any, options: Any) -> str:
    """`` (did you mean 'x'?)`` for the closest of ``options``, or ''."""
    close = difflib.get_close_matches(str(word), list(options), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def shape3(value: Any, what: str = "input_shape") -> Shape3:
    """(C, H, W) from three positive ints, or an ArchitectureError naming ``what``."""
    try:
        out = tuple(int(v) for v in value)
    except (TypeError, ValueError):
        raise ArchitectureError(f"{what} must be [C, H, W], got {value!r}") from None
    if len(out) != 3 or min(out) < 1:
        raise ArchitectureError(f"{what} must be three positive ints [C, H, W], got {value!r}")
    return out  # type: ignore[return-value]


def parse_shape(text: str) -> Shape3:
    """``"1x28x28"``, ``"1,28,28"`` or ``"28x28x1"``-style text -> (C, H, W).

    Three numbers; when the last is 1, 3 or 4 and the first is not, they are read as H x W x C
    (the lecture's 32x32x3)."""
    parts = [p for p in text.replace(",", "x").replace("×", "x").replace(" ", "x").split("x") if p]
    try:
        nums = [int(p) for p in parts]
    except ValueError:
        nums = []
    if len(nums) != 3 or min(nums) < 1:
        raise ArchitectureError(f"input shape must be three positive numbers such as 1x28x28 "
                                f"(C x H x W), got {text!r}")
    if nums[2] in (1, 3, 4) and nums[0] not in (1, 3, 4):
        nums = [nums[2], nums[0], nums[1]]
    return nums[0], nums[1], nums[2]


def _lecture(input_shape: Shape3, classes: int) -> list[Spec]:
    """The lecture's network: CONV(six 5x5) -> RELU -> CONV(ten 5x5) -> RELU -> POOL -> FC."""
    return [{"type": "conv", "filters": 6, "size": 5}, {"type": "relu"},
            {"type": "conv", "filters": 10, "size": 5}, {"type": "relu"},
            {"type": "pool", "size": 2}, {"type": "fc", "units": classes}]


def _lenet5(input_shape: Shape3, classes: int) -> list[Spec]:
    """LeNet-5 as trained today (ReLU, max pooling): conv5x5·6 -> pool -> conv5x5·16 -> pool ->
    fc120 -> fc84 -> fc(classes).  Images smaller than 32x32 are zero-padded to 32 by the first
    conv (pad 2 on 28x28), so the fc layers see 16x5x5 as in the original."""
    pad = max(0, (32 - min(input_shape[1:])) // 2)
    return [{"type": "conv", "filters": 6, "size": 5, "pad": pad}, {"type": "relu"},
            {"type": "pool", "size": 2},
            {"type": "conv", "filters": 16, "size": 5}, {"type": "relu"},
            {"type": "pool", "size": 2},
            {"type": "fc", "units": 120}, {"type": "relu"},
            {"type": "fc", "units": 84}, {"type": "relu"},
            {"type": "fc", "units": classes}]


def _cifar(input_shape: Shape3, classes: int) -> list[Spec]:
    """A CIFAR-style net: conv3x3·32 (same) -> ReLU -> pool -> conv3x3·64 (same) -> ReLU -> pool
    -> fc(classes)."""
    return [{"type": "conv", "filters": 32, "size": 3, "pad": 1}, {"type": "relu"},
            {"type": "pool", "size": 2},
            {"type": "conv", "filters": 64, "size": 3, "pad": 1}, {"type": "relu"},
            {"type": "pool", "size": 2},
            {"type": "fc", "units": classes}]


def _fashion(input_shape: Shape3, classes: int) -> list[Spec]:
    """A small net for Fashion-MNIST: three blocks of conv3x3 -> batch norm -> ReLU -> pool
    (32, 64, 128 filters; 28 -> 14 -> 7 -> 3), fc256 with dropout 0.3, fc(classes).  93.4% on
    the Fashion-MNIST test set after 20 epochs (``python -m bench.fashion_full``)."""
    out: list[Spec] = []
    for filters in (32, 64, 128):
        out += [{"type": "conv", "filters": filters, "size": 3, "pad": 1, "bias": False},
                {"type": "batchnorm"}, {"type": "relu"}, {"type": "pool", "size": 2}]
    return out + [{"type": "fc", "units": 256}, {"type": "relu"}, {"type": "dropout", "p": 0.3},
                  {"type": "fc", "units": classes}]


def _basic_block(filters: int, stride: int, in_filters: int) -> list[Spec]:
    """ResNet's basic block, then ReLU: y = relu(bn(conv3x3(relu(bn(conv3x3(x))))) + shortcut(x)).
    The shortcut is the identity where the shape stays, else a strided 1×1 conv + batch norm
    (He et al.'s option B: a projection, so the block exports as Conv/Add nodes)."""
    conv = {"type": "conv", "size": 3, "pad": 1, "bias": False}
    block = [{**conv, "filters": filters, "stride": stride}, {"type": "batchnorm"},
             {"type": "relu"}, {**conv, "filters": filters}, {"type": "batchnorm"}]
    shortcut = None
    if stride != 1 or in_filters != filters:
        shortcut = [{"type": "conv", "filters": filters, "size": 1, "stride": stride,
                     "bias": False}, {"type": "batchnorm"}]
    return [{"type": "residual", "block": block, "shortcut": shortcut}, {"type": "relu"}]


def _resnet(classes: int, blocks: int, widths: Sequence[int] = (16, 32, 64)) -> list[Spec]:
    """conv3x3·16 -> bn -> relu, then per width ``blocks`` basic blocks (the first of each later
    stage with stride 2: 32 -> 16 -> 8), global average pool, fc(classes)."""
    out: list[Spec] = [{"type": "conv", "filters": widths[0], "size": 3, "pad": 1,
                        "bias": False}, {"type": "batchnorm"}, {"type": "relu"}]
    prev = widths[0]
    for stage, filters in enumerate(widths):
        for i in range(blocks):
            out += _basic_block(filters, 2 if stage and not i else 1, prev)
            prev = filters
    return out + [{"type": "gap"}, {"type": "fc", "units": classes}]


def _resnet20(input_shape: Shape3, classes: int) -> list[Spec]:
    """He et al. (2015)'s CIFAR ResNet-20: 3 stages × 3 basic blocks of 16/32/64 filters on
    32×32×3 (32 -> 16 -> 8), 6·3 + 2 = 20 weighted layers, projection shortcuts (option B) where
    the shape changes: 272,474 parameters (option A's zero padding has 269,722; both "0.27 M")."""
    return _resnet(classes, 3)


def _resnet_small(input_shape: Shape3, classes: int) -> list[Spec]:
    """A small ResNet for 28×28 grey images (Fashion-MNIST): ResNet-20's plan with 2 basic blocks
    per stage (ResNet-14), 28 -> 14 -> 7, projection shortcuts: 174,970 parameters for 10
    classes."""
    return _resnet(classes, 2)


def _resnet9(input_shape: Shape3, classes: int) -> list[Spec]:
    """Page's ResNet-9 (2018, the DAWNBench entry that trained to 94% on CIFAR-10 fastest) at a
    quarter of its width, for 28×28 grey images: conv·16, conv·32, pool (28 -> 14), a residual
    block of two conv·32, conv·64, pool (-> 7), conv·128, pool (-> 3), a residual block of two
    conv·128, global average pool, fc(classes).  Each conv is 3×3, pad 1, then batch norm and
    ReLU; the shortcuts are identities (y = x + block(x)).  412,666 parameters for 10 classes:
    the wide layers sit at low resolution, where a step costs least per parameter (a training
    step at batch 64 ran 1.6-1.8× faster than ``resnet_small``'s, with 2.4× the parameters)."""
    def cbr(filters: int) -> list[Spec]:
        return [{"type": "conv", "filters": filters, "size": 3, "pad": 1, "bias": False},
                {"type": "batchnorm"}, {"type": "relu"}]

    def res(filters: int) -> list[Spec]:
        return [{"type": "residual", "block": cbr(filters) + cbr(filters), "shortcut": None}]

    pool = {"type": "pool", "size": 2}
    return (cbr(16) + cbr(32) + [pool] + res(32) + cbr(64) + [pool] + cbr(128) + [pool]
            + res(128) + [{"type": "gap"}, {"type": "fc", "units": classes}])


#: Preset name -> function (input_shape, classes) -> layer list.
PRESETS: dict[str, Callable[[Shape3, int], list[Spec]]] = {
    "lecture": _lecture, "lenet5": _lenet5, "fashion": _fashion, "cifar": _cifar,
    "resnet_small": _resnet_small, "resnet9": _resnet9, "resnet20": _resnet20}

#: The input each preset was designed for (used when no data says otherwise).
PRESET_INPUT_SHAPES: dict[str, Shape3] = {
    "lecture": (3, 32, 32), "lenet5": (1, 32, 32), "fashion": (1, 28, 28), "cifar": (3, 32, 32),
    "resnet_small": (1, 28, 28), "resnet9": (1, 28, 28), "resnet20": (3, 32, 32)}


def list_presets() -> list[str]:
    """Names of the preset architectures."""
    return list(PRESETS)


def preset(name: str, input_shape: Sequence[int], classes: int = 10) -> list[Spec]:
    """The layer list of preset ``name`` for a per-image ``input_shape`` (C, H, W)."""
    if name not in PRESETS:
        raise ArchitectureError(f"unknown architecture {name!r}{did_you_mean(name, PRESETS)}; "
                                f"presets are {', '.join(PRESETS)}, or give a JSON file")
    return PRESETS[name](shape3(input_shape), int(classes))
