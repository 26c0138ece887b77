"""Sequential: state dicts interchangeable with torch.nn.Sequential's, dtypes kept through every
layer, and inference (predict, no_grad) that keeps no caches."""

from __future__ import annotations

from typing import Any, Callable

import numpy as np
import pytest
torch = pytest.importorskip("torch")

import convscope as cs
from test_registry import assert_keeps_dtype


def ours(dtype: Any = np.float32) -> cs.Sequential:
    return cs.Sequential(
        cs.Conv2D(3, 8, 3, padding=1, dtype=dtype, init="torch"), cs.BatchNorm2D(dtype=dtype),
        cs.ReLU(), cs.MaxPool2D(2),
        cs.Conv2D(None, 8, 3, groups=2, bias=False, dtype=dtype), cs.LeakyReLU(0.1),
        cs.AvgPool2D(2, ceil_mode=True), cs.Dropout(0.5, seed=0), cs.Flatten(),
        cs.Linear(None, 16, dtype=dtype, init="torch"), cs.BatchNorm1D(dtype=dtype), cs.Tanh(),
        cs.Linear(None, 5, bias=False, dtype=dtype), cs.Sigmoid(),
        input_shape=(3, 12, 12), seed=0)


def theirs() -> torch.nn.Sequential:
    nn = torch.nn
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(8, 8, 3, groups=2, bias=False), nn.LeakyReLU(0.1),
        nn.AvgPool2d(2, ceil_mode=True), nn.Dropout(0.5), nn.Flatten(),
        nn.Linear(8 * 2 * 2, 16), nn.BatchNorm1d(16), nn.Tanh(), nn.Linear(16, 5, bias=False),
        nn.Sigmoid()).double()


def test_state_dict_keys_and_shapes_equal_torch() -> None:
    mine, ref = ours().state_dict(), theirs().state_dict()
    assert list(mine) == list(ref)
    for k, v in mine.items():
        assert tuple(v.shape) == tuple(ref[k].shape), k
    assert mine["1.num_batches_tracked"].dtype == np.int64
    params = ours().params
    assert list(params) == [k for k, _ in theirs().named_parameters()]


def test_torch_weights_load_and_give_the_same_outputs() -> None:
    ref = theirs()
    rng = np.random.default_rng(0)
    with torch.no_grad():  # non-default statistics and affine parameters
        for m in ref:
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                m.running_mean.copy_(torch.tensor(rng.standard_normal(m.num_features)))
                m.running_var.copy_(torch.tensor(rng.uniform(0.5, 2, m.num_features)))
                m.weight.copy_(torch.tensor(rng.uniform(0.5, 2, m.num_features)))
                m.bias.copy_(torch.tensor(rng.standard_normal(m.num_features)))
                m.num_batches_tracked.fill_(7)
    net = ours(np.float64)
    net.load_state_dict({k: v.numpy() for k, v in ref.state_dict().items()})
    for k, v in ref.state_dict().items():
        np.testing.assert_array_equal(net.state_dict()[k], v.numpy(), err_msg=k)
    x = rng.standard_normal((4, 3, 12, 12))
    ref.eval()
    expected = ref(torch.tensor(x)).detach().numpy()
    np.testing.assert_allclose(net.predict(x), expected, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(net.eval().forward(x), expected, rtol=1e-10, atol=1e-12)
    # and back: our state dict loads into torch
    net.params["0.weight"][...] *= 2
    ref.load_state_dict({k: torch.tensor(np.array(v)) for k, v in net.state_dict().items()})
    np.testing.assert_allclose(net.predict(x), ref(torch.tensor(x)).detach().numpy(),
                               rtol=1e-10, atol=1e-12)


def test_load_state_dict_copies_in_place_and_casts() -> None:
    """Loading keeps the model's arrays (optimisers hold them) and their dtype."""
    source, target = ours(np.float64), ours()
    source.params["0.weight"][...] = 0.25
    before = target.params["0.weight"]
    opt = cs.SGD(target, lr=0.1)
    target.load_state_dict(source.state_dict())
    assert target.params["0.weight"] is before and before.dtype == np.float32
    np.testing.assert_array_equal(before, 0.25)
    assert opt.params[0][1] is before
    source.params["0.weight"][...] = 1.0  # a copy, not shared with the source
    np.testing.assert_array_equal(target.params["0.weight"], 0.25)


def test_seeded_models_are_reproducible() -> None:
    a, b = ours().state_dict(), ours().state_dict()
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)
    c = cs.Sequential(cs.Conv2D(3, 8, 3), input_shape=(3, 12, 12), seed=1)
    assert not np.array_equal(c.params["0.weight"], a["0.weight"])


# ---------------------------------------------------------------------------------------------
# dtypes

