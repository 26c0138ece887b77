"""Random layer stacks for the interop tests (PyTorch and ONNX): hypothesis draws a per-image input
shape and a chain of every layer type with random options, keeping only layers that fit the shape
flowing into them.  Weights, biases and batch-norm statistics are random (not the initial ones)."""

from __future__ import annotations

from typing import Any

import numpy as np
from hypothesis import strategies as st

import convscope as cs
from convscope.errors import ShapeError

MODES = ("zeros", "reflect", "replicate", "circular")
ACTIVATIONS = ("relu", "leaky", "sigmoid", "tanh")


def _pair(draw: st.DrawFn, lo: int, hi: int) -> Any:
    return draw(st.one_of(st.integers(lo, hi), st.tuples(st.integers(lo, hi), st.integers(lo, hi))))


def _activation(draw: st.DrawFn) -> cs.Layer:
    kind = draw(st.sampled_from(ACTIVATIONS))
    if kind == "leaky":
        return cs.LeakyReLU(draw(st.sampled_from([0.01, 0.1, 0.2, 0.5])))
    return {"relu": cs.ReLU, "sigmoid": cs.Sigmoid, "tanh": cs.Tanh}[kind]()


def _conv(draw: st.DrawFn, c: int) -> cs.Layer:
    groups = draw(st.sampled_from([g for g in (1, 2, 3) if c % g == 0]))
    out = groups * draw(st.integers(1, 3))
    kernel = _pair(draw, 1, 3)
    stride = _pair(draw, 1, 2)
    dilation = _pair(draw, 1, 2)
    padding = draw(st.one_of(
        st.integers(0, 2), st.tuples(st.integers(0, 2), st.integers(0, 2)),
        st.just("same") if stride in (1, (1, 1)) else st.just(0), st.just("valid"),
        st.tuples(st.tuples(st.integers(0, 2), st.integers(0, 2)),
                  st.tuples(st.integers(0, 2), st.integers(0, 2)))))
    return cs.Conv2D(c, out, kernel, stride, padding, dilation, groups, draw(st.booleans()),
                     draw(st.sampled_from(MODES)), seed=0)


def _pool(draw: st.DrawFn) -> cs.Layer:
    kh, kw = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    stride = draw(st.one_of(st.none(), _pair_strategy(1, 3)))
    padding = (draw(st.integers(0, kh // 2)), draw(st.integers(0, kw // 2)))
    ceil = draw(st.booleans())
    if draw(st.booleans()):
        return cs.MaxPool2D((kh, kw), stride, padding, _pair(draw, 1, 2), ceil)
    return cs.AvgPool2D((kh, kw), stride, padding, ceil, draw(st.booleans()))


def _pair_strategy(lo: int, hi: int) -> st.SearchStrategy:
    return st.one_of(st.integers(lo, hi), st.tuples(st.integers(lo, hi), st.integers(lo, hi)))


def randomize(model: cs.Sequential, rng: np.random.Generator) -> cs.Sequential:
    """Random weights, biases and batch-norm statistics (positive variances), in place."""
    for layer in model.layers:
        for arr in layer.params.values():
            arr[...] = rng.uniform(-0.8, 0.8, arr.shape)
        if "running_var" in layer.buffers:
            layer.buffers["running_mean"][...] = rng.normal(0, 0.5, layer.buffers["running_mean"].shape)
            layer.buffers["running_var"][...] = rng.uniform(0.5, 2.0, layer.buffers["running_var"].shape)
            if "weight" in layer.params:
                layer.params["weight"][...] = rng.uniform(0.5, 1.5, layer.params["weight"].shape)
    return model


@st.composite
def stacks(draw: st.DrawFn, running_stats_only: bool = False, max_layers: int = 5
           ) -> cs.Sequential:
    """A built, randomized Sequential: volume layers, then an optional head (flatten / global
    pooling, fully connected layers, 1-D batch norm, activations, dropout)."""
    shape: tuple[int, ...] = (draw(st.integers(1, 3)), draw(st.integers(3, 9)),
                              draw(st.integers(3, 9)))
    input_shape, layers = shape, []

    def add(layer: cs.Layer) -> None:
        nonlocal shape
        try:
            new = layer.build(shape, None)
        except (ShapeError, ValueError):
            return  # does not fit what flows in: leave it out
        layers.append(layer)
        shape = new

    for _ in range(draw(st.integers(1, max_layers))):
        kind = draw(st.sampled_from(["conv", "conv", "pool", "bn", "act", "dropout"]))
        if kind == "conv":
            add(_conv(draw, shape[0]))
        elif kind == "pool":
            try:
                add(_pool(draw))
            except ValueError:
                pass
        elif kind == "bn":
            track = True if running_stats_only else draw(st.booleans())
            add(cs.BatchNorm2D(None, draw(st.sampled_from([1e-5, 1e-3])), 0.1,
                               draw(st.booleans()), track))
        elif kind == "act":
            add(_activation(draw))
        else:
            add(cs.Dropout(draw(st.sampled_from([0.0, 0.25, 0.5]))))
    head = draw(st.sampled_from(["none", "flatten", "gap"]))
    if head != "none":
        if head == "gap":
            add(cs.GlobalAvgPool2D())
        add(cs.Flatten())
        for _ in range(draw(st.integers(0, 3))):
            kind = draw(st.sampled_from(["fc", "fc", "bn", "act", "dropout"]))
            if kind == "fc":
                add(cs.Linear(None, draw(st.integers(1, 6)), draw(st.booleans())))
            elif kind == "bn":
                add(cs.BatchNorm1D(None, 1e-5, 0.1, draw(st.booleans()),
                                   True if running_stats_only else draw(st.booleans())))
            elif kind == "act":
                add(_activation(draw))
            else:
                add(cs.Dropout(0.5))
    model = cs.Sequential(*layers, input_shape=input_shape)
    return randomize(model, np.random.default_rng(draw(st.integers(0, 2 ** 32 - 1))))
