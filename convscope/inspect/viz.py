"""Pictures of a network: filter grids, activation maps, training curves, a confusion matrix.

Every function returns a :class:`Picture`: the PNG bytes, and for every panel the arrays it drew
and where each tile lies in the image, so that what is shown can be checked against the numbers::

    pic = activation_maps(net, x, "car.png", classes=names)   # the lecture's car figure
    pic.panels[1].array        # the CONV layer's real output, (C, H, W)
    pic.panels[1].tiles[0]     # Tile(box=(left, top, right, bottom), zoom=2, step=1)

A tile shows one map pixel as a ``zoom`` × ``zoom`` block (every ``step``-th pixel of a large map),
its colour ``lut[round((a - vmin) / (vmax - vmin) · 255)]`` with ``lut`` the 256 colours of the
panel's matplotlib colormap; one colour scale per panel, written under it.  Tiles are placed
pixel-exactly (``Figure.figimage``), labels and bars are matplotlib's.

Needs matplotlib and Pillow (``pip install 'convscope[viz]'``); drawing uses the Agg canvas
directly and never touches pyplot's global state.
"""

from __future__ import annotations

import base64
import functools
import io
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from ..runtime import no_grad
from ..layers import Conv2D, Dropout, Flatten

__all__ = ["Tile", "Panel", "Picture", "filter_grid", "activation_maps", "training_curves",
           "confusion_matrix", "confusion_plot", "prediction_grid", "colormap_lut", "color_index",
           "layer_outputs"]

MISSING = "convscope's pictures need matplotlib and Pillow: pip install 'convscope[viz]'"
BACKGROUND = (255, 255, 255)
EMPTY = (235, 235, 235)  # cells of a vector grid that hold no number
TEXT = "#222222"


def _require() -> Any:
    """matplotlib's Figure and Agg canvas, or an ImportError saying how to install them."""
    try:
        import PIL.Image  # noqa: F401, PLC0415
        from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: PLC0415
        from matplotlib.figure import Figure  # noqa: PLC0415
    except ImportError as exc:
        raise ImportError(f"{MISSING} ({exc.name} is not installed)") from None
    return Figure, FigureCanvasAgg


# ---------------------------------------------------------------------------------------------
# pure array math: colours and tiles


@functools.lru_cache(maxsize=None)
def colormap_lut(name: str) -> np.ndarray:
    """The 256 colours of a matplotlib colormap as uint8 (256, 3)."""
    _require()
    import matplotlib  # noqa: PLC0415

    try:
        cmap = matplotlib.colormaps[name]
    except KeyError:
        raise ValueError(f"unknown colormap {name!r}; e.g. 'gray', 'viridis', 'RdBu_r'") from None
    lut = np.round(cmap(np.linspace(0.0, 1.0, 256))[:, :3] * 255).astype(np.uint8)
    lut.setflags(write=False)
    return lut


def color_index(a: np.ndarray, vmin: float, vmax: float) -> np.ndarray:
    """Colormap index 0..255 of each value: round((a - vmin) / (vmax - vmin) · 255), clipped.

    A flat scale (vmax == vmin) maps everything to 0.  NaN maps to -1 (drawn as empty).
    """
    a = np.asarray(a, dtype=np.float64)
    span = float(vmax) - float(vmin)
    t = (a - float(vmin)) / span if span > 0 else np.zeros_like(a)
    idx = np.clip(np.rint(t * 255), 0, 255)
    return np.where(np.isnan(a), -1, idx).astype(np.int16)


def _colorize(a: np.ndarray, vmin: float, vmax: float, lut: np.ndarray) -> np.ndarray:
    """(h, w) values -> (h, w, 3) uint8 through ``lut``; NaN -> the EMPTY grey."""
    idx = color_index(a, vmin, vmax)
    rgb = lut[np.clip(idx, 0, 255)]
    rgb[idx < 0] = EMPTY
    return rgb


