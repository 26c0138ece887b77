"""Pictures of a network: filter grids and activation maps (the lecture's car figure), plus the
training pictures of :mod:`convscope.inspect.charts`, re-exported here.

Every function returns a :class:`Picture`: the PNG bytes, and for every panel the arrays it drew
and where each tile lies in the image, so that what is shown can be checked against the numbers::

    pic = activation_maps(net, x, "car.png", classes=names)   # the lecture's car figure
    pic.panels[1].array        # the CONV layer's real output, (C, H, W)
    pic.panels[1].tiles[0]     # Tile(box=(left, top, right, bottom), zoom=2, step=1)

A tile shows one map pixel as a ``zoom`` × ``zoom`` block (every ``step``-th pixel of a large map),
its colour ``lut[round((a - vmin) / (vmax - vmin) · 255)]`` with ``lut`` the 256 colours of the
panel's matplotlib colormap; one colour scale per panel, written under it (see
:mod:`convscope.inspect.canvas`).  Layers are found by their traits (``shows_filters``,
``identity_at_inference``) and blocks walked through ``children()``: no layer class is named here.

Needs matplotlib and Pillow (``pip install 'convscope[viz]'``), imported on first drawing; drawing
uses the Agg canvas directly and never touches pyplot's global state.
"""

from __future__ import annotations

import math
import os
from typing import Any, Sequence

import numpy as np

from ..ops.loss import softmax
from ..words import volume
from .canvas import (Canvas, Panel, Picture, Tile, color_index, colorize, colormap_lut, enlarge,
                     fit_tile, num_text, rgb_image)
from .charts import confusion_matrix, confusion_plot, prediction_grid, training_curves
from .explain import explain
from .tree import filter_layers, layer_outputs, layers_of, position, record, same_numbers

__all__ = ["Tile", "Panel", "Picture", "filter_grid", "activation_maps", "training_curves",
           "confusion_matrix", "confusion_plot", "prediction_grid", "colormap_lut", "color_index",
           "layer_outputs", "layers_of", "filter_layers"]


# ---------------------------------------------------------------------------------------------
# filters


def _pick_conv(model: Any, layer: int | str | None) -> tuple[int | str, Any, bool]:
    """(position, conv layer, whether it sees the model's input directly)."""
    convs = filter_layers(model)
    if not convs:
        raise ValueError(f"{type(model).__name__} has no conv layer (no layer with filters) to "
                         "draw filters of")
    if layer is None:
        label, conv = convs[0]
    else:
        found = [(label, c) for label, c in convs if label == str(layer)]
        if not found:
            raise ValueError(f"layer {layer} is not a conv layer (no filters to draw); conv layers "
                             f"are at [{', '.join(label for label, _ in convs)}]")
        label, conv = found[0]
    if "weight" not in conv.params:
        raise ValueError(f"layer {label} {conv!r} has no weights yet; build the model with an "
                         "input shape")
    first = label == convs[0][0] and getattr(conv, "groups", 1) == 1
    return position(label), conv, first


