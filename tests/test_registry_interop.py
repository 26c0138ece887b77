"""Every registered layer kind through ONNX and PyTorch, from its own ``example()``: the ONNX
round trip (onnxruntime computes what convscope computes, to 1e-5 in float32; importing gives the
same layer, the same outputs and, exported again, the same bytes), or for a kind without an ONNX
export the one-line UnsupportedLayer; the PyTorch twin (same outputs, same state dict; from_torch
gives the layer back).  A user's registered layer without hooks fails with the one-line message
naming the hook; one with hooks travels both ways."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")
torch = pytest.importorskip("torch")

import convscope as cs  # noqa: E402 - registers every kind
from convscope import interop  # noqa: E402
from convscope.layers.base import Layer  # noqa: E402
from convscope.layers.registry import REGISTRY, supported, unregister  # noqa: E402
from convscope.onnx_io import export_onnx, import_onnx, onnx_metadata, run_onnx  # noqa: E402

KINDS = sorted(REGISTRY)


def _leaves(layer: Layer) -> list[Layer]:
    """The layers that compute: a container's children, recursively."""
    kids = layer.children()
    return [leaf for _, child in kids for leaf in _leaves(child)] if kids else [layer]


def _example(name: str, seed: int = 0) -> tuple[Layer, tuple[int, ...]]:
    """The kind's example with random weights and batch-norm statistics (positive variances)."""
    layer, shape = REGISTRY[name].cls.example()
    rng = np.random.default_rng(seed)
    for key, arr in list(layer.params.items()) + list(layer.buffers.items()):
        if arr.dtype.kind != "f":
            continue
        if key.endswith("running_var"):
            arr[...] = rng.uniform(0.5, 2.0, arr.shape)
        else:
            arr[...] = rng.uniform(-0.8, 0.8, arr.shape)
    return layer.eval(), tuple(shape)


def _as_model(layer: Layer, shape: tuple[int, ...]) -> tuple[cs.Sequential, Layer]:
    """A model ONNX can take ((C, H, W) in): the layer itself, or Flatten first for a flat input
    shape (n,) given as (n, 1, 1).  Returns the model and the layer's index path in it."""
    if len(shape) == 3:
        return cs.Sequential(layer, input_shape=shape).eval(), layer
    assert len(shape) == 1, shape
    return cs.Sequential(cs.Flatten(), layer, input_shape=(shape[0], 1, 1)).eval(), layer


def _inputs(shape: tuple[int, ...], n: int = 3, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, *shape)).astype(np.float32)


def _has_hook(layer: Layer, hook: str) -> bool:
    return getattr(type(layer), hook) is not getattr(Layer, hook)


def _same_layer(ours: Layer, back: Layer, unsaid: tuple[str, ...] = ()) -> None:
    """Same kind, same options (its JSON entry, every key explicit, but the ``unsaid`` ones),
    same state."""
    spec = lambda layer: {k: v for k, v in layer.to_spec().items() if k not in unsaid}  # noqa: E731
    assert type(back) is type(ours) and spec(back) == spec(ours), (back, ours)
    a, b = ours.params | ours.buffers, back.params | back.buffers
    assert list(a) == list(b)
    for k in a:
        np.testing.assert_array_equal(np.asarray(b[k]), np.asarray(a[k]), err_msg=k)


def _close(ours: Any, ref: Any, what: str, tol: float = 1e-5) -> None:
    ref = np.asarray(ref)
    assert np.shape(ours) == ref.shape, f"{what}: {np.shape(ours)} vs {ref.shape}"
    np.testing.assert_allclose(ours, ref, rtol=tol, atol=tol * max(1.0, float(np.abs(ref).max())),
                               err_msg=what)


# ---------------------------------------------------------------------------------------------
# ONNX


@pytest.mark.parametrize("name", KINDS)
def test_onnx_round_trip(name: str) -> None:
    layer, shape = _example(name)
    model, _ = _as_model(layer, shape)
    if not _has_hook(layer, "to_onnx"):
        with pytest.raises(cs.UnsupportedLayer, match=rf"{type(layer).__name__} has no ONNX "
                                                      "export; give it a to_onnx hook$"):
            export_onnx(model)
        return
    proto = export_onnx(model)  # onnx.checker.check_model(full_check=True) passes
    x = np.random.default_rng(2).standard_normal((4, *model.input_shape)).astype(np.float32)
    ours = model.predict(x)
    _close(run_onnx(proto, x), ours, f"onnxruntime vs convscope, {name}")

    back = import_onnx(proto)
    _close(back.predict(x), ours, f"imported {name}", 1e-6)
    leaves, back_leaves = _leaves(model), _leaves(back)
    assert len(back_leaves) == len(leaves), back
    for mine, theirs in zip(leaves, back_leaves):
        _same_layer(mine, theirs, unsaid=("momentum",))  # an inference graph has no momentum
    if not isinstance(layer, cs.Sequential):  # a nested Sequential comes back flat, renamed;
        # branches (Residual, Concat) come back as they were, under the same names
        again = export_onnx(back, metadata=onnx_metadata(proto))
        assert again.SerializeToString() == proto.SerializeToString()


def test_batchnorm_node_is_read_by_the_kind_for_its_rank() -> None:
    """One ONNX operator, two kinds: BatchNormalization after a volume is BatchNorm2D, after a
    flat vector BatchNorm1D (each kind's from_onnx returns None for the other's rank)."""
    model = cs.Sequential(cs.BatchNorm2D(2), cs.Flatten(), cs.BatchNorm1D(18),
                          input_shape=(2, 3, 3)).eval()
    kinds = [type(layer) for layer in import_onnx(export_onnx(model)).layers]
    assert kinds == [cs.BatchNorm2D, cs.Flatten, cs.BatchNorm1D]


