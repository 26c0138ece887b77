"""Sequential as a container, and the inspectors as loops over hooks and traits: a network nested
into blocks computes, counts and explains exactly as the flat one; a user's layer is explained by
the default hook; the model's dtype is its parameters'; ``import convscope`` stays light."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import convscope as cs
from convscope.inspect.explain import ExplainContext, Told


def flat_layers(dtype: Any = np.float32) -> list[cs.Layer]:
    """32×32×3 -> CONV six 5×5×3 -> RELU -> CONV ten 5×5×6 -> RELU -> POOL -> FC 10."""
    return [cs.Conv2D(3, 6, 5, dtype=dtype, seed=1), cs.ReLU(), cs.Conv2D(6, 10, 5, dtype=dtype, seed=2),
            cs.ReLU(), cs.MaxPool2D(2), cs.Flatten(), cs.Linear(1440, 10, dtype=dtype, seed=3)]


def nested(layers: list[cs.Layer], a: int, b: int, **kw: Any) -> cs.Sequential:
    """The same layers with layers[a:b] moved into a block."""
    return cs.Sequential(*layers[:a], cs.Sequential(*layers[a:b]), *layers[b:], **kw)


def test_a_nested_block_counts_its_layers() -> None:
    """The bug: a nested Sequential reported 0 mult-adds and was explained as one line."""
    flat = cs.Sequential(*flat_layers(), input_shape=(3, 32, 32))
    net = nested(flat_layers(), 2, 5, input_shape=(3, 32, 32))
    block = net[2]
    # the lecture's numbers: CONV ten 5×5×6 on 28×28×6 -> 24·24·10 dot products of 150 numbers
    assert block.macs((6, 28, 28)) == 24 * 24 * 10 * 150 == 864_000
    assert block.param_count() == 5 * 5 * 6 * 10 + 10
    assert block.param_formula() == "5·5·6·10 + 10 = 1510"
    assert net.macs((3, 32, 32)) == flat.macs((3, 32, 32)) == 28 * 28 * 6 * 75 + 864_000 + 14_400
    two = cs.Sequential(cs.Conv2D(3, 4, 3), cs.Conv2D(4, 4, 3), input_shape=(3, 8, 8))
    assert two.param_formula() == "112 + 148 = 260"
    ex = net.explain()
    assert [s.label for s in ex.steps] == ["0", "1", "2", "3", "4"]
    assert [s.label for s in ex.leaves()] == ["0", "1", "2.0", "2.1", "2.2", "3", "4"]
    step = ex.steps[2]
    assert step.kind == "BLOCK" and step.macs == 864_000 and step.params == 1510
    assert step.text == ("BLOCK: 3 layers in a row: 28×28×6 → 12×12×10; 1,510 parameters, "
                         "864,000 multiply-adds (layers 2.0 to 2.2 below)")
    text = str(ex).splitlines()
    at = text.index("[2] " + step.text)
    assert text[at + 1] == ("    [2.0] CONV: 10 filters 5×5×6, stride 1, pad 0: (28 − 5 + 2·0) / 1 + 1 "
                            "= 24 → 24×24×10; weights 5·5·6·10 = 1500, biases 10 (1,510 parameters)")
    assert "    [2.1] RELU: max(0, x) on each of the 5,760 numbers" in text[at + 4]
    assert "im2col workspace: up to 337.5 KiB per image (layer 2.0)" in str(ex)
    assert (ex.total_params, ex.total_macs, ex.activation_bytes, ex.workspace_bytes) == (
        flat.explain().total_params, flat.explain().total_macs, flat.explain().activation_bytes,
        flat.explain().workspace_bytes)


def test_summary_rows_inside_a_block_under_its_totals() -> None:
    net = nested(flat_layers(), 2, 5, input_shape=(3, 32, 32))
    s = net.summary()
    assert [(r.label, r.depth) for r in s.rows] == [
        ("0", 0), ("1", 0), ("2", 0), ("2.0", 1), ("2.1", 1), ("2.2", 1), ("3", 0), ("4", 0)]
    block, inner = s.rows[2], s.rows[3:6]
    assert block.layer == "Sequential (3 layers)" and block.output_shape == (10, 12, 12)
    assert block.params == sum(r.params for r in inner) == 1510
    assert block.macs == sum(r.macs for r in inner) == 864_000
    assert block.activation_bytes == sum(r.activation_bytes for r in inner) == 4 * (5760 * 2 + 1440)
    flat = cs.Sequential(*flat_layers(), input_shape=(3, 32, 32)).summary()
    assert (s.total_params, s.total_macs, s.activation_bytes) == (
        flat.total_params, flat.total_macs, flat.activation_bytes)
    lines = str(s).splitlines()
    assert any(line.startswith("2.0    Conv2D(6, 10, kernel_size=5x5)") for line in lines)
    assert cs.Summary is cs.model.Summary is type(s)


@settings(max_examples=max(10, settings.default.max_examples // 4))
@given(a=st.integers(0, 7), n=st.integers(0, 7), depth=st.integers(1, 2))
def test_any_nesting_computes_counts_and_explains_as_the_flat_network(a: int, n: int,
                                                                       depth: int) -> None:
    b = min(7, a + n)
    flat = cs.Sequential(*flat_layers(np.float64), input_shape=(3, 32, 32))
    layers = flat_layers(np.float64)
    net = nested(layers, a, b, input_shape=(3, 32, 32))
    if depth == 2 and b > a:  # a block inside the block
        inner = net[a]
        inner.layers = [cs.Sequential(*inner.layers)]
    x = np.random.default_rng(a * 8 + b).standard_normal((2, 3, 32, 32))
    y_flat, y = flat.forward(x), net.forward(x)
    np.testing.assert_allclose(y, y_flat, rtol=1e-12, atol=1e-12)
    dy = np.random.default_rng(0).standard_normal(y.shape)
    np.testing.assert_allclose(net.backward(dy), flat.backward(dy), rtol=1e-10, atol=1e-12)
    for g, g_flat in zip(net.grads.values(), flat.grads.values()):
        np.testing.assert_allclose(g, g_flat, rtol=1e-10, atol=1e-12)
    assert net.dtype == np.float64
    ex, ex_flat = net.explain(), flat.explain()
    leaves = [s for s in ex.leaves() if s.kind != "BLOCK"]  # an empty block is a leaf
    assert [s.text for s in leaves] == [s.text for s in ex_flat.steps]
    assert [s.output_shape for s in leaves] == [s.output_shape for s in ex_flat.steps]
    assert (ex.total_params, ex.total_macs, ex.activation_bytes, ex.itemsize) == (
        ex_flat.total_params, ex_flat.total_macs, ex_flat.activation_bytes, 8)
    s, s_flat = net.summary(), flat.summary()
    leaves = [r for r in s.rows if not r.layer.startswith("Sequential (")]
    assert [(r.output_shape, r.params, r.formula, r.macs) for r in leaves] == [
        (r.output_shape, r.params, r.formula, r.macs) for r in s_flat.rows]
    assert (s.total_params, s.total_macs, s.activation_bytes) == (
        s_flat.total_params, s_flat.total_macs, s_flat.activation_bytes)
    assert net.macs((3, 32, 32)) == flat.macs((3, 32, 32)) == ex.total_macs


def test_a_block_backward_passes_finite_differences() -> None:
    """float64 central differences of sum(y · r) wrt the input, through a block."""
    net = cs.Sequential(cs.Sequential(cs.Conv2D(2, 3, 3, padding=1, dtype=np.float64, seed=0),
                                      cs.Tanh()),
                        cs.Flatten(), cs.Linear(None, 2, dtype=np.float64, seed=1),
                        input_shape=(2, 4, 4))
    rng = np.random.default_rng(0)
    x, r = rng.standard_normal((1, 2, 4, 4)), rng.standard_normal((1, 2))
    net.forward(x)
    dx = net.backward(r)
    num = np.zeros_like(x)
    h = 1e-6
    for i in np.ndindex(x.shape):
        e = np.zeros_like(x)
        e[i] = h
        num[i] = ((net.forward(x + e) * r).sum() - (net.forward(x - e) * r).sum()) / (2 * h)
    np.testing.assert_allclose(dx, num, rtol=1e-6, atol=1e-8)


class _Probe(cs.Layer):
    """A user's layer with the ``input_grad_optional`` trait: records how backward was called."""

    input_grad_optional = True

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[bool] = []

    def forward(self, x: Any) -> Any:
        return self._keep(None, x * 2)

    def backward(self, dy: Any, input_grad: bool = True) -> Any:
        self._take(dy)
        self.calls.append(input_grad)
        return dy * 2 if input_grad else None