def filter_grid(model: Any, layer: int | str | None = None, path: str | os.PathLike[str] | None = None,
                *, mode: str = "auto", max_filters: int = 64, max_channels: int = 16,
                cmap: str = "RdBu_r", tile: int = 40) -> Picture:
    """The filters of one conv layer as a grid of tiles.

    ``model`` is a Sequential (``layer`` its index, or a label such as '3.1' inside block 3;
    default the first layer with filters) or a Conv2D.  Modes:

    * ``'rgb'``: one colour tile per filter, pixel = 0.5 + w / (2·m) per channel (m = max |w| of
      the layer, so grey is 0); the default for a first layer that sees a 3-channel image;
    * ``'channels'``: one tile per filter (row) and input channel (column), colormap ``cmap``
      from -m to +m; the default for other layers with at most 1024 tiles;
    * ``'mean'``: one tile per filter, its mean over the input channels, same scale.

    Weights (K, D, kH, kW) are drawn for the first ``max_filters`` filters and ``max_channels``
    channels; the title says so when some are left out.  ``panels[0].array`` is the (K, D, kH, kW)
    block drawn ('mean': (K, kH, kW)).
    """
    i, conv, first = _pick_conv(model, layer)
    w = np.asarray(conv.params["weight"], dtype=np.float64)
    k_all, d_all, kh, kw = w.shape
    if mode == "auto":
        if d_all == 1:
            mode = "mean"  # one channel: the mean is the filter itself, drawn as a grid
        elif first and d_all == 3:
            mode = "rgb"
        else:
            mode = "channels" if min(k_all, max_filters) * min(d_all, max_channels) <= 1024 else "mean"
    if mode not in ("rgb", "channels", "mean"):
        raise ValueError(f"mode must be 'auto', 'rgb', 'channels' or 'mean', got {mode!r}")
    if mode == "rgb" and d_all != 3:
        raise ValueError(f"mode='rgb' needs filters of depth 3, layer {i} has depth {d_all}; "
                         "use 'channels' or 'mean'")
    for name, v in (("max_filters", max_filters), ("max_channels", max_channels), ("tile", tile)):
        if int(v) < 1:
            raise ValueError(f"{name} must be >= 1, got {v}")
    k_n, d_n = min(k_all, max_filters), min(d_all, max_channels)
    m = float(np.abs(w).max()) or 1.0
    zoom, step = fit_tile(kh, kw, tile, 4 * tile)
    th, tw = math.ceil(kh / step) * zoom, math.ceil(kw / step) * zoom
    gap = 2 if zoom > 1 else 1
    lut = colormap_lut(cmap)
    if mode == "channels":
        rows, cols, drawn = k_n, d_n, w[:k_n, :d_n]
    else:
        cols = min(k_n, max(1, math.ceil(math.sqrt(k_n * 1.5))))
        rows = math.ceil(k_n / cols)
        drawn = w[:k_n] if mode == "rgb" else w[:k_n].mean(axis=1)
    label_w = 34 if mode == "channels" else 0
    grid_w, grid_h = cols * tw + (cols - 1) * gap, rows * th + (rows - 1) * gap
    width = max(grid_w + label_w + 40, 380)
    head = 52 + (14 if mode == "channels" else 0)
    height = head + grid_h + 64
    cv = Canvas(width, height)
    left = label_w + (width - label_w - grid_w) // 2
    title = f"[{i}] CONV: {k_all} filters {kh}×{kw}×{d_all}"
    shown = []
    if k_n < k_all:
        shown.append(f"first {k_n} of {k_all} filters")
    if mode == "channels" and d_n < d_all:
        shown.append(f"first {d_n} of {d_all} input channels")
    how = {"rgb": "colour: RGB = 0.5 + w / (2·m), grey = 0",
           "channels": "one tile per filter (row) and input channel (column)",
           "mean": "one tile per filter" if d_all == 1 else
           "each filter averaged over its input channels"}[mode]
    cv.text(width / 2, 8, title, 11, weight="bold")
    cv.text(width / 2, 26, how + (f"; {', '.join(shown)}" if shown else ""), 8.5)
    panel = Panel(title, drawn, vmin=-m, vmax=m, cmap="rgb" if mode == "rgb" else cmap, layer=i,
                  extra={"mode": mode, "m": m})
    top = head
    frame = np.full((grid_h + 2 * gap, grid_w + 2 * gap, 3), 150, np.uint8)  # gaps show as grey
    cv.paste(left - gap, top - gap, frame)
    if mode == "channels":
        for c in range(cols):
            cv.text(left + c * (tw + gap) + tw / 2, top - 14, str(c), 7)
        cv.text(left - 4, top - 14, "in →", 7, ha="right")
    for n in range(rows * cols if mode == "channels" else k_n):
        r, c = divmod(n, cols)
        if mode == "channels":
            rgb = colorize(drawn[r, c], -m, m, lut)
            panel.channels.append(r * d_all + c)
        elif mode == "rgb":
            rgb = np.rint(np.clip(0.5 + drawn[n].transpose(1, 2, 0) / (2 * m), 0, 1) * 255
                          ).astype(np.uint8)
            panel.channels.append(n)
        else:
            rgb = colorize(drawn[n], -m, m, lut)
            panel.channels.append(n)
        panel.tiles.append(cv.paste(left + c * (tw + gap), top + r * (th + gap),
                                    enlarge(rgb, zoom, step), zoom, step))
        if mode == "channels" and c == 0 and (th >= 10 or r % 5 == 0):
            cv.text(left - 4, top + r * (th + gap) + th / 2, str(r), 7, ha="right", va="center")
    bar_y = top + grid_h + 16
    if mode == "rgb":
        grey = np.repeat(np.arange(256, dtype=np.uint8)[:, None], 3, axis=1)  # 0.5 + w / (2m)
        cv.colorbar(width // 2 - 80, bar_y, 160, 10, grey, -m, m,
                    f"weight scale shared by all tiles and channels (m = {num_text(m)})")
    else:
        cv.colorbar(width // 2 - 80, bar_y, 160, 10, lut, -m, m,
                    f"weight scale shared by all tiles ({cmap}, 0 in the middle)")
    return cv.render(path, [panel])


# ---------------------------------------------------------------------------------------------
# activation maps: the lecture's car figure


