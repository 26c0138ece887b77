"""The compiled copies of the convolution (convscope/ops/jit_conv.py) against PyTorch and the
NumPy path.

With the kernels on, hypothesis-drawn convolutions (strides, dilation, padding wider than the
filter's reach, groups, the padding modes, every memory layout) match PyTorch, with the
flipped-filter input gradient (``ops.conv.TRANSPOSED``) on and off (then every input gradient
goes through col2im).  The kernels' Python source runs without numba against the NumPy copies
it replaces.
"""

from __future__ import annotations

from typing import Any, Iterator

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings

from convscope.ops import col2im, columns, conv as conv_ops, jit, jit_conv

pytest.importorskip("torch")
from test_speed_paths import conv_cases, run_conv  # noqa: E402

needs_numba = pytest.mark.skipif(not jit.available(), reason="numba is not installed")
BASE = settings.default.max_examples
FIXTURE_OK = [HealthCheck.function_scoped_fixture]


@pytest.fixture
def kernels_on() -> Iterator[Any]:
    """Kernels on, the direct convolutions off (the im2col copies are under test); the
    input-gradient path set by the test; all restored after."""
    saved, direct = conv_ops.TRANSPOSED, conv_ops.DIRECT
    conv_ops.DIRECT = False

    def choose(transposed: bool) -> None:
        conv_ops.TRANSPOSED = transposed

    with jit.turned_on():
        yield choose
    conv_ops.TRANSPOSED, conv_ops.DIRECT = saved, direct


@needs_numba
@pytest.mark.parametrize("transposed", [False, True])
@settings(max_examples=BASE // 2, deadline=None, suppress_health_check=FIXTURE_OK)
@given(cfg=conv_cases())
def test_compiled_copies_match_torch_float64(kernels_on: Any, transposed: bool,
                                             cfg: dict) -> None:
    kernels_on(transposed)
    run_conv(cfg, np.float64)


@needs_numba
@settings(max_examples=BASE // 4, deadline=None, suppress_health_check=FIXTURE_OK)
@given(cfg=conv_cases())
def test_compiled_copies_match_torch_float32(kernels_on: Any, cfg: dict) -> None:
    kernels_on(False)
    run_conv(cfg, np.float32)


@pytest.mark.parametrize("pads", [((0, 0), (0, 0)), ((1, 2), (2, 0)), ((2, 2), (0, 1))])
def test_the_columns_kernels_python_source_equals_the_numpy_copy(pads):
    from convscope.shapes import conv_output_shape

    rng = np.random.default_rng(sum(map(sum, pads)))
    x, w = rng.standard_normal((2, 3, 7, 6)), rng.standard_normal((4, 3, 3, 2))
    out_hw = conv_output_shape((7, 6), (3, 2), (1, 1), pads)
    p = conv_ops._plan(x.shape, w.shape, True, (1, 1), pads, (1, 1), 1, out_hw, "zeros",
                       True, False, False)
    src = columns.chunk_source(x, None, 0, 2, p)  # padded
    ref = np.array(columns.columns(src, p))
    got = np.full(ref.shape, np.nan)
    jit_conv.columns_channels_first(src, 3, 2, *out_hw, got)
    got[-1] = 1  # the ones row of the bias, which the caller writes
    np.testing.assert_array_equal(got, ref)


def _slice_adds(d6: np.ndarray, rows: list, cols: list, dst: np.ndarray, c0: int) -> None:
    """The NumPy path's channels-last adds (ops/col2im.py), for the kernel's arguments."""
    for i, r in enumerate(rows):
        for j, c in enumerate(cols):
            if r is not None and c is not None:
                dst[:, r[1], c[1], c0:c0 + d6.shape[-1]] += d6[:, r[0], c[0], i, j]


@pytest.mark.parametrize("stride, dilation, offset", [(1, 1, 0), (2, 1, 1), (3, 2, 2), (1, 1, 4)])
def test_the_col2im_kernels_python_source_equals_the_slice_adds(stride, dilation, offset):
    rng = np.random.default_rng(stride * 10 + offset)
    nc, c, k, oh, ow, th, tw = 2, 3, 3, 4, 3, 6, 5
    rows = col2im.tap_ranges(oh, k, stride, dilation, offset, th)
    cols = col2im.tap_ranges(ow, k, stride, dilation, offset, tw)
    d6 = rng.standard_normal((nc, oh, ow, k, k, c))
    got, ref = np.zeros((nc, th, tw, c + 2)), np.zeros((nc, th, tw, c + 2))  # 2 other channels
    jit_conv.col2im_channels_last(d6, *jit_conv._bounds(rows), *jit_conv._bounds(cols), stride,
                                  stride, 1, got)
    _slice_adds(d6, rows, cols, ref, 1)
    np.testing.assert_allclose(got, ref, rtol=0, atol=1e-12)
    assert np.abs(ref).sum() > 0


def test_the_channels_first_col2im_kernels_python_source_equals_the_slice_adds():
    rng = np.random.default_rng(1)
    c, k, nc, oh, ow = 2, 3, 2, 4, 3
    d6 = rng.standard_normal((c, k, k, nc, oh, ow))
    got, ref = (np.zeros((nc, c, oh + k - 1, ow + k - 1)) for _ in range(2))
    jit_conv.col2im_channels_first(d6, got)
    for i in range(k):
        for j in range(k):
            ref.transpose(1, 0, 2, 3)[:, :, i:i + oh, j:j + ow] += d6[:, i, j]
    np.testing.assert_allclose(got, ref, rtol=0, atol=1e-12)


@needs_numba
@pytest.mark.parametrize("layout, kernel", [("channels_first", "columns"),
                                            ("channels_first", "col2im_first"),
                                            ("channels_last", "col2im")])
def test_the_compiled_copies_are_taken_only_when_on(monkeypatch, layout, kernel):
    calls, real = [], getattr(jit_conv, kernel)
    monkeypatch.setattr(jit_conv, kernel, lambda *a: real(*a) and not calls.append(1))
    rng = np.random.default_rng(0)
    x, w = rng.standard_normal((2, 3, 8, 8)), rng.standard_normal((16, 3, 3, 3))  # not rows
    monkeypatch.setattr(conv_ops, "TRANSPOSED", False)  # 16 > 3 filters: col2im anyway
    monkeypatch.setattr(conv_ops, "WIDE", False)  # plain columns, whose copies are under test
    if layout == "channels_last":  # 18 channels: channels-last columns; stride 2: col2im
        x = np.ascontiguousarray(rng.standard_normal((2, 8, 8, 18))).transpose(0, 3, 1, 2)
        w = rng.standard_normal((4, 18, 3, 3))
    stride = (2, 2) if kernel == "col2im" else (1, 1)
    out = 4 if kernel == "col2im" else 8
    args = (stride, ((1, 1), (1, 1)), (1, 1), 1, (out, out))
    dy = rng.standard_normal((2, len(w), out, out))
    _, cache = conv_ops.conv2d_forward(x, w, None, *args)
    ref = conv_ops.conv2d_backward(dy, w, cache, False)
    assert calls == []
    with jit.turned_on():
        _, cache = conv_ops.conv2d_forward(x, w, None, *args)
        got = conv_ops.conv2d_backward(dy, w, cache, False)
    assert calls
    for a, b in zip(got, ref):
        if a is not None:
            np.testing.assert_allclose(a, b, rtol=0, atol=1e-12)
