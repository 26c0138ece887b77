"""The row-flat convolution (ops/conv_rows.py) against PyTorch, and the im2col path it replaces
at stride 1 (``conv.ROWS = False``) kept tested on the same configurations."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
torch = pytest.importorskip("torch")
import torch.nn.functional as tF
from hypothesis import given, settings
from hypothesis import strategies as st

from convscope import workspace
from convscope.ops import conv
from convscope.shapes import conv_output_shape

BASE = settings.default.max_examples


@st.composite
def row_cases(draw: st.DrawFn) -> dict:
    """Stride 1, few channels stored channels-first, fewer than 16 filters: the row-flat plan."""
    groups = draw(st.sampled_from([1, 1, 1, 2, 3]))
    cin = groups * draw(st.sampled_from([1, 2])) if groups > 1 else draw(st.integers(1, 6))
    cout = groups * draw(st.integers(1, 15 // groups))
    k = (draw(st.integers(1, 5)), draw(st.integers(1, 5)))
    dilation = draw(st.sampled_from([(1, 1), (1, 1), (2, 1), (1, 3)]))
    pads = ((draw(st.integers(0, 3)), draw(st.integers(0, 3))),
            (draw(st.integers(0, 3)), draw(st.integers(0, 3))))
    mode = draw(st.sampled_from(["zeros", "zeros", "reflect", "replicate", "circular"]))
    hw = []
    for (pb, pa), kk, d in zip(pads, k, dilation):
        low = max(2, d * (kk - 1) + 1 - pb - pa, max(pb, pa) + 1 if mode != "zeros" else 1)
        hw.append(draw(st.integers(low, low + 7)))  # 2 and up: a 1x1 image reads as channels-last
    return dict(n=draw(st.integers(1, 6)), cin=cin, cout=cout, k=k, pads=pads,
                dilation=dilation, groups=groups, mode=mode, bias=draw(st.booleans()),
                hw=tuple(hw), dy_last=draw(st.booleans()), seed=draw(st.integers(0, 2**31)))


def reference(cfg: dict, x: np.ndarray, w: np.ndarray, b: np.ndarray | None,
              dy: np.ndarray) -> tuple[np.ndarray, ...]:
    xt = torch.tensor(x, requires_grad=True)
    wt = torch.tensor(w, requires_grad=True)
    bt = None if b is None else torch.tensor(b, requires_grad=True)
    (t, bo), (le, r) = cfg["pads"]
    mode = {"zeros": "constant"}.get(cfg["mode"], cfg["mode"])
    xp = tF.pad(xt, (le, r, t, bo), mode=mode) if (t, bo, le, r) != (0, 0, 0, 0) else xt
    y = tF.conv2d(xp, wt, bt, 1, 0, cfg["dilation"], cfg["groups"])
    y.backward(torch.tensor(dy))
    return (y.detach().numpy(), xt.grad.numpy(), wt.grad.numpy(),
            None if b is None else bt.grad.numpy())


def check(cfg: dict, dtype: Any, rows: bool) -> None:
    rng = np.random.default_rng(cfg["seed"])
    n, (h, w_) = cfg["n"], cfg["hw"]
    x = rng.standard_normal((n, cfg["cin"], h, w_)).astype(dtype)
    w = rng.standard_normal((cfg["cout"], cfg["cin"] // cfg["groups"]) + cfg["k"]).astype(dtype)
    b = rng.standard_normal(cfg["cout"]).astype(dtype) if cfg["bias"] else None
    out_hw = conv_output_shape((h, w_), cfg["k"], (1, 1), cfg["pads"], cfg["dilation"])
    dy = rng.standard_normal((n, cfg["cout"]) + out_hw).astype(dtype)
    if cfg["dy_last"]:
        dy = np.ascontiguousarray(dy.transpose(0, 2, 3, 1)).transpose(0, 3, 1, 2)
    args = ((1, 1), cfg["pads"], cfg["dilation"], cfg["groups"], out_hw, cfg["mode"])
    old = conv.ROWS
    conv.ROWS = rows
    try:
        assert conv.make_plan(x, w, b is not None, *args).rows is rows
        y, cache = conv.conv2d_forward(x, w, b, *args)
        dx, dw, db = conv.conv2d_backward(dy, w, cache, cfg["bias"])
        _, cache2 = conv.conv2d_forward(x, w, b, *args)
        none, dw2, _ = conv.conv2d_backward(dy, w, cache2, cfg["bias"], need_dx=False)
    finally:
        conv.ROWS = old
    ref = reference(cfg, x, w, b, np.ascontiguousarray(dy))
    tol = dict(rtol=1e-4, atol=1e-4) if dtype == np.float32 else dict(rtol=1e-10, atol=1e-10)
    for what, ours, theirs in (("y", y, ref[0]), ("dx", dx, ref[1]), ("dw", dw, ref[2]),
                               ("dw without dx", dw2, ref[2]), ("db", db, ref[3])):
        if theirs is None:
            continue
        assert ours.dtype == dtype, f"{what}: dtype {ours.dtype}"
        scale = max(1.0, float(np.abs(theirs).max()))
        np.testing.assert_allclose(ours, theirs, rtol=tol["rtol"], atol=tol["atol"] * scale,
                                   err_msg=what)
    assert none is None


@settings(max_examples=BASE, deadline=None)
@given(row_cases())
def test_row_flat_conv_matches_torch_float64(cfg: dict) -> None:
    check(cfg, np.float64, rows=True)


@settings(max_examples=BASE // 2, deadline=None)
@given(row_cases())
def test_row_flat_conv_matches_torch_float32(cfg: dict) -> None:
    check(cfg, np.float32, rows=True)


@settings(max_examples=BASE // 2, deadline=None)
@given(row_cases())
def test_im2col_fallback_at_stride_1_matches_torch(cfg: dict) -> None:
    check(cfg, np.float64, rows=False)


@settings(max_examples=BASE // 4, deadline=None)
@given(row_cases())
def test_row_flat_conv_in_chunks(cfg: dict) -> None:
    old = workspace.budget()
    workspace.set_budget(2**20)
    try:
        check(dict(cfg, n=cfg["n"] * 40, hw=(cfg["hw"][0] + 8, cfg["hw"][1] + 8)), np.float64,
              rows=True)
    finally:
        workspace.set_budget(old)


def test_lecture_conv_runs_row_flat_and_gives_28x28x6() -> None:
    """32x32x3 with six 5x5x3 filters: rows (c, i, j) = 75 plus the ones, 28 rows of Wp = 32
    positions per image; the output is 28x28x6 and matches PyTorch."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 3, 32, 32)).astype(np.float32)
    w = rng.standard_normal((6, 3, 5, 5)).astype(np.float32)
    b = rng.standard_normal(6).astype(np.float32)
    args = ((1, 1), ((0, 0), (0, 0)), (1, 1), 1, (28, 28), "zeros")
    p = conv.make_plan(x, w, True, *args)
    assert p.rows and p.width == 5 * 5 * 3 + 1 and p.padded_hw == (32, 32)
    y, _ = conv.conv2d_forward(x, w, b, *args)
    assert y.shape == (2, 6, 28, 28) and y.dtype == np.float32
    ref = tF.conv2d(torch.tensor(x), torch.tensor(w), torch.tensor(b)).numpy()
    np.testing.assert_allclose(y, ref, rtol=1e-4, atol=1e-4)


def test_row_flat_plan_only_at_stride_1_with_few_filters() -> None:
    x = np.zeros((2, 3, 9, 9), np.float32)
    for k, stride, rows in ((6, (1, 1), True), (16, (1, 1), False), (6, (2, 2), False)):
        p = conv.make_plan(x, np.zeros((k, 3, 3, 3), np.float32), True, stride,
                           ((0, 0), (0, 0)), (1, 1), 1, (7, 7) if stride == (1, 1) else (4, 4),
                           "zeros")
        assert p.rows is rows, (k, stride)
