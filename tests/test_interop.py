"""PyTorch interop: to_torch / from_torch give models that compute the same outputs and gradients,
state dicts line up key for key, weights travel as safetensors (and .pt read safely), and
unsupported modules get errors that name them."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
torch = pytest.importorskip("torch")
from hypothesis import given, settings
from hypothesis import strategies as st
from interop_stacks import randomize, stacks
from torch import nn

import convscope as cs
from convscope import interop
from convscope.models import PRESET_INPUT_SHAPES, build_model, list_presets

BASE = settings.default.max_examples
pytestmark = pytest.mark.filterwarnings("ignore:Using padding='same':UserWarning")
BATCHES = (1, 2, 5)


def close(ours: np.ndarray, ref: np.ndarray, what: str, tol: float = 1e-5) -> None:
    """Agree to ``tol`` (relative, and absolute on the reference's scale)."""
    ref = ref.detach().numpy() if isinstance(ref, torch.Tensor) else np.asarray(ref)
    assert np.shape(ours) == ref.shape, f"{what}: shape {np.shape(ours)} vs {ref.shape}"
    scale = max(1.0, float(np.abs(ref).max())) if ref.size else 1.0
    np.testing.assert_allclose(ours, ref, rtol=tol, atol=tol * scale, err_msg=what)


def torch_out(tmodel: nn.Module, x: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return tmodel(torch.from_numpy(x)).numpy()


def inputs(model: cs.Sequential, n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, *model.input_shape)).astype(np.float32)


# ---------------------------------------------------------------------------------------------
# to_torch


@settings(max_examples=BASE)
@given(stacks(running_stats_only=True))
def test_to_torch_outputs_agree_in_eval_mode(model: cs.Sequential) -> None:
    tmodel = interop.to_torch(model.eval())
    assert not tmodel.training
    for n in BATCHES:
        x = inputs(model, n, n)
        close(model.predict(x), torch_out(tmodel, x), f"batch {n}: {model}")


@settings(max_examples=BASE // 2)
@given(stacks(), st.integers(0, 2 ** 31))
def test_training_step_agrees_in_float64(model32: cs.Sequential, seed: int) -> None:
    """Train mode, in float64 (batch statistics of 3 values are ill-conditioned in float32):
    to_torch(...).double() and from_torch of that give the same outputs, input gradient, every
    parameter gradient (by state-dict key) and updated running statistics."""
    for layer in model32.layers:
        if isinstance(layer, cs.Dropout):
            layer.p = 0.0  # random masks cannot agree
    tmodel = interop.to_torch(model32.train()).double()
    model = interop.from_torch(tmodel, model32.input_shape, dtype=np.float64)
    assert model.training and all(p.dtype == np.float64 for p in model.params.values())
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((3, *model.input_shape))
    y = model.forward(x)
    dy = rng.standard_normal(y.shape)
    dx = model.backward(dy)
    xt = torch.from_numpy(x).requires_grad_(True)
    yt = tmodel(xt)
    yt.backward(torch.from_numpy(dy))
    close(y, yt, "train-mode output", 1e-9)
    close(dx, xt.grad, "input gradient", 1e-9)
    named = dict(tmodel.named_parameters())
    assert set(named) == set(model.grads)
    for k, g in model.grads.items():
        close(g, named[k].grad, f"gradient {k}", 1e-9)
    tstate = tmodel.state_dict()
    for k, v in model.buffers.items():
        close(v, tstate[k], f"buffer {k}", 1e-9)


def test_state_dict_keys_and_shapes_line_up() -> None:
    model = cs.Sequential(cs.Conv2D(3, 4, 3, padding=1, bias=False), cs.BatchNorm2D(),
                          cs.ReLU(), cs.MaxPool2D(2), cs.Flatten(), cs.Linear(None, 5),
                          cs.BatchNorm1D(), input_shape=(3, 8, 8), seed=0)
    ours = model.state_dict()
    theirs = interop.to_torch(model).state_dict()
    assert list(ours) == list(theirs)
    for k in ours:
        assert tuple(ours[k].shape) == tuple(theirs[k].shape), k
        np.testing.assert_array_equal(ours[k], theirs[k].numpy(), err_msg=k)
    assert "1.num_batches_tracked" in ours and "6.running_var" in ours


def test_to_torch_keeps_float64() -> None:
    model = cs.Sequential(cs.Conv2D(2, 3, 3, dtype=np.float64), cs.Flatten(),
                          cs.Linear(None, 2, dtype=np.float64), input_shape=(2, 5, 5), seed=1)
    tmodel = interop.to_torch(model)
    assert all(p.dtype == torch.float64 for p in tmodel.parameters())
    x = np.random.default_rng(0).standard_normal((2, 2, 5, 5))
    np.testing.assert_allclose(model.predict(x), torch_out(tmodel, x), rtol=1e-12, atol=1e-12)
    assert interop.from_torch(tmodel, (2, 5, 5)).layers[0].dtype == np.float64


def test_asymmetric_padding_uses_same_or_padded_conv() -> None:
    same = cs.Conv2D(1, 2, 4, padding="same", padding_mode="replicate")
    odd = cs.Conv2D(2, 2, 3, stride=2, padding=((0, 2), (1, 0)), padding_mode="reflect")
    model = cs.Sequential(same, odd, input_shape=(1, 7, 6), seed=3)
    tmodel = interop.to_torch(model)
    assert type(tmodel[0]) is nn.Conv2d and tmodel[0].padding == "same"
    assert type(tmodel[1]).__name__ == "PaddedConv2d"
    x = inputs(model, 2)
    close(model.predict(x), torch_out(tmodel, x), "asymmetric padding")
    back = interop.from_torch(tmodel, (1, 7, 6))
    assert back.layers[1].pads == ((0, 2), (1, 0)) and back.layers[1].padding_mode == "reflect"
    close(back.predict(x), model.predict(x), "back from torch")


@pytest.mark.parametrize("name", list_presets())
def test_presets_to_torch(name: str) -> None:
    model = randomize(build_model(name, PRESET_INPUT_SHAPES[name], 10, seed=0),
                      np.random.default_rng(0)).eval()
    tmodel = interop.to_torch(model)
    for n in BATCHES:
        x = inputs(model, n, n)
        close(model.predict(x), torch_out(tmodel, x), f"{name}, batch {n}")


def test_to_torch_rejects_unknown_layers() -> None:
    class Square(cs.Layer):
        def forward(self, x: np.ndarray) -> np.ndarray:
            return x * x

    model = cs.Sequential(cs.ReLU(), Square(), input_shape=(1, 4, 4))
    with pytest.raises(TypeError, match=r"layer 1: .*Square"):
        interop.to_torch(model)
    with pytest.raises(TypeError, match="Sequential"):
        interop.to_torch(cs.ReLU())


# ---------------------------------------------------------------------------------------------
# from_torch


def _torch_stack(draw: st.DrawFn) -> tuple[nn.Sequential, tuple[int, int, int]]:
    c, h, w = draw(st.integers(1, 3)), draw(st.integers(6, 10)), draw(st.integers(6, 10))
    out = draw(st.integers(1, 4))
    mode = draw(st.sampled_from(["zeros", "reflect", "replicate", "circular"]))
    k = draw(st.integers(1, 3))
    padding = draw(st.sampled_from([0, 1, "same", "valid"]))
    mods: list[nn.Module] = [
        nn.Conv2d(c, out, k, padding=padding, padding_mode=mode, bias=draw(st.booleans()))]
    mods.append(draw(st.sampled_from([nn.ReLU(), nn.LeakyReLU(0.1), nn.Sigmoid(), nn.Tanh()])))
    mods.append(nn.BatchNorm2d(out, affine=draw(st.booleans())))
    pool = draw(st.sampled_from(["max", "avg", "none"]))
    if pool == "max":
        mods.append(nn.MaxPool2d(2, ceil_mode=draw(st.booleans())))
    elif pool == "avg":
        mods.append(nn.AvgPool2d(3, 2, 1, count_include_pad=draw(st.booleans())))
    if draw(st.booleans()):
        mods += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(0.2), nn.Linear(out, 3)]
    else:
        mods += [nn.Flatten(), nn.LazyLinear(4)]
    tmodel = nn.Sequential(*mods)
    with torch.no_grad():
        tmodel(torch.zeros(2, c, h, w))  # materialise the lazy layer
    return tmodel, (c, h, w)


@settings(max_examples=BASE // 2)
@given(st.data())
def test_from_torch_outputs_agree(data: st.DataObject) -> None:
    tmodel, shape = _torch_stack(data.draw)
    torch.manual_seed(data.draw(st.integers(0, 2 ** 31)))
    with torch.no_grad():
        for m in tmodel.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.normal_()
                m.running_var.uniform_(0.5, 2)
    tmodel.eval()
    model = interop.from_torch(tmodel, shape)
    assert not model.training and model.input_shape == shape
    assert list(model.state_dict()) == list(tmodel.state_dict())
    for n in BATCHES:
        x = np.random.default_rng(n).standard_normal((n, *shape)).astype(np.float32)
        close(model.predict(x), torch_out(tmodel, x), f"batch {n}: {tmodel}")
    again = interop.to_torch(model)
    for k, v in tmodel.state_dict().items():
        assert torch.equal(again.state_dict()[k], v), k


@pytest.mark.parametrize("module, words", [
    (nn.Softmax(dim=1), "Softmax"),
    (nn.Dropout2d(0.5), "Dropout2d"),
    (nn.AdaptiveAvgPool2d(2), "output_size 2"),
    (nn.Flatten(2), "start_dim=2"),
    (nn.MaxPool2d(2, return_indices=True), "return_indices"),
    (nn.AvgPool2d(2, divisor_override=3), "divisor_override"),
    (nn.Conv2d(2, 2, 3).half(), "float16"),
    (nn.Identity(), "Identity"),
])
def test_from_torch_names_unsupported_modules(module: nn.Module, words: str) -> None:
    with pytest.raises(TypeError, match=rf"module 1: .*{words}.*supported modules"):
        interop.from_torch(nn.Sequential(nn.ReLU(), module))


def test_from_torch_needs_a_sequential_and_checks_shapes() -> None:
    with pytest.raises(TypeError, match="torch.nn.Sequential"):
        interop.from_torch(nn.Conv2d(1, 1, 3))
    with pytest.raises(cs.ShapeError, match="channels"):
        interop.from_torch(nn.Sequential(nn.Conv2d(3, 4, 3)), input_shape=(1, 8, 8))


def test_nested_sequential_round_trip() -> None:
    tmodel = nn.Sequential(nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU()), nn.Flatten(),
                           nn.Linear(2 * 4 * 4, 3)).eval()
    model = interop.from_torch(tmodel, (1, 6, 6))
    assert list(model.state_dict()) == list(tmodel.state_dict()) == [
        "0.0.weight", "0.0.bias", "2.weight", "2.bias"]
    x = np.random.default_rng(0).standard_normal((2, 1, 6, 6)).astype(np.float32)
    close(model.predict(x), torch_out(tmodel, x), "nested")
    close(torch_out(interop.to_torch(model), x), torch_out(tmodel, x), "nested back")


# ---------------------------------------------------------------------------------------------
# weights as files


def _small(seed: int = 0) -> cs.Sequential:
    return randomize(cs.Sequential(cs.Conv2D(1, 3, 3), cs.BatchNorm2D(), cs.ReLU(), cs.Flatten(),
                                   cs.Linear(None, 2), input_shape=(1, 5, 5), seed=seed),
                     np.random.default_rng(seed))


def test_safetensors_weights_load_into_torch_and_back(tmp_path: Path) -> None:
    from safetensors.torch import load_file

    model = _small(0)
    model.layers[1].buffers["num_batches_tracked"][...] = 7
    path = interop.save_torch_weights(model, tmp_path / "sub" / "w.safetensors", {"note": "x"})
    assert sorted(p.name for p in path.parent.iterdir()) == ["w.safetensors"]  # no temp file left
    tmodel = interop.to_torch(_small(1))
    tmodel.load_state_dict(load_file(path))
    x = np.random.default_rng(0).standard_normal((3, 1, 5, 5)).astype(np.float32)
    close(torch_out(tmodel.eval(), x), model.predict(x), "torch with saved weights")
    assert int(tmodel[1].num_batches_tracked) == 7
    other = interop.load_torch_weights(_small(2), path)
    for k, v in model.state_dict().items():
        np.testing.assert_array_equal(other.state_dict()[k], v, err_msg=k)


def test_pt_state_dict_is_read_with_weights_only(tmp_path: Path) -> None:
    model = _small(0)
    tmodel = interop.to_torch(model)
    torch.save(tmodel.state_dict(), tmp_path / "w.pt")
    torch.save({"state_dict": {"module." + k: v for k, v in tmodel.state_dict().items()}},
               tmp_path / "wrapped.pth")
    for name in ("w.pt", "wrapped.pth"):
        other = interop.load_torch_weights(_small(5), tmp_path / name)
        for k, v in model.state_dict().items():
            np.testing.assert_array_equal(other.state_dict()[k], v, err_msg=f"{name} {k}")
    torch.save(tmodel, tmp_path / "whole.pt")  # a pickled module: refused, never executed
    with pytest.raises(ValueError, match="weights_only"):
        interop.load_torch_weights(_small(5), tmp_path / "whole.pt")


def test_weight_file_errors(tmp_path: Path) -> None:
    model = _small(0)
    with pytest.raises(ValueError, match=r"pickle file; .*w\.safetensors'"):
        interop.save_torch_weights(model, tmp_path / "w.pt")
    with pytest.raises(FileNotFoundError, match="no file"):
        interop.load_torch_weights(model, tmp_path / "missing.safetensors")
    (tmp_path / "w.npz").write_bytes(b"")
    with pytest.raises(ValueError, match=r"\.safetensors, \.pt or \.pth"):
        interop.load_torch_weights(model, tmp_path / "w.npz")
    state = {k: torch.from_numpy(np.asarray(v)) for k, v in model.state_dict().items()}
    state["0.weight"] = torch.zeros(3, 1, 5, 5)
    with pytest.raises(cs.ShapeError, match="'0.weight' has shape"):
        interop.load_torch_weights(model, state)
    del state["0.weight"]
    with pytest.raises(KeyError, match="missing keys"):
        interop.load_torch_weights(model, state)


def test_import_convscope_imports_neither_torch_nor_onnx() -> None:
    code = ("import sys, convscope, convscope.interop, convscope.onnx_io; "
            "bad = [m for m in ('torch', 'onnx', 'onnxruntime') if m in sys.modules]; "
            "assert not bad, bad")
    root = Path(__file__).resolve().parents[1]
    subprocess.run([sys.executable, "-c", code], check=True, cwd=root)
