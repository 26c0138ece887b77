"""The direct convolution's compiled kernels (numba, optional; see :mod:`.jit` and, for how
they are called, :mod:`.direct`).

y[n, oh, ow, k] = b[k] + Σ_(i, j, c) x[n, S·oh + i - P, S·ow + j - P, c] · w[k, c, i, j], for
blocks of B = 4 neighbouring output positions × KB = 16 filters: 64 running sums, 8 AVX2
registers of 8 floats.  Each turn of the innermost loop, over the input channels c, loads 4
input numbers and 16 weights and does 64 multiply-adds in registers: the lecture's sliding
filter, F·F·D multiply-adds per output, with nothing copied.  (im2col copies each input number
F·F times into columns before its GEMM; those copies were 35-40% of a 3×3 forward on 16-64
channels.)  The weight gradient keeps CB = 4 input channels × 16 filters of sums in registers
over each row of output positions.  Where the CPU has AVX-512's 32 vector registers the blocks
are 2 positions × 32 filters (or × 16 for 16 filters) and 4 channels × 32 filters
(:data:`BLOCKS`, :func:`forward_block`): on a Xeon the 4 × 16 block ran at half PyTorch's
speed.

The 64 sums are 64 local variables, so each kernel's body is written out as Python source
(:func:`_forward_source`, :func:`_weight_grad_source`) and compiled from that text: a loop over
16 lanes of an array would be loads and stores of memory that may alias, which LLVM cannot keep
in registers.  LLVM's SLP vectorizer packs the scalar sums into vector registers.  numba turns
that pass off by default (numba PR 8852, 2023, after miscompilations by LLVM 11-14); it is on
for these kernels alone (:func:`_slp`), and the tests hold them to the NumPy path and to
PyTorch.  Without it the forward ran at 3 GFLOP/s on one core, with it at 40-66 (64 images,
16 -> 16 at 32×32 to 64 -> 64 at 8×8; PyTorch's oneDNN 65-112 on two cores).

Each kernel exists for strides 1 and 2 (the stride a constant in its text, so that indices
into a view from its first element are never negative: numba then checks no index for
wrapping around).  They are plain Python too (:func:`source_kernel`, what the tests run
without numba).  Each is compiled for one signature on first use, in the calling thread, and
kept in numba's disk cache (which keys it by this file, whose every change changes the text).
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from typing import Any

import numpy as np

KB = 16  # filters per block: 2 AVX2 registers of float32 per output position
B = 4  # output positions per block of the forward: B·KB = 64 sums, 8 registers
CB = 4  # input channels per block of the weight gradient (fewer where C is not a multiple)
# The forward's blocks where the CPU has 32 vector registers (AVX-512): WIDE_B = 2 positions
# x 32 filters (64 sums again, but 32 multiply-adds per input number loaded where 4 x 16 does
# 16), and 2 x 16 for 16 filters.  One thread of a 2-core Xeon (Emerald Rapids), the forward
# kernel alone, alternating in one process, GFLOP/s: 32 -> 64 channels at 16x16 (64 images)
# 32 -> 59, 64 -> 128 at 8x8 (256 images) 37 -> 69, 32 -> 32 at 32x32 24 -> 49; 16 -> 16 at
# 32x32 by 2 x 16 28 -> 40, 6 -> 16 at 14x14 23 -> 35.  Tried there: 4 x 32 47-54, 1 x 64
# 52-54, 8 x 16 30-34, and 512-bit vectors (LLVM's prefer-256-bit off) 36-49; 3 x 32 and 6 x
# 16 left the SLP vectorizer's reach (3-5).  On AVX2's 16 registers 4 x 16 was measured best
# (round eight).  The weight gradient's 4 channels x 32 filters, the same three shapes: 42-50
# -> 55-73 GFLOP/s (2 x 32: 35-52, 1 x 32: 21-31).
WIDE_KB, WIDE_B = 32, 2
WIDE: bool | None = None  # the AVX-512 blocks: None = where the CPU has AVX-512
BLOCKS = ((KB, B), (KB, WIDE_B), (WIDE_KB, WIDE_B))  # the forward's (filters, positions)


def filter_block(k: int) -> int:
    """Filters per block of the forward and weight gradient kernels for k filters (a multiple
    of KB): 32 where :func:`wide_registers` and k allows, else KB."""
    return WIDE_KB if k % WIDE_KB == 0 and wide_registers() else KB


def forward_block(k: int) -> tuple[int, int]:
    """(filters, positions) per block of the forward kernel for k filters: (32, 2) or (16, 2)
    where :func:`wide_registers`, else (16, 4)."""
    return filter_block(k), (WIDE_B if wide_registers() else B)


def forward_name(kb: int, b: int, s: int) -> str:
    """The forward kernel's name for blocks of ``kb`` filters x ``b`` positions at stride s."""
    return f"conv_forward_s{s}" if (kb, b) == (KB, B) else f"conv_forward_k{kb}_b{b}_s{s}"


