"""Branches as layers: Residual (y = block(x) + shortcut(x)) and Concat (channel concatenation).

Forward, the input gradient and every parameter gradient against PyTorch over hypothesis-drawn
configurations (stride-2 projection shortcuts, identity shortcuts, nested blocks, batch 1;
float32 to 1e-4, float64 to 1e-10), float64 finite differences of a whole residual network,
shape mismatches (both shapes and each branch's arithmetic), the nested JSON, explain's merge
sentence, summary rows, model files, activation maps, ONNX (against onnxruntime, and export ->
import -> export the same bytes) and the PyTorch twins.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import convscope as cs
from convscope.formats.architecture import architecture_of, build_model
from convscope.formats.model_file import load_model, save_model
from finite_diff import numeric_grad

torch = pytest.importorskip("torch")
nn = torch.nn

TOL = {np.float32: 1e-4, np.float64: 1e-10}
DT = {np.float32: torch.float32, np.float64: torch.float64}


# ---------------------------------------------------------------------------------------------
# the references: torch modules written here (not convscope's to_torch), state-dict keys shared


class TorchResidual(nn.Module):
    def __init__(self, block: nn.Module, shortcut: nn.Module | None) -> None:
        super().__init__()
        self.block, self.shortcut = block, shortcut

    def forward(self, x: Any) -> Any:
        return self.block(x) + (x if self.shortcut is None else self.shortcut(x))


class TorchConcat(nn.Module):
    def __init__(self, *branches: nn.Module) -> None:
        super().__init__()
        self.branches = nn.ModuleList(branches)

    def forward(self, x: Any) -> Any:
        return torch.cat([b(x) for b in self.branches], dim=1)


def _pair(dtype: Any, cin: int, cout: int, stride: int, project: bool, nested: bool
          ) -> tuple[cs.Layer, nn.Module]:
    """A ResNet basic block in convscope and in torch: conv3x3 (stride) -> BN -> ReLU -> conv3x3
    [-> Residual(conv3x3 -> Tanh) when nested], shortcut 1x1 (stride) + BN or the identity."""
    block = [cs.Conv2D(cin, cout, 3, stride=stride, padding=1, bias=False, dtype=dtype),
             cs.BatchNorm2D(cout, dtype=dtype), cs.ReLU(),
             cs.Conv2D(cout, cout, 3, padding=1, dtype=dtype)]
    tblock = [nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(),
              nn.Conv2d(cout, cout, 3, 1, 1)]
    if nested:
        block.append(cs.Residual([cs.Conv2D(cout, cout, 3, padding=1, dtype=dtype), cs.Tanh()]))
        tblock.append(TorchResidual(nn.Sequential(nn.Conv2d(cout, cout, 3, 1, 1), nn.Tanh()),
                                    None))
    short = tshort = None
    if project:
        short = [cs.Conv2D(cin, cout, 1, stride=stride, bias=False, dtype=dtype),
                 cs.BatchNorm2D(cout, dtype=dtype)]
        tshort = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
    return cs.Residual(block, short), TorchResidual(nn.Sequential(*tblock), tshort)


def _randomise(layer: cs.Layer, seed: int) -> None:
    """Weights and batch-norm statistics drawn anew (BN's γ, β away from 1, 0)."""
    rng = np.random.default_rng(seed)
    for k, v in list(layer.params.items()) + list(layer.buffers.items()):
        if v.dtype.kind == "f":
            v[...] = rng.uniform(0.5, 1.5, v.shape) if k.endswith("running_var") \
                else rng.uniform(-0.7, 0.7, v.shape)


def _against_torch(layer: cs.Layer, module: nn.Module, shape: tuple[int, ...], batch: int,
                   dtype: Any, training: bool, seed: int) -> None:
    """Same outputs, input gradient, parameter gradients and (training) running statistics."""
    _randomise(layer, seed)
    module = module.to(DT[dtype])
    state = {k: torch.from_numpy(np.array(v)) for k, v in (layer.params | layer.buffers).items()}
    module.load_state_dict(state, strict=True)  # every key shared: the names are PyTorch's
    layer.train(training)
    module.train(training)
    rng = np.random.default_rng(seed + 1)
    x = rng.standard_normal((batch, *shape)).astype(dtype)
    y = layer.forward(x)
    g = rng.standard_normal(y.shape).astype(dtype)
    layer.zero_grad()
    dx = layer.backward(g)
    tx = torch.from_numpy(x.copy()).requires_grad_(True)
    ty = module(tx)
    ty.backward(torch.from_numpy(g))
    tol = TOL[dtype]

    def close(ours: Any, theirs: Any, what: str) -> None:
        theirs = theirs.detach().numpy()
        assert np.shape(ours) == theirs.shape, what
        scale = max(1.0, float(np.abs(theirs).max()))
        np.testing.assert_allclose(ours, theirs, rtol=tol, atol=tol * scale, err_msg=what)

    close(y, ty, "forward")
    close(dx, tx.grad, "d input")
    grads = layer.grads
    named = dict(module.named_parameters())
    assert sorted(grads) == sorted(named)
    for k, p in named.items():
        close(grads[k], p.grad, f"d {k}")
    for k, b in module.named_buffers():
        if b.is_floating_point():
            close(layer.buffers[k], b, k)


@settings(max_examples=25, deadline=None)
@given(dtype=st.sampled_from([np.float32, np.float64]), cin=st.integers(1, 4),
       cout=st.integers(1, 5), stride=st.sampled_from([1, 2]), project=st.booleans(),
       nested=st.booleans(), batch=st.integers(1, 3), side=st.integers(4, 7),
       training=st.booleans(), seed=st.integers(0, 2**16))
def test_residual_matches_torch(dtype: Any, cin: int, cout: int, stride: int, project: bool,
                                nested: bool, batch: int, side: int, training: bool,
                                seed: int) -> None:
    project = project or stride != 1 or cin != cout  # the identity only where the shape stays
    layer, module = _pair(dtype, cin, cout, stride, project, nested)
    _against_torch(layer, module, (cin, side, side + 1), batch, dtype, training, seed)


@settings(max_examples=25, deadline=None)
@given(dtype=st.sampled_from([np.float32, np.float64]), cin=st.integers(1, 4),
       widths=st.lists(st.integers(1, 4), min_size=1, max_size=3), stride=st.sampled_from([1, 2]),
       pool=st.booleans(), identity=st.booleans(), nested=st.booleans(),
       batch=st.integers(1, 3), side=st.integers(3, 7), seed=st.integers(0, 2**16))
def test_concat_matches_torch(dtype: Any, cin: int, widths: list[int], stride: int, pool: bool,
                              identity: bool, nested: bool, batch: int, side: int,
                              seed: int) -> None:
    """1x1 convs and 3x3 conv + ReLU6 branches (stride 1 or 2: both give ceil(H / S)), a max
    pool branch, an empty branch (the identity, DenseNet's), a branch holding a Residual."""
    ours: list[Any] = []
    theirs: list[nn.Module] = []
    for i, k in enumerate(widths):
        if i % 2:
            ours.append([cs.Conv2D(cin, k, 3, stride=stride, padding=1, dtype=dtype), cs.ReLU6()])
            theirs.append(nn.Sequential(nn.Conv2d(cin, k, 3, stride, 1), nn.ReLU6()))
        else:
            ours.append(cs.Conv2D(cin, k, 1, stride=stride, dtype=dtype))
            theirs.append(nn.Sequential(nn.Conv2d(cin, k, 1, stride)))
    if nested:
        res, tres = _pair(dtype, cin, 2, stride, True, False)
        ours.append(res)
        theirs.append(nn.Sequential(tres))
    if stride == 1 and pool:
        ours.append(cs.MaxPool2D(3, 1, 1))
        theirs.append(nn.Sequential(nn.MaxPool2d(3, 1, 1)))
    if stride == 1 and identity:
        ours.append([])
        theirs.append(nn.Sequential())
    layer, module = cs.Concat(*ours), TorchConcat(*theirs)
    # ReLU6's kinks at 0 and 6: a scale that keeps the inputs away from 6 is enough (torch
    # and convscope agree at the kinks too, but a float32 rounding could put them on either side)
    _against_torch(layer, module, (cin, side, side), batch, dtype, True, seed)


def test_relu6_matches_torch_at_and_around_its_kinks() -> None:
    x = np.array([[-1.0, 0.0, 0.5, 5.999, 6.0, 6.5, np.nan]])
    layer = cs.ReLU6()
    y = layer.forward(x)
    dx = layer.backward(np.ones_like(x))
    tx = torch.tensor(x, requires_grad=True)
    ty = nn.ReLU6()(tx)
    ty.backward(torch.ones_like(ty))
    np.testing.assert_array_equal(y, ty.detach().numpy())
    np.testing.assert_array_equal(dx, tx.grad.numpy())
    np.testing.assert_array_equal(y[0, :6], [0, 0, 0.5, 5.999, 6, 6])


# ---------------------------------------------------------------------------------------------
# finite differences of a whole residual network, float64


def _net(dtype: Any = np.float64) -> cs.Sequential:
    """conv -> BN -> ReLU -> Residual (stride-2 projection) -> Residual (identity, nested) ->
    Concat (1x1 conv | 3x3 conv + ReLU6 | the identity) -> GAP -> fc."""
    inner = cs.Residual([cs.Conv2D(None, 3, 3, padding=1, dtype=dtype), cs.Tanh()])
    return cs.Sequential(
        cs.Conv2D(None, 2, 3, padding=1, bias=False, dtype=dtype), cs.BatchNorm2D(dtype=dtype),
        cs.ReLU(),
        cs.Residual([cs.Conv2D(None, 3, 3, stride=2, padding=1, bias=False, dtype=dtype),
                     cs.BatchNorm2D(dtype=dtype), cs.ReLU(),
                     cs.Conv2D(None, 3, 3, padding=1, dtype=dtype)],
                    [cs.Conv2D(None, 3, 1, stride=2, bias=False, dtype=dtype),
                     cs.BatchNorm2D(dtype=dtype)]),
        cs.Residual([cs.Conv2D(None, 3, 3, padding=1, dtype=dtype), cs.Sigmoid(), inner]),
        cs.Concat(cs.Conv2D(None, 2, 1, dtype=dtype),
                  [cs.Conv2D(None, 2, 3, padding=1, dtype=dtype), cs.ReLU6()], []),
        cs.GlobalAvgPool2D(), cs.Flatten(), cs.Linear(None, 3, dtype=dtype),
        input_shape=(2, 6, 6), seed=0)


def test_a_whole_residual_network_against_finite_differences() -> None:
    net = _net()
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 2, 6, 6))
    g = rng.standard_normal((2, 3))
    net.zero_grad()
    net.forward(x)
    dx = net.backward(g)
    grads = {k: v.copy() for k, v in net.grads.items()}

    def loss() -> float:
        return float(np.sum(net.forward(x) * g))  # batch-norm statistics: the batch's own

    def numeric(a: np.ndarray) -> np.ndarray:
        return numeric_grad(loss, a)

    def check(analytic: np.ndarray, num: np.ndarray, what: str) -> None:
        assert np.abs(num).max() > 1e-8, f"{what}: vacuous"
        scale = max(np.abs(analytic).max(), np.abs(num).max())
        assert np.abs(analytic - num).max() / scale < 1e-6, what

    check(dx, numeric(x), "d input")
    assert len(grads) == 21  # 12 weighted layers, 9 of them with a bias or a beta
    for k, p in net.params.items():
        check(grads[k], numeric(p), f"d {k}")


