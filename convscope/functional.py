"""Pure array math of the layers, NCHW, no state: each forward returns what its backward needs.

Convolution is im2col plus one matrix multiply per group (CS231n / Deep Learning from Scratch):
the F·F·D numbers under every filter position become one column, so all positions and all filters
are a single GEMM.  im2col copies F·F strided views (never a loop over pixels or images); col2im
adds them back as F·F strided slice-adds.  The array module comes from the input (NumPy or CuPy).
"""

from __future__ import annotations

from typing import Any

from . import conv_gemm, workspace
from .runtime import xp_of
from .shapes import Pads, Pair

Array = Any
_NP_PAD_MODE = {"zeros": "constant", "reflect": "reflect", "replicate": "edge", "circular": "wrap"}
PADDING_MODES = tuple(_NP_PAD_MODE)


# ---------------------------------------------------------------------------------------------
# padding


def pad2d(x: Array, pads: Pads, mode: str = "zeros", value: float = 0.0) -> Array:
    """(N, C, H, W) -> (N, C, H + t + b, W + l + r), filled by ``mode`` (zeros/reflect/replicate/circular)."""
    if pads == ((0, 0), (0, 0)):
        return x
    xp = xp_of(x)
    width = ((0, 0), (0, 0), tuple(pads[0]), tuple(pads[1]))
    if mode == "zeros":
        return xp.pad(x, width, mode="constant", constant_values=value)
    return xp.pad(x, width, mode=_NP_PAD_MODE[mode])


def _fold_axis(g: Array, axis: int, before: int, after: int, n: int, mode: str) -> Array:
    """Gradient of padding one axis: the border copies add back onto the pixels they copied."""
    xp = xp_of(g)
    g = xp.moveaxis(g, axis, -1)
    out = g[..., before:before + n].copy()
    lo, hi = g[..., :before], g[..., before + n:]
    if mode == "circular":  # the left pad copies the last `before` pixels, the right the first
        out[..., n - before:] += lo
        out[..., :after] += hi
    elif mode == "replicate":  # every pad pixel copies the edge pixel
        out[..., 0] += lo.sum(-1)
        out[..., n - 1] += hi.sum(-1)
    elif mode == "reflect":  # pad pixel i mirrors x[before - i]; right pad j mirrors x[n - 2 - j]
        out[..., 1:before + 1] += lo[..., ::-1]
        out[..., n - 1 - after:n - 1] += hi[..., ::-1]
    return xp.moveaxis(out, -1, axis)


def unpad2d(g: Array, pads: Pads, hw: Pair, mode: str = "zeros") -> Array:
    """Backward of :func:`pad2d`: (N, C, Hp, Wp) gradient -> (N, C, H, W)."""
    (t, b), (l, r) = pads
    if mode == "zeros":
        return g[:, :, t:t + hw[0], l:l + hw[1]]
    g = _fold_axis(g, 2, t, b, hw[0], mode)
    return _fold_axis(g, 3, l, r, hw[1], mode)


# ---------------------------------------------------------------------------------------------
# windows: the F·F strided views that every sliding-window layer is made of


def window(i: int, j: int, stride: Pair, dilation: Pair, out_hw: Pair) -> tuple[slice, slice]:
    """Slices picking, for every output position, the input pixel under filter tap (i, j)."""
    h0, w0 = i * dilation[0], j * dilation[1]
    return (slice(h0, h0 + stride[0] * (out_hw[0] - 1) + 1, stride[0]),
            slice(w0, w0 + stride[1] * (out_hw[1] - 1) + 1, stride[1]))


def im2col(xpad: Array, kernel: Pair, stride: Pair, dilation: Pair, out_hw: Pair) -> Array:
    """(N, C, Hp, Wp) -> columns (C, kH, kW, N, OH, OW): one column per output position."""
    xp = xp_of(xpad)
    n, c = xpad.shape[:2]
    cols = xp.empty((c, kernel[0], kernel[1], n, out_hw[0], out_hw[1]), dtype=xpad.dtype)
    for i in range(kernel[0]):
        for j in range(kernel[1]):
            hs, ws = window(i, j, stride, dilation, out_hw)
            cols[:, i, j] = xpad[:, :, hs, ws].transpose(1, 0, 2, 3)
    return cols