def weight_grad_name(kb: int, cb: int, s: int) -> str:
    """The weight gradient kernel's name for ``kb`` filters and ``cb`` channels a block."""
    return f"conv_weight_grad_{cb}_s{s}" if kb == KB else f"conv_weight_grad_k{kb}_{cb}_s{s}"


def wide_registers() -> bool:
    """Whether the kernels take the AVX-512 blocks (:func:`forward_block`; the weight gradient's
    32 filters): :data:`WIDE`, or where it is None whether numba compiles for a CPU with
    AVX-512 (LLVM's name for its features)."""
    global WIDE  # noqa: PLW0603 - measured once, as the tests may set it
    if WIDE is None:
        import llvmlite.binding as llvm  # noqa: PLC0415 - numba's, loaded with the kernels

        WIDE = "+avx512f" in llvm.get_host_cpu_features().flatten().split(",")
    return WIDE


def _forward_source(s: int, kb: int = KB, b: int = B) -> str:
    """y5[n, oh, o, kb, k] = bias[kb·KB + k] + Σ_(i, j, c) x[n, s·oh + i - pt, s·o + j - pl, c]
    · wp[kb, i, j, c, k] for the output rows t0:t1 of the batch (t = n·OH + oh), x zero outside
    its (H, W); x (N, H, W, C), wp (K/KB, kH, kW, C, KB), y5 (N, OH, OW, K/KB, KB), a view whose
    last axis is contiguous.  Positions go in blocks of B, the last block shifted left to end at
    OW (so OW >= B; a few sums computed twice).  Rows of the filter outside x are skipped; a
    block whose B columns are not all inside x reads through clamped columns and selects zero
    for those outside.  The block: ``kb`` filters x ``b`` positions (:data:`BLOCKS`), which KB
    and B stand for below."""
    KB, B = kb, b  # noqa: N806 - the block's sizes, as the docstring names them
    def body(pad: str, edge: bool) -> list[str]:
        out = []
        if edge:
            for b in range(B):
                out += [f"{pad}q{b} = col + {s * b}",
                        f"{pad}ok{b} = q{b} >= 0 and q{b} < w_n",
                        f"{pad}q{b} = min(max(q{b}, 0), w_n - 1)"]
        else:  # indices from 0 on a view: no negative-index handling in the loop
            out.append(f"{pad}xs = xr[col:]")
        out.append(f"{pad}for c in range(c_in):")
        out += [f"{pad}    x{b} = xr[q{b}, c] if ok{b} else zero" if edge
                else f"{pad}    x{b} = xs[{s * b}, c]" for b in range(B)]
        out += [f"{pad}    w{k} = wij[c, {k}]" for k in range(KB)]
        out += [f"{pad}    a{b}_{k} += x{b} * w{k}" for b in range(B) for k in range(KB)]
        return out

    lines = [f"def {forward_name(kb, b, s)}(x, wp, bias, y5, pt, pl, t0, t1):",
             "    nkb, kh, kw, c_in, _ = wp.shape",
             "    h_n, w_n = x.shape[1], x.shape[2]",
             "    oh_n, ow_n = y5.shape[1], y5.shape[2]",
             "    zero = x.dtype.type(0)",
             "    for t in range(t0, t1):  # output rows: row oh of image n is t = n·OH + oh",
             "        n, oh = t // oh_n, t % oh_n",
             "        for kb in range(nkb):",
             "            wb = wp[kb]",
             f"            for o0 in range(0, ow_n, {B}):",
             f"                o = min(o0, ow_n - {B})"]
    lines += [f"                a{b}_{k} = bias[kb * {KB} + {k}]"
              for b in range(B) for k in range(KB)]
    lines += ["                for i in range(kh):",
              f"                    r = {s} * oh + i - pt",
              "                    if r < 0 or r >= h_n:",
              "                        continue",
              "                    xr = x[n, r]",
              "                    for j in range(kw):",
              "                        wij = wb[i, j]",
              f"                        col = {s} * o + j - pl",
              f"                        if col >= 0 and col + {s * (B - 1)} < w_n:"]
    lines += body(" " * 28, False)
    lines.append("                        else:")
    lines += body(" " * 28, True)
    for b in range(B):
        lines.append(f"                yr = y5[n, oh, o + {b}, kb]")
        lines += [f"                yr[{k}] = a{b}_{k}" for k in range(KB)]
    return "\n".join(lines) + "\n"


