"""Float64 central finite differences against every backward pass: each layer on its own, the
losses, and a whole small network end to end with its loss.

Every registered kind's own example() is checked in tests/test_registry.py; here are the
configurations beyond it (conv and pool options, batch norm modes, ...).

For a layer the checked scalar is L = sum(y · g) for a fixed random g, so dL/dy = g.  Every element
of the input and of every parameter is perturbed by ±h; the relative error
max|analytic - numeric| / max(max|analytic|, max|numeric|) must stay below 1e-6.  Kinks (ReLU at 0,
ties in a max window) are kept away by construction.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import pytest

import convscope as cs
from convscope.ops import jit
from finite_diff import numeric_grad

H = 1e-6
TOL = 1e-6


def rel_error(analytic: np.ndarray, numeric: np.ndarray) -> float:
    scale = max(np.abs(analytic).max(initial=0), np.abs(numeric).max(initial=0), 1e-12)
    return float(np.abs(analytic - numeric).max(initial=0) / scale)


def assert_grads(analytic: np.ndarray, numeric: np.ndarray, what: str) -> None:
    assert analytic.shape == numeric.shape, what
    assert np.abs(numeric).max() > 1e-8, f"{what}: the check is vacuous (numeric gradient is 0)"
    err = rel_error(analytic, numeric)
    assert err < TOL, f"{what}: relative error {err:.2e} >= {TOL:g}"


def check_layer(layer: cs.Layer, x: np.ndarray, seed: int = 0,
                before_forward: Callable[[], None] = lambda: None) -> None:
    """Analytic dL/dx and dL/dparams of L = sum(layer(x) · g) against finite differences."""
    rng = np.random.default_rng(seed)
    before_forward()
    y = layer.forward(x)
    g = rng.standard_normal(y.shape)
    layer.zero_grad()
    dx = layer.backward(g)
    grads = {k: v.copy() for k, v in layer.grads.items()}

    def loss() -> float:
        before_forward()
        return float(np.sum(layer.forward(x) * g))

    assert_grads(dx, numeric_grad(loss, x), f"{layer!r} d input")
    for name, p in layer.params.items():
        assert_grads(grads[name], numeric_grad(loss, p), f"{layer!r} d {name}")


def spread(rng: np.random.Generator, shape: tuple[int, ...], gap: float = 0.05) -> np.ndarray:
    """Distinct values at least ``gap`` apart, shuffled: no ties in any max window, none at 0."""
    n = int(np.prod(shape))
    values = (np.arange(n) - n / 2 + 0.5) * gap
    return rng.permutation(values).reshape(shape)


CONV_OPTIONS = [
    dict(),
    dict(stride=2, padding=1),
    dict(kernel_size=(2, 3), stride=(2, 1), padding=(1, 0)),  # non-square; stride leaves a rest
    dict(dilation=2, padding="same"),
    dict(kernel_size=(3, 2), dilation=(1, 2), padding="same"),  # even kernel: asymmetric 'same'
    dict(groups=2),
    dict(groups=4, out_channels=8),  # depthwise, channel multiplier 2
    dict(kernel_size=1),
    dict(padding=((2, 0), (1, 2))),  # asymmetric padding
    dict(padding=2, padding_mode="reflect"),
    dict(padding=(1, 2), padding_mode="replicate", stride=2),
    dict(padding=((1, 2), (3, 1)), padding_mode="circular"),
    dict(padding=1, padding_mode="reflect", dilation=2, groups=2),
    dict(bias=False, padding="valid"),
]


KERNELS = pytest.mark.parametrize("kernels", [
    False, pytest.param(True, marks=pytest.mark.skipif(not jit.available(), reason="no numba"))],
    ids=["numpy", "compiled"])  # NumPy's path, and the compiled kernels of ops/jit*.py


@KERNELS
@pytest.mark.parametrize("options", CONV_OPTIONS, ids=lambda o: repr(o) if o else "plain")
def test_conv2d(options: dict, kernels: bool) -> None:
    opts = dict(kernel_size=3, out_channels=4) | options
    layer = cs.Conv2D(4, dtype=np.float64, init="torch", seed=1, **opts)
    x = np.random.default_rng(2).standard_normal((2, 4, 6, 5))
    with jit.turned_on(kernels):
        check_layer(layer, x)


@pytest.mark.parametrize("cin, cout, kernel, mode", [(16, 16, 3, "zeros"), (3, 24, 3, "reflect")])
def test_conv2d_by_wide_columns(monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest,
                                cin: int, cout: int, kernel: int, mode: str) -> None:
    """16-32 filters on channels-last input at stride 1: the forward's columns are wide
    (ops/wide.py), and with 16 channels dY's too (the weight gradient folded from them)."""
    from convscope.ops import conv as conv_ops, wide

    monkeypatch.setattr(wide, "MIN_POSITIONS", 1)  # wide on this small input too
    conv_ops._plan.cache_clear()
    request.addfinalizer(conv_ops._plan.cache_clear)  # no plan of this threshold outlives it
    layer = cs.Conv2D(cin, cout, kernel, padding=1, padding_mode=mode, dtype=np.float64,
                      init="torch", seed=1)
    x = np.random.default_rng(2).standard_normal((2, 4, 4, cin)).transpose(0, 3, 1, 2)
    plan = conv_ops.make_plan(x, layer.params["weight"], True, (1, 1), layer.pads, (1, 1), 1,
                              layer.output_shape((cin, 4, 4))[1:], mode)
    assert plan.wide > 1
    check_layer(layer, x)


