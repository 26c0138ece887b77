"""The F·F strided views that every sliding-window layer is made of.

Filter tap (i, j) of every window, over all output positions at once, is one strided slice of
the (padded) input: rows d·i, d·i + s, ..., columns d·j, d·j + s, ...  A convolution or pooling
is then F·F whole-array operations, never a loop over pixels or images.
"""

from __future__ import annotations

from typing import Any

from ..shapes import Pair

Array = Any


def window(i: int, j: int, stride: Pair, dilation: Pair, out_hw: Pair) -> tuple[slice, slice]:
    """Slices picking, for every output position, the input pixel under filter tap (i, j)."""
    h0, w0 = i * dilation[0], j * dilation[1]
    return (slice(h0, h0 + stride[0] * (out_hw[0] - 1) + 1, stride[0]),
            slice(w0, w0 + stride[1] * (out_hw[1] - 1) + 1, stride[1]))


def tap_views(src: Array, kernel: Pair, stride: Pair, dilation: Pair, out_hw: Pair) -> list[Array]:
    """The kH·kW strided views of src (N, C, Hp, Wp), each (N, C, OH, OW): tap (i, j) of every
    window, in the window's row-major order."""
    return [src[(slice(None), slice(None)) + window(i, j, stride, dilation, out_hw)]
            for i in range(kernel[0]) for j in range(kernel[1])]
