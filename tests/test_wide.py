"""Wide columns (ops/wide.py): P output positions per row of cols, for 16-48 filters at stride 1.

Against PyTorch over hypothesis convolutions that reach them (16-32 filters on inputs of every
layout, filter widths 1-5, output widths that P does or does not divide, padding modes, every
memory layout of x and dY, with and without the input gradient), with the wide columns on and
off; the weight gradient folded from dY's wide columns; the plan that is taken; the wide GEMM
against the plain one on the same windows.
"""

from __future__ import annotations

from typing import Any, Iterator

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from convscope import workspace
from convscope.ops import conv as conv_ops, wide
from convscope.ops.columns import columns, weight_matrix

pytest.importorskip("torch")
from test_speed_paths import LAYOUTS, run_conv  # noqa: E402

BASE = settings.default.max_examples
FIXTURE_OK = [HealthCheck.function_scoped_fixture]  # the fixture only sets module flags


@pytest.fixture
def widen() -> Iterator[Any]:
    """Set ops.conv.WIDE (and TRANSPOSED) for one test, restored after; the wide columns from
    the first output position on (wide.MIN_POSITIONS = 1), so that small cases reach them."""
    saved = conv_ops.WIDE, conv_ops.TRANSPOSED, wide.MIN_POSITIONS

    def choose(on: bool, transposed: bool = True) -> None:
        conv_ops.WIDE, conv_ops.TRANSPOSED, wide.MIN_POSITIONS = on, transposed, 1
        conv_ops._plan.cache_clear()

    yield choose
    conv_ops.WIDE, conv_ops.TRANSPOSED, wide.MIN_POSITIONS = saved
    conv_ops._plan.cache_clear()