def test_skipping_the_input_gradient_gives_the_same_parameter_gradients() -> None:
    a, b = _net(), _net()
    x = np.random.default_rng(1).standard_normal((3, 2, 6, 6))
    for net, need in ((a, True), (b, False)):
        net.zero_grad()
        y = net.forward(x)
        out = net.backward(np.ones_like(y), input_grad=need)
        assert (out is None) == (not need)
    for k in a.grads:
        np.testing.assert_allclose(a.grads[k], b.grads[k], rtol=1e-12, atol=1e-14, err_msg=k)


# ---------------------------------------------------------------------------------------------
# structure: children, keys, modes, building


def test_children_keys_modes_and_inferred_channels() -> None:
    net = _net(np.float32)
    res, cat = net[3], net[5]
    assert [n for n, _ in res.children()] == ["block", "shortcut"]
    assert [n for n, _ in net[4].children()] == ["block"]  # the identity: no shortcut entry
    assert [n for n, _ in cat.children()] == ["branches.0", "branches.1", "branches.2"]
    assert list(res.params) == ["block.0.weight", "block.1.weight", "block.1.bias",
                                "block.3.weight", "block.3.bias", "shortcut.0.weight",
                                "shortcut.1.weight", "shortcut.1.bias"]
    assert "3.shortcut.1.running_mean" in net.state_dict()
    assert "4.block.2.block.0.weight" in net.params  # nested blocks
    assert "5.branches.1.0.weight" in net.params
    assert res.block[0].in_channels == 2 and cat.branch_list[1][0].in_channels == 3
    assert net.output_shape((2, 6, 6)) == (3,) and cat.output_shape((3, 3, 3)) == (7, 3, 3)
    assert res.dtype == np.float32 and _net()[3].dtype == np.float64
    net.eval()
    assert not res.block[1].training and not res.shortcut[1].training
    net.train()
    assert res.shortcut[1].training
    net.forward(np.ones((2, 2, 6, 6), np.float32))
    net.backward(np.ones((2, 3), np.float32))
    assert any(np.abs(v).max() > 0 for v in res.grads.values())
    net.zero_grad()
    assert all(np.abs(v).max() == 0 for v in net.grads.values())
    assert res.param_count() == (2 * 3 * 9 + 2 * 3 + 3 * 3 * 9 + 3) + (2 * 3 + 2 * 3)
    assert res.param_formula() == "block 144 + shortcut 12 = 156"
    assert res.macs((2, 6, 6)) == sum(layer.macs(s) for layer, s in (
        (res.block, (2, 6, 6)), (res.shortcut, (2, 6, 6))))


