"""How each layer's output cells depend on its input: the window geometry and the receptive field.

A layer with a sliding window (conv, pooling) has ``kernel_size``, ``stride``, ``pads`` and
``dilation`` (the attributes every windowed convscope layer keeps).  Output row ``i`` of such a
layer reads input rows

    i·S − P_top  …  i·S − P_top + D·(F − 1)                               (inclusive)

rows outside ``0 … N−1`` being padding.  A layer that keeps the height and width and has no window
(ReLU, batch norm, dropout) maps each cell to itself ("same"); a container of layers ("table")
maps output row ``i`` to the input rows its children reach: a Sequential composes its children's
maps in order, any other container (Residual, Concat) runs its children as branches on the same
input and takes the union of their maps (an identity shortcut, ``shortcut`` None, is a branch
too); its map is kept as a table, one input range per output row and one per column.  Any other
layer (flatten, fc, global pooling) makes each output depend on its whole input ("all").  The receptive field of a
cell is that recurrence applied from its layer back to the image, clipped to each layer's input at
every step (padding depends on no pixel).  The page does the same arithmetic in JavaScript; the
browser tests check it against an independent Python recurrence.
"""

from __future__ import annotations

from typing import Any, Sequence

from ...layers.container import Sequential

Shape = tuple[int, ...]

__all__ = ["window_of", "dependency", "dependency_table", "receptive_field", "conv_of"]


def window_of(layer: Any) -> dict[str, list[Any]] | None:
    """``{"k": [kh, kw], "s": [sh, sw], "p": [[top, bottom], [left, right]], "d": [dh, dw]}`` of
    a windowed layer, else None (read from its attributes: no class check)."""
    k, s, pads = (getattr(layer, a, None) for a in ("kernel_size", "stride", "pads"))
    if k is None or s is None or pads is None:
        return None
    d = getattr(layer, "dilation", (1, 1))
    try:
        return {"k": [int(k[0]), int(k[1])], "s": [int(s[0]), int(s[1])],
                "p": [[int(pads[0][0]), int(pads[0][1])], [int(pads[1][0]), int(pads[1][1])]],
                "d": [int(d[0]), int(d[1])]}
    except (TypeError, IndexError, ValueError):
        return None


def _is_container(layer: Any) -> bool:
    return isinstance(layer, Sequential) or bool(layer.children())


def dependency(layer: Any, in_shape: Shape, out_shape: Shape) -> str:
    """"window", "same", "table" (a container) or "all": how an output cell of ``layer``
    depends on its input."""
    if len(in_shape) == 3 and len(out_shape) == 3:
        if window_of(layer) is not None:
            return "window"
        if _is_container(layer):
            return "table"
        if tuple(in_shape[1:]) == tuple(out_shape[1:]):
            return "same"
    return "all"


def _axis(layer: Any, in_shape: Shape, out_shape: Shape, axis: int) -> list[Any]:
    """Output index along ``axis`` (1: rows, 2: columns) -> inclusive input range or None."""
    n, m = int(in_shape[axis]), int(out_shape[axis])
    dep = dependency(layer, in_shape, out_shape)
    if dep == "table":
        return dependency_table(layer, in_shape)[axis - 1]
    if dep == "same":
        return [(i, i) for i in range(m)]
    if dep == "all":
        return [(0, n - 1)] * m
    win, a = window_of(layer), axis - 1
    k, st, d, pad = win["k"][a], win["s"][a], win["d"][a], win["p"][a][0]
    out = []
    for i in range(m):
        lo, hi = max(i * st - pad, 0), min(i * st - pad + d * (k - 1), n - 1)
        out.append((lo, hi) if lo <= hi else None)
    return out


def _through(inner: list[Any], outer: list[Any]) -> list[Any]:
    """``outer`` (output -> ranges of a middle volume) followed by ``inner`` (middle -> input)."""
    out = []
    for r in outer:
        hits = [] if r is None else [inner[j] for j in range(r[0], r[1] + 1) if inner[j]]
        out.append((min(h[0] for h in hits), max(h[1] for h in hits)) if hits else None)
    return out


