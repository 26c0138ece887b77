"""Architectures: presets, and users' own designs as JSON lists of layers.

A design is a list of layer dicts, as in ConvNetJS::

    [{"type": "conv", "filters": 6, "size": 5, "stride": 1, "pad": 0},
     {"type": "relu"}, {"type": "pool", "size": 2}, {"type": "fc", "units": 10}]

:func:`build_model` turns one (or a preset's name, or a JSON file) into a built
:class:`~convscope.model.Sequential`: a Flatten goes in before the first ``fc`` that follows a
volume, ``activation`` keys become layers, ``"units": "classes"`` (or a ConvNetJS ``softmax``
layer) becomes the number of classes.  :func:`architecture_of` gives the canonical list back
from a model (every key explicit, one dict per engine layer); that list is what model files
store, and building it again gives the same layers with the same parameter names.

Layer types and their keys (defaults in brackets)::

    conv       filters, size, stride [1], pad [0 | "same" | "valid" | [h, w] | [[t, b], [l, r]]],
               dilation [1], groups [1], bias [true], padding_mode ["zeros"], activation [none]
    pool       size [2], stride [size], pad [0], kind ["max" | "avg"], dilation [1] (max),
               ceil_mode [false], count_include_pad [true] (avg); also "maxpool", "avgpool"
    gap        global average pooling: C x H x W -> C x 1 x 1
    fc         units (an int or "classes"), bias [true], activation [none]
    relu, sigmoid, tanh, leakyrelu (slope [0.01]), flatten, dropout (p [0.5]),
    batchnorm  eps [1e-5], momentum [0.1]  (2-D after a volume, 1-D after fc)
    input      shape [C, H, W] (optional, checked against the data)
    softmax    num_classes [classes]: an fc layer giving the class scores (ConvNetJS)

ConvNetJS' key names are accepted too: sx/sy (size), num_neurons (units), drop_prob (p),
out_sx/out_sy/out_depth (input).
"""

from __future__ import annotations

import difflib
import json
import os
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from ..errors import ArchitectureError, ShapeError
from ..layers import (AvgPool2D, BatchNorm1D, BatchNorm2D, Conv2D, Dropout, Flatten,
                     GlobalAvgPool2D, Layer, LeakyReLU, Linear, MaxPool2D, ReLU, Sigmoid, Tanh)
from ..layers.base import float_dtype
from ..layers.container import Sequential

Shape3 = tuple[int, int, int]
Spec = dict[str, Any]

__all__ = ["ArchitectureError", "PRESETS", "PRESET_INPUT_SHAPES", "list_presets", "preset",
           "load_architecture", "resolve_architecture", "build_model", "architecture_of",
           "parse_shape"]



# ---------------------------------------------------------------------------------------------
# presets: functions of the per-image input shape and the number of classes


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
    the Fashion-MNIST test set after 20 epochs (``python -m bench.accuracy``)."""
    out: list[Spec] = []
    for filters in (32, 64, 128):
        out += [{"type": "conv", "filters": filters, "size": 3, "pad": 1, "bias": False},
                {"type": "batchnorm"}, {"type": "relu"}, {"type": "pool", "size": 2}]
    return out + [{"type": "fc", "units": 256}, {"type": "relu"}, {"type": "dropout", "p": 0.3},
                  {"type": "fc", "units": classes}]


#: Preset name -> function (input_shape, classes) -> layer list.
PRESETS: dict[str, Callable[[Shape3, int], list[Spec]]] = {
    "lecture": _lecture, "lenet5": _lenet5, "fashion": _fashion, "cifar": _cifar}

#: The input each preset was designed for (used when no data says otherwise).
PRESET_INPUT_SHAPES: dict[str, Shape3] = {
    "lecture": (3, 32, 32), "lenet5": (1, 32, 32), "fashion": (1, 28, 28), "cifar": (3, 32, 32)}


def list_presets() -> list[str]:
    """Names of the preset architectures."""
    return list(PRESETS)


def preset(name: str, input_shape: Sequence[int], classes: int = 10) -> list[Spec]:
    """The layer list of preset ``name`` for a per-image ``input_shape`` (C, H, W)."""
    if name not in PRESETS:
        raise ArchitectureError(f"unknown architecture {name!r}{_did_you_mean(name, PRESETS)}; "
                                f"presets are {', '.join(PRESETS)}, or give a JSON file")
    return PRESETS[name](_shape3(input_shape), int(classes))


# ---------------------------------------------------------------------------------------------
# reading JSON


def load_architecture(path: str | os.PathLike[str]) -> tuple[list[Spec], Shape3 | None]:
    """Read a JSON architecture: a list of layer dicts, or ``{"layers": [...], "input_shape":
    [C, H, W]}``.  Returns the raw layer list and the input shape it names (or None)."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ArchitectureError(f"{p}: no such architecture file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ArchitectureError(f"{p}: cannot read the architecture file ({exc})") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ArchitectureError(f"{p}: not valid JSON (line {exc.lineno}, column {exc.colno}: "
                                f"{exc.msg})") from None
    shape = None
    if isinstance(data, dict):
        unknown = sorted(set(data) - {"layers", "input_shape"})
        if unknown or "layers" not in data:
            raise ArchitectureError(f"{p}: expected a list of layers or {{\"layers\": [...], "
                                    f"\"input_shape\": [C, H, W]}}, got keys {sorted(data)}")
        if data.get("input_shape") is not None:
            shape = _shape3(data["input_shape"], f"{p}: input_shape")
        data = data["layers"]
    if not isinstance(data, list):
        raise ArchitectureError(f"{p}: expected a JSON list of layers, got {type(data).__name__}")
    return data, shape


