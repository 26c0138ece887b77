"""Presets and JSON architectures: shapes, parameter counts, errors, the canonical round trip."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

import convscope as cs
from convscope.models import (PRESETS, ArchitectureError, architecture_of, build_model,
                              load_architecture, parse_shape, preset)
from convscope.shapes import conv_output_size


def _conv_params(c_in: int, k: int, f: int) -> int:
    return f * f * c_in * k + k


def _fc_params(n_in: int, n_out: int) -> int:
    return n_in * n_out + n_out


def test_lecture_preset_is_the_lecture_network() -> None:
    net = build_model("lecture", (3, 32, 32), 10, seed=0)
    kinds = [type(layer).__name__ for layer in net.layers]
    assert kinds == ["Conv2D", "ReLU", "Conv2D", "ReLU", "MaxPool2D", "Flatten", "Linear"]
    shapes = net.shapes()
    # six 5x5x3 filters: 32x32x3 -> 28x28x6, 5·5·3·6 weights + 6 biases
    assert shapes[1] == (6, conv_output_size(32, 5), conv_output_size(32, 5)) == (6, 28, 28)
    rows = net.summary().rows
    assert rows[0].params == 5 * 5 * 3 * 6 + 6
    assert rows[2].params == _conv_params(6, 10, 5)
    assert shapes[-1] == (10,)


def test_lenet5_on_28x28_pads_to_the_original_16x5x5() -> None:
    net = build_model("lenet5", (1, 28, 28), 10, seed=0)
    shapes = net.shapes()
    flat = next(s for s in shapes if len(s) == 1)
    assert flat == (16 * 5 * 5,)
    expected = (_conv_params(1, 6, 5) + _conv_params(6, 16, 5) + _fc_params(400, 120)
                + _fc_params(120, 84) + _fc_params(84, 10))
    assert net.summary().total_params == expected
    # on the original 32x32 input there is no padding and the same fc sizes
    net32 = build_model("lenet5", (1, 32, 32), 7, seed=0)
    assert net32.summary().total_params == expected - _fc_params(84, 10) + _fc_params(84, 7)


def test_cifar_preset_is_exactly_conv32_pool_conv64_pool_fc() -> None:
    net = build_model("cifar", (3, 32, 32), 10, seed=0)
    convs = [layer for layer in net.layers if isinstance(layer, cs.Conv2D)]
    assert [(c.out_channels, c.kernel_size) for c in convs] == [(32, (3, 3)), (64, (3, 3))]
    assert sum(isinstance(layer, cs.MaxPool2D) for layer in net.layers) == 2
    linears = [layer for layer in net.layers if isinstance(layer, cs.Linear)]
    assert len(linears) == 1 and linears[0].out_features == 10
    assert linears[0].in_features == 64 * 8 * 8


@pytest.mark.parametrize("name", sorted(PRESETS))
@pytest.mark.parametrize("shape,classes", [((1, 28, 28), 10), ((3, 32, 32), 4)])
def test_every_preset_builds_and_runs(name: str, shape: tuple, classes: int) -> None:
    net = build_model(name, shape, classes, seed=1)
    x = np.random.default_rng(0).normal(size=(2, *shape)).astype(np.float32)
    assert net.forward(x).shape == (2, classes)
    assert net.output_shape(shape) == (classes,)


def test_seed_makes_weights_repeat() -> None:
    a = build_model("fashion", (1, 28, 28), 10, seed=3).state_dict()
    b = build_model("fashion", (1, 28, 28), 10, seed=3).state_dict()
    c = build_model("fashion", (1, 28, 28), 10, seed=4).state_dict()
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert not np.array_equal(a["0.weight"], c["0.weight"])


def test_issue_example_json_builds_with_flatten_inserted(tmp_path) -> None:
    spec = [{"type": "conv", "filters": 6, "size": 5, "stride": 1, "pad": 0}, {"type": "relu"},
            {"type": "pool", "size": 2}, {"type": "fc", "units": 10}]
    path = tmp_path / "net.json"
    path.write_text(json.dumps(spec))
    net = build_model(path, (1, 28, 28), 10, seed=0)
    assert [type(layer).__name__ for layer in net.layers] == [
        "Conv2D", "ReLU", "MaxPool2D", "Flatten", "Linear"]
    assert net.shapes()[-2] == (6 * 12 * 12,)
    assert net.layers[-1].in_features == 6 * 12 * 12


def test_convnetjs_definition(tmp_path) -> None:
    # ConvNetJS' MNIST demo, verbatim keys
    spec = [{"type": "input", "out_sx": 24, "out_sy": 24, "out_depth": 1},
            {"type": "conv", "sx": 5, "filters": 8, "stride": 1, "pad": 2, "activation": "relu"},
            {"type": "pool", "sx": 2, "stride": 2},
            {"type": "conv", "sx": 5, "filters": 16, "stride": 1, "pad": 2, "activation": "relu"},
            {"type": "pool", "sx": 3, "stride": 3},
            {"type": "softmax", "num_classes": 10}]
    path = tmp_path / "convnetjs.json"
    path.write_text(json.dumps(spec))
    net = build_model(path, None, 10, seed=0)
    assert net.input_shape == (1, 24, 24)
    assert net.shapes()[-1] == (10,)
    assert sum(isinstance(layer, cs.ReLU) for layer in net.layers) == 2
    with pytest.raises(ArchitectureError, match="input layer says 1x24x24.*data is 1x28x28"):
        build_model(path, (1, 28, 28), 10)


def test_dict_form_with_input_shape_and_classes_units(tmp_path) -> None:
    path = tmp_path / "a.json"
    path.write_text(json.dumps({"input_shape": [3, 16, 16], "layers": [
        {"type": "conv", "filters": 4, "size": 3, "pad": "same"}, {"type": "batchnorm"},
        {"type": "relu"}, {"type": "gap"}, {"type": "fc", "units": "classes"}]}))
    layers, shape = load_architecture(path)
    assert shape == (3, 16, 16) and len(layers) == 5
    net = build_model(path, None, 7, seed=0)
    assert net.output_shape(net.input_shape) == (7,)
    assert isinstance(net.layers[1], cs.BatchNorm2D)


@pytest.mark.parametrize("layers,pattern", [
    ([{"type": "convv", "filters": 6, "size": 5}], r"layer 0: unknown type 'convv' \(did you mean 'conv'\?\); known types: [a-z0-9_, ]*\bconv\b.*; a layer of your own: register it with @convscope.register_layer"),
    ([{"type": "conv", "filter": 6, "size": 5}], r"layer 0 \(conv\): unknown key 'filter' \(did you mean 'filters'\?\); conv takes: filters"),
    ([{"type": "relu"}, {"type": "fc", "unit": 3}], r"layer 1 \(fc\): unknown key 'unit'"),
    ([{"filters": 6}], r"layer 0 .*: no 'type'"),
    (["relu"], r"layer 0: expected a dict"),
    ([{"type": "conv", "size": 5}], r"'filters' is required"),
    ([{"type": "conv", "filters": 0, "size": 5}], r"'filters' must be an int >= 1, got 0"),
    ([{"type": "conv", "filters": 2, "size": 3, "activation": "maxout"}], r"'activation' must be one of"),
    ([{"type": "dropout", "p": 1.5}], r"'p' must be a number in \[0, 1\]"),
    ([{"type": "pool", "kind": "min"}], r"'kind' must be one of 'max', 'avg'"),
    ([{"type": "conv", "filters": 2, "size": 3, "pad": "full"}], r"padding must be"),
    ([{"type": "fc", "units": 4}, {"type": "conv", "filters": 2, "size": 3}], r"layer 1 .*needs a volume"),
    ([{"type": "relu"}, {"type": "input", "shape": [1, 8, 8]}], r"input layer can only come first"),
    ([], r"has no layers"),
    ([{"type": "avgpool", "kind": "max"}], r"type 'avgpool' contradicts kind 'max'"),
    ([{"type": "maxpool", "kind": "avg"}], r"type 'maxpool' contradicts kind 'avg'"),
    ([{"type": "pool", "count_include_pad": False}], r"'count_include_pad' is for average pooling"),
    ([{"type": "avgpool", "dilation": 2}], r"average pooling has no dilation"),
    ([{"type": "conv", "filters": 2, "size": 3, "fit": "round"}], r"'fit' must be one of 'floor', 'error'"),
    ([{"type": "conv", "filters": 2, "size": 3, "padding_mode": "mirror"}], r"layer 0 \(.*\): Conv2D: padding_mode must be one of"),
    ([{"type": "fc", "units": 3, "activation": "dropout"}], r"'activation' must be one of relu, leakyrelu, sigmoid, tanh"),
    ([{"type": "sequential", "layers": []}], r"layer 0 .*'layers' must be a non-empty list"),
    ([{"type": "sequential", "layers": [{"type": "relu"}, {"type": "conv", "size": 3}]}], r"layer 0\.1 .*'filters' is required"),
    ([{"type": "sequential", "layers": [{"type": "relu"}, {"type": "input", "shape": [1, 8, 8]}]}], r"layer 0\.1 .*input layer can only come first"),
    ([{"type": "sequential", "layers": [{"type": "rleu"}]}], r"layer 0\.0: unknown type 'rleu' \(did you mean 'relu'\?\)"),
])
def test_architecture_errors_name_the_layer_and_key(layers: list, pattern: str) -> None:
    with pytest.raises(ArchitectureError, match=pattern) as info:
        build_model(layers, (1, 8, 8), 10)
    assert "\n" not in str(info.value)


def test_shape_errors_name_the_architecture_layer() -> None:
    with pytest.raises(cs.ShapeError, match=r"layer 2 \(conv\):"):
        build_model([{"type": "conv", "filters": 2, "size": 5}, {"type": "relu"},
                     {"type": "conv", "filters": 2, "size": 5}], (1, 6, 6), 10)


def test_unknown_preset_and_file_errors(tmp_path) -> None:
    with pytest.raises(ArchitectureError, match=r"unknown architecture 'lenet' \(did you mean 'lenet5'\?\)"):
        build_model("lenet", (1, 28, 28), 10)
    with pytest.raises(ArchitectureError, match="no such architecture file"):
        build_model(tmp_path / "missing.json", (1, 28, 28), 10)
    bad = tmp_path / "bad.json"
    bad.write_text('[{"type": "relu"},]')
    with pytest.raises(ArchitectureError, match=r"not valid JSON \(line 1"):
        build_model(bad, (1, 28, 28), 10)
    other = tmp_path / "other.json"
    other.write_text('{"layer": []}')
    with pytest.raises(ArchitectureError, match="expected a list of layers"):
        build_model(other, (1, 28, 28), 10)
    with pytest.raises(ArchitectureError, match="unknown architecture"):
        preset("nope", (1, 28, 28))


def test_parse_shape() -> None:
    assert parse_shape("1x28x28") == (1, 28, 28)
    assert parse_shape("3,32,32") == (3, 32, 32)
    assert parse_shape("32x32x3") == (3, 32, 32)  # the lecture's W x H x D
    with pytest.raises(ArchitectureError, match="three positive numbers"):
        parse_shape("28x28")


def test_canonical_entries_name_each_registered_kind_with_every_key() -> None:
    net = build_model([{"type": "conv", "filters": 2, "size": 3, "fit": "error"},
                       {"type": "pool", "size": 1}, {"type": "pool", "kind": "avg", "size": 1},
                       {"type": "batchnorm"}, {"type": "fc", "units": 3, "activation": "tanh"},
                       {"type": "batchnorm", "momentum": None}, {"type": "softmax"}],
                      (1, 5, 5), 4, seed=0)
    canon = architecture_of(net)
    assert [e["type"] for e in canon] == ["conv", "maxpool", "avgpool", "batchnorm", "flatten",
                                          "fc", "tanh", "batchnorm1d", "fc"]
    assert canon[0] == {"type": "conv", "filters": 2, "size": [3, 3], "stride": [1, 1],
                        "pad": [[0, 0], [0, 0]], "dilation": [1, 1], "groups": 1, "bias": True,
                        "padding_mode": "zeros", "fit": "error"}
    assert canon[2] == {"type": "avgpool", "size": [1, 1], "stride": [1, 1], "pad": [0, 0],
                        "ceil_mode": False, "count_include_pad": True, "fit": "floor"}
    assert canon[7] == {"type": "batchnorm1d", "eps": 1e-5, "momentum": None, "affine": True,
                        "track_running_stats": True}
    assert canon[8] == {"type": "fc", "units": 4, "bias": True}
    assert json.loads(json.dumps(canon)) == canon


def test_batch_norm_without_affine_or_running_stats_round_trips() -> None:
    net = cs.Sequential(cs.Conv2D(1, 2, 3), cs.BatchNorm2D(affine=False),
                        cs.BatchNorm2D(track_running_stats=False, eps=1e-3), cs.Flatten(),
                        cs.Linear(None, 3), cs.BatchNorm1D(momentum=None), input_shape=(1, 5, 5))
    again = build_model(architecture_of(net), (1, 5, 5), 3)
    assert architecture_of(again) == architecture_of(net)
    assert list(again.state_dict()) == list(net.state_dict())
    bn = again.layers[2]
    assert (bn.affine, bn.track_running_stats, bn.eps) == (True, False, 1e-3)
    assert again.layers[5].momentum is None and not again.layers[1].params


def test_nested_sequential_builds_and_round_trips() -> None:
    spec = [{"type": "conv", "filters": 3, "size": 3, "pad": 1},
            {"type": "sequential", "layers": [
                {"type": "conv", "filters": 3, "size": 3, "pad": 1, "activation": "relu"},
                {"type": "sequential", "layers": [{"type": "batchnorm"}]}]},
            {"type": "pool"}, {"type": "fc", "units": "classes"}]
    net = build_model(spec, (2, 6, 6), 5, seed=0)
    block = net.layers[1]
    assert isinstance(block, cs.Sequential) and len(block) == 3
    assert isinstance(block[2], cs.Sequential) and isinstance(block[2][0], cs.BatchNorm2D)
    assert "1.0.weight" in net.state_dict() and "1.2.0.running_mean" in net.state_dict()
    canon = architecture_of(net)
    assert canon[1]["type"] == "sequential" and canon[1]["layers"][2]["type"] == "sequential"
    again = build_model(canon, (2, 6, 6), 5, seed=1)
    assert architecture_of(again) == canon
    again.load_state_dict(net.state_dict())
    x = np.random.default_rng(0).normal(size=(2, 2, 6, 6)).astype(np.float32)
    np.testing.assert_array_equal(again.predict(x), net.predict(x))
    # seeded: the same weights as the same layers written flat
    flat = build_model([spec[0], {"type": "conv", "filters": 3, "size": 3, "pad": 1}],
                       (2, 6, 6), 5, seed=0)
    np.testing.assert_array_equal(net.params["1.0.weight"], flat.params["1.weight"])
    with pytest.raises(cs.ShapeError, match=r"layer 1\.1 \(conv\):"):
        build_model([{"type": "relu"}, {"type": "sequential", "layers": [
            {"type": "relu"}, {"type": "conv", "filters": 1, "size": 9}]}], (1, 4, 4), 2)


def test_an_unregistered_subclass_cannot_be_saved() -> None:
    class MyReLU(cs.ReLU):
        pass

    net = cs.Sequential(cs.Flatten(), cs.Linear(4, 2), MyReLU(), input_shape=(1, 2, 2))
    with pytest.raises(cs.UnsupportedLayer, match=r"MyReLU is not a registered layer kind, so it "
                                                  r"cannot be saved \(it subclasses the 'relu' "
                                                  r"kind.*register_layer\('myrelu'\)"):
        architecture_of(net)


_layer = st.one_of(
    st.builds(lambda f, k, p, s: {"type": "conv", "filters": f, "size": k, "pad": p, "stride": s},
              st.integers(1, 4), st.integers(1, 3), st.integers(0, 1), st.integers(1, 2)),
    st.builds(lambda k, kind: {"type": "pool", "size": k, "kind": kind, "stride": 1},
              st.integers(1, 2), st.sampled_from(["max", "avg"])),
    st.builds(lambda k, inc, fit: {"type": "avgpool", "size": k, "count_include_pad": inc,
                                   "pad": k // 2, "fit": fit},
              st.integers(1, 2), st.booleans(), st.sampled_from(["floor", "error"])),
    st.builds(lambda f, act: {"type": "sequential", "layers": [
        {"type": "conv", "filters": f, "size": 1, "activation": act}, {"type": "batchnorm"}]},
        st.integers(1, 3), st.sampled_from(["relu", "tanh", "none"])),
    st.sampled_from([{"type": "relu"}, {"type": "tanh"}, {"type": "sigmoid"},
                     {"type": "leakyrelu", "slope": 0.2}, {"type": "batchnorm"},
                     {"type": "dropout", "p": 0.25}]),
)


@settings(max_examples=max(10, settings.default.max_examples // 4))
@given(st.lists(_layer, min_size=0, max_size=5), st.integers(1, 3), st.booleans())
def test_canonical_architecture_round_trip(layers: list, classes: int, hidden: bool) -> None:
    """architecture_of(model) rebuilds the same layers: same names, shapes and outputs."""
    spec = layers + ([{"type": "fc", "units": 5}, {"type": "batchnorm"}, {"type": "relu"}]
                     if hidden else []) + [{"type": "fc", "units": "classes"}]
    try:
        net = build_model(spec, (2, 9, 9), classes, seed=0)
    except cs.ShapeError:
        assume(False)  # the layers shrank the image below a window: not this test's subject
    canon = architecture_of(net)
    json.dumps(canon)  # plain JSON
    again = build_model(canon, (2, 9, 9), classes, seed=1)
    assert architecture_of(again) == canon
    own, other = net.state_dict(), again.state_dict()
    assert list(own) == list(other)
    assert all(own[k].shape == other[k].shape for k in own)
    again.load_state_dict(own)
    x = np.random.default_rng(0).normal(size=(3, 2, 9, 9)).astype(np.float32)
    np.testing.assert_array_equal(net.predict(x), again.predict(x))
