"""Every registered layer kind, from its own ``example()``: the dtype kept (float32 and float64),
float64 finite differences of the input gradient and every parameter gradient, the JSON round
trip (``to_spec`` -> ``from_spec``), and summary/explain shapes agreeing with the forward pass.

A user's own kinds (Swish, x·σ(x), with no options; Scale, with one) go through the same checks
and through Sequential, JSON architectures and model files.  ONNX and PyTorch per kind:
test_registry_interop.py.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest

import convscope as cs  # first: importing it registers every built-in kind
from convscope.formats.architecture import (architecture_of, build_model, layer_from_spec,
                                            spec_of)
from convscope.formats.model_file import ModelFileError, load_model, save_model
from convscope.layers.registry import REGISTRY, Kind, kind_of, register_layer, unregister
from finite_diff import numeric_grad

#: The built-in kinds (a kind another test module registers is its own business).
BUILT_IN = [name for name, k in REGISTRY.items() if k.cls.__module__.startswith("convscope.")]
DTYPES = [np.float32, np.float64]
H, TOL = 1e-6, 1e-6


def test_the_registry_holds_the_built_in_kinds() -> None:
    assert {"conv", "maxpool", "avgpool", "gap", "fc", "relu", "batchnorm", "batchnorm1d",
            "dropout", "flatten", "sequential"} <= set(BUILT_IN)


# ---------------------------------------------------------------------------------------------
# the checks, one function each (the built-in kinds and the user's kinds below run them all)


def example(kind: Kind, dtype: Any = np.float64) -> tuple[cs.Layer, tuple[int, ...]]:
    """The kind's example: a built instance of exactly its class and a per-image shape."""
    layer, shape = kind.cls.example(dtype)
    assert kind_of(layer) is kind, f"{kind.name}.example() gave a {type(layer).__name__}"
    layer.output_shape(tuple(shape))  # built: the shapes are known
    return layer, tuple(shape)


def spread(shape: tuple[int, ...], seed: int = 0, gap: float = 0.05) -> np.ndarray:
    """Distinct float64 values at least ``gap`` apart, shuffled: no ties in a max window and
    none within ``gap / 2`` of a ReLU's kink at 0."""
    n = int(np.prod(shape))
    values = (np.arange(n) - n / 2 + 0.5) * gap
    return np.random.default_rng(seed).permutation(values).reshape(shape)


def check_dtype(kind: Kind, dtype: Any, training: bool) -> None:
    layer, shape = example(kind, dtype)
    layer.train(training)
    assert_keeps_dtype(layer, spread((4, *shape)).astype(dtype), dtype)


def assert_keeps_dtype(layer: Any, x: np.ndarray, dtype: Any) -> None:
    """Forward and backward of x (in dtype) give dtype, and so do every parameter, gradient and
    buffer (the batch counter excepted)."""
    y = layer.forward(x)
    assert y.dtype == dtype
    dx = layer.backward(np.ones_like(y))
    assert dx.dtype == dtype and dx.shape == x.shape
    for k in layer.params:
        assert layer.params[k].dtype == dtype and layer.grads[k].dtype == dtype, k
    for k, v in layer.buffers.items():
        assert v.dtype == (np.int64 if k.endswith("num_batches_tracked") else dtype), k


def _numeric(loss: Callable[[], float], a: np.ndarray) -> np.ndarray:
    return numeric_grad(loss, a, H)


def _close(analytic: np.ndarray, numeric: np.ndarray, what: str) -> None:
    assert analytic.shape == numeric.shape, what
    assert np.abs(numeric).max() > 1e-8, f"{what}: the check is vacuous (numeric gradient is 0)"
    scale = max(np.abs(analytic).max(), np.abs(numeric).max())
    err = float(np.abs(analytic - numeric).max() / scale)
    assert err < TOL, f"{what}: relative error {err:.2e} >= {TOL:g}"