def _union(maps: Sequence[list[Any]]) -> list[Any]:
    out = []
    for rs in zip(*maps):
        hits = [r for r in rs if r is not None]
        out.append((min(h[0] for h in hits), max(h[1] for h in hits)) if hits else None)
    return out


def dependency_table(layer: Any, in_shape: Shape) -> tuple[list[Any], list[Any]]:
    """(rows, columns) of a container with a volume in and out: for output row (column) ``i``
    the inclusive range of input rows (columns) it depends on, or None (see the module
    docstring)."""
    shape = tuple(int(s) for s in in_shape)
    ident = ([(i, i) for i in range(shape[1])], [(i, i) for i in range(shape[2])])
    if isinstance(layer, Sequential):
        maps = ident
        for _, child in layer.children():
            out = tuple(int(s) for s in child.output_shape(shape))
            if len(out) != 3:
                raise ValueError(f"dependency_table: {child!r} gives {out}, not a volume")
            maps = tuple(_through(maps[a], _axis(child, shape, out, a + 1)) for a in (0, 1))
            shape = out
        return maps
    branches = [(_axis(c, shape, o, 1), _axis(c, shape, o, 2))
                for c, o in ((c, tuple(c.output_shape(shape))) for _, c in layer.children())]
    if getattr(layer, "shortcut", False) is None:  # Residual's identity shortcut: x itself
        branches.append(ident)
    return _union([b[0] for b in branches]), _union([b[1] for b in branches])


def conv_of(layer: Any) -> dict[str, Any] | None:
    """What the sliding filter needs of a layer that computes w·x + b per window: its geometry,
    ``groups`` and padding mode; None for a layer without a 4-D ``weight`` and a window."""
    win = window_of(layer)
    w = getattr(layer, "params", {}).get("weight")
    if win is None or w is None or getattr(w, "ndim", 0) != 4:
        return None
    return {**win, "groups": int(getattr(layer, "groups", 1)),
            "padding_mode": str(getattr(layer, "padding_mode", "zeros"))}


def receptive_field(layers: Sequence[dict[str, Any]], layer: int, y: int, x: int
                    ) -> dict[str, int] | None:
    """Input pixels (inclusive ``top, left, bottom, right``) that output cell (y, x) of layer
    ``layer`` depends on; ``layers`` are the page's layer records (``dep``, ``window``,
    ``in_shape``).  None when the cell sees padding only."""
    y0 = y1 = int(y)
    x0 = x1 = int(x)
    for j in range(layer, -1, -1):
        rec = layers[j]
        shape = rec["in_shape"]
        if len(shape) != 3:
            continue  # a vector in the middle: 'all' below reaches the first volume
        h, w = shape[1], shape[2]
        if rec["dep"] == "all":
            y0, y1, x0, x1 = 0, h - 1, 0, w - 1
        elif rec["dep"] == "table":
            rows, cols = rec["table"]["rows"], rec["table"]["cols"]
            ys = [rows[i] for i in range(y0, y1 + 1) if rows[i]]
            xs = [cols[i] for i in range(x0, x1 + 1) if cols[i]]
            if not ys or not xs:
                return None
            y0, y1 = min(r[0] for r in ys), max(r[1] for r in ys)
            x0, x1 = min(r[0] for r in xs), max(r[1] for r in xs)
        elif rec["dep"] == "window":
            win = rec["window"]
            (kh, kw), (sh, sw), (dh, dw) = win["k"], win["s"], win["d"]
            pt, pl = win["p"][0][0], win["p"][1][0]
            y0, y1 = y0 * sh - pt, y1 * sh - pt + dh * (kh - 1)
            x0, x1 = x0 * sw - pl, x1 * sw - pl + dw * (kw - 1)
        y0, x0, y1, x1 = max(y0, 0), max(x0, 0), min(y1, h - 1), min(x1, w - 1)
        if y0 > y1 or x0 > x1:
            return None
    return {"top": y0, "left": x0, "bottom": y1, "right": x1}
