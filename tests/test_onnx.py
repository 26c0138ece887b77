"""ONNX export and import: for random stacks of every layer type and for every preset, convscope,
onnxruntime and PyTorch agree to 1e-5 at several batch sizes; export -> import -> export gives the
same bytes; the graph passes onnx.checker with named inputs/outputs and a dynamic batch axis;
what ONNX cannot express is refused with a clear error; simple equivalent graphs import."""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import numpy as np
import pytest
onnx = pytest.importorskip("onnx")
onnxruntime = pytest.importorskip("onnxruntime")
torch = pytest.importorskip("torch")
from hypothesis import given, reject, settings
from interop_stacks import randomize, stacks
from onnx import TensorProto, helper, numpy_helper
from torch import nn

import convscope as cs
from convscope import interop
from convscope.models import PRESET_INPUT_SHAPES, build_model, list_presets
from convscope.onnx_io import export_onnx, import_onnx, onnx_metadata, run_onnx

BASE = settings.default.max_examples
pytestmark = pytest.mark.filterwarnings("ignore:Using padding='same':UserWarning")
BATCHES = (1, 2, 5)


def close(ours: np.ndarray, ref: np.ndarray, what: str, tol: float = 1e-5) -> None:
    """Agree to ``tol``, relative and absolute on the reference's scale."""
    ref = np.asarray(ref)
    assert np.shape(ours) == ref.shape, f"{what}: shape {np.shape(ours)} vs {ref.shape}"
    scale = max(1.0, float(np.abs(ref).max())) if ref.size else 1.0
    np.testing.assert_allclose(ours, ref, rtol=tol, atol=tol * scale, err_msg=what)


def three_way(model: cs.Sequential, proto: onnx.ModelProto, batches=BATCHES, seed: int = 0) -> None:
    """convscope, onnxruntime and torch (to_torch) agree on random inputs of each batch size."""
    tmodel = interop.to_torch(model).eval()
    data = proto.SerializeToString()
    for n in batches:
        x = np.random.default_rng(seed + n).standard_normal((n, *model.input_shape)).astype(np.float32)
        ours = model.predict(x)
        with torch.no_grad():
            theirs = tmodel(torch.from_numpy(x)).numpy()
        close(run_onnx(data, x), ours, f"onnxruntime vs convscope, batch {n}")
        close(theirs, ours, f"torch vs convscope, batch {n}")


def roundtrip(proto: onnx.ModelProto, model: cs.Sequential) -> cs.Sequential:
    """import(proto) computes what model does, and exporting it again gives the same bytes."""
    back = import_onnx(proto)
    again = export_onnx(back, metadata=onnx_metadata(proto))
    assert again.SerializeToString() == proto.SerializeToString(), str(back)
    x = np.random.default_rng(9).standard_normal((2, *model.input_shape)).astype(np.float32)
    close(back.predict(x), model.predict(x), "re-imported model", 1e-6)
    return back


# ---------------------------------------------------------------------------------------------
# outputs agree, round trips are exact


@settings(max_examples=BASE)
@given(stacks(running_stats_only=True))
def test_random_stacks_agree_and_round_trip(model: cs.Sequential) -> None:
    try:
        proto = export_onnx(model)  # runs onnx.checker.check_model(full_check=True)
    except ValueError as e:  # the one pooling corner ONNX cannot express (tested below)
        if "ceil_mode keeps a partial last window" not in str(e):
            raise
        reject()
    three_way(model, proto)
    roundtrip(proto, model)


@pytest.mark.parametrize("name", list_presets())
def test_presets_agree_and_round_trip(name: str, tmp_path: Path) -> None:
    model = randomize(build_model(name, PRESET_INPUT_SHAPES[name], 10, seed=0),
                      np.random.default_rng(1)).eval()
    path = tmp_path / f"{name}.onnx"
    proto = export_onnx(model, path, metadata={"classes": "0,1,2,3,4,5,6,7,8,9"})
    assert path.read_bytes() == proto.SerializeToString()
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temp file left behind
    three_way(model, proto, (1, 4))
    back = roundtrip(onnx.load(str(path)), model)
    assert list(back.state_dict()) == list(model.state_dict())