def activation_maps(model: Any, x: np.ndarray, path: str | os.PathLike[str] | None = None, *,
                    image: np.ndarray | None = None, classes: Sequence[str] | None = None,
                    label: int | None = None, max_maps: int = 32, max_rows: int = 8,
                    cmap: str = "gray", tile: int = 48, top_k: int = 10) -> Picture:
    """The activation maps of every layer for one image, left to right (the lecture's car figure).

    ``x`` (C, H, W) is the input as the model takes it (normalised); ``image`` what to show for
    it (uint8 (H, W, 3), (H, W) or (C, H, W); default ``x`` scaled to 0..255).  Each layer with a
    (C, H, W) output gets a column of its first ``max_maps`` maps, one colour scale per column
    (its min to max, written under it); a hidden vector (F,) is drawn as a grid of cells; a
    reshape (Flatten) and a layer that is the identity when predicting (Dropout) are skipped.
    The layers inside a block (a nested Sequential) get their own columns ('[3.1] RELU').  The last layer's
    output, if a vector, is drawn as labelled bars of its ``top_k`` scores with the predicted
    class (``label``, the true class, is named too).

    ``panels[0]`` is the input; ``panels[j].array`` the layer output drawn (``panels[j].layer``
    its index, or label '3.1' inside block 3); the bar panel's ``extra`` has ``order``,
    ``predicted`` and ``probabilities``.
    """
    x = np.asarray(x)
    seen = record(model, x)
    in_shape = tuple(x.shape[-3:])
    steps = [s for s in explain(model, in_shape).leaves() if s.label in seen]
    layers = dict(layers_of(model))
    if max_maps < 1 or max_rows < 1 or top_k < 1:
        raise ValueError(f"max_maps, max_rows and top_k must be >= 1, got {max_maps}, {max_rows}, "
                         f"{top_k}")
    lut = colormap_lut(cmap)
    # ---- plan the columns: (title lines, kind, array, layer index)
    shown = rgb_image(image if image is not None else x.reshape(in_shape)
                       if in_shape[0] in (1, 3) else x.reshape(in_shape)[0])
    plan: list[tuple[str, str, np.ndarray, Any]] = [("input", "image", shown, None)]
    last = steps[-1].label if steps else None
    skipped = []
    for s in steps:
        inp, out = seen[s.label]
        if layers[s.label].identity_at_inference or same_numbers(inp, out):
            skipped.append(f"[{s.label}] {s.kind.lower()}")
            continue
        title = f"[{s.label}] {s.kind}"
        if s.label == last and out.ndim == 1:
            plan.append((title, "bars", out, s))
        elif out.ndim == 3:
            plan.append((title, "maps", out, s))
        else:
            plan.append((title, "vector", out.reshape(-1), s))
    # ---- sizes
    gap, col_gap, margin, head, foot = 2, 18, 14, 46, 34
    sizes = []
    for _, kind, arr, _ in plan:
        if kind == "image":
            zoom, step = fit_tile(arr.shape[0], arr.shape[1], 2 * tile, 4 * tile)
            th, tw = math.ceil(arr.shape[0] / step) * zoom, math.ceil(arr.shape[1] / step) * zoom
            sizes.append((zoom, step, th, tw, 1, 1))
        elif kind == "maps":
            n = min(arr.shape[0], max_maps)
            zoom, step = fit_tile(arr.shape[1], arr.shape[2], tile, 2 * tile)
            th, tw = math.ceil(arr.shape[1] / step) * zoom, math.ceil(arr.shape[2] / step) * zoom
            rows = min(n, max_rows)
            sizes.append((zoom, step, th, tw, rows, math.ceil(n / rows)))
        elif kind == "vector":
            cols_v = math.ceil(math.sqrt(arr.size))
            rows_v = math.ceil(arr.size / cols_v)
            zoom, step = fit_tile(rows_v, cols_v, 2 * tile, 4 * tile)
            sizes.append((zoom, step, math.ceil(rows_v / step) * zoom,
                          math.ceil(cols_v / step) * zoom, 1, 1))
        else:
            k = min(top_k, arr.size)
            sizes.append((1, 1, 18 * k + 60, 300, 1, 1))
    widths = [max(cols * tw + (cols - 1) * gap, 64) for (_, _, _, tw, _, cols) in sizes]
    heights = [rows * th + (rows - 1) * gap for (_, _, th, _, rows, _) in sizes]
    width = margin * 2 + sum(widths) + col_gap * (len(plan) - 1)
    height = head + max(heights) + foot + margin + (16 if skipped else 0)
    cv = Canvas(width, height)
    panels: list[Panel] = []
    x0 = margin
    for (title, kind, arr, s), (zoom, step, th, tw, rows, cols), pw in zip(plan, sizes, widths):
        idx = None if s is None else position(s.label)
        cx = x0 + pw / 2
        cv.text(cx, 8, title, 9.5, weight="bold")
        if kind == "image":
            sub = f"{in_shape[1]}×{in_shape[2]}×{in_shape[0]}"
            tile_ = cv.paste(int(cx - tw / 2), head, enlarge(arr, zoom, step), zoom, step)
            panels.append(Panel("input", arr, [tile_], [0], 0, 255, "rgb", None,
                                {"model_input": x.reshape(in_shape)}))
        elif kind == "maps":
            sub = volume(s.output_shape)
            n = min(arr.shape[0], max_maps)
            vmin, vmax = float(arr[:n].min()), float(arr[:n].max())
            panel = Panel(title, arr, vmin=vmin, vmax=vmax, cmap=cmap, layer=idx)
            left = int(cx - (cols * tw + (cols - 1) * gap) / 2)
            for ch in range(n):
                c, r = divmod(ch, rows)  # fill each column top to bottom, like the car figure
                rgb = enlarge(colorize(arr[ch], vmin, vmax, lut), zoom, step)
                panel.tiles.append(cv.paste(left + c * (tw + gap), head + r * (th + gap), rgb,
                                            zoom, step))
                panel.channels.append(ch)
            note = f"{num_text(vmin)} … {num_text(vmax)}"
            if n < arr.shape[0]:
                note += f"\nfirst {n} of {arr.shape[0]} maps"
            cv.text(cx, head + heights[len(panels)] + 5, note, 7.5)
            panels.append(panel)
        elif kind == "vector":
            sub = volume(s.output_shape)
            cols_v = math.ceil(math.sqrt(arr.size))
            grid = np.full(math.ceil(arr.size / cols_v) * cols_v, np.nan)
            grid[:arr.size] = arr
            grid = grid.reshape(-1, cols_v)
            vmin, vmax = float(arr.min()), float(arr.max())
            tile_ = cv.paste(int(cx - tw / 2), head,
                             enlarge(colorize(grid, vmin, vmax, lut), zoom, step), zoom, step)
            panels.append(Panel(title, arr, [tile_], [0], vmin, vmax, cmap, idx,
                                {"grid": grid}))
            cv.text(cx, head + th + 5, f"{num_text(vmin)} … {num_text(vmax)}\n{arr.size} numbers, row by row",
                    7.5)
        else:
            sub = f"{arr.size} scores"
            panels.append(_bars(cv, x0, head, pw, th, arr, classes, label, top_k, title, idx))
        cv.text(cx, 24, sub, 8.5)
        x0 += pw + col_gap
    if skipped:
        cv.text(margin, height - margin - 2, "not drawn: " + ", ".join(skipped)
                + " (same numbers as the column before)", 7.5, ha="left", va="bottom")
    return cv.render(path, panels)