def resolve_architecture(arch: str | os.PathLike[str] | Sequence[Spec]
                         ) -> tuple[str, list[Spec] | None, Shape3 | None]:
    """``(name, layers, input_shape)`` for a preset name (layers None: they depend on the data),
    a path to a JSON file, or a layer list itself."""
    if isinstance(arch, (list, tuple)):
        return "custom", list(arch), None
    text = os.fspath(arch)
    if text in PRESETS:
        return text, None, None
    if text.lower().endswith(".json") or os.sep in text or Path(text).is_file():
        layers, shape = load_architecture(text)
        return Path(text).stem, layers, shape
    return text, preset(text, (1, 28, 28)), None  # raises the unknown-preset error


# ---------------------------------------------------------------------------------------------
# building


_TYPE_ALIASES = {"maxpool": ("pool", {"kind": "max"}), "avgpool": ("pool", {"kind": "avg"}),
                 "bn": ("batchnorm", {}), "dense": ("fc", {}),
                 "globalavgpool": ("gap", {}), "leaky_relu": ("leakyrelu", {})}
_KEYS: dict[str, tuple[str, ...]] = {
    "conv": ("filters", "size", "sx", "sy", "stride", "pad", "dilation", "groups", "bias",
             "padding_mode", "activation"),
    "pool": ("size", "sx", "sy", "stride", "pad", "kind", "dilation", "ceil_mode",
             "count_include_pad"),
    "gap": (), "flatten": (), "relu": (), "sigmoid": (), "tanh": (), "leakyrelu": ("slope",),
    "fc": ("units", "num_neurons", "bias", "activation"),
    "dropout": ("p", "drop_prob"),
    "batchnorm": ("eps", "momentum"),
    "input": ("shape", "out_sx", "out_sy", "out_depth"),
    "softmax": ("num_classes",),
}
_ACTIVATIONS = ("relu", "sigmoid", "tanh", "leakyrelu")