def test_graph_interface(tmp_path: Path) -> None:
    model = cs.Sequential(cs.Conv2D(3, 4, 3), cs.BatchNorm2D(), cs.ReLU(), cs.GlobalAvgPool2D(),
                          cs.Flatten(), cs.Dropout(0.25), cs.Linear(None, 5),
                          input_shape=(3, 8, 8), seed=0)
    proto = export_onnx(model, tmp_path / "m.onnx", input_name="images", output_name="scores",
                        metadata={"classes": '["a", "b"]', "mean": "0.5"})
    onnx.checker.check_model(proto, full_check=True)
    assert proto.opset_import[0].version >= 17 and proto.producer_name == "convscope"
    (inp,), (out,) = proto.graph.input, proto.graph.output
    assert inp.name == "images" and out.name == "scores"
    dims = lambda v: [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim]  # noqa: E731
    assert dims(inp) == ["batch", 3, 8, 8] and dims(out) == ["batch", 5]
    assert [n.op_type for n in proto.graph.node] == [
        "Conv", "BatchNormalization", "Relu", "GlobalAveragePool", "Flatten", "Dropout", "Gemm"]
    names = {t.name for t in proto.graph.initializer}
    assert {k for k in model.state_dict() if "num_batches" not in k} <= names
    assert onnx_metadata(tmp_path / "m.onnx") == {"classes": '["a", "b"]', "mean": "0.5"}
    x = np.random.default_rng(0).standard_normal((7, 3, 8, 8)).astype(np.float32)
    close(run_onnx(tmp_path / "m.onnx", x), model.predict(x), "named graph")


def test_padding_modes_use_pad_nodes() -> None:
    layers = [cs.Conv2D(2, 3, 3, padding=1, padding_mode="reflect"),
              cs.Conv2D(3, 3, 4, padding="same", padding_mode="replicate"),
              cs.Conv2D(3, 2, 3, padding=((2, 0), (1, 2)), padding_mode="circular"),
              cs.Conv2D(2, 2, 2, padding="same")]  # zeros, asymmetric: Conv pads only
    model = randomize(cs.Sequential(*layers, input_shape=(2, 6, 7), seed=0),
                      np.random.default_rng(0))
    proto = export_onnx(model)
    ops = [(n.op_type, helper.get_attribute_value(n.attribute[0]) if n.op_type == "Pad" else None)
           for n in proto.graph.node]
    assert ops == [("Pad", b"reflect"), ("Conv", None), ("Pad", b"edge"), ("Conv", None),
                   ("Pad", b"wrap"), ("Conv", None), ("Conv", None)]
    last = proto.graph.node[-1]
    assert helper.get_attribute_value(next(a for a in last.attribute if a.name == "pads")) == [0, 0, 1, 1]
    three_way(model, proto)
    back = roundtrip(proto, model)
    assert [layer.padding_mode for layer in back.layers] == ["reflect", "replicate", "circular", "zeros"]


@pytest.mark.parametrize("n, pad, ceil_attr, out", [(5, 1, 0, 3), (6, 1, 1, 4), (5, 0, 1, 3)])
@pytest.mark.parametrize("pool", [cs.MaxPool2D, cs.AvgPool2D])
def test_ceil_mode_that_drops_a_window(pool, n: int, pad: int, ceil_attr: int, out: int) -> None:
    """2x2 pooling at stride 2 with ceil_mode.  At 5x5 with pad 1 the ceil window would start in
    the right padding, so PyTorch (and the ONNX spec) drop it (3x3 out) but onnx's shape inference
    would not: the export says ceil_mode=0, which has the same windows.  Elsewhere ceil_mode=1
    stays (a partial last window at 5x5 without padding)."""
    model = cs.Sequential(pool(2, 2, pad, ceil_mode=True), input_shape=(2, n, n))
    assert model.output_shape((2, n, n)) == (2, out, out)
    proto = export_onnx(model)
    (node,) = proto.graph.node
    assert helper.get_attribute_value(next(a for a in node.attribute if a.name == "ceil_mode")) \
        == ceil_attr
    three_way(model, proto)
    roundtrip(proto, model)


