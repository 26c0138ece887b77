"""The lecture's sliding filter written as plain loops: slow, obvious, and the reference the fast
im2col path is tested against.  For teaching; never used in training."""

from __future__ import annotations

import numpy as np

from .functional import pad2d
from .shapes import Pads, Pair, conv_output_shape


def conv2d(x: np.ndarray, w: np.ndarray, b: np.ndarray | None = None, stride: Pair = (1, 1),
           pads: Pads = ((0, 0), (0, 0)), dilation: Pair = (1, 1), groups: int = 1,
           padding_mode: str = "zeros") -> np.ndarray:
    """x (N, C, H, W), w (K, C/G, kH, kW) -> (N, K, OH, OW), one dot product w·x + b per position."""
    n, c, h, wd = x.shape
    k, cg, kh, kw = w.shape
    oh, ow = conv_output_shape((h, wd), (kh, kw), stride, pads, dilation)
    xpad = pad2d(x, pads, padding_mode)
    y = np.zeros((n, k, oh, ow), dtype=x.dtype)
    per_group = k // groups
    for img in range(n):
        for f in range(k):  # each filter ...
            g = f // per_group  # ... sees only its group's input channels
            for i in range(oh):  # ... slides down
                for j in range(ow):  # ... and right
                    top, left = i * stride[0], j * stride[1]
                    patch = xpad[img, g * cg:(g + 1) * cg,
                                 top:top + dilation[0] * (kh - 1) + 1:dilation[0],
                                 left:left + dilation[1] * (kw - 1) + 1:dilation[1]]
                    y[img, f, i, j] = np.sum(patch * w[f]) + (0 if b is None else b[f])
    return y
