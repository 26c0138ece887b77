"""Real CNN graphs in: the structure recovery (formats/graph.py) on plain DAGs, ONNX graphs
written by ``torch.onnx.export(dynamo=False)`` and torch.fx traces of four hand-built nets
(tests/torch_nets.py: ResNet-18, VGG-11, MobileNetV2, a small Inception) into Residual / Concat
blocks that compute what onnxruntime and torch compute (to 1e-4 of the output's scale,
float32); convscope's residual presets exported, checked against onnxruntime and round-tripped
byte for byte; what convscope cannot run is one error naming the node; the CLI reads .onnx."""

from __future__ import annotations

import functools
import io
import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import convscope as cs
from convscope.formats.graph import Graph, Merge, Node, assemble, decompose

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")
torch = pytest.importorskip("torch")
import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402

import torch_nets  # noqa: E402
from convscope.formats.architecture import build_model  # noqa: E402
from convscope.formats.onnx import export_onnx, import_onnx, run_onnx  # noqa: E402
from convscope.formats.torch.convert import from_torch, to_torch  # noqa: E402

SHAPE = (3, 64, 64)
TOL = 1e-4


def close(ours: np.ndarray, ref: np.ndarray, what: str, tol: float = TOL) -> None:
    """Agree to ``tol`` of the reference's largest magnitude (outputs of random nets are small:
    an absolute 1e-4 alone would let a wrong model through)."""
    assert ours.shape == ref.shape, f"{what}: shape {ours.shape} vs {ref.shape}"
    err, scale = float(np.abs(ours - ref).max()), float(np.abs(ref).max())
    assert scale > 0 and err <= tol * scale, f"{what}: max error {err:.3g}, scale {scale:.3g}"


# ---------------------------------------------------------------------------------------------
# the structure recovery on plain data: a random series-parallel structure, written as a DAG,
# comes back as itself


def _structures(depth: int = 2) -> st.SearchStrategy:
    leaf = st.text("abcdef", min_size=1, max_size=2)
    if depth == 0:
        return st.lists(leaf, min_size=0, max_size=3)
    inner = _structures(depth - 1)
    add = st.tuples(st.just("add"), st.tuples(inner, inner)).filter(
        lambda m: any(m[1]))  # x + x is no Residual
    concat = st.tuples(st.just("concat"), st.lists(inner, min_size=2, max_size=4))
    return st.lists(st.one_of(leaf, add, concat), min_size=0, max_size=3)


def _write(chain: list, nodes: list[Node], src: int) -> int:
    """Append the chain's nodes reading node ``src``; return the last one."""
    for item in chain:
        if isinstance(item, str):
            nodes.append(Node(f"node {len(nodes)}", (src,), item=item))
        else:
            kind, branches = item
            ends = tuple(_write(list(b), nodes, src) for b in branches)
            nodes.append(Node(f"node {len(nodes)}", ends, merge=kind))
        src = len(nodes) - 1
    return src


def _plain(chain: list) -> list:
    return [item if isinstance(item, str) else
            (item.kind, tuple(_plain(b) for b in item.branches)) for item in chain]


def _norm(chain: list) -> list:
    return [item if isinstance(item, str) else (item[0], tuple(_norm(list(b)) for b in item[1]))
            for item in chain]


@settings(max_examples=150, deadline=None)
@given(_structures())
def test_series_parallel_structures_come_back(structure: list) -> None:
    nodes = [Node("the input")]
    out = _write(structure, nodes, 0)
    assert _plain(decompose(Graph(nodes, out))) == _norm(structure)


def _graph(*edges: tuple) -> Graph:
    """Nodes from (inputs, merge) pairs after the input."""
    nodes = [Node("the input")] + [Node(f"node {i + 1}", ins, item=f"L{i + 1}", merge=m)
                                   for i, (ins, m) in enumerate(edges)]
    return Graph(nodes, len(nodes) - 1)