@pytest.mark.parametrize("pool", ["max", "avg", "avg_count_pad"])
def test_ceil_mode_kept_on_one_axis_and_dropped_on_the_other(pool: str) -> None:
    """3x2 pooling, padding (0, 1), ceil_mode, 4x3 input: the height keeps a partial window, the
    width drops one.  ONNX has one ceil_mode: the export writes ceil_mode=0 with a longer end
    padding of the height (a zero Pad node first when the padding counts in the average)."""
    layer = (cs.MaxPool2D((3, 2), padding=(0, 1), ceil_mode=True) if pool == "max" else
             cs.AvgPool2D((3, 2), padding=(0, 1), ceil_mode=True,
                          count_include_pad=pool == "avg_count_pad"))
    model = cs.Sequential(layer, input_shape=(2, 4, 3))
    proto = export_onnx(model)
    attrs = {a.name: helper.get_attribute_value(a) for a in proto.graph.node[-1].attribute}
    assert attrs["ceil_mode"] == 0
    if pool == "avg_count_pad":
        assert [n.op_type for n in proto.graph.node] == ["Pad", "AveragePool"]
        assert attrs["pads"] == [0, 0, 2, 0] and attrs["count_include_pad"] == 0
    else:
        assert len(proto.graph.node) == 1 and attrs["pads"] == [0, 1, 2, 1]
    three_way(model, proto)
    back = roundtrip(proto, model)
    assert back.layers[0].ceil_mode and back.layers[0].pads == layer.pads


def test_ceil_mode_that_onnx_cannot_express_raises() -> None:
    model = cs.Sequential(cs.MaxPool2D((1, 2), 2, (0, 1), 2, ceil_mode=True), input_shape=(1, 4, 4))
    with pytest.raises(ValueError, match=r"layer 0: MaxPool2D.*4x4 input ceil_mode keeps a partial"):
        export_onnx(model)
    export_onnx(cs.Sequential(cs.MaxPool2D((1, 2), 2, (0, 1), 2, ceil_mode=False),
                              input_shape=(1, 4, 4)))


def test_float64_models_export_as_float32_by_default_or_float64() -> None:
    model = randomize(cs.Sequential(cs.Conv2D(1, 2, 3, dtype=np.float64), cs.Flatten(),
                                    cs.Linear(None, 3, dtype=np.float64), input_shape=(1, 5, 5)),
                      np.random.default_rng(0))
    proto = export_onnx(model)
    assert proto.graph.input[0].type.tensor_type.elem_type == TensorProto.FLOAT
    x = np.random.default_rng(0).standard_normal((2, 1, 5, 5))
    close(run_onnx(proto, x.astype(np.float32)), model.predict(x), "float64 model, float32 graph")
    proto64 = export_onnx(model, dtype=np.float64)
    assert all(t.data_type == TensorProto.DOUBLE for t in proto64.graph.initializer)
    back = import_onnx(proto64)
    assert back.layers[0].dtype == np.float64
    np.testing.assert_array_equal(back.predict(x), model.predict(x))


def test_nested_sequential_exports_with_state_dict_names() -> None:
    model = randomize(cs.Sequential(cs.Sequential(cs.Conv2D(1, 2, 3), cs.ReLU()), cs.Dropout(1.0),
                                    cs.Flatten(), cs.Linear(None, 3), input_shape=(1, 5, 5)),
                      np.random.default_rng(0))
    proto = export_onnx(model)
    assert [t.name for t in proto.graph.initializer] == ["0.0.weight", "0.0.bias", "1.ratio",
                                                         "3.weight", "3.bias"]
    three_way(model, proto)
    flat = import_onnx(proto)  # comes back flat
    assert [type(layer).__name__ for layer in flat.layers] == [
        "Conv2D", "ReLU", "Dropout", "Flatten", "Linear"]


def test_empty_model_is_identity() -> None:
    model = cs.Sequential(input_shape=(1, 3, 3))
    proto = export_onnx(model)
    x = np.random.default_rng(0).standard_normal((2, 1, 3, 3)).astype(np.float32)
    np.testing.assert_array_equal(run_onnx(proto, x), x)


# ---------------------------------------------------------------------------------------------
# what ONNX cannot express, and bad options