def test_shape_mismatch_names_both_shapes_and_each_branch_arithmetic() -> None:
    bad = cs.Residual([cs.Conv2D(None, 8, 3, stride=2, padding=1)], [cs.Conv2D(None, 8, 1)])
    with pytest.raises(cs.ShapeError) as e:
        cs.Sequential(cs.ReLU(), bad, input_shape=(4, 8, 8))
    text = str(e.value)
    assert text.splitlines()[0] == ("layer 1: Residual: the block gives 4×4×8 but the shortcut "
                                    "gives 8×8×8 from 8×8×4; y = block(x) + shortcut(x) needs "
                                    "them equal")
    assert "[block.0] CONV: 8 filters 3×3×4, stride 2, pad 1: (8 − 3 + 2·1) / 2 + 1" in text
    assert "[shortcut.0] CONV: 8 filters 1×1×4, stride 1, pad 0: (8 − 1 + 2·0) / 1 + 1 = 8" in text
    ident = cs.Residual(cs.Conv2D(4, 6, 3, padding=1))
    with pytest.raises(cs.ShapeError, match="the identity shortcut .x itself. gives 8×8×4.*give "
                                            "a shortcut"):
        ident.forward(np.zeros((1, 4, 8, 8), np.float32))
    cat = cs.Concat(cs.MaxPool2D(2), cs.Conv2D(None, 2, 3, padding=1))
    with pytest.raises(cs.ShapeError) as e:
        cat.build((4, 8, 8))
    text = str(e.value)
    assert "Concat: from 8×8×4, branch 0 gives 4×4×4, branch 1 gives 8×8×2" in text
    assert "[branches.0.0] POOL: max 2×2, stride 2, pad 0: (8 − 2 + 2·0) / 2 + 1 = 4" in text
    with pytest.raises(ValueError, match="Concat: needs at least one branch"):
        cs.Concat()
    with pytest.raises(TypeError, match="Residual: block item 1 is a str, not a layer"):
        cs.Residual([cs.ReLU(), "relu"])