@pytest.mark.parametrize("options", [
    dict(kernel_size=2),
    dict(kernel_size=3, stride=2, padding=1),
    dict(kernel_size=(2, 3), stride=(1, 2), dilation=(2, 1)),
    dict(kernel_size=3, stride=2, ceil_mode=True),
    dict(kernel_size=2, stride=1),  # overlapping windows
], ids=repr)
@KERNELS
def test_maxpool2d(options: dict, kernels: bool) -> None:
    x = spread(np.random.default_rng(3), (2, 2, 7, 6))
    with jit.turned_on(kernels):
        check_layer(cs.MaxPool2D(**options), x)


@pytest.mark.parametrize("options", [
    dict(kernel_size=2),
    dict(kernel_size=3, stride=2, padding=1),
    dict(kernel_size=3, stride=2, padding=1, count_include_pad=False),
    dict(kernel_size=(2, 3), stride=(2, 2), ceil_mode=True, count_include_pad=False),
    dict(kernel_size=3, stride=2, padding=1, ceil_mode=True),
], ids=repr)
def test_avgpool2d(options: dict) -> None:
    x = np.random.default_rng(4).standard_normal((2, 2, 7, 6))
    check_layer(cs.AvgPool2D(**options), x)


def test_dropout_with_a_fixed_mask() -> None:
    layer = cs.Dropout(0.4)
    x = np.random.default_rng(8).standard_normal((4, 3, 5))

    def same_mask() -> None:
        layer.rng = np.random.default_rng(99)

    check_layer(layer, x, before_forward=same_mask)
    same_mask()
    assert (layer.forward(x) == 0).any()  # the mask does drop something


@pytest.mark.parametrize("cls, shape", [(cs.BatchNorm2D, (3, 2, 3, 4)), (cs.BatchNorm1D, (5, 3)),
                                        (cs.BatchNorm1D, (3, 2, 4))])
@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("affine", [True, False], ids=["affine", "plain"])
@pytest.mark.parametrize("kernels", [False, True], ids=["numpy", "compiled"])
def test_batchnorm(cls: type, shape: tuple, training: bool, affine: bool, kernels: bool) -> None:
    """Both batch-norm paths: NumPy's and the compiled kernels of ops/jit.py (numba)."""
    if kernels and not jit.available():
        pytest.skip("numba is not installed")
    rng = np.random.default_rng(9)
    layer = cls(shape[1], affine=affine, dtype=np.float64)
    if affine:
        layer.params["weight"][...] = rng.uniform(0.5, 2.0, shape[1])
        layer.params["bias"][...] = rng.standard_normal(shape[1])
    layer.buffers["running_mean"][...] = rng.standard_normal(shape[1])
    layer.buffers["running_var"][...] = rng.uniform(0.5, 2.0, shape[1])
    layer.train(training)
    with jit.turned_on(kernels):
        check_layer(layer, rng.standard_normal(shape) * 2 + 1)