def test_export_errors() -> None:
    bn = cs.Sequential(cs.Conv2D(1, 2, 3), cs.BatchNorm2D(track_running_stats=False),
                       input_shape=(1, 5, 5))
    with pytest.raises(ValueError, match=r"layer 1: .*track_running_stats=False"):
        export_onnx(bn)
    circ = cs.Sequential(cs.Conv2D(1, 2, 3, padding=1, padding_mode="circular"), input_shape=(1, 5, 5))
    with pytest.raises(ValueError, match=r"layer 0: .*circular padding .* opset 19"):
        export_onnx(circ, opset=18)
    export_onnx(circ, opset=19)
    export_onnx(cs.Sequential(cs.Conv2D(1, 2, 3, padding=1, padding_mode="reflect"),
                              input_shape=(1, 5, 5)), opset=17)
    with pytest.raises(ValueError, match="opset must be an int from 17"):
        export_onnx(circ, opset=16)
    with pytest.raises(ValueError, match="must differ"):
        export_onnx(circ, input_name="x", output_name="x")
    with pytest.raises(cs.ShapeError, match="input_shape"):
        export_onnx(cs.Sequential(cs.ReLU()))
    with pytest.raises(TypeError, match="float32 or float64"):
        export_onnx(circ, dtype=np.float16)
    with pytest.raises(TypeError, match="Sequential"):
        export_onnx(cs.ReLU())

    class Square(cs.Layer):
        def forward(self, x: np.ndarray) -> np.ndarray:
            return x * x

    with pytest.raises(cs.UnsupportedLayer, match=r"layer 1: Square is not a registered layer "
                       r"kind, so it cannot be exported to ONNX; decorate it with "
                       r"@convscope.register_layer\('square'\)$"):
        export_onnx(cs.Sequential(cs.ReLU(), Square(), input_shape=(1, 2, 2)))

    class Relu6(cs.ReLU):  # an unregistered subclass of a kind: it would come back a ReLU
        pass

    with pytest.raises(TypeError, match=r"layer 0\.1: Relu6 is not a registered .*subclasses "
                       r"the 'relu' kind"):
        export_onnx(cs.Sequential(cs.Sequential(cs.ReLU(), Relu6()), input_shape=(1, 2, 2)))


# ---------------------------------------------------------------------------------------------
# importing graphs that convscope did not write


def _graph(nodes, inits, in_shape, out_shape, opset: int = 19) -> onnx.ModelProto:
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, in_shape)],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, out_shape)],
                          initializer=[numpy_helper.from_array(np.asarray(v), k)
                                       for k, v in inits.items()])
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)], ir_version=9)
    onnx.checker.check_model(model, full_check=True)
    return model


def test_simple_equivalent_graphs_import() -> None:
    rng = np.random.default_rng(0)
    f = lambda *s: rng.standard_normal(s).astype(np.float32)  # noqa: E731
    w_const = helper.make_node("Constant", [], ["w"], value=numpy_helper.from_array(f(4, 2, 3, 3)))
    nodes = [
        helper.make_node("Identity", ["x"], ["x1"]),
        w_const,
        helper.make_node("Pad", ["x1", "pads"], ["p"], mode="constant"),
        helper.make_node("Conv", ["p", "w"], ["c"], pads=[1, 0, 0, 1]),
        helper.make_node("Conv", ["c", "w2", "b2"], ["c2"], auto_pad="SAME_UPPER", kernel_shape=[2, 2],
                         strides=[2, 2]),
        helper.make_node("MaxPool", ["c2"], ["m"], kernel_shape=[2, 2]),  # ONNX's stride default: 1
        helper.make_node("Reshape", ["m", "shape"], ["r"]),
        helper.make_node("MatMul", ["r", "mw"], ["mm"]),
        helper.make_node("Add", ["mb", "mm"], ["a"]),
        helper.make_node("Gemm", ["a", "gw", "gb"], ["y"], alpha=0.5, beta=2.0),
    ]
    inits = {"pads": np.array([0, 0, 1, 0, 0, 0, 0, 1], np.int64), "w2": f(3, 4, 2, 2),
             "b2": f(3), "shape": np.array([0, -1], np.int64), "mw": f(3 * 3 * 2, 5), "mb": f(5),
             "gw": f(5, 2), "gb": f(1, 2)}
    proto = _graph(nodes, inits, ["N", 2, 7, 6], ["N", 2])
    model = import_onnx(proto)
    assert [type(layer).__name__ for layer in model.layers] == [
        "Conv2D", "Conv2D", "MaxPool2D", "Flatten", "Linear", "Linear"]
    assert model.layers[0].pads == ((2, 0), (0, 2))
    x = rng.standard_normal((3, 2, 7, 6)).astype(np.float32)
    close(model.predict(x), run_onnx(proto, x), "imported equivalent graph")