def test_backward_without_input_grad_asks_the_trait() -> None:
    probe = _Probe()
    net = cs.Sequential(probe, cs.ReLU())
    x = np.ones((2, 3), np.float32)
    net.forward(x)
    assert net.backward(np.ones((2, 3), np.float32), input_grad=False) is None
    assert probe.calls == [False]  # named by its trait, not by its class
    # a first block passes it on to its own first layer
    inner = _Probe()
    net = cs.Sequential(cs.Sequential(inner, cs.Tanh()), cs.ReLU())
    net.forward(x)
    assert net.backward(np.ones((2, 3), np.float32), input_grad=False) is None
    assert inner.calls == [False]
    # a first layer without the trait gets a plain backward(dy)
    net = cs.Sequential(cs.ReLU(), cs.Linear(3, 2, seed=0))
    net.forward(x)
    assert net.backward(np.ones((2, 2), np.float32), input_grad=False) is None
    assert cs.Conv2D.input_grad_optional and cs.Linear.input_grad_optional
    assert cs.Sequential.input_grad_optional and not cs.ReLU.input_grad_optional


def test_the_model_dtype_is_its_parameters() -> None:
    """The bug: a float64 model whose first layer has no parameters took the first layer's dtype
    (None) as the model's."""
    net = cs.Sequential(cs.Flatten(), cs.Linear(12, 3, dtype=np.float64, seed=0),
                        input_shape=(3, 2, 2))
    assert net.dtype == np.float64
    assert net.predict(np.ones((2, 3, 2, 2), net.dtype)).dtype == np.float64
    assert net.summary().itemsize == 8 and net.explain().dtype == "float64"
    assert "(96 B as float64)" in str(net.explain())
    assert cs.Sequential(cs.ReLU()).dtype == np.float32  # no parameters: float32
    bn = cs.Sequential(cs.BatchNorm2D(2, affine=False, dtype=np.float64))  # buffers only
    assert bn.dtype == np.float64
    deep = cs.Sequential(cs.ReLU(), cs.Sequential(cs.Flatten(), cs.Linear(4, 2, dtype=np.float64)))
    assert deep.dtype == np.float64