@st.composite
def wide_cases(draw: st.DrawFn) -> dict:
    """Stride-1, groups-1 convs with 16-32 filters, the cases the wide plan is for; the dY
    convolution of the input gradient is wide where C >= 16."""
    cin = draw(st.sampled_from([2, 3, 8, 16, 16, 20, 32, 32]))
    cout = draw(st.sampled_from([16, 17, 24, 32]))
    k = (draw(st.integers(1, 4)), draw(st.sampled_from([1, 2, 3, 3, 4, 5])))
    pads = ((draw(st.integers(0, 2)), draw(st.integers(0, 2))),
            (draw(st.integers(0, 3)), draw(st.integers(0, 3))))
    mode = draw(st.sampled_from(["zeros", "zeros", "reflect", "replicate", "circular"]))
    hw = []
    for (pb, pa), kk in zip(pads, k):
        low = max(1, kk - pb - pa, max(pb, pa) + 1 if mode != "zeros" else 1)
        fours = st.integers(-(-low // 4), -(-low // 4) + 3).map(lambda v: 4 * v)
        hw.append(draw(st.one_of(fours, st.integers(low, low + 9))))  # P divides or not
    return dict(n=draw(st.integers(1, 6)), cin=cin, cout=cout, k=k, stride=(1, 1), pads=pads,
                dilation=(1, 1), groups=1, mode=mode, bias=draw(st.booleans()),
                hw=tuple(hw), x_layout=draw(st.sampled_from(LAYOUTS)),
                dy_layout=draw(st.sampled_from(LAYOUTS)), seed=draw(st.integers(0, 2**31)))


@pytest.mark.parametrize("on", [True, False])
@settings(max_examples=BASE, deadline=None, suppress_health_check=FIXTURE_OK)
@given(cfg=wide_cases())
def test_wide_columns_match_torch_float64(widen: Any, on: bool, cfg: dict) -> None:
    widen(on)
    run_conv(cfg, np.float64)


@settings(max_examples=BASE // 2, deadline=None, suppress_health_check=FIXTURE_OK)
@given(cfg=wide_cases(), transposed=st.booleans())
def test_wide_columns_match_torch_float32_in_chunks_of_two_images(widen: Any, cfg: dict,
                                                                  transposed: bool) -> None:
    widen(True, transposed)
    real = workspace.chunk_size
    workspace.chunk_size = lambda n, per_image: min(n, 2)
    try:
        run_conv(dict(cfg, n=cfg["n"] + 2), np.float32)
    finally:
        workspace.chunk_size = real


@pytest.mark.parametrize("k, kw, ow, want", [
    (16, 3, 32, 4), (16, 3, 30, 6), (16, 3, 7, 1), (24, 5, 8, 4), (32, 3, 16, 2),
    (33, 3, 16, 2), (64, 3, 8, 1), (97, 3, 8, 1), (6, 5, 28, 14), (16, 1, 32, 1)])
def test_positions_per_row(k: int, kw: int, ow: int, want: int) -> None:
    """P: the largest divisor of OW with P·K <= 96; 1x1 filters (whose windows do not
    overlap) keep plain columns, and so does a conv of fewer than 1024 output positions."""
    assert wide.pixels(k, kw, ow) == want
    assert wide.pixels(k, kw, ow, 1024) == want
    assert wide.pixels(k, kw, ow, 1023) == 1


def test_small_convs_keep_plain_columns() -> None:
    """LeNet-5's 6 -> 16 conv on one image (100 output positions) is plain, on 11 (1100) wide."""
    w = np.zeros((16, 6, 5, 5))
    for n, want in ((1, 1), (10, 1), (11, 5)):
        x = np.zeros((n, 6, 14, 14))
        p = conv_ops.make_plan(x, w, True, (1, 1), ((0, 0), (0, 0)), (1, 1), 1, (10, 10), "zeros")
        assert p.wide == want, n


def _plan(x: np.ndarray, w: np.ndarray, bias: bool, out_hw: tuple, **kw: Any) -> Any:
    args = dict(stride=(1, 1), pads=((1, 1), (1, 1)), dilation=(1, 1), groups=1, mode="zeros")
    args.update(kw)
    return conv_ops.make_plan(x, w, bias, args["stride"], args["pads"], args["dilation"],
                              args["groups"], out_hw, args["mode"])


def test_where_the_wide_plan_is_taken(widen: Any) -> None:
    """At stride 1, dilation 1, groups 1, from 16 filters (whose output is channels-last
    either way) while P·K <= 96, channels-first inputs too where the wide runs are no shorter
    than OW (their backward keeps the plain plan's channels-first columns); not for strides,
    dilation, groups, fewer or more filters, or WIDE off."""
    widen(True)
    rng = np.random.default_rng(0)
    cl = rng.standard_normal((2, 8, 8, 16)).transpose(0, 3, 1, 2)
    cf = rng.standard_normal((2, 3, 8, 8))
    w16, w8, w64 = (rng.standard_normal((k, 16, 3, 3)) for k in (16, 8, 64))
    assert _plan(cl, w16, True, (8, 8)).wide == 4
    first = _plan(cf, w16[:, :3], True, (8, 8))
    assert (first.wide, first.channels_first, first.narrow().channels_first) == (4, False, True)
    image = rng.standard_normal((2, 3, 32, 32))  # wide runs of (2 + 2)·3 < OW = 32 numbers
    assert _plan(image, rng.standard_normal((32, 3, 3, 3)), True, (32, 32)).wide == 1
    assert _plan(image.transpose(0, 2, 3, 1).copy().transpose(0, 3, 1, 2),  # channels-last
                 rng.standard_normal((32, 3, 3, 3)), True, (32, 32)).wide == 2
    assert _plan(cl, w16, True, (4, 4), stride=(2, 2)).wide == 1
    assert _plan(cl, w16, True, (6, 6), dilation=(2, 2)).wide == 1
    assert _plan(cl, w16[:, :8], True, (8, 8), groups=2).wide == 1
    assert _plan(cl, w8, True, (8, 8)).wide == 1
    assert _plan(cl, w64, True, (8, 8)).wide == 1
    widen(False)
    assert _plan(cl, w16, True, (8, 8)).wide == 1


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("p_", [2, 4])
def test_the_wide_gemm_equals_the_plain_one(widen: Any, p_: int, bias: bool) -> None:
    """cols' @ W'ᵀ, read as (M, K), is cols @ Wᵀ on the same padded windows, exactly up to
    float64 rounding; the fold of X'ᵀ cols' is Xᵀ cols (the weight gradient's sums)."""
    widen(True)
    rng = np.random.default_rng(p_)
    x = rng.standard_normal((3, 6, 8, 5)).transpose(0, 3, 1, 2)
    w, b = rng.standard_normal((16, 5, 3, 2)), rng.standard_normal(16)
    plain = _plan(x, w, bias, (6, 8), pads=((1, 1), (0, 1)))
    assert plain.wide == 4
    wp = plain if p_ == 4 else plain.__class__(**{**plain.__dict__, "wide": p_})
    src = np.pad(x.transpose(0, 2, 3, 1), ((0, 0), (1, 1), (0, 1), (0, 0)))
    cols = columns(src, plain.narrow()).copy()
    want = cols @ weight_matrix(w, b, plain.narrow())[0].T  # (M, K)
    wcols = wide.columns(src, wp).copy()
    got = (wcols @ weight_matrix(w, b, wp)[0].T).reshape(-1, 16)
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)
    # the weight gradient's sums: x' (M/P, P·C)ᵀ @ cols' folds to x (M, C)ᵀ @ cols
    xs = rng.standard_normal((want.shape[0], 7))
    d = wcols.shape[1] - bias
    folded = wide.fold(xs.reshape(-1, p_ * 7).T @ wcols[:, :d], wp, 7)
    direct = (xs.T @ cols[:, :plain.narrow().depth]).reshape(7, 3, 2, 5)
    np.testing.assert_allclose(folded, direct, rtol=1e-12, atol=1e-12)


def test_the_weight_gradient_folds_from_dys_wide_columns(widen: Any) -> None:
    """16 -> 16 at stride 1 (channels-last): the forward and dY's convolution both take wide
    plans, dW is folded from dY's wide columns (spied), and all of (y, dx, dW, db) equal PyTorch
    in float64."""
    import torch

    widen(True)
    rng = np.random.default_rng(3)
    x = rng.standard_normal((4, 8, 12, 16)).transpose(0, 3, 1, 2)
    w, b = rng.standard_normal((16, 16, 3, 3)), rng.standard_normal(16)
    dy = rng.standard_normal((4, 8, 12, 16)).transpose(0, 3, 1, 2)
    y, cache = conv_ops.conv2d_forward(x, w, b, (1, 1), ((1, 1), (1, 1)), (1, 1), 1, (8, 12))
    assert cache[-1].wide == 6  # the largest divisor of 12 with 16·P <= 96
    folds: list[int] = []
    real = wide.fold
    wide.fold = lambda r, p, c: folds.append(p.wide) or real(r, p, c)
    try:
        dx, dw, db = conv_ops.conv2d_backward(dy, w, cache, True)
    finally:
        wide.fold = real
    assert folds == [6]
    tx, tw, tb = (torch.tensor(np.array(a), requires_grad=True) for a in (x, w, b))
    ty = torch.nn.functional.conv2d(tx, tw, tb, padding=1)
    ty.backward(torch.tensor(np.array(dy)))
    np.testing.assert_allclose(y, ty.detach().numpy(), rtol=1e-10, atol=1e-10)
    for ours, ref in ((dx, tx), (dw, tw), (db, tb)):
        np.testing.assert_allclose(ours, ref.grad.numpy(), rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("need_dx", [True, False])
def test_the_weight_gradient_after_a_wide_forward_comes_from_wide_columns(widen: Any,
                                                                          need_dx: bool) -> None:
    """6 -> 16 (K > C < 16: dx by col2im on the plain plan): the backward rebuilds x's wide
    columns for dW (spied), and (dx, dW, db) equal PyTorch in float64."""
    import torch

    widen(True)
    rng = np.random.default_rng(4)
    x = rng.standard_normal((3, 6, 9, 12))
    w, b = rng.standard_normal((16, 6, 3, 3)), rng.standard_normal(16)
    y, cache = conv_ops.conv2d_forward(x, w, b, (1, 1), ((1, 1), (1, 1)), (1, 1), 1, (9, 12))
    dy = rng.standard_normal(y.shape)
    plans: list[int] = []
    real = conv_ops.chunk_columns
    conv_ops.chunk_columns = lambda x_, full, n0, n1, p: plans.append(p.wide) or real(
        x_, full, n0, n1, p)
    try:
        dx, dw, db = conv_ops.conv2d_backward(dy, w, cache, True, need_dx)
    finally:
        conv_ops.chunk_columns = real
    assert plans == [cache[-1].wide] and plans[0] > 1
    tx, tw, tb = (torch.tensor(a, requires_grad=True) for a in (x, w, b))
    torch.nn.functional.conv2d(tx, tw, tb, padding=1).backward(torch.tensor(dy))
    for ours, ref in ((dw, tw), (db, tb)) + (((dx, tx),) if need_dx else ()):
        np.testing.assert_allclose(ours, ref.grad.numpy(), rtol=1e-10, atol=1e-10)
    assert need_dx or dx is None