def test_graph_exported_by_torch_imports() -> None:
    tmodel = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
                           nn.MaxPool2d(2, ceil_mode=True), nn.Conv2d(4, 4, 3, stride=2, groups=2),
                           nn.LeakyReLU(0.1), nn.AvgPool2d(2, 1, 1, count_include_pad=False),
                           nn.Flatten(), nn.Dropout(0.3), nn.Linear(4 * 3 * 3, 6), nn.Tanh())
    with torch.no_grad():
        tmodel[1].running_var.uniform_(0.5, 2)
        tmodel[1].running_mean.normal_()
    tmodel.eval()
    buf = io.BytesIO()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(tmodel, (torch.zeros(1, 3, 9, 9),), buf, dynamo=False,
                              input_names=["x"], output_names=["y"], dynamic_axes={"x": {0: "N"}},
                              opset_version=17)
    except Exception as e:  # pragma: no cover - depends on torch's exporters
        pytest.skip(f"torch.onnx.export is not available here: {e}")
    model = import_onnx(buf.getvalue())
    x = np.random.default_rng(0).standard_normal((4, 3, 9, 9)).astype(np.float32)
    with torch.no_grad():
        ref = tmodel(torch.from_numpy(x)).numpy()
    close(model.predict(x), ref, "torch's export, imported")
    close(run_onnx(buf.getvalue(), x), ref, "torch's export in onnxruntime")


@pytest.mark.parametrize("nodes, inits, words", [
    ([helper.make_node("Softmax", ["x"], ["y"])], {}, r"node 0 .*Softmax is not supported"),
    ([helper.make_node("Relu", ["x"], ["a"]), helper.make_node("Add", ["a", "x"], ["b"]),
      helper.make_node("Add", ["b", "a"], ["y"])], {},  # relu(x) + x is a Residual; + a is not
     r"node 2 .*(two of its paths share|from inside another block)"),
    ([helper.make_node("Mul", ["x", "x"], ["y"])], {}, r"node 0 .*Mul is not supported"),
    ([helper.make_node("MaxPool", ["x"], ["y"], kernel_shape=[3, 3], pads=[1, 1, 0, 0])], {},
     "asymmetric"),
    ([helper.make_node("Pad", ["x", "p", "v"], ["a"]),
      helper.make_node("Conv", ["a", "w"], ["y"])],
     {"p": np.array([0, 0, 1, 1, 0, 0, 1, 1], np.int64), "v": np.array(1.0, np.float32),
      "w": np.ones((1, 1, 3, 3), np.float32)}, "constant value 1.0"),
    ([helper.make_node("Pad", ["x", "p"], ["y"], mode="reflect")],
     {"p": np.array([0, 0, 1, 1, 0, 0, 1, 1], np.int64)}, "followed by Conv|ends with a Pad"),
    ([helper.make_node("Conv", ["x", "w"], ["y"])],
     {"w": np.ones((1, 1, 3), np.float32)}, "only 2-D convolution"),
    ([helper.make_node("AveragePool", ["x"], ["y"], kernel_shape=[2, 2], dilations=[2, 2])], {},
     "dilations"),
])
def test_import_errors_name_the_node(nodes, inits, words) -> None:
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT,
                                                                     ["N", 1, 6, 6])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                          initializer=[numpy_helper.from_array(v, k) for k, v in inits.items()])
    proto = helper.make_model(g, opset_imports=[helper.make_opsetid("", 19)], ir_version=9)
    with pytest.raises(ValueError, match=words):
        import_onnx(proto)