@pytest.mark.parametrize("edges, words", [
    # a = relu(x); b = a + x; y = b + a: a is read from inside the Residual's block
    ((((0,), ""), ((1, 0), "add"), ((2, 1), "add")), "two of its paths share|inside another"),
    # the N shape: a = f(x); y = (a + g(x)) + h(a): a feeds both paths of the outer Add
    ((((0,), ""), ((0,), ""), ((1, 2), "add"), ((1,), ""), ((3, 4), "add")),
     "node 5: two of its paths share node 1"),
    # y = x + x
    ((((0, 0), "add"),), "Add of 2 paths, 2 of them empty"),
    # a Concat of a path from the fork with one read from the middle of another path
    ((((0,), ""), ((1,), ""), ((0,), ""), ((3, 1), "concat"), ((4, 2), "add")),
     "inside another block|not start from the fork|share"),
])
def test_graphs_that_are_not_blocks_name_the_node(edges, words) -> None:
    with pytest.raises(ValueError, match=words):
        g = _graph(*edges)
        items = decompose(g)
        assemble(items)  # (x + x passes decompose; assemble refuses it)


def test_assemble_builds_residual_and_concat() -> None:
    relu, tanh = cs.ReLU(), cs.Tanh()
    items = [Merge("add", [[], [relu]], Node("n")), Merge("concat", [[tanh], []], Node("m"))]
    model = assemble(items, (2, 3, 3))
    res, cat = model.layers
    assert type(res).__name__ == "Residual" and res.shortcut is None  # the empty path
    assert res.block.layers == [relu] and type(cat).__name__ == "Concat"
    assert model.output_shape((2, 3, 3)) == (4, 3, 3)
    x = np.random.default_rng(0).standard_normal((2, 2, 3, 3)).astype(np.float32)
    y = np.maximum(x, 0) + x
    np.testing.assert_allclose(model.forward(x), np.concatenate([np.tanh(y), y], 1), 1e-6)


# ---------------------------------------------------------------------------------------------
# the four hand-built nets


@functools.lru_cache(maxsize=None)
def _net(name: str) -> nn.Module:
    return torch_nets.NETS[name]()


@functools.lru_cache(maxsize=None)
def _x() -> np.ndarray:
    return np.random.default_rng(0).standard_normal((2, *SHAPE)).astype(np.float32)


@functools.lru_cache(maxsize=None)
def _torch_out(name: str) -> np.ndarray:
    with torch.no_grad():
        return _net(name)(torch.from_numpy(_x())).numpy()


def _export(module: nn.Module, opset: int, shape: tuple = SHAPE) -> bytes:
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, (torch.zeros(1, *shape),), buf, dynamo=False,
                          input_names=["x"], output_names=["y"], dynamic_axes={"x": {0: "N"}},
                          opset_version=opset)
    return buf.getvalue()


def _kinds(model: cs.Layer) -> list[str]:
    out = []
    for _, child in model.children():
        out.append(type(child).__name__)
        out += _kinds(child)
    return out


#: name -> (Residual blocks, of them with a projection shortcut, Concat blocks, parameters)
EXPECTED = {"resnet18": (8, 3, 0, 11_181_642), "vgg11": (0, 0, 0, 10_537_354),
            "mobilenet_v2": (10, 0, 0, 2_024_202), "inception_small": (0, 0, 2, 38_514)}


def _check_structure(name: str, model: cs.Sequential) -> None:
    res, proj, cat, params = EXPECTED[name]
    kinds = _kinds(model)
    blocks = [b for b in _walk(model) if type(b).__name__ == "Residual"]
    assert (kinds.count("Residual"), sum(b.shortcut is not None for b in blocks),
            kinds.count("Concat")) == (res, proj, cat), name
    if cat:
        assert all(len(c.children()) == 4 for c in _walk(model) if type(c).__name__ == "Concat")
    assert model.param_count() == params == sum(p.numel() for p in _net(name).parameters())


def _walk(layer: cs.Layer):
    for _, child in layer.children():
        yield child
        yield from _walk(child)


@pytest.mark.parametrize("name", list(torch_nets.NETS))
def test_from_torch_of_the_four_nets_equals_torch(name: str) -> None:
    model = from_torch(_net(name), SHAPE)
    assert not model.training and model.input_shape == SHAPE
    _check_structure(name, model)
    close(model.predict(_x()), _torch_out(name), f"from_torch({name})")