# ---------------------------------------------------------------------------------------------
# JSON, explain, summary, model files, activation maps


SPEC = [{"type": "conv", "filters": 16, "size": 3, "pad": 1},
        {"type": "residual",
         "block": [{"type": "conv", "filters": 32, "size": 3, "stride": 2, "pad": 1},
                   {"type": "batchnorm"}, {"type": "relu"},
                   {"type": "conv", "filters": 32, "size": 3, "pad": 1}],
         "shortcut": [{"type": "conv", "filters": 32, "size": 1, "stride": 2}]},
        {"type": "residual", "block": [{"type": "conv", "filters": 32, "size": 3, "pad": 1,
                                        "activation": "relu6"}]},
        {"type": "concat", "branches": [[{"type": "conv", "filters": 8, "size": 1}],
                                        [{"type": "pool", "size": 3, "stride": 1, "pad": 1}],
                                        []]},
        {"type": "gap"}, {"type": "fc", "units": "classes"}]


def test_nested_json_builds_and_round_trips() -> None:
    model = build_model(SPEC, (3, 32, 32), 10, seed=0)
    assert [type(layer).__name__ for layer in model] == [
        "Conv2D", "Residual", "Residual", "Concat", "GlobalAvgPool2D", "Flatten", "Linear"]
    assert model.output_shape((3, 32, 32)) == (10,) and model[3].output_shape((32, 16, 16)) == (
        72, 16, 16)
    arch = architecture_of(model)
    assert arch[1]["shortcut"][0]["type"] == "conv" and arch[2]["shortcut"] is None
    assert arch[3]["branches"][2] == []
    again = build_model(json.loads(json.dumps(arch)), (3, 32, 32), 10, seed=1)
    assert architecture_of(again) == arch and repr(again) == repr(model)
    again.load_state_dict(model.state_dict())
    x = np.random.default_rng(0).standard_normal((2, 3, 32, 32)).astype(np.float32)
    np.testing.assert_array_equal(again.predict(x), model.predict(x))
    virtual = build_model(SPEC, (3, 32, 32), 10, allocate=False)
    assert virtual.param_count() == model.param_count()