def _bars(cv: Canvas, x0: float, top: float, width: float, height: float, scores: np.ndarray,
          classes: Sequence[str] | None, label: int | None, top_k: int, title: str,
          idx: int | str | None) -> Panel:
    n = scores.size
    names = list(classes) if classes is not None else [f"class {c}" for c in range(n)]
    if len(names) != n:
        raise ValueError(f"classes has {len(names)} names but the last layer gives {n} scores")
    probs = softmax(scores.astype(np.float64).reshape(1, -1))[0]
    order = np.argsort(-scores, kind="stable")[:min(top_k, n)]
    pred = int(order[0])
    ax = cv.axes(x0 + 96, top + 26, width - 110, height - 60)
    ypos = np.arange(len(order))[::-1]
    colors = ["#e07b00" if c == pred else "#7a9cc6" for c in order]
    ax.barh(ypos, scores[order], color=colors, height=0.7)
    ax.set_yticks(ypos, [names[c] for c in order], fontsize=8)
    ax.axvline(0, color="#555555", linewidth=0.6)
    ax.tick_params(axis="x", labelsize=7)
    ax.set_xlabel("score (last layer's output)", fontsize=7.5)
    for spine in ("top", "right"):
        ax.spines[spine].set_visible(False)
    text = f"predicted: {names[pred]} (softmax {probs[pred]:.2f})"
    if label is not None:
        ok = "right" if int(label) == pred else "wrong"
        text += f"\ntrue: {names[int(label)]} ({ok})"
    cv.text(x0 + width / 2, top, text, 8.5, weight="bold")
    return Panel(title, scores, vmin=float(scores.min()), vmax=float(scores.max()), cmap="bars",
                 layer=idx, extra={"order": order.tolist(), "predicted": pred,
                                   "probabilities": probs, "classes": names})
