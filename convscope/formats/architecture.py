"""Architectures as JSON lists of layers (ConvNetJS style), read and written through the registry.

A design is a list of layer dicts::

    [{"type": "conv", "filters": 6, "size": 5, "stride": 1, "pad": 0},
     {"type": "relu"}, {"type": "pool", "size": 2}, {"type": "fc", "units": 10}]

Each ``"type"`` is a registered kind (or an alias); the keys it takes are its class's
``spec_keys`` and its class's ``from_spec`` reads them (layers/*.py, next to the layer).
:func:`build_model` turns a list (or a preset's name, or a JSON file) into a built
:class:`~convscope.layers.container.Sequential`: a Flatten goes in before the first ``fc``
that follows a volume, an ``activation`` key becomes a layer, ``"units": "classes"`` (or a
ConvNetJS ``softmax`` entry) becomes the number of classes, ``batchnorm`` is 2-D after a volume
and 1-D after fc, ``{"type": "sequential", "layers": [...]}`` nests.  :func:`architecture_of`
gives the canonical list back (each layer under its kind name, every key explicit): model files
store it, and building it again gives the same layers with the same parameter names.

The built-in kinds and their keys (defaults in brackets; ConvNetJS spellings accepted)::

    conv       filters, size (sx, sy), stride [1], pad [0 | "same" | "valid" | [h, w] |
               [[t, b], [l, r]]], dilation [1], groups [1], bias [true], padding_mode
               ["zeros"], fit ["floor" | "error"], activation [none]
    maxpool    size [2] (sx, sy), stride [size], pad [0], dilation [1], ceil_mode [false],
               fit ["floor"]; also "pool", with kind ["max" | "avg"]
    avgpool    size, stride, pad, ceil_mode, count_include_pad [true], fit
    gap        global average pooling: C x H x W -> C x 1 x 1
    fc         units (num_neurons; an int or "classes"), bias [true], activation [none]
    relu, sigmoid, tanh, leakyrelu (slope [0.01]), flatten, dropout (p [0.5], drop_prob),
    batchnorm  eps [1e-5], momentum [0.1 | null], affine [true], track_running_stats [true]
               (2-D after a volume, 1-D after fc); batchnorm1d: always 1-D
    sequential layers: a nested list
    input      shape [C, H, W] (out_sx, out_sy, out_depth): checked against the data
    softmax    num_classes [classes]: an fc layer giving the class scores (ConvNetJS)

A layer of your own: decorate it with ``@convscope.register_layer("swish")`` and import its
module before reading a design that names it.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from .. import limits
from ..errors import ArchitectureError, ShapeError
from ..layers.base import Layer, float_dtype
from ..layers.container import Sequential
from ..layers.registry import REGISTRY, Kind, lookup, require_kind, supported
from .cost import Cost, check_cost, cost_of
from .spec_reader import SpecReader
from .presets import (PRESET_INPUT_SHAPES, PRESETS, Shape3, Spec, did_you_mean, list_presets,
                      parse_shape, preset, shape3)

__all__ = ["ArchitectureError", "PRESETS", "PRESET_INPUT_SHAPES", "list_presets", "preset",
           "load_architecture", "resolve_architecture", "build_model", "architecture_of",
           "spec_of", "layer_from_spec", "unregistered_types", "parse_shape", "SpecReader",
           "SpecContext", "Cost", "cost_of", "check_cost"]

Shape = tuple[int, ...]
#: Entries that are not layers: their keys.  ``softmax`` reads as an fc layer.
_NOT_LAYERS: dict[str, tuple[str, ...]] = {"input": ("shape", "out_sx", "out_sy", "out_depth"),
                                          "softmax": ("num_classes",)}
_OWN_LAYER = ("a layer of your own: register it with @convscope.register_layer and import its "
              "module (convscope ... --import my_layers.py)")


# ---------------------------------------------------------------------------------------------
# reading JSON


def load_architecture(path: str | os.PathLike[str]) -> tuple[list[Spec], Shape3 | None]:
    """Read a JSON architecture: a list of layer dicts, or ``{"layers": [...], "input_shape":
    [C, H, W]}``.  Returns the raw layer list and the input shape it names (or None)."""
    p = Path(path)
    try:
        with p.open("rb") as f:  # the size is checked before the text is read
            limits.check("max_json_bytes", os.fstat(f.fileno()).st_size,
                         "the architecture file", ArchitectureError, f"{p}: ")
            text = f.read().decode("utf-8")
    except FileNotFoundError:
        raise ArchitectureError(f"{p}: no such architecture file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ArchitectureError(f"{p}: cannot read the architecture file ({exc})") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ArchitectureError(f"{p}: not valid JSON (line {exc.lineno}, column {exc.colno}: "
                                f"{exc.msg})") from None
    except RecursionError:
        raise ArchitectureError(f"{p}: JSON nested too deeply to read") from None
    shape = None
    if isinstance(data, dict):
        unknown = sorted(set(data) - {"layers", "input_shape"})
        if unknown or "layers" not in data:
            raise ArchitectureError(f"{p}: expected a list of layers or {{\"layers\": [...], "
                                    f"\"input_shape\": [C, H, W]}}, got keys {sorted(data)}")
        if data.get("input_shape") is not None:
            shape = shape3(data["input_shape"], f"{p}: input_shape")
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


@dataclass
class SpecContext:
    """What a ``from_spec`` knows besides its entry: the per-image ``shape`` flowing in, the
    number of ``classes`` (None: unknown), the parameters' ``dtype``, and ``rng`` (seeds for
    stochastic layers).  :meth:`build` reads a nested list (a block's layers)."""

    shape: Shape
    classes: int | None
    dtype: np.dtype
    rng: np.random.Generator
    prefix: str = ""
    #: Build with placeholder weights (Layer.build_virtual): nothing large is allocated.
    virtual: bool = False

    def build(self, specs: Sequence[Any], shape: Shape | None = None) -> list[Layer]:
        """The built layers of a nested list, starting from ``shape`` (default: ``self.shape``).
        Their weights are drawn again when the block itself is built with a seed."""
        readers = [read_entry(f"{self.prefix}{i}", s) for i, s in enumerate(specs)]
        return _build(readers, tuple(self.shape if shape is None else shape), self, None)[0]


def _kind_for(index: str, type_: Any) -> Kind:
    try:
        return lookup(type_)
    except ArchitectureError:
        words = list(REGISTRY) + [a for k in REGISTRY.values() for a in k.aliases]
        raise ArchitectureError(
            f"layer {index}: unknown type {type_!r}{did_you_mean(str(type_).lower(), words)}; "
            f"known types: {supported('json')}, {', '.join(_NOT_LAYERS)}; {_OWN_LAYER}") from None


def read_entry(index: str, spec: Any) -> SpecReader:
    """A :class:`SpecReader` for one layer dict, its type and keys checked."""
    if not isinstance(spec, dict):
        raise ArchitectureError(f"layer {index}: expected a dict such as {{\"type\": \"relu\"}}, "
                                f"got {spec!r}")
    if "type" not in spec:
        raise ArchitectureError(f"layer {index} ({json.dumps(spec, default=repr)}): no 'type'; "
                                f"one of {supported('json')}, {', '.join(_NOT_LAYERS)}")
    if not isinstance(spec["type"], str):
        raise ArchitectureError(f"layer {index}: 'type' must be a name such as \"relu\", got "
                                f"{json.dumps(spec['type'], default=repr)[:80]}")
    written = spec["type"].lower()
    if written in _NOT_LAYERS:  # ConvNetJS' softmax: fc class scores (softmax is in the loss)
        kind, keys = (lookup("fc") if written == "softmax" else None), _NOT_LAYERS[written]
    else:
        kind = _kind_for(index, spec["type"])
        keys = tuple(kind.cls.spec_keys)
    for key in spec:
        if key != "type" and key not in keys:
            raise ArchitectureError(f"layer {index} ({written}): unknown key {key!r}"
                                    f"{did_you_mean(key, keys)}; {written} takes: "
                                    f"{', '.join(keys) or 'no keys'}")
    return SpecReader(index, spec, written, kind)


def _input_layer_shape(r: SpecReader) -> Shape3:
    if r.has("shape"):
        return shape3(r.spec["shape"], f"layer {r.index}: 'shape'")
    try:
        return (r.int("out_depth"), r.int("out_sy", "out_sx"), r.int("out_sx"))
    except ArchitectureError:
        raise r.error("an input layer needs 'shape': [C, H, W] (or out_sx, out_sy, "
                      "out_depth)") from None


def _build(readers: Sequence[SpecReader], shape: Shape, ctx: SpecContext,
           init: np.random.Generator | None) -> tuple[list[Layer], Shape]:
    """Each entry's layers through its kind's ``from_spec``, built in turn (weights from
    ``init`` when given); returns them and the shape out."""
    built: list[Layer] = []
    for r in readers:
        if r.kind is None:  # an input entry: build_model reads it
            if r.index != "0":
                raise r.error("an input layer can only come first")
            continue
        here = SpecContext(shape, ctx.classes, ctx.dtype, ctx.rng, f"{r.index}.", ctx.virtual)
        try:
            made = r.kind.cls.from_spec(r, here)
        except (ArchitectureError, ShapeError):
            raise
        except ValueError as exc:  # a constructor's check: name the entry
            raise r.error(str(exc)) from None
        for layer in made if isinstance(made, (list, tuple)) else [made]:
            try:
                shape = layer.build_virtual(shape) if ctx.virtual else layer.build(shape, init)
            except ShapeError as exc:
                raise ShapeError(f"layer {r.index} ({r.type}): {exc}") from None
            except ValueError as exc:  # e.g. numpy's "array is too big" for absurd sizes
                raise r.error(str(exc)) from None
            built.append(layer)
    return built, shape


def build_model(arch: str | os.PathLike[str] | Sequence[Spec], input_shape: Sequence[int] | None
                = None, classes: int | None = None, *, seed: int | np.random.Generator | None = None,
                dtype: Any = np.float32, allocate: bool = True) -> Sequential:
    """A built :class:`Sequential` from a preset name, a JSON file or a list of layer dicts.

    ``input_shape`` is the per-image (C, H, W) (from the data; a JSON file's ``input_shape`` or
    ``input`` layer is used when it is None, else checked against it); ``classes`` the number of
    classes (fills ``"units": "classes"``; presets need it, 10 if None).  ``seed`` makes the
    initial weights reproducible.  Errors name the layer, its key and what would fit.

    The model is first built with placeholder weights (``Layer.build_virtual``) and its cost
    checked against the limits (:func:`check_cost`: ``max_params``, ``max_activation_bytes``)
    before a weight is drawn.  ``allocate=False`` returns that placeholder model: shapes,
    parameter counts, ``summary()`` and ``explain()`` without the memory (and without the
    limits), not for forward or training.
    """
    try:
        return _build_model(arch, input_shape, classes, seed, float_dtype(dtype), allocate)
    except RecursionError:
        raise ArchitectureError("the architecture is nested too deeply to build (blocks inside "
                                "blocks, hundreds deep)") from None


def _build_model(arch: str | os.PathLike[str] | Sequence[Spec], input_shape: Sequence[int] | None,
                 classes: int | None, seed: int | np.random.Generator | None, dtype: np.dtype,
                 allocate: bool) -> Sequential:
    name, layers, file_shape = resolve_architecture(arch)
    shape_in = shape3(input_shape) if input_shape is not None else file_shape
    if layers is None:  # a preset
        shape_in = shape_in or PRESET_INPUT_SHAPES[name]
        layers = preset(name, shape_in, 10 if classes is None else classes)
    readers = [read_entry(str(i), spec) for i, spec in enumerate(layers)]
    for r in readers:
        if r.type == "input":
            declared = _input_layer_shape(r)
            if r.index != "0":
                raise r.error("an input layer can only come first")
            if shape_in is not None and declared != shape_in:
                raise r.error(f"the input layer says {'x'.join(map(str, declared))} (C x H x W) "
                              f"but the data is {'x'.join(map(str, shape_in))}")
            shape_in = declared
    if shape_in is None:
        raise ArchitectureError("the input shape is not known: give input_shape (C, H, W) or an "
                                "input layer")
    if all(r.type == "input" for r in readers):
        raise ArchitectureError(f"architecture {name!r} has no layers")
    rng = np.random.default_rng(seed) if not isinstance(seed, np.random.Generator) else seed
    # the placeholder model first: its cost is checked before a weight exists (a generator the
    # caller gave is left for the real build; stochastic layers draw their seeds from this one)
    own = None if isinstance(seed, np.random.Generator) else seed
    virtual = SpecContext(shape_in, classes, dtype, np.random.default_rng(own), virtual=True)
    model = Sequential(*_build(readers, shape_in, virtual, None)[0])
    model.input_shape = shape_in
    if not allocate:
        return model
    check_cost(cost_of(model, shape_in), f"architecture {name!r}")
    ctx = SpecContext(shape_in, classes, dtype, rng)
    built, _ = _build(readers, shape_in, ctx, rng if seed is not None else None)
    model = Sequential(*built)
    model.input_shape = shape_in
    return model


def layer_from_spec(spec: Spec, input_shape: Sequence[int], *, classes: int | None = None,
                    dtype: Any = np.float32, seed: int | None = None) -> list[Layer]:
    """The built layer(s) one entry gives on a per-image ``input_shape`` of any rank (an fc
    entry after a volume gives Flatten and Linear; an ``activation`` key adds its layer)."""
    rng = np.random.default_rng(seed)
    ctx = SpecContext(tuple(input_shape), classes, float_dtype(dtype), rng)
    return _build([read_entry("0", spec)], tuple(input_shape), ctx,
                  rng if seed is not None else None)[0]


def unregistered_types(specs: Any) -> list[str]:
    """The ``"type"`` names in a layer list (nested blocks included) that no registered kind
    answers to, in order; entries that are not dicts are left to the reader's errors."""
    out: list[str] = []
    for spec in specs if isinstance(specs, list) else []:
        if not isinstance(spec, dict) or not isinstance(spec.get("type"), str):
            continue
        if spec["type"].lower() not in _NOT_LAYERS:
            try:
                lookup(spec["type"])
            except ArchitectureError:
                out.append(spec["type"])
        out += unregistered_types(spec.get("layers"))
    return out


# ---------------------------------------------------------------------------------------------
# the canonical list back from a model


def spec_of(layer: Layer) -> Spec:
    """One layer's canonical entry: its registered kind's name and ``to_spec()``.  A class that
    is not registered itself (a subclass of ReLU, say) is an UnsupportedLayer error."""
    return {"type": require_kind(layer, "saved").name, **layer.to_spec()}


def architecture_of(model: Sequential) -> list[Spec]:
    """The canonical layer list of ``model``: one dict per layer, every key explicit.

    ``build_model(architecture_of(m), m.input_shape)`` has the same layers, shapes and
    parameter names as ``m``.
    """
    return [spec_of(layer) for layer in model.layers]