def test_batchnorm_without_running_stats_uses_batch_stats_in_eval() -> None:
    layer = cs.BatchNorm2D(2, track_running_stats=False, dtype=np.float64).eval()
    check_layer(layer, np.random.default_rng(10).standard_normal((2, 2, 3, 3)))


@pytest.mark.parametrize("smoothing", [0.0, 0.2])
def test_cross_entropy(smoothing: float) -> None:
    rng = np.random.default_rng(11)
    logits, labels = rng.standard_normal((4, 5)) * 2, rng.integers(0, 5, 4)
    crit = cs.CrossEntropyLoss(label_smoothing=smoothing)
    crit.forward(logits, labels)
    analytic = crit.backward().copy()
    numeric = numeric_grad(lambda: float(crit.forward(logits, labels)), logits)
    assert_grads(analytic, numeric, "CrossEntropyLoss d logits")


def test_mse() -> None:
    rng = np.random.default_rng(12)
    pred, target = rng.standard_normal((3, 4)), rng.standard_normal((3, 4))
    crit = cs.MSELoss()
    crit.forward(pred, target)
    analytic = crit.backward().copy()
    assert_grads(analytic, numeric_grad(lambda: float(crit.forward(pred, target)), pred),
                 "MSELoss d prediction")


@KERNELS
def test_whole_network_end_to_end_with_the_loss(kernels: bool) -> None:
    """conv-bn-relu-pool-conv-relu-flatten-linear + cross-entropy: d loss / d input and every
    parameter (BN in training mode, so its batch statistics depend on the input), by NumPy's
    path and by the compiled kernels."""
    with jit.turned_on(kernels):
        _whole_network()


def _whole_network() -> None:
    net = cs.Sequential(
        cs.Conv2D(2, 3, 3, dtype=np.float64, init="torch"), cs.BatchNorm2D(dtype=np.float64),
        cs.ReLU(), cs.MaxPool2D(2),
        cs.Conv2D(None, 4, 2, dtype=np.float64, init="torch"), cs.ReLU(),
        cs.Flatten(), cs.Linear(None, 3, dtype=np.float64, init="torch"),
        input_shape=(2, 8, 8), seed=0)
    rng = np.random.default_rng(13)
    x, labels = rng.standard_normal((2, 2, 8, 8)), np.array([0, 2])
    crit = cs.CrossEntropyLoss()

    # no kinks: every ReLU input is at least 1e-4 away from 0, every max window has a clear winner
    a = x
    for layer in net:
        if isinstance(layer, cs.ReLU):
            assert np.abs(a).min() > 1e-4
        if isinstance(layer, cs.MaxPool2D):
            windows = a.reshape(2, 3, 3, 2, 3, 2).transpose(0, 1, 2, 4, 3, 5).reshape(2, 3, 3, 3, 4)
            top2 = np.sort(windows, axis=-1)[..., -2:]
            assert ((top2[..., 1] - top2[..., 0] > 1e-4) | (top2[..., 1] == 0)).all()
        a = layer.forward(a)

    def loss() -> float:
        return float(crit.forward(net.forward(x), labels))

    loss()
    net.zero_grad()
    dx = net.backward(crit.backward())
    grads = {k: v.copy() for k, v in net.grads.items()}
    assert_grads(dx, numeric_grad(loss, x), "network d input")
    assert sorted(grads) == sorted(net.params) and len(grads) == 8
    for name, p in net.params.items():
        numeric = numeric_grad(loss, p)
        if name == "0.bias":  # batch norm subtracts the mean: a bias before it has no effect
            assert np.abs(numeric).max() < 1e-9 and np.abs(grads[name]).max() < 1e-12
        else:
            assert_grads(grads[name], numeric, f"network d {name}")