def _weight_grad_source(cb: int, s: int, kb: int = KB) -> str:
    """dwp[kb, i, j, c, k] += Σ_(n, oh, ow) x[n, s·oh + i - pt, s·ow + j - pl, c] · dy5[n, oh,
    ow, kb, k] for images n0:n1, over the positions whose input is inside x (N, H, W, C), C a
    multiple of ``cb``; dy5 (N, OH, OW, K/KB, KB), dwp (K/KB, kH, kW, C, KB).  Sums for cb
    channels × KB filters stay in registers over an image's positions; ``kb``: KB filters a
    block, or WIDE_KB (KB below stands for it)."""
    KB = kb  # noqa: N806 - the block's filters, as the docstring names them
    lines = [f"def {weight_grad_name(kb, cb, s)}(x, dy5, dwp, pt, pl, n0, n1):",
             "    nkb, kh, kw, c_in, _ = dwp.shape",
             "    h_n, w_n = x.shape[1], x.shape[2]",
             "    oh_n, ow_n = dy5.shape[1], dy5.shape[2]",
             "    for n in range(n0, n1):",
             "        xn = x[n]",
             "        dyn = dy5[n]",
             "        for i in range(kh):",
             f"            r0 = max(0, -((i - pt) // {s}))  # the rows whose input is inside x",
             f"            r1 = min(oh_n, (h_n - 1 + pt - i) // {s} + 1)",
             "            for j in range(kw):",
             f"                lo = max(0, -((j - pl) // {s}))  # and the columns",
             f"                m = min(ow_n, (w_n - 1 + pl - j) // {s} + 1) - lo",
             "                for kb in range(nkb):",
             "                    dwij = dwp[kb, i, j]",
             f"                    for c0 in range(0, c_in, {cb}):"]
    lines += [f"                        a{c}_{k} = dwij[c0 + {c}, {k}]"
              for c in range(cb) for k in range(KB)]
    lines += ["                        for oh in range(r0, r1):",
              f"                            xs = xn[{s} * oh + i - pt, {s} * lo + j - pl:]",
              "                            dys = dyn[oh, lo:]  # (views from 0: no wrapping)",
              "                            for t in range(m):"]
    lines += [f"                                x{c} = xs[{s} * t, c0 + {c}]" for c in range(cb)]
    lines += [f"                                d{k} = dys[t, kb, {k}]" for k in range(KB)]
    lines += [f"                                a{c}_{k} += x{c} * d{k}"
              for c in range(cb) for k in range(KB)]
    lines += [f"                        dwij[c0 + {c}, {k}] = a{c}_{k}"
              for c in range(cb) for k in range(KB)]
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------------
# few filters (ops/direct_lanes.py): output positions along a row as the vector lanes

