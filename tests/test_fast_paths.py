"""The speed paths of issue 14 against PyTorch and against the paths they sit beside.

The input gradient as a convolution of dY with the flipped filters (``ops.conv.TRANSPOSED``) and
col2im; per-channel arithmetic on whole-image rows (``ops.layout.per_channel``) and
broadcasting.
"""

from __future__ import annotations

from typing import Any, Iterator

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings

from convscope import workspace
from convscope.ops import conv as conv_ops, jit
from convscope.ops.layout import per_channel

pytest.importorskip("torch")
from test_speed_paths import LAYOUTS, arrange, conv_cases, run_conv  # noqa: E402

BASE = settings.default.max_examples
FIXTURE_OK = [HealthCheck.function_scoped_fixture]  # the fixture only sets module flags


@pytest.fixture
def path() -> Iterator[Any]:
    """Set ops.conv.TRANSPOSED for one test, restored after."""
    saved = conv_ops.TRANSPOSED

    def choose(transposed: bool) -> None:
        conv_ops.TRANSPOSED = transposed

    yield choose
    conv_ops.TRANSPOSED = saved


@pytest.mark.parametrize("transposed", [False, True])
@settings(max_examples=BASE // 2, deadline=None, suppress_health_check=FIXTURE_OK)
@given(cfg=conv_cases())
def test_both_input_gradient_paths_match_torch(path: Any, transposed: bool, cfg: dict) -> None:
    path(transposed)
    run_conv(cfg, np.float64)


@settings(max_examples=BASE // 4, deadline=None, suppress_health_check=FIXTURE_OK)
@given(cfg=conv_cases())
def test_the_transposed_path_in_chunks_of_a_small_budget_matches_torch(path: Any,
                                                                       cfg: dict) -> None:
    path(True)
    old = workspace.budget()
    workspace.set_budget(2**20)
    try:
        run_conv(dict(cfg, n=cfg["n"] * 16), np.float32)
    finally:
        workspace.set_budget(old)


@pytest.mark.parametrize("c, k, applies", [(16, 16, True), (16, 32, True), (8, 8, True),
                                            (8, 32, False)])
def test_the_transposed_input_gradient_is_taken_where_it_applies(path: Any, c: int, k: int,
                                                                 applies: bool) -> None:
    """Stride 1, groups 1, padding within the filter's reach, K <= C or C >= 16: dx comes from
    the forward path run on dY (spied), equal to col2im's to float64 rounding; stride 2 and
    more filters than fewer than 16 channels keep col2im."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((3, 9, 9, c)).transpose(0, 3, 1, 2)  # channels-last, as a net's
    w = rng.standard_normal((k, c, 3, 3))
    real = conv_ops.conv2d_forward
    for stride in (1, 2):
        oh = (9 + 2 - 3) // stride + 1
        dy = rng.standard_normal((3, k, oh, oh))
        dxs = []
        for transposed in (False, True):
            path(transposed)
            _, cache = real(x, w, None, (stride, stride), ((1, 1), (1, 1)), (1, 1), 1, (oh, oh))
            calls: list[tuple] = []

            def spy(*a: Any, **k: Any) -> Any:
                calls.append(a[0].shape)
                return real(*a, **k)

            conv_ops.conv2d_forward = spy
            try:
                dxs.append(np.array(conv_ops.conv2d_backward(dy, w, cache, False)[0]))
            finally:
                conv_ops.conv2d_forward = real
            assert calls == ([dy.shape] if transposed and stride == 1 and applies else [])
        np.testing.assert_allclose(dxs[1], dxs[0], rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("c, k, layout, mode, fused", [
    (16, 16, "channels_last", "zeros", True), (16, 32, "channels_last", "reflect", True),
    (8, 8, "nchw", "zeros", True), (8, 4, "nchw", "zeros", False)])
def test_the_weight_gradient_comes_from_dys_columns_where_it_can(path: Any, c: int, k: int,
                                                                 layout: str, mode: str,
                                                                 fused: bool) -> None:
    """With dx by the transposed path, dW is one GEMM per chunk on dY's columns (no im2col of
    x: the columns helper is never called on x); where dY's own convolution takes the row-flat
    path (4 channels-first filters), which hands out no columns, the usual dW loop runs.  Both
    equal PyTorch in float64 (the biases too)."""
    import torch

    path(True)
    jit.enable(False)  # the row-flat path is the NumPy copies' (the kernels replace it)
    rng = np.random.default_rng(1)
    x = arrange(rng.standard_normal((5, c, 7, 6)), layout)
    w, b = rng.standard_normal((k, c, 3, 3)), rng.standard_normal(k)
    dy = rng.standard_normal((5, k, 7, 6))
    _, cache = conv_ops.conv2d_forward(x, w, b, (1, 1), ((1, 1), (1, 1)), (1, 1), 1, (7, 6), mode)
    seen: list[bool] = []
    real = conv_ops.chunk_columns
    conv_ops.chunk_columns = lambda *a: seen.append(a[0] is x) or real(*a)
    try:
        dx, dw, db = conv_ops.conv2d_backward(dy, w, cache, True)
    finally:
        conv_ops.chunk_columns = real
    assert any(seen) != fused  # x's columns rebuilt only without the fused GEMM
    tx, tw, tb = (torch.tensor(np.array(a), requires_grad=True) for a in (x, w, b))
    pad = {"zeros": "constant"}.get(mode, mode)
    ty = torch.nn.functional.conv2d(torch.nn.functional.pad(tx, (1, 1, 1, 1), mode=pad), tw, tb)
    ty.backward(torch.tensor(dy))
    for ours, ref in ((dx, tx), (dw, tw), (db, tb)):
        np.testing.assert_allclose(ours, ref.grad.numpy(), rtol=1e-10, atol=1e-10)


# ---------------------------------------------------------------------------------------------
# per-channel arithmetic


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("op", ["add", "subtract", "multiply"])
@pytest.mark.parametrize("shape", [(2, 3, 4, 5), (1, 16, 1, 1), (3, 32, 7, 9), (2, 8, 70, 130),
                                   (0, 4, 3, 3)])
def test_per_channel_equals_broadcasting(layout: str, op: str, shape: tuple) -> None:
    rng = np.random.default_rng(1)
    a = arrange(rng.standard_normal(shape).astype(np.float32), layout)
    v = rng.standard_normal(shape[1]).astype(np.float32)
    want = getattr(np, op)(a, v.reshape(1, -1, 1, 1))
    out = np.empty_like(a)  # empty_like keeps the layout
    assert per_channel(op, a, v, out) is out
    np.testing.assert_array_equal(out, want)
    inplace = a.copy(order="K")
    per_channel(op, inplace, v, inplace)
    np.testing.assert_array_equal(inplace, want)


def test_per_channel_on_vectors_and_matrices() -> None:
    a = np.arange(12.0).reshape(4, 3)
    out = np.empty_like(a)
    np.testing.assert_array_equal(per_channel("multiply", a, np.array([1.0, 2, 3]), out),
                                  a * [1, 2, 3])