def check_gradients(kind: Kind) -> None:
    """L = sum(layer(x) · g): the analytic dL/dx and dL/dparams against finite differences.
    Every forward runs on a fresh copy of the layer, so a stochastic layer draws the same mask
    each time and a batch norm's running statistics stay put."""
    layer, shape = example(kind, np.float64)
    x = spread((4, *shape))
    g = np.random.default_rng(1).standard_normal(layer.output_shape(shape))
    g = np.broadcast_to(g, (4, *g.shape)) * np.arange(1, 5).reshape(4, *[1] * g.ndim)
    fresh = copy.deepcopy(layer)
    fresh.zero_grad()
    y = fresh.forward(x)
    dx = fresh.backward(g)
    assert y.shape == g.shape

    def loss() -> float:
        return float(np.sum(copy.deepcopy(layer).forward(x) * g))

    _close(dx, _numeric(loss, x), f"{layer!r} d input")
    for name, p in layer.params.items():  # the copies see the perturbed originals
        _close(fresh.grads[name], _numeric(loss, p), f"{layer!r} d {name}")


def _outputs_equal(a: cs.Layer, b: cs.Layer, shape: tuple[int, ...]) -> None:
    x = spread((3, *shape), seed=2)
    np.testing.assert_array_equal(a.eval().forward(x), b.eval().forward(x))


def check_json_round_trip(kind: Kind) -> None:
    """to_spec -> JSON text -> from_spec rebuilds an equal layer: same kind, repr, entry and
    state-dict shapes, and the same outputs once the weights are copied."""
    layer, shape = example(kind, np.float64)
    entry = spec_of(layer)
    assert entry["type"] == kind.name
    assert json.loads(json.dumps(entry)) == entry  # plain JSON
    (again,) = layer_from_spec(json.loads(json.dumps(entry)), shape, dtype=np.float64, seed=3)
    assert type(again) is type(layer) and repr(again) == repr(layer)
    assert spec_of(again) == entry
    own, other = cs.Sequential(layer).state_dict(), cs.Sequential(again).state_dict()
    assert list(own) == list(other)
    assert all(own[k].shape == other[k].shape and own[k].dtype == other[k].dtype for k in own)
    cs.Sequential(again).load_state_dict(own)
    _outputs_equal(layer, again, shape)


def check_summary_and_explain(kind: Kind) -> None:
    layer, shape = example(kind)
    out = tuple(layer.forward(spread((2, *shape))).shape[1:])
    net = cs.Sequential(layer, input_shape=shape)
    summary = net.summary()
    top = [r for r in summary.rows if r.depth == 0]  # a branching kind's last row is inside it
    assert tuple(top[-1].output_shape) == out
    assert summary.total_params == layer.param_count()
    told = net.explain()
    assert tuple(told.steps[-1].output_shape) == out
    assert told.total_params == layer.param_count()


@pytest.mark.parametrize("name", BUILT_IN)
def test_example(name: str) -> None:
    example(REGISTRY[name])


@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
@pytest.mark.parametrize("name", BUILT_IN)
def test_keeps_the_dtype(name: str, dtype: Any, training: bool) -> None:
    check_dtype(REGISTRY[name], dtype, training)


@pytest.mark.parametrize("name", BUILT_IN)
def test_finite_differences(name: str) -> None:
    check_gradients(REGISTRY[name])


@pytest.mark.parametrize("name", BUILT_IN)
def test_json_round_trip(name: str) -> None:
    check_json_round_trip(REGISTRY[name])


@pytest.mark.parametrize("name", BUILT_IN)
def test_summary_and_explain_agree_with_forward(name: str) -> None:
    check_summary_and_explain(REGISTRY[name])


def test_a_kind_without_an_example_fails_the_suite() -> None:
    @register_layer("throwaway_kind")
    class Throwaway(cs.Layer):
        def forward(self, x: Any) -> Any:
            return x

    try:
        with pytest.raises(NotImplementedError, match=r"Throwaway.example\(\) is not defined"):
            example(REGISTRY["throwaway_kind"])
    finally:
        unregister("throwaway_kind")
    assert "throwaway_kind" not in REGISTRY and kind_of(Throwaway) is None
    with pytest.raises(cs.UnsupportedLayer, match="not a registered layer kind"):
        spec_of(Throwaway())


# ---------------------------------------------------------------------------------------------
# a user's own layers