#: Configurations beyond each kind's example(): tests/test_registry.py checks every registered
#: kind's example the same way (both dtypes, train and eval).
LAYERS: dict[str, tuple[Callable[[Any], cs.Layer], tuple[int, ...]]] = {
    "Conv2D-reflect": (lambda dt: cs.Conv2D(2, 4, 3, padding=1, groups=2,
                                            padding_mode="reflect", dtype=dt, seed=0),
                       (2, 2, 5, 5)),
    "Conv2D-1x1": (lambda dt: cs.Conv2D(2, 3, 1, bias=False, dtype=dt, init="torch", seed=0),
                   (2, 2, 5, 5)),
    "MaxPool2D-ceil": (lambda dt: cs.MaxPool2D(2, padding=1, ceil_mode=True), (2, 2, 5, 5)),
    "BatchNorm1D-NCL": (lambda dt: cs.BatchNorm1D(2, affine=False, dtype=dt), (3, 2, 4)),
}


@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("name", sorted(LAYERS))
def test_more_configurations_keep_the_dtype(name: str, dtype: Any, training: bool) -> None:
    make, shape = LAYERS[name]
    layer = make(dtype).train(training)
    assert_keeps_dtype(layer, np.random.default_rng(0).standard_normal(shape).astype(dtype), dtype)


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
def test_network_losses_and_optimisers_keep_the_dtype(dtype: Any) -> None:
    net = ours(dtype)
    x = np.random.default_rng(0).standard_normal((4, 3, 12, 12)).astype(dtype)
    for crit, target in [(cs.CrossEntropyLoss(0.1), np.array([0, 1, 2, 4])),
                         (cs.MSELoss(), np.zeros((4, 5)))]:
        for opt in (cs.SGD(net, lr=0.1, momentum=0.9, weight_decay=1e-3), cs.AdamW(net)):
            net.zero_grad()
            loss = crit.forward(net.forward(x), target)
            assert loss.dtype == dtype
            dlogits = crit.backward()
            assert dlogits.dtype == dtype
            assert net.backward(dlogits).dtype == dtype
            opt.step()
            for k, v in net.state_dict().items():
                assert v.dtype == (np.int64 if k.endswith("num_batches_tracked") else dtype), k
            assert all(g.dtype == dtype for g in net.grads.values())


# ---------------------------------------------------------------------------------------------
# inference


def test_predict_keeps_no_caches_and_equals_eval_forward() -> None:
    net = ours()
    x = np.random.default_rng(1).standard_normal((10, 3, 12, 12)).astype(np.float32)
    net.forward(x)  # a training step leaves caches behind ...
    assert all(layer._cache is not None for layer in net if not isinstance(layer, cs.Dropout))
    stats = {k: v.copy() for k, v in net.buffers.items()}
    out = net.predict(x, batch_size=3)  # ... predict clears them and keeps none
    assert all(layer._cache is None for layer in net)
    assert net.training and all(layer.training for layer in net)  # the mode is restored
    for k, v in net.buffers.items():  # evaluation does not touch the running statistics
        np.testing.assert_array_equal(v, stats[k], err_msg=k)
    net.eval()
    expected = net.forward(x)
    np.testing.assert_allclose(out, expected, rtol=1e-6, atol=1e-6)
    assert out.dtype == np.float32 and out.shape == (10, 5)
    np.testing.assert_allclose(net.predict(x, batch_size=3), net.predict(x, batch_size=10),
                               rtol=1e-6, atol=1e-7)  # BLAS may block a batch differently
    with cs.no_grad():
        np.testing.assert_array_equal(net.forward(x), expected)
    assert all(layer._cache is None for layer in net)
    net.forward(x)  # outside no_grad the caches come back
    assert net[0]._cache is not None


def test_no_grad_restores_the_mode_after_an_error() -> None:
    net = cs.Sequential(cs.Conv2D(1, 1, 3), input_shape=(1, 5, 5))
    with pytest.raises(cs.ShapeError):
        with cs.no_grad():
            net.forward(np.zeros((1, 2, 5, 5), np.float32))
    net.forward(np.zeros((1, 1, 5, 5), np.float32))
    assert net[0]._cache is not None
    net.backward(np.ones((1, 1, 3, 3), np.float32))


def test_params_and_grads_are_keyed_like_torch() -> None:
    net = ours()
    assert list(net.grads) == list(net.params)
    assert [name for name, _, _ in net.parameters()] == list(net.params)
    for name, p, g in net.parameters():
        assert p is net.params[name] and g.shape == p.shape


def test_predict_on_no_images_gives_an_empty_batch() -> None:
    net = ours()
    out = net.predict(np.zeros((0, 3, 12, 12), np.float32))
    assert isinstance(out, np.ndarray) and out.shape == (0, 5) and out.dtype == np.float32