@pytest.mark.parametrize("entry,message", [
    ({"type": "residual"}, r"layer 0 .*'block' must be a non-empty list of layer dicts, got None"),
    ({"type": "residual", "block": [{"type": "relu"}], "shortcut": []},
     r"'shortcut' must be a non-empty list"),
    ({"type": "residual", "block": [{"type": "conv", "filters": 4, "size": 3, "colour": 1}]},
     r"layer 0.block.0 \(conv\): unknown key 'colour'"),
    ({"type": "concat", "branches": [[{"type": "relu"}], {"type": "relu"}]},
     r"'branches\[1\]' must be a list of layer dicts"),
    ({"type": "concat", "branches": []}, r"'branches' must be a non-empty list of layer lists"),
    ({"type": "residual", "block": [{"type": "conv", "filters": 4, "size": 3}]},
     r"Residual: the block gives 6×6×4 but the identity shortcut"),
])
def test_json_errors_name_the_entry(entry: dict, message: str) -> None:
    with pytest.raises((cs.ArchitectureError, cs.ShapeError), match=message):
        build_model([entry], (3, 8, 8), 10)


def test_explain_walks_the_block_and_states_the_merge() -> None:
    model = build_model(SPEC, (3, 32, 32), 10, seed=0)
    told = model.explain()
    text = str(told)
    assert "[1] RESIDUAL: y = block(x) + shortcut(x): 32×32×16 → 16×16×32" in text
    assert "shortcut: 16×16×32 + 16×16×32 → 16×16×32" in text
    assert "[2] RESIDUAL: y = x + block(x): 16×16×32 → 16×16×32" in text
    assert "join: 16×16×8 + 16×16×32 + 16×16×32 → 16×16×72: the depths add, 8 + 32 + 32 = 72" in text
    assert "[1.block.0] CONV: 32 filters 3×3×16, stride 2, pad 1" in text
    labels = [s.label for s in told.leaves()]
    assert labels[:7] == ["0", "1.block.0", "1.block.1", "1.block.2", "1.block.3",
                          "1.shortcut.0", "2.block.0"]
    assert told.total_params == model.param_count()
    assert told.total_macs == model.macs((3, 32, 32))
    res = told.steps[1]
    assert res.output_shape == (32, 16, 16) and res.params == model[1].param_count()
    # what training keeps: every branch's outputs and the sum
    assert res.activation_bytes == sum(s.activation_bytes for s in res.steps) + 32 * 16 * 16 * 4
    alone = model[1].explain((16, 32, 32))
    assert [s.label for s in alone.steps] == ["0"] and alone.total_params == model[1].param_count()