class Swish(cs.Layer):
    """x·σ(x) (no options: no JSON hooks needed); d/dx = σ(x)·(1 + x·(1 − σ(x)))."""

    elementwise = True  # "activation": "swish" may name it

    def forward(self, x: np.ndarray) -> np.ndarray:
        s = 1 / (1 + np.exp(-x))
        self.saved = x, s
        return x * s

    def backward(self, dy: np.ndarray) -> np.ndarray:
        x, s = self.saved
        return dy * s * (1 + x * (1 - s))

    @classmethod
    def example(cls, dtype: Any = None) -> tuple[cs.Layer, tuple[int, ...]]:
        return cls(), (3, 4)


class Scale(cs.Layer):
    """factor·x, with the factor as its one option."""

    spec_keys = ("factor",)

    def __init__(self, factor: float = 1.0) -> None:
        super().__init__()
        self.factor = factor

    def forward(self, x: np.ndarray) -> np.ndarray:
        return x * self.factor

    def backward(self, dy: np.ndarray) -> np.ndarray:
        return dy * self.factor

    def to_spec(self) -> dict[str, Any]:
        return {"factor": self.factor}

    @classmethod
    def from_spec(cls, spec: Any, ctx: Any) -> cs.Layer:
        return cls(spec.float("factor", default=1.0, low=-1e9))

    @classmethod
    def example(cls, dtype: Any = None) -> tuple[cs.Layer, tuple[int, ...]]:
        return cls(-0.5), (5,)

    def __repr__(self) -> str:
        return f"Scale({self.factor})"


@pytest.fixture
def user_kinds():
    """Swish and Scale registered for one test, unregistered after it."""
    kinds = [register_layer("swish")(Swish), register_layer("scale")(Scale)]
    yield kinds
    for name in ("swish", "scale"):
        if name in REGISTRY:
            unregister(name)


@pytest.mark.parametrize("name", ["swish", "scale"])
def test_users_kinds_pass_the_whole_suite(user_kinds, name: str) -> None:
    kind = REGISTRY[name]
    for dtype in DTYPES:
        check_dtype(kind, dtype, True)
    check_gradients(kind)
    check_json_round_trip(kind)


ARCH = [{"type": "conv", "filters": 2, "size": 3, "activation": "swish"},
        {"type": "scale", "factor": 0.5}, {"type": "pool", "size": 2},
        {"type": "fc", "units": "classes"}, {"type": "swish"}]


def test_users_kinds_in_json_sequential_and_model_files(user_kinds, tmp_path: Path) -> None:
    with pytest.raises(cs.ArchitectureError, match=r"layer 0 \(scale\): unknown key 'scal'"):
        build_model([{"type": "scale", "scal": 2}], (1, 6, 6), 3)
    net = build_model(ARCH, (1, 6, 6), 3, seed=0)
    assert [type(layer).__name__ for layer in net.layers] == [
        "Conv2D", "Swish", "Scale", "MaxPool2D", "Flatten", "Linear", "Swish"]
    assert architecture_of(net)[1:3] == [{"type": "swish"}, {"type": "scale", "factor": 0.5}]
    x = np.random.default_rng(0).random((4, 1, 6, 6)).astype(np.float32)
    same = cs.Sequential(*net.layers, input_shape=(1, 6, 6))  # by hand: the same network
    np.testing.assert_array_equal(same.forward(x), net.forward(x))
    path = save_model(tmp_path / "m.safetensors", net, ["a", "b", "c"])
    loaded = load_model(path)
    assert architecture_of(loaded.model) == architecture_of(net)
    np.testing.assert_array_equal(loaded.model.predict(x), net.predict(x))
    # without the module that defines it, the file says what is missing
    unregister("swish")
    with pytest.raises(ModelFileError, match=r"model file names layer kind 'swish', which is not "
                                             r"registered; import the module that defines it"):
        load_model(path)
    with pytest.raises(cs.ArchitectureError, match=r"layer 0: unknown type 'swish'.*a layer of "
                                                   r"your own: register it with "
                                                   r"@convscope.register_layer"):
        build_model([{"type": "swish"}], (1, 6, 6), 3)
    with pytest.raises(cs.ArchitectureError, match=r"'activation' must be one of relu.*got "
                                                   r"'swish'"):
        build_model(ARCH[:1], (1, 6, 6), 3)