def _enlarge(rgb: np.ndarray, zoom: int, step: int) -> np.ndarray:
    """Every ``step``-th pixel, each drawn as a ``zoom`` × ``zoom`` block."""
    rgb = rgb[::step, ::step]
    return np.repeat(np.repeat(rgb, zoom, axis=0), zoom, axis=1)


def _fit_tile(h: int, w: int, target: int, limit: int) -> tuple[int, int]:
    """(zoom, step) drawing an h × w map about ``target`` pixels across, never over ``limit``."""
    side = max(h, w)
    if side > limit:
        return 1, math.ceil(side / limit)
    return max(1, min(round(target / side), limit // side)), 1


def _rgb_image(image: np.ndarray) -> np.ndarray:
    """A display image as uint8 (H, W, 3): from (C, H, W), (H, W, C) or (H, W); floats are
    scaled from their min..max."""
    a = np.asarray(image)
    if a.ndim == 3 and a.shape[0] in (1, 3, 4) and a.shape[-1] not in (1, 3, 4):
        a = a.transpose(1, 2, 0)
    if a.ndim == 2:
        a = a[..., None]
    if a.ndim != 3 or a.shape[-1] not in (1, 3, 4):
        raise ValueError(f"image must be (H, W), (H, W, 1|3|4) or (1|3|4, H, W), got shape {a.shape}")
    a = a[..., :3]  # RGBA: the colours
    if a.dtype != np.uint8:
        lo, hi = float(np.nanmin(a)), float(np.nanmax(a))
        a = np.rint((a - lo) / (hi - lo or 1.0) * 255).astype(np.uint8)
    return np.repeat(a, 3, axis=2) if a.shape[-1] == 1 else a


# ---------------------------------------------------------------------------------------------
# what a picture returns


@dataclass(frozen=True)
class Tile:
    """Where one map is drawn: ``box`` = (left, top, right, bottom) pixels of the PNG (right and
    bottom exclusive); each drawn map pixel is a ``zoom`` × ``zoom`` block of every ``step``-th
    pixel."""

    box: tuple[int, int, int, int]
    zoom: int = 1
    step: int = 1


@dataclass
class Panel:
    """One part of a picture: a title, the array drawn, its tiles and its colour scale.

    ``channels[i]`` is the map (or filter) that ``tiles[i]`` shows; ``extra`` holds what is
    specific to the panel (bar order, predicted class, ...).
    """

    title: str
    array: np.ndarray
    tiles: list[Tile] = field(default_factory=list)
    channels: list[int] = field(default_factory=list)
    vmin: float = 0.0
    vmax: float = 1.0
    cmap: str = "gray"
    layer: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class Picture:
    """A drawn PNG (``png`` bytes, ``width`` × ``height`` pixels) and the panels it shows."""

    png: bytes
    width: int
    height: int
    panels: list[Panel]
    path: Path | None = None

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the PNG (atomically); returns the path."""
        from ..formats.model_file import atomic_write  # noqa: PLC0415

        self.path = atomic_write(path, self.png)
        return self.path

    def data_uri(self) -> str:
        """``data:image/png;base64,...``, to embed in HTML."""
        return "data:image/png;base64," + base64.b64encode(self.png).decode("ascii")

    def _repr_png_(self) -> bytes:  # Jupyter shows the picture
        return self.png


class _Canvas:
    """A figure laid out in pixels: exact tiles (figimage) under matplotlib text and axes."""

    def __init__(self, width: int, height: int, dpi: int = 100) -> None:
        Figure, Canvas = _require()
        self.width, self.height, self.dpi = int(width), int(height), dpi
        self.fig = Figure(figsize=(self.width / dpi, self.height / dpi), dpi=dpi,
                          facecolor=np.array(BACKGROUND) / 255)
        self.canvas = Canvas(self.fig)

    def text(self, x: float, y: float, s: str, size: float = 9, ha: str = "center",
             va: str = "top", **kw: Any) -> None:
        kw.setdefault("color", TEXT)
        self.fig.text(x / self.width, 1 - y / self.height, s, fontsize=size, ha=ha, va=va,
                      zorder=5, **kw)

    def paste(self, x: int, y: int, rgb: np.ndarray, zoom: int = 1, step: int = 1) -> Tile:
        """Draw uint8 (h, w, 3) with its top-left corner at pixel (x, y), unresampled."""
        h, w = rgb.shape[:2]
        self.fig.figimage(rgb, xo=int(x), yo=self.height - int(y) - h, origin="upper", zorder=1)
        return Tile((int(x), int(y), int(x) + w, int(y) + h), zoom, step)

    def axes(self, x: float, y: float, w: float, h: float) -> Any:
        return self.fig.add_axes((x / self.width, 1 - (y + h) / self.height, w / self.width,
                                  h / self.height))

    def colorbar(self, x: int, y: int, w: int, h: int, lut: np.ndarray, vmin: float, vmax: float,
                 label: str = "") -> None:
        """A horizontal gradient of the colormap from vmin to vmax, with its end values."""
        ramp = lut[np.clip(np.rint(np.linspace(0, 255, w)), 0, 255).astype(int)]
        self.paste(x, y, np.repeat(ramp[None], h, axis=0))
        self.text(x - 4, y + h / 2, _num(vmin), 8, ha="right", va="center")
        self.text(x + w + 4, y + h / 2, _num(vmax), 8, ha="left", va="center")
        if label:
            self.text(x + w / 2, y + h + 3, label, 8)

    def render(self, path: str | os.PathLike[str] | None, panels: list[Panel]) -> Picture:
        self.canvas.draw()
        rgb = np.asarray(self.canvas.buffer_rgba())[..., :3]
        from PIL import Image  # noqa: PLC0415

        buf = io.BytesIO()
        Image.fromarray(np.ascontiguousarray(rgb)).save(buf, format="PNG", optimize=True)
        self.fig.clear()
        pic = Picture(buf.getvalue(), self.width, self.height, panels)
        if path is not None:
            pic.save(path)
        return pic


def _num(v: float) -> str:
    return f"{v:.3g}" if v != 0 else "0"


# ---------------------------------------------------------------------------------------------
# filters


def _conv_layers(model: Any) -> list[tuple[int, Conv2D]]:
    layers = list(getattr(model, "layers", [model]))
    return [(i, layer) for i, layer in enumerate(layers) if isinstance(layer, Conv2D)]


def _pick_conv(model: Any, layer: int | None) -> tuple[int, Conv2D, bool]:
    """(index, conv layer, whether it sees the model's input directly)."""
    convs = _conv_layers(model)
    if not convs:
        raise ValueError(f"{type(model).__name__} has no Conv2D layer to draw filters of")
    if layer is None:
        i, conv = convs[0]
    else:
        found = [(i, c) for i, c in convs if i == layer]
        if not found:
            raise ValueError(f"layer {layer} is not a Conv2D layer; conv layers are at "
                             f"{[i for i, _ in convs]}")
        i, conv = found[0]
    if conv.in_channels is None:
        raise ValueError(f"layer {i} {conv!r} has no weights yet; build the model with an input shape")
    return i, conv, i == convs[0][0] and conv.groups == 1


def filter_grid(model: Any, layer: int | None = None, path: str | os.PathLike[str] | None = None,
                *, mode: str = "auto", max_filters: int = 64, max_channels: int = 16,
                cmap: str = "RdBu_r", tile: int = 40) -> Picture:
    """The filters of one conv layer as a grid of tiles.

    ``model`` is a Sequential (``layer`` its index; default the first conv) or a Conv2D.  Modes:

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
    zoom, step = _fit_tile(kh, kw, tile, 4 * tile)
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
    cv = _Canvas(width, height)
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
            rgb = _colorize(drawn[r, c], -m, m, lut)
            panel.channels.append(r * d_all + c)
        elif mode == "rgb":
            rgb = np.rint(np.clip(0.5 + drawn[n].transpose(1, 2, 0) / (2 * m), 0, 1) * 255
                          ).astype(np.uint8)
            panel.channels.append(n)
        else:
            rgb = _colorize(drawn[n], -m, m, lut)
            panel.channels.append(n)
        panel.tiles.append(cv.paste(left + c * (tw + gap), top + r * (th + gap),
                                    _enlarge(rgb, zoom, step), zoom, step))
        if mode == "channels" and c == 0 and (th >= 10 or r % 5 == 0):
            cv.text(left - 4, top + r * (th + gap) + th / 2, str(r), 7, ha="right", va="center")
    bar_y = top + grid_h + 16
    if mode == "rgb":
        grey = np.repeat(np.arange(256, dtype=np.uint8)[:, None], 3, axis=1)  # 0.5 + w / (2m)
        cv.colorbar(width // 2 - 80, bar_y, 160, 10, grey, -m, m,
                    f"weight scale shared by all tiles and channels (m = {_num(m)})")
    else:
        cv.colorbar(width // 2 - 80, bar_y, 160, 10, lut, -m, m,
                    f"weight scale shared by all tiles ({cmap}, 0 in the middle)")
    return cv.render(path, [panel])


# ---------------------------------------------------------------------------------------------
# activation maps: the lecture's car figure


def layer_outputs(model: Any, x: np.ndarray) -> list[np.ndarray]:
    """Every layer's output for one input, in evaluation mode: [out_0, out_1, ...], batch axis
    dropped.  ``x`` is (C, H, W) or (1, C, H, W), as the model takes it."""
    x = np.asarray(x)
    if x.ndim == 3:
        x = x[None]
    if x.ndim != 4 or x.shape[0] != 1:
        raise ValueError(f"expected one image (C, H, W) or (1, C, H, W), got shape {x.shape}")
    was = model.training
    model.eval()
    outs = []
    try:
        with no_grad():
            for layer in model.layers:
                x = layer.forward(x)
                outs.append(np.array(x[0]))
    finally:
        model.train(was)
    return outs


def _softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max())
    return e / e.sum()


def activation_maps(model: Any, x: np.ndarray, path: str | os.PathLike[str] | None = None, *,
                    image: np.ndarray | None = None, classes: Sequence[str] | None = None,
                    label: int | None = None, max_maps: int = 32, max_rows: int = 8,
                    cmap: str = "gray", tile: int = 48, top_k: int = 10) -> Picture:
    """The activation maps of every layer for one image, left to right (the lecture's car figure).

    ``x`` (C, H, W) is the input as the model takes it (normalised); ``image`` what to show for
    it (uint8 (H, W, 3), (H, W) or (C, H, W); default ``x`` scaled to 0..255).  Each layer with a
    (C, H, W) output gets a column of its first ``max_maps`` maps, one colour scale per column
    (its min to max, written under it); a hidden vector (F,) is drawn as a grid of cells; Flatten
    and Dropout (a reshape, and the identity when predicting) are skipped.  The last layer's
    output, if a vector, is drawn as labelled bars of its ``top_k`` scores with the predicted
    class (``label``, the true class, is named too).

    ``panels[0]`` is the input; ``panels[j].array`` the layer output drawn (``panels[j].layer``
    its index); the bar panel's ``extra`` has ``order``, ``predicted`` and ``probabilities``.
    """
    from .explain import explain  # noqa: PLC0415 - names and shapes of the steps

    x = np.asarray(x)
    outs = layer_outputs(model, x)
    in_shape = tuple(x.shape[-3:])
    steps = explain(model, in_shape).steps
    if max_maps < 1 or max_rows < 1 or top_k < 1:
        raise ValueError(f"max_maps, max_rows and top_k must be >= 1, got {max_maps}, {max_rows}, "
                         f"{top_k}")
    lut = colormap_lut(cmap)
    # ---- plan the columns: (title lines, kind, array, layer index)
    shown = _rgb_image(image if image is not None else x.reshape(in_shape)
                       if in_shape[0] in (1, 3) else x.reshape(in_shape)[0])
    plan: list[tuple[str, str, np.ndarray, int | None]] = [("input", "image", shown, None)]
    last = len(outs) - 1
    skipped = []
    for s, out in zip(steps, outs):
        if isinstance(model.layers[s.index], (Flatten, Dropout)):
            skipped.append(f"[{s.index}] {s.kind.lower()}")
            continue
        if s.index == last and out.ndim == 1:
            plan.append((f"[{s.index}] {s.kind}", "bars", out, s.index))
        elif out.ndim == 3:
            plan.append((f"[{s.index}] {s.kind}", "maps", out, s.index))
        else:
            plan.append((f"[{s.index}] {s.kind}", "vector", out.reshape(-1), s.index))
    # ---- sizes
    gap, col_gap, margin, head, foot = 2, 18, 14, 46, 34
    sizes = []
    for _, kind, arr, _ in plan:
        if kind == "image":
            zoom, step = _fit_tile(arr.shape[0], arr.shape[1], 2 * tile, 4 * tile)
            th, tw = math.ceil(arr.shape[0] / step) * zoom, math.ceil(arr.shape[1] / step) * zoom
            sizes.append((zoom, step, th, tw, 1, 1))
        elif kind == "maps":
            n = min(arr.shape[0], max_maps)
            zoom, step = _fit_tile(arr.shape[1], arr.shape[2], tile, 2 * tile)
            th, tw = math.ceil(arr.shape[1] / step) * zoom, math.ceil(arr.shape[2] / step) * zoom
            rows = min(n, max_rows)
            sizes.append((zoom, step, th, tw, rows, math.ceil(n / rows)))
        elif kind == "vector":
            cols_v = math.ceil(math.sqrt(arr.size))
            rows_v = math.ceil(arr.size / cols_v)
            zoom, step = _fit_tile(rows_v, cols_v, 2 * tile, 4 * tile)
            sizes.append((zoom, step, math.ceil(rows_v / step) * zoom,
                          math.ceil(cols_v / step) * zoom, 1, 1))
        else:
            k = min(top_k, arr.size)
            sizes.append((1, 1, 18 * k + 60, 300, 1, 1))
    widths = [max(cols * tw + (cols - 1) * gap, 64) for (_, _, _, tw, _, cols) in sizes]
    heights = [rows * th + (rows - 1) * gap for (_, _, th, _, rows, _) in sizes]
    width = margin * 2 + sum(widths) + col_gap * (len(plan) - 1)
    height = head + max(heights) + foot + margin + (16 if skipped else 0)
    cv = _Canvas(width, height)
    panels: list[Panel] = []
    x0 = margin
    for (title, kind, arr, idx), (zoom, step, th, tw, rows, cols), pw in zip(plan, sizes, widths):
        cx = x0 + pw / 2
        cv.text(cx, 8, title, 9.5, weight="bold")
        if kind == "image":
            sub = f"{in_shape[1]}×{in_shape[2]}×{in_shape[0]}"
            tile_ = cv.paste(int(cx - tw / 2), head, _enlarge(arr, zoom, step), zoom, step)
            panels.append(Panel("input", arr, [tile_], [0], 0, 255, "rgb", None,
                                {"model_input": x.reshape(in_shape)}))
        elif kind == "maps":
            s = steps[idx]
            sub = _vol(s.output_shape)
            n = min(arr.shape[0], max_maps)
            vmin, vmax = float(arr[:n].min()), float(arr[:n].max())
            panel = Panel(title, arr, vmin=vmin, vmax=vmax, cmap=cmap, layer=idx)
            left = int(cx - (cols * tw + (cols - 1) * gap) / 2)
            for ch in range(n):
                c, r = divmod(ch, rows)  # fill each column top to bottom, like the car figure
                rgb = _enlarge(_colorize(arr[ch], vmin, vmax, lut), zoom, step)
                panel.tiles.append(cv.paste(left + c * (tw + gap), head + r * (th + gap), rgb,
                                            zoom, step))
                panel.channels.append(ch)
            note = f"{_num(vmin)} … {_num(vmax)}"
            if n < arr.shape[0]:
                note += f"\nfirst {n} of {arr.shape[0]} maps"
            cv.text(cx, head + heights[len(panels)] + 5, note, 7.5)
            panels.append(panel)
        elif kind == "vector":
            s = steps[idx]
            sub = _vol(s.output_shape)
            cols_v = math.ceil(math.sqrt(arr.size))
            grid = np.full(math.ceil(arr.size / cols_v) * cols_v, np.nan)
            grid[:arr.size] = arr
            grid = grid.reshape(-1, cols_v)
            vmin, vmax = float(arr.min()), float(arr.max())
            tile_ = cv.paste(int(cx - tw / 2), head,
                             _enlarge(_colorize(grid, vmin, vmax, lut), zoom, step), zoom, step)
            panels.append(Panel(title, arr, [tile_], [0], vmin, vmax, cmap, idx,
                                {"grid": grid}))
            cv.text(cx, head + th + 5, f"{_num(vmin)} … {_num(vmax)}\n{arr.size} numbers, row by row",
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


def _vol(shape: Sequence[int]) -> str:
    from .explain import volume  # noqa: PLC0415

    return volume(shape)


def _bars(cv: _Canvas, x0: float, top: float, width: float, height: float, scores: np.ndarray,
          classes: Sequence[str] | None, label: int | None, top_k: int, title: str,
          idx: int | None) -> Panel:
    n = scores.size
    names = list(classes) if classes is not None else [f"class {c}" for c in range(n)]
    if len(names) != n:
        raise ValueError(f"classes has {len(names)} names but the last layer gives {n} scores")
    probs = _softmax(scores.astype(np.float64))
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


# ---------------------------------------------------------------------------------------------
# training curves and the confusion matrix


def _series(history: Sequence[Mapping[str, Any]], key: str) -> tuple[list[float], list[float]]:
    xs, ys = [], []
    for i, row in enumerate(history):
        v = row.get(key)
        if v is not None and np.isfinite(float(v)):
            xs.append(float(row.get("epoch", i + 1)))
            ys.append(float(v))
    return xs, ys


_CURVE_KEYS = {"loss": (("train_loss", "train"), ("val_loss", "validation")),
               "accuracy": (("train_acc", "train"), ("val_acc", "validation"))}


def training_curves(history: Sequence[Mapping[str, Any]], path: str | os.PathLike[str] | None = None,
                    *, title: str = "training") -> Picture:
    """Loss and accuracy per epoch, train and validation, side by side.

    ``history`` is one dict per epoch with ``epoch`` and any of ``train_loss``, ``val_loss``,
    ``train_acc``, ``val_acc`` (accuracies as fractions 0..1; ``loss``/``acc`` and
    ``val_accuracy``-style names are read too).  ``panels[k].extra['lines']`` holds the
    (label, epochs, values) drawn.
    """
    rows = [_normalize_history_row(r) for r in history]
    if not rows:
        raise ValueError("training_curves: the history is empty; train for at least one epoch")
    cv = _Canvas(900, 360)
    cv.text(450, 8, title, 11, weight="bold")
    panels = []
    for j, (what, keys) in enumerate(_CURVE_KEYS.items()):
        ax = cv.axes(70 + j * 450, 44, 350, 260)
        lines = []
        for key, name in keys:
            xs, ys = _series(rows, key)
            if not xs:
                continue
            if what == "accuracy":
                ys = [100 * v for v in ys]
            ax.plot(xs, ys, marker="o", markersize=3, linewidth=1.6, label=name,
                    color="#1f77b4" if name == "train" else "#e07b00")
            lines.append((name, xs, ys))
        ax.set_xlabel("epoch", fontsize=8.5)
        ax.set_ylabel("loss" if what == "loss" else "accuracy (%)", fontsize=8.5)
        ax.set_title(what, fontsize=10)
        ax.tick_params(labelsize=8)
        ax.grid(alpha=0.3)
        epochs = sorted({x for _, xs, _ in lines for x in xs})
        if epochs and len(epochs) <= 12 and all(float(e).is_integer() for e in epochs):
            ax.set_xticks(epochs)
        if lines:
            ax.legend(fontsize=8, frameon=False)
            for name, xs, ys in lines:  # the final values, written at the last point
                fmt = f"{ys[-1]:.1f}%" if what == "accuracy" else f"{ys[-1]:.4g}"
                ax.annotate(fmt, (xs[-1], ys[-1]), textcoords="offset points",
                            xytext=(0, 6 if name == "train" else -12), ha="right", fontsize=7.5,
                            color="#1f77b4" if name == "train" else "#e07b00")
        else:
            ax.text(0.5, 0.5, f"no {what} recorded", ha="center", va="center",
                    transform=ax.transAxes, fontsize=9)
        panels.append(Panel(what, np.asarray([ys for _, _, ys in lines], dtype=object)
                            if lines else np.zeros(0), cmap="lines", extra={"lines": lines}))
    return cv.render(path, panels)


def _normalize_history_row(row: Mapping[str, Any]) -> dict[str, Any]:
    aliases = {"loss": "train_loss", "acc": "train_acc", "accuracy": "train_acc",
               "train_accuracy": "train_acc", "val_accuracy": "val_acc",
               "valid_loss": "val_loss", "valid_acc": "val_acc"}
    if not isinstance(row, Mapping):
        raise TypeError(f"each history entry must be a dict of numbers, got {type(row).__name__}")
    return {aliases.get(k, k): v for k, v in row.items()}


def confusion_matrix(y_true: Any, y_pred: Any, num_classes: int) -> np.ndarray:
    """Counts (num_classes, num_classes): row = true class, column = predicted class."""
    t, p = np.asarray(y_true).reshape(-1), np.asarray(y_pred).reshape(-1)
    if t.shape != p.shape:
        raise ValueError(f"y_true has {t.size} labels but y_pred has {p.size}")
    for name, a in (("y_true", t), ("y_pred", p)):
        if a.size and (not np.issubdtype(a.dtype, np.integer) or a.min() < 0 or a.max() >= num_classes):
            raise ValueError(f"{name} must hold integer classes 0..{num_classes - 1}, got values "
                             f"{a.min()}..{a.max()} ({a.dtype})")
    return np.bincount(t * num_classes + p, minlength=num_classes ** 2).reshape(
        num_classes, num_classes).astype(np.int64)


def confusion_plot(cm: np.ndarray, classes: Sequence[str] | None = None,
                   path: str | os.PathLike[str] | None = None, *, cmap: str = "Blues",
                   title: str = "confusion matrix") -> Picture:
    """The confusion matrix as a grid of cells, row = true class, column = predicted class.

    A cell's colour is its share of the row (how often that true class got that prediction,
    0..1 on ``cmap``); its count is written in it.  ``panels[0].tiles[r * n + c]`` is cell (r, c)
    and ``panels[0].extra['share']`` the shares drawn.
    """
    cm = np.asarray(cm)
    if cm.ndim != 2 or cm.shape[0] != cm.shape[1] or cm.shape[0] < 1:
        raise ValueError(f"cm must be a square (n, n) matrix of counts, got shape {cm.shape}")
    n = cm.shape[0]
    names = [str(c) for c in classes] if classes is not None else [str(c) for c in range(n)]
    if len(names) != n:
        raise ValueError(f"classes has {len(names)} names but the matrix is {n}×{n}")
    rows = cm.sum(axis=1, keepdims=True)
    share = np.where(rows > 0, cm / np.maximum(rows, 1), 0.0)
    cell = int(np.clip(round(420 / n), 16, 56))
    label_w = min(150, 12 + 7 * max(len(s) for s in names))
    grid = n * cell
    width, height = label_w + grid + 110, 64 + grid + label_w + 20
    cv = _Canvas(width, height)
    lut = colormap_lut(cmap)
    acc = np.trace(cm) / max(cm.sum(), 1)
    cv.text(width / 2, 8, f"{title}: {int(np.trace(cm))} of {int(cm.sum())} right "
            f"({100 * acc:.1f}%)", 10.5, weight="bold")
    x0, y0 = label_w, 56
    panel = Panel(title, cm, vmin=0.0, vmax=1.0, cmap=cmap, extra={"share": share})
    size = max(5.5, min(9.0, cell / 4))
    for r in range(n):
        for c in range(n):
            rgb = _colorize(np.full((cell - 1, cell - 1), share[r, c]), 0.0, 1.0, lut)
            panel.tiles.append(cv.paste(x0 + c * cell, y0 + r * cell, rgb))
            panel.channels.append(r * n + c)
            if cell >= 20 or cm[r, c]:
                dark = color_index(share[r, c], 0, 1) > 150
                cv.text(x0 + c * cell + (cell - 1) / 2, y0 + r * cell + (cell - 1) / 2, str(cm[r, c]),
                        size, va="center", color="white" if dark else TEXT)
        cv.text(x0 - 6, y0 + r * cell + cell / 2, names[r], 8, ha="right", va="center")
    tilt = max(len(s) for s in names) > 2
    for c in range(n):
        cv.text(x0 + c * cell + cell / 2, y0 + grid + 6, names[c], 8, ha="right" if tilt else "center",
                va="top", rotation=60 if tilt else 0, rotation_mode="anchor")
    cv.text(x0 - label_w + 4, y0 - 14, "true ↓  predicted →", 8, ha="left")
    ramp = lut[np.clip(np.rint(np.linspace(255, 0, grid)), 0, 255).astype(int)]
    cv.paste(x0 + grid + 20, y0, np.repeat(ramp[:, None], 12, axis=1))
    cv.text(x0 + grid + 36, y0, "1", 7.5, ha="left", va="top")
    cv.text(x0 + grid + 36, y0 + grid, "0", 7.5, ha="left", va="bottom")
    cv.text(x0 + grid + 36, y0 + grid / 2, "share\nof row", 7.5, ha="left", va="center")
    return cv.render(path, [panel])


def prediction_grid(images: np.ndarray, y_pred: Sequence[int], classes: Sequence[str],
                    path: str | os.PathLike[str] | None = None, *,
                    y_true: Sequence[int] | None = None, probs: Sequence[float] | None = None,
                    cols: int = 8, tile: int = 64) -> Picture:
    """Images with their predicted class (and the true one: green when right, red when wrong).

    ``images`` uint8 (N, C, H, W) (C = 1 or 3) or (N, H, W, C).  ``panels[0].tiles[i]`` is image i.
    """
    images = np.asarray(images)
    if images.ndim != 4 or len(images) == 0:
        raise ValueError(f"images must be (N, C, H, W) with N >= 1, got shape {images.shape}")
    n = len(images)
    if len(y_pred) != n or (y_true is not None and len(y_true) != n):
        raise ValueError(f"{n} images need {n} predictions (and true labels), got {len(y_pred)}"
                         + ("" if y_true is None else f" and {len(y_true)}"))
    rgbs = [_rgb_image(im) for im in images]
    h, w = rgbs[0].shape[:2]
    zoom, step = _fit_tile(h, w, tile, 2 * tile)
    th, tw = math.ceil(h / step) * zoom, math.ceil(w / step) * zoom
    cols = max(1, min(cols, n))
    rows = math.ceil(n / cols)
    cw, ch = max(tw, 92) + 10, th + 40
    cv = _Canvas(cols * cw + 20, rows * ch + 20)
    panel = Panel("predictions", images, cmap="rgb", extra={"y_pred": list(map(int, y_pred))})
    for i, rgb in enumerate(rgbs):
        r, c = divmod(i, cols)
        x, y = 10 + c * cw + (cw - tw) // 2, 10 + r * ch
        panel.tiles.append(cv.paste(x, y, _enlarge(rgb, zoom, step), zoom, step))
        panel.channels.append(i)
        p = int(y_pred[i])
        text = classes[p] + (f" {probs[i]:.2f}" if probs is not None else "")
        color = TEXT
        if y_true is not None:
            right = int(y_true[i]) == p
            color = "#1a7f37" if right else "#c62828"
            if not right:
                text += f"\n(true: {classes[int(y_true[i])]})"
        cv.text(10 + c * cw + cw / 2, y + th + 3, text, 7.5, color=color)
    return cv.render(path, [panel])