class Swish(cs.Layer):
    """x·sigmoid(x), with no explain hook of its own."""

    def forward(self, x: Any) -> Any:
        return self._keep(x, x / (1 + np.exp(-x)))


def test_a_layer_without_its_own_hook_is_explained_by_the_default() -> None:
    net = cs.Sequential(cs.Conv2D(3, 6, 5), Swish(), input_shape=(3, 32, 32))
    step = net.explain().steps[1]
    assert (step.kind, step.text) == ("SWISH", "Swish(): 28×28×6 → 28×28×6; no parameters")
    assert step.output_shape == (6, 28, 28) and step.activation_bytes == 4 * 4704


def test_a_hook_must_return_a_told() -> None:
    class Bad(cs.ReLU):
        def explain(self, input_shape: Any, ctx: Any) -> Any:
            return "RELU"

    with pytest.raises(TypeError, match=r"Bad.explain\(input_shape, ctx\) must return ctx.told"):
        cs.Sequential(Bad(), input_shape=(1, 2, 2)).explain()
    told = ExplainContext(4).told("X", "X: text")
    assert isinstance(told, Told) and told.fits and told.output_shape is None


def test_errors_and_misfits_inside_a_block_name_its_label() -> None:
    net = cs.Sequential(cs.Conv2D(1, 2, 3),
                        cs.Sequential(cs.ReLU(), cs.Conv2D(2, 2, 3, stride=3)),
                        input_shape=(1, 9, 9))
    ex = net.explain()  # 9 -> 7 -> (7 − 3) / 3 + 1 = 2.33
    assert [s.label for s in ex.misfits] == ["1.1"] and not ex.steps[1].fits
    assert "does not fit: layer 1.1 (see above)" in str(ex)
    with pytest.raises(cs.ShapeError, match=r"^layer 1\.1 Conv2D\(2, 2, kernel_size=3x3, stride=3\): "
                                            r"input 7×7×2: .*2\.33: stride 3 does not fit"):
        net.explain(strict=True)
    with pytest.raises(cs.ShapeError, match=r"^layer 0\.1: .*input has 3 channels"):
        cs.Sequential(cs.Sequential(cs.ReLU(), cs.Conv2D(2, 2, 3))).explain((3, 9, 9))
    lenient = cs.Sequential(cs.Sequential(cs.Conv2D(1, 2, 3, stride=3, fit="error")),
                            input_shape=(1, 9, 9))
    ex = lenient.explain((1, 7, 7))
    assert ex.leaves()[0].output_shape == (2, 2, 2)
    assert "fit='error', so it raises on this input" in ex.leaves()[0].text


def test_import_convscope_is_light_and_viz_loads_on_use() -> None:
    """The bug: after ``import convscope``, ``convscope.viz.activation_maps`` raised
    AttributeError.  And neither the package nor viz imports matplotlib (nor torch, onnx)."""
    code = ("import sys, convscope\n"
            "heavy = [m for m in ('matplotlib', 'torch', 'onnx') if m in sys.modules]\n"
            "assert not heavy, heavy\n"
            "assert callable(convscope.viz.activation_maps)\n"
            "assert callable(convscope.inspect.viz.filter_grid)\n"
            "assert convscope.explain.explain is convscope.inspect.explain.explain\n"
            "assert 'matplotlib' not in sys.modules, 'viz imported matplotlib'\n"
            "print('ok')\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"