def test_import_needs_static_image_shape(tmp_path: Path) -> None:
    nodes = [helper.make_node("Relu", ["x"], ["y"])]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT,
                                                                     ["N", 3, "H", "W"])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)])
    proto = helper.make_model(g, opset_imports=[helper.make_opsetid("", 19)], ir_version=9)
    with pytest.raises(cs.ShapeError, match=r"pass input_shape=\(C, H, W\)"):
        import_onnx(proto)
    assert import_onnx(proto, input_shape=(3, 4, 4)).input_shape == (3, 4, 4)
    with pytest.raises(cs.ShapeError, match="does not match"):
        import_onnx(proto, input_shape=(2, 4, 4))
    old = helper.make_model(g, opset_imports=[helper.make_opsetid("", 11)], ir_version=6)
    with pytest.raises(ValueError, match="opset 11; convscope reads opset 13 or newer"):
        import_onnx(old)
    (tmp_path / "bad.onnx").write_bytes(b"not a model")
    with pytest.raises(ValueError, match="is not an ONNX model"):
        import_onnx(tmp_path / "bad.onnx")
    with pytest.raises(FileNotFoundError):
        import_onnx(tmp_path / "missing.onnx")


# ---------------------------------------------------------------------------------------------
# the command line


@pytest.fixture
def model_file(tmp_path: Path) -> Path:
    from convscope.data import Normalizer
    from convscope.io import save_model

    model = randomize(build_model("fashion", (1, 28, 28), 4, seed=0), np.random.default_rng(2))
    return save_model(tmp_path / "run" / "model.safetensors", model.eval(), ["a", "b", "c", "d"],
                      normalization=Normalizer((0.25,), (0.5,)), arch_name="fashion")


def test_cli_export_writes_checked_onnx_and_torch_weights(model_file: Path, tmp_path: Path,
                                                           capsys: pytest.CaptureFixture) -> None:
    from safetensors.torch import load_file

    from convscope.cli import main
    from convscope.io import load_model

    out, weights = tmp_path / "out" / "m.onnx", tmp_path / "out" / "w.safetensors"
    assert main(["export", str(model_file), "--onnx", str(out), "--torch", str(weights),
                 "--input-name", "images"]) == 0
    said = capsys.readouterr()
    assert "onnxruntime agrees with convscope" in said.out and "mean [0.25]" in said.err
    saved = load_model(model_file)
    meta = onnx_metadata(out)
    assert meta["classes"] == '["a", "b", "c", "d"]' and '"std": [0.5]' in meta["normalization"]
    proto = onnx.load(str(out))
    assert proto.graph.input[0].name == "images"
    x = np.random.default_rng(0).standard_normal((3, 1, 28, 28)).astype(np.float32)
    close(run_onnx(out, x), saved.model.predict(x), "exported file")
    tmodel = interop.to_torch(saved.model)
    tmodel.load_state_dict(load_file(weights))
    with torch.no_grad():
        close(tmodel.eval()(torch.from_numpy(x)).numpy(), saved.model.predict(x), "torch weights")


def test_cli_export_errors(model_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture,
                           monkeypatch: pytest.MonkeyPatch) -> None:
    from convscope import onnx_io
    from convscope.cli import main

    assert main(["export", str(model_file)]) == 1
    assert "--onnx OUT.onnx and/or --torch" in capsys.readouterr().err
    assert main(["export", str(model_file), "--torch", str(tmp_path / "w.pt")]) == 1
    assert "written as safetensors" in capsys.readouterr().err
    assert main(["export", str(model_file), "--onnx", str(tmp_path / "m.onnx"), "--opset", "12"]) == 1
    assert "opset must be an int from 17" in capsys.readouterr().err
    monkeypatch.setattr(onnx_io, "run_onnx", lambda source, x: np.zeros((len(x), 4), np.float32))
    assert main(["export", str(model_file), "--onnx", str(tmp_path / "m.onnx")]) == 1
    assert "differ from convscope's" in capsys.readouterr().err
    assert not (tmp_path / "m.onnx").exists()  # a model that disagrees is never written
    monkeypatch.setitem(__import__("sys").modules, "onnx", None)  # as if onnx were not installed
    assert main(["export", str(model_file), "--onnx", str(tmp_path / "m.onnx")]) == 1
    assert "pip install 'convscope[onnx]'" in capsys.readouterr().err