def _lanes_forward_source(m: int, p: int) -> str:
    """y[n, kb·m + f, oh, o + q] = bias[kb, f] + Σ_(c, i, j) x[n, c, oh + i, o + j + q] ·
    wp[kb, c, i, j, f] for the output rows t0:t1 of the batch (t = n·OH + oh), x (N, C, Hp, Wp)
    already zero-padded, wp (K/m, C, kH, kW, m), y (N, K, OH, OW), all channels-first.  Each
    block is p neighbouring positions of one output row × m filters: p·m sums; a turn of the
    innermost loop (a tap j) loads p inputs that lie side by side in x's row and m weights.
    The last block of a row is shifted left to end at OW (so OW >= p)."""
    lines = [f"def lanes_forward_m{m}_p{p}(x, wp, bias, y, t0, t1):",
             "    nkb, c_in, kh, kw = wp.shape[0], wp.shape[1], wp.shape[2], wp.shape[3]",
             "    oh_n, ow_n = y.shape[2], y.shape[3]",
             "    for t in range(t0, t1):",
             "        n, oh = t // oh_n, t % oh_n",
             "        for kb in range(nkb):",
             "            wb = wp[kb]",
             "            bb = bias[kb]",
             f"            for o0 in range(0, ow_n, {p}):",
             f"                o = min(o0, ow_n - {p})  # (o only starts views: no index < 0)"]
    lines += [f"                a{f}_{q} = bb[{f}]" for f in range(m) for q in range(p)]
    lines += ["                for c in range(c_in):",
              "                    for i in range(kh):",
              "                        xs = x[n, c, oh + i, o:]",
              "                        wci = wb[c, i]",
              "                        for j in range(kw):"]
    lines += [f"                            x{q} = xs[j + {q}]" for q in range(p)]
    lines += [f"                            w{f} = wci[j, {f}]" for f in range(m)]
    lines += [f"                            a{f}_{q} += x{q} * w{f}"
              for f in range(m) for q in range(p)]
    for f in range(m):
        lines.append(f"                yr = y[n, kb * {m} + {f}, oh, o:]")
        lines += [f"                yr[{q}] = a{f}_{q}" for q in range(p)]
    return "\n".join(lines) + "\n"


def _lanes_weight_grad_source(m: int, p: int) -> str:
    """acc[kb, c, i, j, f, q] += Σ_(n, oh, o) x[n, c, oh + i, o + q + j] · dy[n, kb·m + f, oh,
    o + q] over images n0:n1 and blocks of p positions o + q of each output row, x (N, C, Hp,
    Wp) already zero-padded, dy (N, K, OH, OW), acc (K/m, C, kH, kW, m, p): dW with its last
    axis (the lanes) still to be summed.  The last block of a row is shifted left to end at OW
    (so OW >= p), its lanes already counted multiplied by 0.  (Every index is a sum of loop
    counters from 0 and constants, the block start too: numba then checks none for wrapping
    around, and LLVM packs the p·m sums into vector registers.)"""
    lines = [f"def lanes_weight_grad_m{m}_p{p}(x, dy, acc, n0, n1):",
             "    nkb, c_in, kh, kw = acc.shape[0], acc.shape[1], acc.shape[2], acc.shape[3]",
             "    oh_n, ow_n = dy.shape[2], dy.shape[3]",
             f"    nb, skip = ow_n // {p}, {p} - ow_n % {p}  # blocks; lanes the last redoes",
             f"    last = max(ow_n - {p}, 0)",
             "    zero, one = x.dtype.type(0), x.dtype.type(1)"]
    lines += [f"    m{q} = one if {q} >= skip else zero" for q in range(p)]
    lines += ["    for n in range(n0, n1):",
              "        for kb in range(nkb):",
              "            for c in range(c_in):",
              "                for i in range(kh):",
              "                    for j in range(kw):"]
    lines += [f"                        a{f}_{q} = zero" for f in range(m) for q in range(p)]
    lines += ["                        for oh in range(oh_n):",
              "                            for ob in range(nb):",
              f"                                o = ob * {p}"]
    lines += [f"                                x{q} = x[n, c, oh + i, o + j + {q}]"
              for q in range(p)]
    lines += [f"                                a{f}_{q} += x{q} * dy[n, kb * {m} + {f}, oh, "
              f"o + {q}]" for f in range(m) for q in range(p)]
    lines.append(f"                            if skip < {p}:")
    lines += [f"                                x{q} = x[n, c, oh + i, last + j + {q}] * m{q}"
              for q in range(p)]
    lines += [f"                                a{f}_{q} += x{q} * dy[n, kb * {m} + {f}, oh, "
              f"last + {q}]" for f in range(m) for q in range(p)]
    lines += [f"                        acc[kb, c, i, j, {f}, {q}] += a{f}_{q}"
              for f in range(m) for q in range(p)]
    return "\n".join(lines) + "\n"