def col2im(dcols: Array, padded_shape: tuple[int, ...], kernel: Pair, stride: Pair,
           dilation: Pair, out_hw: Pair) -> Array:
    """Backward of :func:`im2col`: columns (C, kH, kW, N, OH, OW) -> (N, C, Hp, Wp), overlaps summed."""
    xp = xp_of(dcols)
    dx = xp.zeros(padded_shape, dtype=dcols.dtype)
    for i in range(kernel[0]):
        for j in range(kernel[1]):
            hs, ws = window(i, j, stride, dilation, out_hw)
            dx[:, :, hs, ws] += dcols[:, i, j].transpose(1, 0, 2, 3)
    return dx


# ---------------------------------------------------------------------------------------------
# convolution


def conv2d_forward(x: Array, w: Array, b: Array | None, stride: Pair, pads: Pads, dilation: Pair,
                   groups: int, out_hw: Pair, padding_mode: str = "zeros") -> tuple[Array, tuple]:
    """y[n, k] = sum over (c, i, j) of w[k, c, i, j] · xpad[n, c, s·oh + d·i, s·ow + d·j] + b[k].

    x (N, C, H, W), w (K, C/G, kH, kW), b (K,) or None -> y (N, K, OH, OW), a view of
    channels-last memory.  The fast path: chunked im2col into a reused buffer, one GEMM per
    chunk (:mod:`convscope.conv_gemm`).
    """
    return conv_gemm.conv_forward(x, w, b, stride, pads, dilation, groups, out_hw, padding_mode)


def conv2d_backward(dy: Array, w: Array, cache: tuple, need_bias: bool = True,
                    need_dx: bool = True) -> tuple[Array | None, Array, Array | None]:
    """Gradients (dx, dw, db) of :func:`conv2d_forward` for the upstream gradient dy (N, K, OH, OW);
    dx is None when ``need_dx`` is False."""
    return conv_gemm.conv_backward(dy, w, cache, need_bias, need_dx)


