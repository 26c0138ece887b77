"""Every layer against PyTorch: forward values and every gradient (input, weight, bias) over
randomized configurations drawn by hypothesis, in float32 (rtol 1e-4) and float64 (rtol 1e-10)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
torch = pytest.importorskip("torch")
import torch.nn.functional as tF
from hypothesis import example, given, settings
from hypothesis import strategies as st

import convscope as cs
from convscope import naive

BASE = settings.default.max_examples
# PyTorch warns that 'same' with an even kernel copies the input; that is its business, not ours
pytestmark = pytest.mark.filterwarnings("ignore:Using padding='same':UserWarning")
DTYPES = (np.float32, np.float64)
TORCH_DTYPE = {np.float32: torch.float32, np.float64: torch.float64}
MODES = ("zeros", "reflect", "replicate", "circular")
TORCH_PAD = {"zeros": "constant", "reflect": "reflect", "replicate": "replicate",
             "circular": "circular"}


def assert_close(ours: Any, ref: Any, dtype: Any, what: str) -> None:
    """ours equals ref to rtol 1e-4 (float32) or 1e-10 (float64), with an absolute tolerance
    scaled to the largest reference value (sums of many terms cancel to near zero)."""
    if isinstance(ref, torch.Tensor):
        ref = ref.detach().numpy()
    ours = np.asarray(ours)
    assert ours.dtype == np.dtype(dtype), f"{what}: dtype {ours.dtype}, expected {np.dtype(dtype)}"
    assert ours.shape == ref.shape, f"{what}: shape {ours.shape}, torch has {ref.shape}"
    scale = max(1.0, float(np.abs(ref).max())) if ref.size else 1.0
    rtol, atol = (1e-4, 1e-5 * scale) if np.dtype(dtype) == np.float32 else (1e-10, 1e-12 * scale)
    np.testing.assert_allclose(ours, ref, rtol=rtol, atol=atol, err_msg=what)


def tt(a: np.ndarray, grad: bool = False) -> torch.Tensor:
    """A torch tensor sharing nothing with a."""
    return torch.tensor(np.array(a), requires_grad=grad)


LAYOUTS = ("contiguous", "channels_last", "strided")


def randn(rng: np.random.Generator, shape: tuple[int, ...], dtype: Any,
          layout: str = "contiguous") -> np.ndarray:
    """Standard normal values in the given memory layout: the layers must not assume C order."""
    a = rng.standard_normal(shape).astype(dtype)
    if layout == "channels_last" and a.ndim == 4:
        return np.ascontiguousarray(a.transpose(0, 2, 3, 1)).transpose(0, 3, 1, 2)
    if layout == "strided":  # every other element of a wider array
        wide = np.zeros(shape[:-1] + (2 * shape[-1],), dtype)
        wide[..., ::2] = a
        return wide[..., ::2]
    return a


# ---------------------------------------------------------------------------------------------
# convolution


@st.composite
def conv_configs(draw: st.DrawFn) -> dict:
    """A Conv2D configuration with an input that fits it (the stride may leave a remainder)."""
    groups = draw(st.sampled_from([1, 1, 1, 2, 3]))
    depthwise = groups > 1 and draw(st.booleans())
    cin = groups * (1 if depthwise else draw(st.integers(1, 2)))
    cout = groups * draw(st.integers(1, 3 if not depthwise else 2))
    kh, kw = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    stride = draw(st.one_of(st.integers(1, 3), st.tuples(st.integers(1, 3), st.integers(1, 3))))
    dilation = draw(st.one_of(st.just(1), st.integers(1, 3),
                              st.tuples(st.integers(1, 2), st.integers(1, 3))))
    mode = draw(st.sampled_from(MODES))
    sh, sw = (stride, stride) if isinstance(stride, int) else stride
    dh, dw = (dilation, dilation) if isinstance(dilation, int) else dilation
    kinds = ["int", "pair", "valid", "asym"] + (["same"] if (sh, sw) == (1, 1) else [])
    kind = draw(st.sampled_from(kinds))
    if kind == "int":
        padding: Any = draw(st.integers(0, 3))
    elif kind == "pair":
        padding = (draw(st.integers(0, 3)), draw(st.integers(0, 2)))
    elif kind == "asym":
        padding = ((draw(st.integers(0, 3)), draw(st.integers(0, 2))),
                   (draw(st.integers(0, 2)), draw(st.integers(0, 3))))
    else:
        padding = kind
    pads = cs.shapes.normalize_padding(padding, (kh, kw), (dh, dw), (sh, sw))
    sizes = []
    for (pb, pa), k, d in zip(pads, (kh, kw), (dh, dw)):
        low = max(1, d * (k - 1) + 1 - pb - pa)  # the padded input holds one window
        if mode == "reflect":
            low = max(low, max(pb, pa) + 1)
        elif mode == "circular":
            low = max(low, pb, pa)
        sizes.append(draw(st.integers(low, low + 5)))
    return dict(n=draw(st.integers(1, 3)), cin=cin, cout=cout, kernel=(kh, kw), stride=stride,
                padding=padding, pads=pads, dilation=dilation, groups=groups, mode=mode,
                bias=draw(st.booleans()), hw=tuple(sizes), seed=draw(st.integers(0, 2**32 - 1)),
                layout=draw(st.sampled_from(LAYOUTS)))


def conv_config(n: int, cin: int, cout: int, kernel: tuple[int, int], hw: tuple[int, int],
                stride: Any = 1, padding: Any = 0, dilation: Any = 1, groups: int = 1,
                mode: str = "zeros", bias: bool = True, layout: str = "contiguous") -> dict:
    """A named configuration, for the cases every run must include (hypothesis @example)."""
    pair = lambda v: (v, v) if isinstance(v, int) else v  # noqa: E731
    pads = cs.shapes.normalize_padding(padding, kernel, pair(dilation), pair(stride))
    return dict(n=n, cin=cin, cout=cout, kernel=kernel, stride=stride, padding=padding, pads=pads,
                dilation=dilation, groups=groups, mode=mode, bias=bias, hw=hw, seed=0,
                layout=layout)


CONV_EXAMPLES = [
    conv_config(1, 4, 2, (1, 1), (5, 4)),  # batch 1, a 1x1 convolution
    conv_config(2, 3, 6, (3, 3), (7, 6), stride=2, padding=1, groups=3,  # depthwise
                mode="reflect", layout="channels_last"),
    conv_config(2, 2, 2, (2, 4), (5, 6), padding="same", dilation=(2, 1), mode="circular"),
    conv_config(1, 1, 1, (3, 3), (7, 7), stride=3),  # the lecture's misfit: floor drops a column
    conv_config(2, 2, 4, (2, 2), (2, 2), padding=((3, 0), (0, 3)), groups=2, mode="replicate"),
    conv_config(1, 2, 3, (3, 2), (9, 8), stride=(2, 3), padding="valid", bias=False,
                layout="strided"),
]


def with_examples(test: Any) -> Any:
    for cfg in CONV_EXAMPLES:
        test = example(cfg)(test)
    return test


def torch_conv(cfg: dict, x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None) -> torch.Tensor:
    """The reference: torch.nn.Conv2d with padding_mode, or F.pad first for asymmetric padding."""
    (t, bo), (le, r) = cfg["pads"]
    if t == bo and le == r:
        conv = torch.nn.Conv2d(cfg["cin"], cfg["cout"], cfg["kernel"], cfg["stride"],
                               cfg["padding"] if isinstance(cfg["padding"], str) else (t, le),
                               cfg["dilation"], cfg["groups"], cfg["bias"], cfg["mode"],
                               dtype=x.dtype)
        with torch.no_grad():
            conv.weight.copy_(w)
            if b is not None:
                conv.bias.copy_(b)
        y = conv(x)
        return y, conv.weight, conv.bias
    xp = tF.pad(x, (le, r, t, bo), mode=TORCH_PAD[cfg["mode"]])
    return tF.conv2d(xp, w, b, cfg["stride"], 0, cfg["dilation"], cfg["groups"]), w, b


def check_conv(cfg: dict, dtype: Any) -> None:
    rng = np.random.default_rng(cfg["seed"])
    layer = cs.Conv2D(cfg["cin"], cfg["cout"], cfg["kernel"], cfg["stride"], cfg["padding"],
                      cfg["dilation"], cfg["groups"], cfg["bias"], cfg["mode"], dtype=dtype,
                      init="torch", seed=cfg["seed"])
    x = randn(rng, (cfg["n"], cfg["cin"]) + cfg["hw"], dtype, cfg["layout"])
    y = layer.forward(x)
    xt = tt(x, grad=True)
    wt = tt(layer.params["weight"], grad=True)
    bt = tt(layer.params["bias"], grad=True) if cfg["bias"] else None
    yt, wref, bref = torch_conv(cfg, xt, wt, bt)
    assert_close(y, yt, dtype, "forward")
    dy = randn(rng, y.shape, dtype, cfg["layout"])
    dx = layer.backward(dy)
    yt.backward(tt(dy))
    assert_close(dx, xt.grad, dtype, "d input")
    assert_close(layer.grads["weight"], wref.grad, dtype, "d weight")
    if cfg["bias"]:
        assert_close(layer.grads["bias"], bref.grad, dtype, "d bias")
    else:
        assert "bias" not in layer.params


@settings(max_examples=2 * BASE)
@given(conv_configs())
@with_examples
def test_conv2d_float32_matches_torch(cfg: dict) -> None:
    check_conv(cfg, np.float32)


@settings(max_examples=2 * BASE)
@given(conv_configs())
@with_examples
def test_conv2d_float64_matches_torch(cfg: dict) -> None:
    check_conv(cfg, np.float64)


@settings(max_examples=BASE // 2)
@given(conv_configs())
@with_examples
def test_naive_loops_equal_im2col_and_torch(cfg: dict) -> None:
    rng = np.random.default_rng(cfg["seed"])
    layer = cs.Conv2D(cfg["cin"], cfg["cout"], cfg["kernel"], cfg["stride"], cfg["padding"],
                      cfg["dilation"], cfg["groups"], cfg["bias"], cfg["mode"],
                      dtype=np.float64, init="torch", seed=cfg["seed"])
    x = randn(rng, (cfg["n"], cfg["cin"]) + cfg["hw"], np.float64, cfg["layout"])
    w, b = layer.params["weight"], layer.params.get("bias")
    slow = naive.conv2d(x, w, b, layer.stride, layer.pads, layer.dilation, layer.groups,
                        cfg["mode"])
    assert_close(slow, layer.forward(x), np.float64, "naive vs im2col")
    ref, _, _ = torch_conv(cfg, tt(x), tt(w), None if b is None else tt(b))
    assert_close(slow, ref, np.float64, "naive vs torch")


# ---------------------------------------------------------------------------------------------
# pooling


@st.composite
def pool_configs(draw: st.DrawFn, max_pool: bool) -> dict:
    kh, kw = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    square = draw(st.booleans())
    kernel: Any = kh if square else (kh, kw)
    kw = kh if square else kw
    stride = draw(st.one_of(st.none(), st.integers(1, 3),
                            st.tuples(st.integers(1, 3), st.integers(1, 3))))
    dilation = (draw(st.one_of(st.just(1), st.tuples(st.integers(1, 2), st.integers(1, 3))))
                if max_pool else 1)
    dh, dw = (dilation, dilation) if isinstance(dilation, int) else dilation
    ph, pw = draw(st.integers(0, kh // 2)), draw(st.integers(0, kw // 2))  # torch's limit
    padding = ph if draw(st.booleans()) and ph <= kw // 2 else (ph, pw)
    ph, pw = (padding, padding) if isinstance(padding, int) else padding
    h = draw(st.integers(max(1, dh * (kh - 1) + 1 - 2 * ph), dh * (kh - 1) + 6))
    w = draw(st.integers(max(1, dw * (kw - 1) + 1 - 2 * pw), dw * (kw - 1) + 6))
    return dict(kernel=kernel, stride=stride, padding=padding, dilation=dilation,
                ceil_mode=draw(st.booleans()), count_include_pad=draw(st.booleans()),
                shape=(draw(st.integers(1, 3)), draw(st.integers(1, 3)), h, w),
                dtype=draw(st.sampled_from(DTYPES)), seed=draw(st.integers(0, 2**32 - 1)),
                layout=draw(st.sampled_from(LAYOUTS)))


@settings(max_examples=BASE)
@given(pool_configs(max_pool=True))
def test_maxpool2d_matches_torch(cfg: dict) -> None:
    dtype, rng = cfg["dtype"], np.random.default_rng(cfg["seed"])
    layer = cs.MaxPool2D(cfg["kernel"], cfg["stride"], cfg["padding"], cfg["dilation"],
                         cfg["ceil_mode"])
    x = randn(rng, cfg["shape"], dtype, cfg["layout"])  # continuous values: no ties in a window
    xt = tt(x, grad=True)
    yt = tF.max_pool2d(xt, cfg["kernel"], cfg["stride"], cfg["padding"], cfg["dilation"],
                       cfg["ceil_mode"])
    if torch.isinf(yt).any():  # a dilated window saw only padding: torch gives -inf, we refuse
        with pytest.raises(cs.ShapeError, match="holds only padding"):
            layer.forward(x)
        return
    y = layer.forward(x)
    assert_close(y, yt, dtype, "forward")
    dy = randn(rng, y.shape, dtype, cfg["layout"])
    yt.backward(tt(dy))
    assert_close(layer.backward(dy), xt.grad, dtype, "d input")


@settings(max_examples=BASE)
@given(pool_configs(max_pool=False))
def test_avgpool2d_matches_torch(cfg: dict) -> None:
    dtype, rng = cfg["dtype"], np.random.default_rng(cfg["seed"])
    layer = cs.AvgPool2D(cfg["kernel"], cfg["stride"], cfg["padding"], cfg["ceil_mode"],
                         cfg["count_include_pad"])
    x = randn(rng, cfg["shape"], dtype, cfg["layout"])
    y = layer.forward(x)
    xt = tt(x, grad=True)
    yt = tF.avg_pool2d(xt, cfg["kernel"], cfg["stride"], cfg["padding"], cfg["ceil_mode"],
                       cfg["count_include_pad"])
    assert_close(y, yt, dtype, "forward")
    dy = randn(rng, y.shape, dtype, cfg["layout"])
    yt.backward(tt(dy))
    assert_close(layer.backward(dy), xt.grad, dtype, "d input")


shapes4 = st.tuples(st.integers(1, 3), st.integers(1, 4), st.integers(1, 6), st.integers(1, 6))


@settings(max_examples=BASE // 4)
@given(shapes4, st.sampled_from(DTYPES), st.integers(0, 2**32 - 1))
def test_global_avgpool_matches_adaptive_avgpool(shape: tuple, dtype: Any, seed: int) -> None:
    rng = np.random.default_rng(seed)
    layer = cs.GlobalAvgPool2D()
    x = randn(rng, shape, dtype)
    y = layer.forward(x)
    xt = tt(x, grad=True)
    yt = torch.nn.AdaptiveAvgPool2d(1)(xt)
    assert_close(y, yt, dtype, "forward")
    dy = randn(rng, y.shape, dtype)
    yt.backward(tt(dy))
    assert_close(layer.backward(dy), xt.grad, dtype, "d input")


# ---------------------------------------------------------------------------------------------
# activations, Flatten, Linear

ACTIVATIONS = {
    "ReLU": (lambda: cs.ReLU(), torch.relu),
    "LeakyReLU": (lambda: cs.LeakyReLU(0.2), lambda t: tF.leaky_relu(t, 0.2)),
    "LeakyReLU-default": (lambda: cs.LeakyReLU(), tF.leaky_relu),
    "Sigmoid": (lambda: cs.Sigmoid(), torch.sigmoid),
    "Tanh": (lambda: cs.Tanh(), torch.tanh),
}


@settings(max_examples=BASE // 2)
@given(st.sampled_from(sorted(ACTIVATIONS)),
       st.lists(st.integers(1, 4), min_size=2, max_size=4).map(tuple),
       st.sampled_from(DTYPES), st.sampled_from([1.0, 10.0, 100.0]), st.integers(0, 2**32 - 1))
def test_activations_match_torch(name: str, shape: tuple, dtype: Any, scale: float,
                                 seed: int) -> None:
    rng = np.random.default_rng(seed)
    make, ref = ACTIVATIONS[name]
    layer = make()
    x = (randn(rng, shape, dtype) * scale).astype(dtype)  # large values: saturation, no overflow
    x.flat[0] = 0.0  # the kink itself: torch's convention (gradient of the x <= 0 side)
    y = layer.forward(x)
    xt = tt(x, grad=True)
    yt = ref(xt)
    assert_close(y, yt, dtype, "forward")
    dy = randn(rng, y.shape, dtype)
    yt.backward(tt(dy))
    assert_close(layer.backward(dy), xt.grad, dtype, "d input")


@settings(max_examples=BASE // 4)
@given(st.lists(st.integers(1, 4), min_size=2, max_size=5).map(tuple), st.sampled_from(DTYPES),
       st.integers(0, 2**32 - 1))
def test_flatten_matches_torch(shape: tuple, dtype: Any, seed: int) -> None:
    rng = np.random.default_rng(seed)
    layer = cs.Flatten()
    x = randn(rng, shape, dtype)
    y = layer.forward(x)
    xt = tt(x, grad=True)
    yt = torch.nn.Flatten()(xt)
    assert_close(y, yt, dtype, "forward")
    dy = randn(rng, y.shape, dtype)
    yt.backward(tt(dy))
    assert_close(layer.backward(dy), xt.grad, dtype, "d input")


@settings(max_examples=BASE // 2)
@given(st.integers(1, 5), st.integers(1, 12), st.integers(1, 8), st.booleans(),
       st.sampled_from(DTYPES), st.integers(0, 2**32 - 1))
def test_linear_matches_torch(n: int, fin: int, fout: int, bias: bool, dtype: Any,
                              seed: int) -> None:
    rng = np.random.default_rng(seed)
    layer = cs.Linear(fin, fout, bias, dtype=dtype, init="torch", seed=seed)
    ref = torch.nn.Linear(fin, fout, bias, dtype=TORCH_DTYPE[dtype])
    with torch.no_grad():
        ref.weight.copy_(tt(layer.params["weight"]))
        if bias:
            ref.bias.copy_(tt(layer.params["bias"]))
    x = randn(rng, (n, fin), dtype)
    y = layer.forward(x)
    xt = tt(x, grad=True)
    yt = ref(xt)
    assert_close(y, yt, dtype, "forward")
    dy = randn(rng, y.shape, dtype)
    yt.backward(tt(dy))
    assert_close(layer.backward(dy), xt.grad, dtype, "d input")
    assert_close(layer.grads["weight"], ref.weight.grad, dtype, "d weight")
    if bias:
        assert_close(layer.grads["bias"], ref.bias.grad, dtype, "d bias")


def test_gradients_accumulate_like_torch(rng: np.random.Generator) -> None:
    """backward adds into grads (PyTorch's .grad semantics); zero_grad clears them."""
    layer = cs.Conv2D(2, 3, 3, padding=1, dtype=np.float64, init="torch", seed=0)
    ref = torch.nn.Conv2d(2, 3, 3, padding=1, dtype=torch.float64)
    with torch.no_grad():
        ref.weight.copy_(tt(layer.params["weight"]))
        ref.bias.copy_(tt(layer.params["bias"]))
    for _ in range(2):
        x = rng.standard_normal((2, 2, 5, 5))
        dy = rng.standard_normal((2, 3, 5, 5))
        layer.forward(x)
        layer.backward(dy)
        ref(tt(x)).backward(tt(dy))
    assert_close(layer.grads["weight"], ref.weight.grad, np.float64, "accumulated d weight")
    assert_close(layer.grads["bias"], ref.bias.grad, np.float64, "accumulated d bias")
    layer.zero_grad()
    assert not layer.grads["weight"].any() and not layer.grads["bias"].any()


# ---------------------------------------------------------------------------------------------
# batch norm


@st.composite
def bn_configs(draw: st.DrawFn) -> dict:
    two_d = draw(st.booleans())
    c = draw(st.integers(1, 4))
    n = draw(st.integers(2, 4))
    if two_d:
        shape = (n, c, draw(st.integers(1, 4)), draw(st.integers(1, 4)))
    elif draw(st.booleans()):
        shape = (n, c)
    else:
        shape = (n, c, draw(st.integers(1, 5)))
    return dict(two_d=two_d, shape=shape, affine=draw(st.booleans()),
                track=draw(st.booleans()), momentum=draw(st.sampled_from([0.1, 0.3, None])),
                eps=draw(st.sampled_from([1e-5, 1e-3])), dtype=draw(st.sampled_from(DTYPES)),
                seed=draw(st.integers(0, 2**32 - 1)), layout=draw(st.sampled_from(LAYOUTS)))


@settings(max_examples=BASE)
@given(bn_configs())
def test_batchnorm_train_and_eval_match_torch(cfg: dict) -> None:
    """Several training steps (values, gradients, running statistics), then evaluation."""
    dtype, rng = cfg["dtype"], np.random.default_rng(cfg["seed"])
    c = cfg["shape"][1]
    cls, tcls = ((cs.BatchNorm2D, torch.nn.BatchNorm2d) if cfg["two_d"]
                 else (cs.BatchNorm1D, torch.nn.BatchNorm1d))
    layer = cls(c, cfg["eps"], cfg["momentum"], cfg["affine"], cfg["track"], dtype=dtype)
    ref = tcls(c, cfg["eps"], cfg["momentum"], cfg["affine"], cfg["track"],
               dtype=TORCH_DTYPE[dtype])
    if cfg["affine"]:  # non-trivial scale and shift
        with torch.no_grad():
            layer.params["weight"][...] = rng.uniform(0.5, 2.0, c)
            layer.params["bias"][...] = rng.standard_normal(c)
            ref.weight.copy_(tt(layer.params["weight"]))
            ref.bias.copy_(tt(layer.params["bias"]))
    for step in range(3):
        x = randn(rng, cfg["shape"], dtype, cfg["layout"])
        x *= 3
        x += dtype(rng.standard_normal())
        layer.zero_grad()
        ref.zero_grad()
        y = layer.forward(x)
        xt = tt(x, grad=True)
        yt = ref(xt)
        assert_close(y, yt, dtype, f"train forward, step {step}")
        dy = randn(rng, y.shape, dtype, cfg["layout"])
        yt.backward(tt(dy))
        assert_close(layer.backward(dy), xt.grad, dtype, f"train d input, step {step}")
        if cfg["affine"]:
            assert_close(layer.grads["weight"], ref.weight.grad, dtype, "d weight")
            assert_close(layer.grads["bias"], ref.bias.grad, dtype, "d bias")
        if cfg["track"]:
            assert_close(layer.buffers["running_mean"], ref.running_mean, dtype, "running_mean")
            assert_close(layer.buffers["running_var"], ref.running_var, dtype, "running_var")
            assert int(layer.buffers["num_batches_tracked"]) == int(ref.num_batches_tracked)
        else:
            assert layer.buffers == {}
    layer.eval()
    ref.eval()
    x = randn(rng, cfg["shape"], dtype)
    y = layer.forward(x)
    xt = tt(x, grad=True)
    yt = ref(xt)
    assert_close(y, yt, dtype, "eval forward")
    dy = randn(rng, y.shape, dtype)
    yt.backward(tt(dy))
    assert_close(layer.backward(dy), xt.grad, dtype, "eval d input")
    if cfg["affine"]:
        layer.zero_grad()
        ref.zero_grad()
        layer.forward(x)
        layer.backward(dy)
        ref(tt(x)).backward(tt(dy))
        assert_close(layer.grads["weight"], ref.weight.grad, dtype, "eval d weight")
        assert_close(layer.grads["bias"], ref.bias.grad, dtype, "eval d bias")


def test_batchnorm_state_dict_names_match_torch() -> None:
    ours = cs.BatchNorm2D(4).state_dict() if hasattr(cs.BatchNorm2D(4), "state_dict") else None
    layer = cs.BatchNorm2D(4)
    names = list(layer.params) + list(layer.buffers)
    assert names == list(torch.nn.BatchNorm2d(4).state_dict())
    assert ours is None or list(ours) == names
    assert layer.buffers["num_batches_tracked"].dtype == np.int64


# ---------------------------------------------------------------------------------------------
# dropout


@pytest.mark.parametrize("p", [0.1, 0.5, 0.8])
def test_dropout_train_keeps_1_minus_p_and_scales(p: float) -> None:
    layer = cs.Dropout(p, seed=3)
    x = np.random.default_rng(0).uniform(1.0, 2.0, (64, 8, 16, 16)).astype(np.float32)
    y = layer.forward(x)
    assert y.dtype == np.float32 and y.shape == x.shape
    kept = y != 0
    n = kept.size
    # binomial: 5 standard deviations around 1 - p
    assert abs(kept.mean() - (1 - p)) < 5 * np.sqrt(p * (1 - p) / n)
    np.testing.assert_allclose(y[kept], x[kept] / (1 - p), rtol=1e-6)
    dy = np.random.default_rng(1).standard_normal(x.shape).astype(np.float32)
    dx = layer.backward(dy)
    assert dx.dtype == np.float32
    np.testing.assert_array_equal(dx[~kept], 0)  # the same mask
    np.testing.assert_allclose(dx[kept], dy[kept] / (1 - p), rtol=1e-6)
    # torch's dropout on the same mask gives the same gradient
    xt = tt(x, grad=True)
    (xt * tt(kept.astype(np.float32)) / (1 - p)).backward(tt(dy))
    assert_close(dx, xt.grad, np.float32, "d input")


def test_dropout_eval_is_identity_and_p_edges() -> None:
    x = np.random.default_rng(0).standard_normal((4, 10)).astype(np.float32)
    layer = cs.Dropout(0.5, seed=0).eval()
    y = layer.forward(x)
    np.testing.assert_array_equal(y, x)
    np.testing.assert_array_equal(layer.backward(np.ones_like(x)), np.ones_like(x))
    np.testing.assert_array_equal(cs.Dropout(0.0).forward(x), x)
    everything = cs.Dropout(1.0, seed=0)
    assert not everything.forward(x).any()
    assert not everything.backward(np.ones_like(x)).any()
    torch_eval = torch.nn.Dropout(0.5).eval()(tt(x)).numpy()
    np.testing.assert_array_equal(y, torch_eval)


def test_dropout_seed_reproducible() -> None:
    x = np.ones((8, 32), np.float32)
    a, b, c = cs.Dropout(0.5, seed=7), cs.Dropout(0.5, seed=7), cs.Dropout(0.5, seed=8)
    ya, yb, yc = a.forward(x), b.forward(x), c.forward(x)
    np.testing.assert_array_equal(ya, yb)
    assert (ya != yc).any()
    assert (a.forward(x) != ya).any()  # a new mask each step


# ---------------------------------------------------------------------------------------------
# losses


@settings(max_examples=BASE // 2)
@given(st.integers(1, 6), st.integers(2, 7), st.sampled_from([0.0, 0.1, 0.5, 1.0]),
       st.sampled_from(DTYPES), st.sampled_from([1.0, 30.0]), st.integers(0, 2**32 - 1))
def test_cross_entropy_matches_torch(n: int, k: int, smoothing: float, dtype: Any, scale: float,
                                     seed: int) -> None:
    rng = np.random.default_rng(seed)
    logits = (randn(rng, (n, k), dtype) * scale).astype(dtype)
    labels = rng.integers(0, k, n)
    crit = cs.CrossEntropyLoss(label_smoothing=smoothing)
    loss = crit.forward(logits, labels)
    assert loss.shape == ()
    zt = tt(logits, grad=True)
    lt = tF.cross_entropy(zt, torch.tensor(labels), label_smoothing=smoothing)
    lt.backward()
    assert_close(loss, lt, dtype, "loss")
    assert_close(crit.backward(), zt.grad, dtype, "d logits")


@settings(max_examples=BASE // 4)
@given(st.lists(st.integers(1, 4), min_size=1, max_size=4).map(tuple), st.sampled_from(DTYPES),
       st.integers(0, 2**32 - 1))
def test_mse_matches_torch(shape: tuple, dtype: Any, seed: int) -> None:
    rng = np.random.default_rng(seed)
    pred, target = randn(rng, shape, dtype), randn(rng, shape, dtype)
    crit = cs.MSELoss()
    loss = crit.forward(pred, target)
    pt = tt(pred, grad=True)
    lt = tF.mse_loss(pt, tt(target))
    lt.backward()
    assert_close(loss, lt, dtype, "loss")
    assert_close(crit.backward(), pt.grad, dtype, "d prediction")