STRIDES = (1, 2)
LANES = (8, 16, 32)  # output positions per block of the few-filter kernels
LANE_FILTERS = 8  # at most this many filters per block there
NAMES = tuple(forward_name(kb, b, s) for kb, b in BLOCKS for s in STRIDES) + tuple(
    weight_grad_name(kb, cb, s) for kb in (KB, WIDE_KB) for cb in range(1, CB + 1)
    for s in STRIDES) + tuple(
    f"lanes_{kind}_m{m}_p{p}" for kind in ("forward", "weight_grad")
    for m in range(1, LANE_FILTERS + 1) for p in LANES)
_sources: dict[str, Any] = {}  # name -> the kernel as a Python function (made on first use)


def source_kernel(name: str) -> Any:
    """The kernel ``name`` (one of :data:`NAMES`) as a plain Python function, compiled from its
    text as if written in this file (numba's disk cache finds a kernel by file and name)."""
    fn = _sources.get(name)
    if fn is None:
        if name.startswith("lanes_"):  # lanes_{forward,weight_grad}_m{m}_p{p}
            m, p = (int(part[1:]) for part in name.split("_")[-2:])
            text = (_lanes_forward_source if "forward" in name else _lanes_weight_grad_source)(m, p)
        else:
            s = int(name.rsplit("_s", 1)[1])
            words = name.split("_")  # conv_forward[_k32_b2]_s1, conv_weight_grad[_k32]_4_s1
            kb, b = (next((int(w[1:]) for w in words if w[0] == c and w[1:].isdigit()), d)
                     for c, d in (("k", KB), ("b", B)))
            text = (_forward_source(s, kb, b) if name.startswith("conv_forward")
                    else _weight_grad_source(int(words[-2]), s, kb))
        namespace: dict[str, Any] = {"__name__": __name__}
        exec(compile(text, __file__, "exec"), namespace)  # noqa: S102 - our own text, above
        fn = _sources[name] = namespace[name]
    return fn


def channel_block(c: int) -> int:
    """The weight gradient's channels per block for C input channels: the largest of 4, 3, 2,
    1 that divides C."""
    return next(cb for cb in range(CB, 0, -1) if c % cb == 0)


_compiled: dict[tuple[str, str], Any] = {}  # (kernel, dtype) -> its compiled dispatcher
_compile_lock = threading.Lock()


@contextlib.contextmanager
def _slp() -> Iterator[None]:
    """numba's SLP vectorizer on while this block compiles (numba reads it at each compile)."""
    from numba.core import config  # noqa: PLC0415 - numba is optional and imported late

    before = config.SLP_VECTORIZE
    config.SLP_VECTORIZE = 1
    try:
        yield
    finally:
        config.SLP_VECTORIZE = before


def _signature(name: str, dtype: np.dtype) -> str:
    t = "float32" if dtype == np.float32 else "float64"
    a4, a5 = f"{t}[:, :, :, ::1]", f"{t}[:, :, :, :, ::1]"
    if name.startswith("lanes_forward"):
        return f"void({a4}, {a5}, {t}[:, ::1], {a4}, int64, int64)"
    if name.startswith("lanes_weight_grad"):
        return f"void({a4}, {a4}, {t}[:, :, :, :, :, ::1], int64, int64)"
    if name.startswith("conv_forward"):  # y5 any strides: dx's strided phases at stride 2
        return f"void({a4}, {a5}, {t}[::1], {t}[:, :, :, :, :], int64, int64, int64, int64)"
    return f"void({a4}, {a5}, {a5}, int64, int64, int64, int64)"


def kernel(name: str, dtype: Any) -> Any:
    """The compiled kernel ``name`` for ``dtype`` (float32 or float64): compiled, or loaded
    from numba's cache, on first use in the calling thread, so a worker thread never compiles
    (and a call with other array types fails rather than compiling there)."""
    key = (name, np.dtype(dtype).name)
    done = _compiled.get(key)
    if done is None:
        import numba  # noqa: PLC0415

        with _compile_lock, _slp():
            done = _compiled.get(key)
            if done is None:
                done = numba.njit(_signature(name, np.dtype(dtype)), cache=True, nogil=True,
                                  fastmath={"contract"}, boundscheck=False)(source_kernel(name))
                _compiled[key] = done
    return done