@pytest.mark.parametrize("name, opset", [(n, o) for n in torch_nets.NETS for o in (13, 19)])
def test_onnx_export_of_the_four_nets_imports(name: str, opset: int) -> None:
    data = _export(_net(name), opset)
    model = import_onnx(data)
    # torch's exporter folds every batch norm into the conv before it: the same parameters less
    # the batch norms' (and a bias per conv)
    kinds = _kinds(model)
    res, proj, cat, _ = EXPECTED[name]
    assert (kinds.count("Residual"), kinds.count("Concat")) == (res, cat)
    assert "BatchNorm2D" not in kinds
    ref = run_onnx(data, _x())
    close(ref, _torch_out(name), f"onnxruntime vs torch ({name}, opset {opset})")
    close(model.predict(_x()), ref, f"import_onnx({name}, opset {opset}) vs onnxruntime")


def test_a_traced_model_goes_back_to_torch_and_to_onnx() -> None:
    """from_torch's blocks export: to_torch and export_onnx compute what the source net does."""
    model = from_torch(_net("inception_small"), SHAPE)
    with torch.no_grad():
        back = to_torch(model).eval()(torch.from_numpy(_x())).numpy()
    close(back, _torch_out("inception_small"), "to_torch(from_torch(inception))")
    close(run_onnx(export_onnx(model), _x()), _torch_out("inception_small"), "export_onnx")


# ---------------------------------------------------------------------------------------------
# convscope's own residual presets


@pytest.mark.parametrize("name, shape", [("resnet_small", (1, 28, 28)), ("resnet9", (1, 28, 28)),
                                         ("resnet20", (3, 32, 32))])
def test_residual_presets_export_import_export(name: str, shape: tuple) -> None:
    model = build_model(name, shape, 10, seed=0)
    rng = np.random.default_rng(1)
    for key, v in model.state_dict().items():  # batch norms that are not the identity
        if key.endswith("running_var"):
            v[...] = rng.uniform(0.5, 2.0, v.shape)
        elif key.endswith("running_mean") or key.endswith(".bias"):
            v[...] = rng.normal(0, 0.2, v.shape)
    model.eval()
    proto = export_onnx(model, check=True)
    x = rng.standard_normal((2, *shape)).astype(np.float32)
    close(run_onnx(proto, x), model.predict(x), f"onnxruntime vs convscope ({name})")
    back = import_onnx(proto)
    assert list(back.state_dict()) == list(model.state_dict())
    assert export_onnx(back).SerializeToString() == proto.SerializeToString()
    close(back.predict(x), model.predict(x), f"re-imported {name}", 1e-6)


# ---------------------------------------------------------------------------------------------
# what convscope cannot run: one error naming the node


class _Mul(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)

    def forward(self, x):
        y = self.conv(x)
        return torch.flatten(y * torch.sigmoid(y), 1)  # swish: Mul


class _Fn(nn.Module):
    def __init__(self, fn) -> None:
        super().__init__()
        self.conv, self.fn = nn.Conv2d(3, 4, 3, padding=1), fn

    def forward(self, x):
        return self.fn(self.conv(x))


class _Twice(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 3, padding=1)

    def forward(self, x):
        return self.conv(self.conv(x))


class _Branchy(nn.Module):
    def forward(self, x):
        if x.sum() > 0:
            return x
        return -x


def test_onnx_op_convscope_cannot_run_names_it() -> None:
    data = _export(_Mul().eval(), 17, (3, 8, 8))
    with pytest.raises(ValueError, match=r"import_onnx: node \d+ \(.*Mul.*\): operator Mul is "
                                         r"not supported; supported: .*Conv, .*Concat, Add, .*Residual"):
        import_onnx(data)


@pytest.mark.parametrize("module, words", [
    (_Mul(), r"node mul \(call_function mul\): mul is not supported; supported functions: .*add"),
    (_Fn(lambda y: y + 1), r"adds a constant"),
    (_Fn(lambda y: torch.cat([y, y], 2)), r"torch.cat along dim 2"),
    (_Fn(lambda y: y.view(y.size(0), 4, -1)), r"flattening to \(N, -1\) only"),
    (_Fn(lambda y: F.softmax(torch.flatten(y, 1), 1)), r"final_softmax='drop'"),
    (_Fn(lambda y: F.gelu(y)), r"gelu is not supported"),
    (_Twice(), r"called twice"),
    (_Branchy(), r"torch.fx cannot trace _Branchy"),
])
def test_from_torch_names_what_it_cannot_run(module, words) -> None:
    with pytest.raises(cs.UnsupportedLayer, match=words):
        from_torch(module.eval(), (3, 8, 8))