def conv2d_forward_simple(x: Array, w: Array, b: Array | None, stride: Pair, pads: Pads,
                          dilation: Pair, groups: int, out_hw: Pair, padding_mode: str = "zeros"
                          ) -> tuple[Array, tuple]:
    """The textbook version of :func:`conv2d_forward`: pad, im2col (C·kH·kW, N·OH·OW), one
    batched GEMM (G, K/G, C/G·kH·kW) @ cols.  Slower, kept as a readable reference.

    x (N, C, H, W), w (K, C/G, kH, kW), b (K,) or None -> y (N, K, OH, OW).
    """
    xp = xp_of(x)
    n = x.shape[0]
    k, cg, kh, kw = w.shape
    xpad = pad2d(x, pads, padding_mode)
    cols = im2col(xpad, (kh, kw), stride, dilation, out_hw)
    w_mat = w.reshape(groups, k // groups, cg * kh * kw)
    y = xp.matmul(w_mat, cols.reshape(groups, cg * kh * kw, -1))  # (G, K/G, N·OH·OW)
    y = y.reshape(k, n, out_hw[0], out_hw[1]).transpose(1, 0, 2, 3)
    y = xp.ascontiguousarray(y)
    if b is not None:
        y += b.reshape(1, k, 1, 1)
    return y, (cols, w_mat, x.shape, xpad.shape, pads, stride, dilation, groups, out_hw, padding_mode)


def conv2d_backward_simple(dy: Array, w: Array, cache: tuple, need_bias: bool = True
                           ) -> tuple[Array, Array, Array | None]:
    """Gradients (dx, dw, db) of :func:`conv2d_forward_simple` for dy (N, K, OH, OW)."""
    xp = xp_of(dy)
    cols, w_mat, x_shape, xpad_shape, pads, stride, dilation, groups, out_hw, mode = cache
    k = dy.shape[1]
    dy_mat = xp.ascontiguousarray(dy.transpose(1, 0, 2, 3)).reshape(groups, k // groups, -1)
    cols_mat = cols.reshape(groups, -1, dy_mat.shape[-1])
    dw = xp.matmul(dy_mat, cols_mat.transpose(0, 2, 1)).reshape(w.shape)
    db = dy.sum(axis=(0, 2, 3)) if need_bias else None
    dcols = xp.matmul(w_mat.transpose(0, 2, 1), dy_mat).reshape(cols.shape)
    dxpad = col2im(dcols, xpad_shape, w.shape[2:], stride, dilation, out_hw)
    return unpad2d(dxpad, pads, x_shape[2:], mode), dw, db


# ---------------------------------------------------------------------------------------------
# pooling


def _pool_pads(hw: Pair, kernel: Pair, stride: Pair, pads: Pads, dilation: Pair, out_hw: Pair) -> Pads:
    """Padding plus what a ceil_mode window reaches past the padded input (filled, never counted)."""
    extra = [max(0, (o - 1) * s + d * (k - 1) + 1 - (n + p[0] + p[1]))
             for n, k, s, p, d, o in zip(hw, kernel, stride, pads, dilation, out_hw)]
    return (pads[0][0], pads[0][1] + extra[0]), (pads[1][0], pads[1][1] + extra[1])


def _channels_last(x: Array) -> bool:
    """Whether x (N, C, H, W) keeps its channels innermost in memory."""
    return x.shape[1] > 1 and conv_gemm._is_channels_last(x)


def _empty(shape: tuple[int, ...], xp: Any, dtype: Any, channels_last: bool) -> Array:
    """An uninitialised (N, C, H, W) array, channels-last in memory or not, recycled when a
    free one of that shape exists (:func:`convscope.workspace.empty`)."""
    return workspace.empty(shape, dtype, xp, channels_last)


def _in_layout(a: Array, channels_last: bool) -> Array:
    """a (N, C, H, W) itself if its memory is already in that layout, else a copy that is."""
    if a.shape[1] == 1 or _channels_last(a) == channels_last and (
            channels_last or a.flags.c_contiguous):
        return a
    out = _empty(a.shape, xp_of(a), a.dtype, channels_last)
    out[...] = a
    return out


def _pad_keep_layout(x: Array, pads: Pads, value: float) -> Array:
    """Constant padding like :func:`pad2d`, keeping x's memory layout (channels-last stays so)."""
    if pads == ((0, 0), (0, 0)):
        return x
    (t, b), (l, r) = pads
    n, c, h, w = x.shape
    out = _empty((n, c, h + t + b, w + l + r), xp_of(x), x.dtype, _channels_last(x))
    out[...] = value
    out[:, :, t:t + h, l:l + w] = x
    return out


def _taps(src: Array, kernel: Pair, stride: Pair, dilation: Pair, out_hw: Pair) -> list[Array]:
    """The kH·kW strided views of src (N, C, Hp, Wp), each (N, C, OH, OW): tap (i, j) of every
    window, in the window's row-major order."""
    return [src[(slice(None), slice(None)) + window(i, j, stride, dilation, out_hw)]
            for i in range(kernel[0]) for j in range(kernel[1])]


def _first_max_masks(taps: list[Array], y: Array) -> list[Array]:
    """One boolean mask per tap, True where that tap is the window's first maximum (PyTorch's
    rule); a window holding NaN (y is NaN there) picks its last NaN, as PyTorch's CPU kernel."""
    xp = xp_of(y)
    masks: list[Array] = []
    taken = None
    cl = _channels_last(y)
    for tap in taps:
        m = xp.equal(tap, y, out=_empty(y.shape, xp, bool, cl))
        if taken is None:
            taken = _empty(y.shape, xp, bool, cl)
            taken[...] = m
        else:
            xp.greater(m, taken, out=m)  # m and not taken
            xp.logical_or(taken, m, out=taken)
        masks.append(m)
    if not taken.all():  # only NaN windows match no tap
        left = ~taken
        for t in reversed(range(len(taps))):
            hit = xp.isnan(taps[t]) & left
            masks[t] |= hit
            left &= ~hit
    return masks


def _spread(parts: list[Array], like: Array, channels_last: bool, padded_shape: tuple[int, ...],
            full: Pads, kernel: Pair, stride: Pair, dilation: Pair, out_hw: Pair) -> Array:
    """Backward of :func:`_taps`: tap t's gradient ``parts[t](out)`` (a function writing it into
    ``out``) goes back to its strided view of the padded input; returns the unpadded (N, C, H, W),
    of ``like``'s dtype, channels-last in memory if asked (as the forward input was).

    Windows that do not overlap are written directly (no zero fill when they tile the input);
    overlapping ones are added."""
    xp = xp_of(like)
    dsrc = _empty(padded_shape, xp, like.dtype, channels_last)
    views = _taps(dsrc, kernel, stride, dilation, out_hw)
    spans = [d * (k - 1) + 1 for k, d in zip(kernel, dilation)]
    disjoint = all(s >= e for s, e in zip(stride, spans))
    tiled = disjoint and all(d == 1 and s == k and o * s == n for s, k, d, o, n
                             in zip(stride, kernel, dilation, out_hw, padded_shape[2:]))
    if not tiled:
        dsrc[...] = 0
    tmp = None if disjoint else xp.empty(views[0].shape, dtype=like.dtype)
    for view, part in zip(views, parts):
        if disjoint:
            part(view)
        else:
            part(tmp)
            view += tmp
    if full == ((0, 0), (0, 0)):
        return dsrc
    (t, b), (l, r) = full
    return dsrc[:, :, t:padded_shape[2] - b, l:padded_shape[3] - r]


def maxpool2d_forward(x: Array, kernel: Pair, stride: Pair, pads: Pads, dilation: Pair,
                      out_hw: Pair, keep: bool = True) -> tuple[Array, tuple | None]:
    """y[n, c, oh, ow] = max of the kH x kW window at (s·oh, s·ow); padding is -inf (never wins).

    x (N, C, H, W) -> y (N, C, OH, OW) in x's memory layout: a running np.maximum over the kH·kW
    strided views (no stacked copy).  With ``keep``, the cache holds one boolean mask per tap
    marking each window's first maximum (1 byte per output per tap).
    """
    xp = xp_of(x)
    full = _pool_pads(x.shape[2:], kernel, stride, pads, dilation, out_hw)
    src = _pad_keep_layout(x, full, -xp.inf)
    taps = _taps(src, kernel, stride, dilation, out_hw)
    y = _empty(x.shape[:2] + tuple(out_hw), xp, x.dtype, _channels_last(x))
    if len(taps) == 1:
        y[...] = taps[0]
    else:
        xp.maximum(taps[0], taps[1], out=y)
        for tap in taps[2:]:
            xp.maximum(y, tap, out=y)
    if not keep:
        return y, None
    return y, (_first_max_masks(taps, y), _channels_last(x), src.shape, full, kernel, stride,
               dilation, out_hw)


def maxpool2d_backward(dy: Array, cache: tuple) -> Array:
    """The gradient flows to the one input that won each window: dx = sum over taps of
    mask_t · dy, placed at tap t's positions."""
    xp = xp_of(dy)
    masks, channels_last, padded_shape, full, kernel, stride, dilation, out_hw = cache
    dy = _in_layout(dy, channels_last)  # one copy beats kH·kW multiplies across layouts
    parts = [lambda out, m=m: xp.multiply(dy, m, out=out) for m in masks]
    return _spread(parts, dy, channels_last, padded_shape, full, kernel, stride, dilation, out_hw)


def avgpool_divisor(hw: Pair, kernel: Pair, stride: Pair, pads: Pads, out_hw: Pair,
                    count_include_pad: bool, xp: Any, dtype: Any) -> Array:
    """Window sizes (OH, OW) to divide by: padding counts (PyTorch's default) unless told not to;
    the part of a ceil_mode window past the padding never counts."""
    sizes = []
    for n, k, s, p, o in zip(hw, kernel, stride, pads, out_hw):
        start = xp.arange(o) * s - p[0]
        end = xp.minimum(start + k, n + p[1])
        if not count_include_pad:
            start, end = xp.maximum(start, 0), xp.minimum(end, n)
        sizes.append((end - start).astype(dtype))
    return sizes[0][:, None] * sizes[1][None, :]


def avgpool2d_forward(x: Array, kernel: Pair, stride: Pair, pads: Pads, out_hw: Pair,
                      count_include_pad: bool = True) -> tuple[Array, tuple]:
    """y[n, c, oh, ow] = sum of the window / its size: x (N, C, H, W) -> y (N, C, OH, OW)."""
    xp = xp_of(x)
    one = (1, 1)
    full = _pool_pads(x.shape[2:], kernel, stride, pads, one, out_hw)
    src = _pad_keep_layout(x, full, 0.0)
    taps = _taps(src, kernel, stride, one, out_hw)
    y = taps[0] + taps[1] if len(taps) > 1 else taps[0].copy(order="K")
    for tap in taps[2:]:
        y += tap
    div = avgpool_divisor(x.shape[2:], kernel, stride, pads, out_hw, count_include_pad, xp, x.dtype)
    y /= div
    return y, (div, _channels_last(x), src.shape, full, kernel, stride, out_hw)


def avgpool2d_backward(dy: Array, cache: tuple) -> Array:
    """Each input in a window gets dy / window size."""
    xp = xp_of(dy)
    div, channels_last, padded_shape, full, kernel, stride, out_hw = cache
    g = _in_layout(dy, channels_last) / div
    parts = [lambda out: xp.copyto(out, g)] * (kernel[0] * kernel[1])
    return _spread(parts, dy, channels_last, padded_shape, full, kernel, stride, (1, 1), out_hw)


# ---------------------------------------------------------------------------------------------
# batch norm, over every axis but the channel axis 1


def _like(x: Array, dtype: Any = None) -> Array:
    """An uninitialised array shaped as x, in x's memory layout (4-D channels-last stays so),
    recycled when a free one exists."""
    cl = x.ndim == 4 and _channels_last(x)
    return workspace.empty(x.shape, x.dtype if dtype is None else dtype, xp_of(x), cl)


def batchnorm_stats(x: Array) -> tuple[Array, Array]:
    """Per-channel mean and biased variance of x (N, C, ...) over every axis but 1 (C values
    each); the variance as the mean of (x - mean)², on a recycled buffer."""
    xp = xp_of(x)
    axes = (0,) + tuple(range(2, x.ndim))
    mean = x.mean(axis=axes)
    d = xp.subtract(x, mean.reshape((1, -1) + (1,) * (x.ndim - 2)), out=_like(x))
    xp.multiply(d, d, out=d)
    return mean, d.mean(axis=axes)


def batchnorm_forward(x: Array, mean: Array, var: Array, gamma: Array | None, beta: Array | None,
                      eps: float) -> tuple[Array, tuple]:
    """y = (x - mean) / sqrt(var + eps) · gamma + beta, statistics per channel (axis 1).

    x (N, C, ...) -> y of the same shape and memory layout; four passes, no temporaries.
    """
    xp = xp_of(x)
    shape = (1, -1) + (1,) * (x.ndim - 2)
    inv_std = 1.0 / xp.sqrt(var + eps)
    xhat = xp.subtract(x, mean.reshape(shape), out=_like(x))
    xhat *= inv_std.reshape(shape)
    if gamma is None:
        return xhat, (xhat, inv_std, gamma)
    y = xp.multiply(xhat, gamma.reshape(shape), out=_like(x))
    y += beta.reshape(shape)
    return y, (xhat, inv_std, gamma)


def batchnorm_backward(dy: Array, cache: tuple, batch_stats: bool) -> tuple[Array, Array, Array]:
    """(dx, dgamma, dbeta).  With batch statistics the mean and variance depend on x too:
    dx = gamma · inv_std · (dy - mean(dy) - xhat · mean(dy · xhat)), means over the M values
    of each channel (the same as inv_std / M · (M·dxhat - sum(dxhat) - xhat·sum(dxhat·xhat))
    with dxhat = gamma · dy)."""
    xp = xp_of(dy)
    xhat, inv_std, gamma = cache
    axes = (0,) + tuple(range(2, dy.ndim))
    shape = (1, -1) + (1,) * (dy.ndim - 2)
    dbeta = dy.sum(axis=axes)
    dx = xp.multiply(dy, xhat, out=_like(xhat))
    dgamma = dx.sum(axis=axes)
    scale = inv_std if gamma is None else gamma * inv_std
    if not batch_stats:
        return xp.multiply(dy, scale.reshape(shape), out=dx), dgamma, dbeta
    m = dy.size // dy.shape[1]
    xp.multiply(xhat, (dgamma / m).reshape(shape), out=dx)
    xp.subtract(dy, dx, out=dx)
    dx -= (dbeta / m).reshape(shape)
    dx *= scale.reshape(shape)
    return dx, dgamma, dbeta


# ---------------------------------------------------------------------------------------------
# losses


def log_softmax(z: Array) -> Array:
    """log softmax over axis 1, stable: shift by the row maximum first."""
    xp = xp_of(z)
    shifted = z - z.max(axis=1, keepdims=True)
    return shifted - xp.log(xp.exp(shifted).sum(axis=1, keepdims=True))


def cross_entropy(logits: Array, labels: Array, label_smoothing: float = 0.0) -> tuple[Array, Array]:
    """Mean softmax cross-entropy on integer labels, and its gradient wrt the logits.

    With smoothing e the target is (1 - e)·onehot + e/K:  loss = (1 - e)·nll + e·mean_k(-log p_k).
    Gradient: (softmax(z) - target) / N.
    """
    xp = xp_of(logits)
    n, k = logits.shape
    logp = log_softmax(logits)
    rows = xp.arange(n)
    nll = -logp[rows, labels]
    loss = ((1 - label_smoothing) * nll - label_smoothing * logp.mean(axis=1)).mean()
    grad = xp.exp(logp)
    grad -= label_smoothing / k
    grad[rows, labels] -= 1 - label_smoothing
    grad /= n
    return loss.astype(logits.dtype), grad
