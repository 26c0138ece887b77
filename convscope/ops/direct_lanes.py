"""The direct convolution for fewer than 16 filters (the lecture's six 5×5×3 filters): the
compiled kernels of :mod:`.jit_direct` with neighbouring output positions of a row as the
vector lanes, on channels-first memory, the batch split over convscope's threads.

Why another kernel: :mod:`.direct` keeps 16 filters side by side in the lanes, so 6 filters
would compute 16.  Here a block is P neighbouring positions of one output row × m filters
(P·m ≤ 96 sums): each tap loads the P inputs under them, which lie side by side in an image
row, and m weights.  The im2col GEMM for six filters is the (6, 75) @ (75, M) product, which
BLAS runs far below its peak (64 images, 3 -> 6 channels 5×5 at 32×32, forward + backward:
its GEMMs alone took 7.6 ms, PyTorch the whole of it 6.4).

Forward: y = the forward kernel on x zero-padded (a copy only where there is padding or x is
not channels-first).  dx = the same kernel on dY padded by F - 1 - P with the filters flipped
and their channel axes swapped (stride 1: a correlation).  dW: its own kernel, the lanes summed
last, over :data:`.direct.DW_PARTS` runs of the batch summed in order (so dW does not depend on
the thread count).  Where :func:`fits` says no: :mod:`.conv`'s im2col path, the reference the
tests hold this to.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .. import workspace
from . import jit_direct
from .conv_rows import zero_border
from .direct import summed_runs
from .jit_direct import LANE_FILTERS, LANES
from .norm import channel_sum
from .threads import count_for, run, split, take

Array = Any
MAX_K = 16  # fewer filters than this (from 16 on, im2col's GEMM or ops/direct.py)
FORWARD_SUMS, WEIGHT_SUMS = 12, 8  # a block's sums, in vector registers of 8 floats


def block(k: int) -> int:
    """Filters per block for K filters: the largest divisor of K up to 8, or 0 where that is
    1 or 2 for a K above 2 (11 and 13 filters would take one pass over x per filter: left to
    im2col, unmeasured)."""
    m = next(m for m in range(min(k, LANE_FILTERS), 0, -1) if k % m == 0)
    return m if m >= 3 or m == k else 0


def lanes(m: int, ow: int, sums: int) -> int:
    """Positions per block: the most of 32, 16, 8 whose m blocks of 8 fit ``sums`` vector
    registers and that fit in OW output columns (0: none does)."""
    return next((p for p in sorted(LANES, reverse=True) if p // 8 * m <= sums and p <= ow), 0)


def fits(c: int, k: int, kernel: tuple, stride: tuple, dilation: tuple, groups: int, mode: str,
         pads: tuple, out_w: int) -> bool:
    """Whether a convolution runs here: stride 1, no dilation or groups, zero padding no wider
    than the filter's reach (F - 1), fewer than 16 filters that :func:`block` can split, and
    at least 8 output columns."""
    return (stride == (1, 1) and dilation == (1, 1) and groups == 1 and mode == "zeros"
            and k < MAX_K and block(k) > 0 and out_w >= min(LANES)
            and all(0 <= p < f for side, f in zip(pads, kernel) for p in side))


def input_grad_fits(c: int, w: int, stride: tuple) -> bool:
    """Whether dx runs here too (the forward kernel with C filters): :func:`block` splits C and
    dx has at least 8 columns; else the im2col path computes the backward."""
    return block(c) > 0 and w >= min(LANES)


def _padded(name: str, a: Array, pads: tuple) -> Array:
    """a (N, C, H, W) zero-padded by ((top, bottom), (left, right)), C-contiguous: a itself
    where it is that already, else a copy into the named scratch buffer."""
    (t, b), (l, r) = pads
    if not (t or b or l or r) and a.flags.c_contiguous:
        return a
    n, c, h, w = a.shape
    buf = workspace.buffer(name, (n, c, h + t + b, w + l + r), a.dtype, np)
    zero_border(buf, 2, t, b, l, r)
    buf[:, :, t:t + h, l:l + w] = a
    return buf


def _convolve(src: Array, w: Array, bias: Array, out: Array) -> None:
    """out (N, K, OH, OW), C-contiguous, = the forward kernel on src (N, C, Hp, Wp), already
    padded, with w (K, C, kH, kW) and bias (K,)."""
    n, k, oh, ow = out.shape
    m = block(k)
    p = lanes(m, ow, FORWARD_SUMS)
    wp = np.ascontiguousarray(w.reshape(k // m, m, *w.shape[1:]).transpose(0, 2, 3, 4, 1))
    take()  # the cores, where an on_demand own_cores block waits for this
    count = count_for(out.size * w[0].size)
    if n and oh:
        run(jit_direct.kernel(f"lanes_forward_m{m}_p{p}", src.dtype),  # rows n·OH + oh split
            [(src, wp, bias.reshape(k // m, m), out, t0, t1) for t0, t1 in split(n * oh, count)])


def forward(x: Array, w: Array, b: Array | None, stride: tuple, pads: tuple, out_hw: tuple
            ) -> Array:
    """y (N, K, OH, OW), C-contiguous, = x ⋆ w + b at stride (1, 1) for x (N, C, H, W) in
    any layout and w (K, C, kH, kW) that :func:`fits` accepts (kernels on, NumPy float32/64;
    :func:`.direct.usable`)."""
    bias = np.zeros(w.shape[0], w.dtype) if b is None else np.ascontiguousarray(b, w.dtype)
    y = workspace.empty((x.shape[0], w.shape[0], *out_hw), x.dtype, np)
    _convolve(_padded("lanes_x", x, pads), w, bias, y)
    return y


def backward(dy: Array, x: Array, w: Array, stride: tuple, pads: tuple, need_bias: bool,
             need_dx: bool) -> tuple[Array | None, Array, Array | None]:
    """(dx, dw, db) of :func:`forward` for dy (N, K, OH, OW) in any layout: dx (N, C, H, W),
    C-contiguous (None unless ``need_dx``; needs :func:`input_grad_fits`), dw (K, C, kH, kW),
    db (K,) (None unless ``need_bias``)."""
    n, k, oh, ow = dy.shape
    _, c, kh, kw = w.shape
    dx = None
    if need_dx:  # the forward kernel on dY padded by F - 1 - P, filters flipped, axes swapped
        (pt, pb), (pl, pr) = pads
        dyp = _padded("lanes_dy", dy, ((kh - 1 - pt, kh - 1 - pb), (kw - 1 - pl, kw - 1 - pr)))
        dx = workspace.empty(x.shape, dy.dtype, np)
        _convolve(dyp, w.transpose(1, 0, 2, 3)[:, :, ::-1, ::-1], np.zeros(c, w.dtype), dx)
    xp = _padded("lanes_x", x, pads)
    dyc = _padded("lanes_dy", dy, ((0, 0), (0, 0)))
    m = block(k)
    p = lanes(m, ow, WEIGHT_SUMS)
    acc = summed_runs(jit_direct.kernel(f"lanes_weight_grad_m{m}_p{p}", w.dtype), (xp, dyc),
                      (), (k // m, c, kh, kw, m, p), w.dtype, n, dy.size * w[0].size)
    dw = np.ascontiguousarray(acc.sum(axis=-1).transpose(0, 4, 1, 2, 3).reshape(k, c, kh, kw))
    return dx, dw, (channel_sum(dy) if need_bias else None)