def test_onnx_reshape_target_that_follows_the_batch_otherwise_is_refused() -> None:
    """x.view(x.size(0), -1) exports as Shape -> Gather -> Unsqueeze -> Concat -> Reshape, read as
    Flatten (VGG above); a target that is not (N, -1) is one error naming the Reshape."""
    data = _export(_Fn(lambda y: y.reshape(y.size(0) * 4, -1)).eval(), 17, (3, 4, 4))
    with pytest.raises(ValueError, match=r"node \d+ \(.*Reshape\): the Reshape target depends on "
                                         r"the batch size \(\[8, -1\] for a batch of 2"):
        import_onnx(data)


def test_from_torch_float64_to_the_last_digits() -> None:
    """A traced float64 net gives float64 layers that agree with torch to 1e-10."""
    net = torch_nets.inception_small().double()
    model = from_torch(net, (3, 32, 32))
    x = np.random.default_rng(3).standard_normal((2, 3, 32, 32))
    assert model.dtype == np.float64
    with torch.no_grad():
        ref = net(torch.from_numpy(x)).numpy()
    close(model.predict(x), ref, "float64 inception", 1e-10)


def test_final_softmax_can_be_left_out() -> None:
    net = _Fn(lambda y: F.softmax(torch.flatten(y, 1), 1)).eval()
    model = from_torch(net, (3, 4, 4), final_softmax="drop")
    x = np.random.default_rng(0).standard_normal((2, 3, 4, 4)).astype(np.float32)
    with torch.no_grad():
        probs = net(torch.from_numpy(x)).numpy()
    scores = model.predict(x)
    e = np.exp(scores - scores.max(1, keepdims=True))
    close(e / e.sum(1, keepdims=True), probs, "softmax of the scores")
    data = _export(net, 17, (3, 4, 4))
    with pytest.raises(ValueError, match=r"node \d+ .*Softmax.*final_softmax='drop'"):
        import_onnx(data)
    close(import_onnx(data, final_softmax="drop").predict(x), scores, "the imported scores")


def test_sequential_of_blocks_is_traced_and_plain_sequential_unchanged() -> None:
    """An nn.Sequential convscope has no kind for (ResNet blocks) is traced; a plain one keeps
    its state-dict keys, and without input_shape the child's own error stands."""
    net = torch_nets.randomize(nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), torch_nets.BasicBlock(8, 8),
        torch_nets.InvertedResidual(8, 8, 1, 2), nn.Flatten(), nn.Linear(8 * 8 * 8, 3)))
    x = np.random.default_rng(0).standard_normal((2, 3, 8, 8)).astype(np.float32)
    with torch.no_grad():
        ref = net(torch.from_numpy(x)).numpy()
    close(from_torch(net, (3, 8, 8)).predict(x), ref, "traced nn.Sequential")
    with pytest.raises(TypeError, match=r"(?s)module 1: .*BasicBlock.*supported modules"):
        from_torch(net)
    plain = nn.Sequential(nn.Conv2d(3, 2, 3), nn.ReLU()).eval()
    assert list(from_torch(plain, (3, 5, 5)).state_dict()) == ["0.weight", "0.bias"]


# ---------------------------------------------------------------------------------------------
# the command line reads .onnx


def test_cli_summary_explain_viz_of_an_onnx_file(tmp_path, capsys) -> None:
    from PIL import Image

    from convscope.cli import main

    path = tmp_path / "resnet.onnx"
    net = torch_nets.ResNet((1, 1, 1, 1), num_classes=5).eval()
    path.write_bytes(_export(net, 17, (3, 32, 32)))
    assert main(["summary", str(path)]) == 0
    out = capsys.readouterr().out
    assert "Residual" in out and f"{import_onnx(path).param_count():,}" in out
    assert main(["explain", str(path), "--input", "3x32x32"]) == 0
    out = capsys.readouterr().out
    assert "CONV: 64 filters 7×7×3, stride 2, pad 3: (32 − 7 + 2·3) / 2 + 1 = 16" in out
    assert "shortcut" in out
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (32, 32, 3), np.uint8)).save(
        tmp_path / "img.png")
    png = tmp_path / "maps.png"
    assert main(["viz", "activations", str(path), str(tmp_path / "img.png"), "--out",
                 str(png)]) == 0
    assert png.stat().st_size > 1000
    assert main(["explain", str(path), "--input", "3x30x30"]) == 1
    assert "does not match" in capsys.readouterr().err