def test_summary_rows_per_inner_layer_with_block_totals() -> None:
    model = build_model(SPEC, (3, 32, 32), 10, seed=0)
    summary = model.summary()
    rows = {r.label: r for r in summary.rows}
    assert {"1", "1.block", "1.block.0", "1.shortcut.0", "3.branches.0.0", "3.branches.2"} <= set(rows)
    assert rows["1"].params == rows["1.block"].params + rows["1.shortcut"].params
    assert rows["1.block.0"].depth == 2 and rows["1.block.0"].formula == "3·3·16·32 + 32 = 4640"
    assert rows["1"].formula == (f"block {rows['1.block'].params:,} + shortcut "
                                 f"{rows['1.shortcut'].params:,} = {rows['1'].params:,}")
    assert summary.total_params == model.param_count()
    assert summary.total_macs == model.macs((3, 32, 32))
    assert "1.block.3" in str(summary)


def test_model_file_round_trip(tmp_path: Path) -> None:
    model = build_model(SPEC, (3, 16, 16), 4, seed=0)
    x = np.random.default_rng(0).standard_normal((2, 3, 16, 16)).astype(np.float32)
    model.forward(x)  # batch-norm running statistics move away from 0 / 1
    path = save_model(tmp_path / "res.safetensors", model, ["a", "b", "c", "d"])
    loaded = load_model(path).model
    assert architecture_of(loaded) == architecture_of(model)
    assert list(loaded.state_dict()) == list(model.state_dict())
    np.testing.assert_array_equal(loaded.predict(x), model.predict(x))


def test_activation_maps_of_every_inner_layer() -> None:
    pytest.importorskip("matplotlib")
    from convscope.inspect.viz import activation_maps

    model = build_model(SPEC, (3, 16, 16), 4, seed=0)
    x = np.random.default_rng(0).standard_normal((3, 16, 16)).astype(np.float32)
    picture = activation_maps(model, x)
    drawn = {str(p.layer) for p in picture.panels}
    assert {"1.block.0", "1.block.3", "1.shortcut.0", "2.block.1", "3.branches.0.0"} <= drawn
    panel = next(p for p in picture.panels if str(p.layer) == "1.shortcut.0")
    with cs.no_grad():
        want = model[1].shortcut.eval().forward(model[0].forward(x[None]))[0]
    np.testing.assert_allclose(panel.array, want[:len(panel.array)], rtol=1e-6)


# ---------------------------------------------------------------------------------------------
# ONNX and PyTorch


def test_onnx_export_matches_onnxruntime_and_round_trips() -> None:
    pytest.importorskip("onnxruntime")
    from convscope.formats.onnx.export import export_onnx, import_onnx, onnx_metadata, run_onnx

    model = build_model(SPEC, (3, 16, 16), 4, seed=0)
    _randomise(model, 3)
    model.eval()
    proto = export_onnx(model)
    ops = [n.op_type for n in proto.graph.node]
    assert ops.count("Add") == 2 and ops.count("Concat") == 1 and "Clip" in ops
    assert "1.shortcut.0.weight" in {t.name for t in proto.graph.initializer}
    x = np.random.default_rng(1).standard_normal((3, 3, 16, 16)).astype(np.float32)
    np.testing.assert_allclose(run_onnx(proto, x), model.predict(x), rtol=1e-4, atol=1e-4)
    back = import_onnx(proto)
    assert [type(layer).__name__ for layer in back][:4] == ["Conv2D", "Residual", "Residual",
                                                            "Concat"]
    np.testing.assert_allclose(back.predict(x), model.predict(x), rtol=1e-6, atol=1e-6)
    again = export_onnx(back, metadata=onnx_metadata(proto))
    assert again.SerializeToString() == proto.SerializeToString()


def test_torch_twin_and_back() -> None:
    from convscope import interop

    model = build_model(SPEC, (3, 16, 16), 4, seed=0, dtype=np.float64)
    _randomise(model, 4)
    model.eval()
    tmodel = interop.to_torch(model)
    assert type(tmodel[1]).__name__ == "ConvscopeResidual" and tmodel[2].shortcut is None
    assert type(tmodel[3]).__name__ == "ConvscopeConcat"
    assert sorted(tmodel.state_dict()) == sorted(model.state_dict())
    x = np.random.default_rng(2).standard_normal((2, 3, 16, 16))
    with torch.no_grad():
        theirs = tmodel(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(theirs, model.predict(x), rtol=1e-10, atol=1e-10)
    back = interop.from_torch(tmodel, (3, 16, 16))
    assert architecture_of(back) == architecture_of(model)
    np.testing.assert_array_equal(back.predict(x), model.predict(x))
    copy.deepcopy(back)  # plain objects all the way down