# ---------------------------------------------------------------------------------------------
# PyTorch


@pytest.mark.parametrize("name", KINDS)
def test_torch_twin(name: str) -> None:
    layer, shape = _example(name)
    if not REGISTRY[name].torch:
        with pytest.raises(cs.UnsupportedLayer, match="no PyTorch mapping"):
            interop.torch_layer(layer)
        return
    module = interop.torch_layer(layer)
    assert not module.training
    ours_keys, theirs_keys = list(layer.params | layer.buffers), list(module.state_dict())
    if layer.children():  # a container lists its parameters, then its buffers; torch interleaves
        ours_keys, theirs_keys = sorted(ours_keys), sorted(theirs_keys)
    assert theirs_keys == ours_keys
    x = _inputs(shape)
    with cs.no_grad():
        ours = layer.forward(x)
    with torch.no_grad():
        theirs = module(torch.from_numpy(x)).numpy()
    _close(theirs, ours, f"torch vs convscope, {name}")

    back = interop.convscope_layer(module)
    _same_layer(layer, back)
    assert not back.training
    with cs.no_grad():
        _close(back.forward(x), ours, f"from_torch {name}", 1e-7)


# ---------------------------------------------------------------------------------------------
# layers of your own


def _swish_forward(x: np.ndarray) -> np.ndarray:
    return x / (1 + np.exp(-x))


@pytest.fixture
def swish() -> Any:
    """A user's registered kind with forward/backward and no format hooks."""

    @cs.register_layer("swish_without_hooks")
    class Swish(cs.Layer):
        def forward(self, x: np.ndarray) -> np.ndarray:
            return self._keep(x, _swish_forward(x))

        def backward(self, dy: np.ndarray) -> np.ndarray:
            x = self._take(dy)
            s = 1 / (1 + np.exp(-x))
            return dy * (s + x * s * (1 - s))

    yield Swish
    unregister("swish_without_hooks")


def test_registered_layer_without_hooks_fails_with_one_line(swish: Any) -> None:
    model = cs.Sequential(cs.ReLU(), swish(), input_shape=(1, 2, 2))
    with pytest.raises(cs.UnsupportedLayer) as e:
        export_onnx(model)
    assert str(e.value) == "export_onnx: layer 1: Swish has no ONNX export; give it a to_onnx hook"
    with pytest.raises(cs.UnsupportedLayer) as e:
        interop.to_torch(model)
    assert str(e.value) == "layer 1: Swish has no PyTorch mapping; give it a to_torch hook"
    assert isinstance(e.value, TypeError)  # as these errors always were


@pytest.fixture
def softsign() -> Any:
    """A user's kind with all four hooks: ONNX Softsign and torch.nn.Softsign."""

    @cs.register_layer("softsign", onnx_ops=("Softsign",), torch=("Softsign",))
    class Softsign(cs.Layer):
        """x / (1 + |x|); d/dx = 1 / (1 + |x|)^2."""

        def forward(self, x: np.ndarray) -> np.ndarray:
            return self._keep(x, x / (1 + np.abs(x)))

        def backward(self, dy: np.ndarray) -> np.ndarray:
            return dy / (1 + np.abs(self._take(dy))) ** 2

        def to_onnx(self, g: Any, x: str, input_shape: Any) -> str:
            return g.node("Softsign", [x])

        @classmethod
        def from_onnx(cls, node: Any, g: Any, input_shape: Any) -> Layer:
            return cls()

        def to_torch(self, torch: Any) -> Any:
            return torch.nn.Softsign()

        @classmethod
        def from_torch(cls, module: Any, torch: Any) -> Layer:
            return cls()

    yield Softsign
    unregister("softsign")


def test_registered_layer_with_hooks_travels_both_ways(softsign: Any) -> None:
    assert "Softsign" in supported("onnx").split(", ")
    model = cs.Sequential(cs.Conv2D(1, 2, 3, seed=0), softsign(), cs.Flatten(),
                          cs.Linear(None, 3, seed=1), input_shape=(1, 5, 5)).eval()
    x = _inputs((1, 5, 5), 4)
    ours = model.predict(x)
    proto = export_onnx(model)
    _close(run_onnx(proto, x), ours, "onnxruntime")
    back = import_onnx(proto)
    assert type(back.layers[1]) is softsign
    _close(back.predict(x), ours, "imported", 1e-6)
    tmodel = interop.to_torch(model)
    with torch.no_grad():
        _close(tmodel(torch.from_numpy(x)).numpy(), ours, "torch")
    assert type(interop.from_torch(tmodel, (1, 5, 5)).layers[1]) is softsign


def test_supported_lists_come_from_the_registry(softsign: Any) -> None:
    """The "supported: ..." of both readers are joined from the registry: a newly registered
    kind's operator and module appear in them."""
    from onnx import TensorProto, helper

    g = helper.make_graph([helper.make_node("Softmax", ["x"], ["y"])], "g",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 1, 2, 2])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)])
    proto = helper.make_model(g, opset_imports=[helper.make_opsetid("", 19)], ir_version=9)
    with pytest.raises(ValueError, match=r"Softmax is not supported; supported: .*\bSoftsign\b"):
        import_onnx(proto)
    with pytest.raises(cs.UnsupportedLayer, match=r"supported modules: .*\bSoftsign\b"):
        interop.from_torch(torch.nn.Sequential(torch.nn.Softmax(1)))