def _did_you_mean(word: str, options: Any) -> str:
    close = difflib.get_close_matches(str(word), list(options), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _shape3(value: Any, what: str = "input_shape") -> Shape3:
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


class _Reader:
    """Typed access to one layer dict, with errors that name the layer and the key."""

    def __init__(self, index: int, spec: Spec, kind: str) -> None:
        self.index, self.spec, self.kind = index, spec, kind

    def error(self, msg: str) -> ArchitectureError:
        return ArchitectureError(f"layer {self.index} ({json.dumps(self.spec)}): {msg}")

    def get(self, *names: str, default: Any = None) -> Any:
        for n in names:
            if n in self.spec:
                return self.spec[n]
        return default

    def int(self, *names: str, default: Any = None, minimum: int = 1) -> Any:
        v = self.get(*names, default=default)
        if v is None:
            raise self.error(f"'{names[0]}' is required")
        if isinstance(v, bool) or not isinstance(v, int) or v < minimum:
            raise self.error(f"'{names[0]}' must be an int >= {minimum}, got {v!r}")
        return v

    def pair(self, *names: str, default: Any = None, minimum: int = 1) -> Any:
        v = self.get(*names, default=default)
        if v is None:
            raise self.error(f"'{names[0]}' is required")
        ok = (isinstance(v, int) and not isinstance(v, bool)) or (
            isinstance(v, (list, tuple)) and len(v) == 2
            and all(isinstance(a, int) and not isinstance(a, bool) for a in v))
        if not ok or min(v if isinstance(v, (list, tuple)) else [v]) < minimum:
            raise self.error(f"'{names[0]}' must be an int >= {minimum} or a pair [h, w] of them, "
                             f"got {v!r}")
        return tuple(v) if isinstance(v, (list, tuple)) else v

    def bool(self, name: str, default: bool) -> bool:
        v = self.spec.get(name, default)
        if not isinstance(v, bool):
            raise self.error(f"'{name}' must be true or false, got {v!r}")
        return v

    def float(self, *names: str, default: float, low: float = 0.0, high: float = float("inf")
              ) -> float:
        v = self.get(*names, default=default)
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not low <= v <= high:
            raise self.error(f"'{names[0]}' must be a number in [{low:g}, {high:g}], got {v!r}")
        return float(v)

    def choice(self, name: str, options: Sequence[str], default: str) -> str:
        v = self.spec.get(name, default)
        if v not in options:
            raise self.error(f"'{name}' must be one of {', '.join(map(repr, options))}, got {v!r}")
        return v


def _size_pair(r: _Reader, default: Any = None) -> Any:
    if "sy" in r.spec and ("sx" in r.spec or "size" in r.spec):
        return (r.int("sy"), r.int("sx", "size"))
    return r.pair("size", "sx", default=default)


def _activation(r: _Reader) -> list[Layer]:
    act = r.spec.get("activation")
    if act in (None, "none", "linear"):
        return []
    if act not in _ACTIVATIONS:
        raise r.error(f"'activation' must be one of {', '.join(_ACTIVATIONS)} or none, got {act!r}")
    return [{"relu": ReLU, "sigmoid": Sigmoid, "tanh": Tanh, "leakyrelu": LeakyReLU}[act]()]


def _layers_for(r: _Reader, shape: tuple[int, ...], classes: int | None, dtype: np.dtype,
                rng: np.random.Generator) -> list[Layer]:
    """The engine layers for one layer dict, given the per-image shape flowing into it."""
    kind = r.kind
    if kind == "conv":
        if len(shape) != 3:
            raise r.error(f"a conv layer needs a volume C x H x W, but it gets {shape}")
        pad = r.spec.get("pad", 0)
        if isinstance(pad, list):
            pad = tuple(tuple(p) if isinstance(p, list) else p for p in pad)
            if (len(pad) == 2 and all(isinstance(p, tuple) and len(p) == 2 and p[0] == p[1]
                                      for p in pad)):
                pad = (pad[0][0], pad[1][0])  # ((2, 2), (2, 2)) -> (2, 2): a plainer repr
            if len(pad) == 2 and pad[0] == pad[1] and isinstance(pad[0], int):
                pad = pad[0]
        try:
            layer = Conv2D(None, r.int("filters"), _size_pair(r), r.pair("stride", default=1),
                           pad, r.pair("dilation", default=1), r.int("groups", default=1),
                           r.bool("bias", True), r.choice("padding_mode", ("zeros", "reflect",
                                                          "replicate", "circular"), "zeros"),
                           dtype=dtype)
        except ArchitectureError:
            raise
        except ValueError as exc:
            raise r.error(str(exc)) from None
        return [layer, *_activation(r)]
    if kind == "pool":
        if len(shape) != 3:
            raise r.error(f"a pool layer needs a volume C x H x W, but it gets {shape}")
        size = _size_pair(r, default=2)
        stride = r.pair("stride", default=size)
        pad = r.pair("pad", default=0, minimum=0)
        pool_kind = r.choice("kind", ("max", "avg"), "max")
        try:
            if pool_kind == "max":
                return [MaxPool2D(size, stride, pad, r.pair("dilation", default=1),
                                  r.bool("ceil_mode", False))]
            if "dilation" in r.spec and r.spec["dilation"] not in (1, [1, 1]):
                raise r.error("average pooling has no dilation")
            return [AvgPool2D(size, stride, pad, r.bool("ceil_mode", False),
                              r.bool("count_include_pad", True))]
        except ArchitectureError:
            raise
        except ValueError as exc:
            raise r.error(str(exc)) from None
    if kind == "gap":
        if len(shape) != 3:
            raise r.error(f"global average pooling needs a volume C x H x W, but it gets {shape}")
        return [GlobalAvgPool2D()]
    if kind == "flatten":
        return [Flatten()]
    if kind in ("fc", "softmax"):
        if kind == "softmax":
            units = r.spec.get("num_classes", "classes")
        else:
            units = r.get("units", "num_neurons")
        if units == "classes":
            if classes is None:
                raise r.error("'classes' needs the number of classes, which is not known here")
            units = classes
        if isinstance(units, bool) or not isinstance(units, int) or units < 1:
            raise r.error(f"'units' must be a positive int or \"classes\", got {units!r}")
        out: list[Layer] = [Flatten()] if len(shape) != 1 else []
        bias = r.bool("bias", True) if kind == "fc" else True
        out.append(Linear(None, units, bias, dtype=dtype))
        return out + (_activation(r) if kind == "fc" else [])
    if kind == "relu":
        return [ReLU()]
    if kind == "sigmoid":
        return [Sigmoid()]
    if kind == "tanh":
        return [Tanh()]
    if kind == "leakyrelu":
        return [LeakyReLU(r.float("slope", default=0.01))]
    if kind == "dropout":
        p = r.float("p", "drop_prob", default=0.5, high=1.0)
        return [Dropout(p, seed=int(rng.integers(2 ** 63)))]
    if kind == "batchnorm":
        eps = r.float("eps", default=1e-5)
        momentum = r.float("momentum", default=0.1, high=1.0)
        if len(shape) == 3:
            return [BatchNorm2D(None, eps, momentum, dtype=dtype)]
        return [BatchNorm1D(None, eps, momentum, dtype=dtype)]
    raise AssertionError(kind)  # pragma: no cover - _KEYS lists every kind


def _input_layer_shape(r: _Reader) -> Shape3:
    if "shape" in r.spec:
        return _shape3(r.spec["shape"], f"layer {r.index}: 'shape'")
    try:
        return (r.int("out_depth"), r.int("out_sy", "out_sx"), r.int("out_sx"))
    except ArchitectureError:
        raise r.error("an input layer needs 'shape': [C, H, W] (or out_sx, out_sy, out_depth)") from None


def _reader(index: int, spec: Any) -> _Reader:
    if not isinstance(spec, dict):
        raise ArchitectureError(f"layer {index}: expected a dict such as {{\"type\": \"relu\"}}, "
                                f"got {spec!r}")
    if "type" not in spec:
        raise ArchitectureError(f"layer {index} ({json.dumps(spec)}): no 'type'; one of "
                                f"{', '.join(_KEYS)}")
    kind = spec["type"]
    extra: Spec = {}
    if isinstance(kind, str) and kind.lower() in _TYPE_ALIASES:
        kind, extra = _TYPE_ALIASES[kind.lower()]
    if not isinstance(kind, str) or kind.lower() not in _KEYS:
        raise ArchitectureError(f"layer {index}: unknown type {kind!r}{_did_you_mean(kind, _KEYS)}; "
                                f"known types: {', '.join(_KEYS)}")
    kind = kind.lower()
    allowed = set(_KEYS[kind]) | {"type"}
    for key in spec:
        if key not in allowed:
            keys = ", ".join(_KEYS[kind]) or "none"
            raise ArchitectureError(f"layer {index} ({kind}): unknown key {key!r}"
                                    f"{_did_you_mean(key, allowed)}; {kind} takes: {keys}")
    if "kind" in extra and "kind" in spec and spec["kind"] != extra["kind"]:
        raise ArchitectureError(f"layer {index}: type {spec['type']!r} contradicts kind "
                                f"{spec['kind']!r}")
    return _Reader(index, {**extra, **spec}, kind)


def build_model(arch: str | os.PathLike[str] | Sequence[Spec], input_shape: Sequence[int] | None
                = None, classes: int | None = None, *, seed: int | np.random.Generator | None = None,
                dtype: Any = np.float32) -> Sequential:
    """A built :class:`Sequential` from a preset name, a JSON file or a list of layer dicts.

    ``input_shape`` is the per-image (C, H, W) (from the data; a JSON file's ``input_shape`` or
    ``input`` layer is used when it is None, else checked against it); ``classes`` the number of
    classes (fills ``"units": "classes"``; presets need it, 10 if None).  ``seed`` makes the
    initial weights reproducible.  Errors name the layer, its key and what would fit.
    """
    dtype = float_dtype(dtype)
    name, layers, file_shape = resolve_architecture(arch)
    shape_in = _shape3(input_shape) if input_shape is not None else file_shape
    if layers is None:  # a preset
        shape_in = shape_in or PRESET_INPUT_SHAPES[name]
        layers = preset(name, shape_in, 10 if classes is None else classes)
    readers = [_reader(i, spec) for i, spec in enumerate(layers)]
    for r in readers:
        if r.kind == "input":
            declared = _input_layer_shape(r)
            if r.index != 0:
                raise r.error("an input layer can only come first")
            if shape_in is not None and declared != shape_in:
                raise r.error(f"the input layer says {'x'.join(map(str, declared))} (C x H x W) "
                              f"but the data is {'x'.join(map(str, shape_in))}")
            shape_in = declared
    if shape_in is None:
        raise ArchitectureError("the input shape is not known: give input_shape (C, H, W) or an "
                                "input layer")
    if not readers or all(r.kind == "input" for r in readers):
        raise ArchitectureError(f"architecture {name!r} has no layers")
    rng = np.random.default_rng(seed) if not isinstance(seed, np.random.Generator) else seed
    built: list[Layer] = []
    shape: tuple[int, ...] = shape_in
    for r in readers:
        if r.kind == "input":
            continue
        for layer in _layers_for(r, shape, classes, dtype, rng):
            try:
                shape = layer.build(shape, rng if seed is not None else None)
            except ShapeError as exc:
                raise ShapeError(f"layer {r.index} ({r.kind}): {exc}") from None
            built.append(layer)
    model = Sequential(*built)
    model.input_shape = shape_in
    return model


# ---------------------------------------------------------------------------------------------
# the canonical list back from a model


def _pads(pads: Any) -> list[list[int]]:
    return [[int(pads[0][0]), int(pads[0][1])], [int(pads[1][0]), int(pads[1][1])]]


def _spec_of(layer: Layer) -> Spec:
    if isinstance(layer, Conv2D):
        return {"type": "conv", "filters": layer.out_channels, "size": list(layer.kernel_size),
                "stride": list(layer.stride), "pad": _pads(layer.pads),
                "dilation": list(layer.dilation), "groups": layer.groups, "bias": layer.use_bias,
                "padding_mode": layer.padding_mode}
    if isinstance(layer, MaxPool2D):
        return {"type": "pool", "kind": "max", "size": list(layer.kernel_size),
                "stride": list(layer.stride), "pad": [layer.pads[0][0], layer.pads[1][0]],
                "dilation": list(layer.dilation), "ceil_mode": layer.ceil_mode}
    if isinstance(layer, AvgPool2D):
        return {"type": "pool", "kind": "avg", "size": list(layer.kernel_size),
                "stride": list(layer.stride), "pad": [layer.pads[0][0], layer.pads[1][0]],
                "ceil_mode": layer.ceil_mode, "count_include_pad": layer.count_include_pad}
    if isinstance(layer, GlobalAvgPool2D):
        return {"type": "gap"}
    if isinstance(layer, Linear):
        return {"type": "fc", "units": layer.out_features, "bias": layer.use_bias}
    if isinstance(layer, LeakyReLU):
        return {"type": "leakyrelu", "slope": layer.negative_slope}
    if isinstance(layer, Dropout):
        return {"type": "dropout", "p": layer.p}
    if isinstance(layer, (BatchNorm1D, BatchNorm2D)):
        if not (layer.affine and layer.track_running_stats) or layer.momentum is None:
            raise ArchitectureError(f"{layer!r}: only affine batch norm with running statistics "
                                    "and a numeric momentum can be saved")
        return {"type": "batchnorm", "eps": layer.eps, "momentum": float(layer.momentum)}
    for cls, kind in ((ReLU, "relu"), (Sigmoid, "sigmoid"), (Tanh, "tanh"), (Flatten, "flatten")):
        if type(layer) is cls:
            return {"type": kind}
    raise ArchitectureError(f"{layer!r}: a {type(layer).__name__} layer has no architecture "
                            "entry; models with it cannot be saved")


def architecture_of(model: Sequential) -> list[Spec]:
    """The canonical layer list of ``model``: one dict per layer, every key explicit.

    ``build_model(architecture_of(m), m.input_shape)`` has the same layers, shapes and
    parameter names as ``m``.
    """
    return [_spec_of(layer) for layer in model.layers]

