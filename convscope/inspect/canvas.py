"""The drawing primitives of convscope's pictures: colours, tiles, and a pixel-exact canvas.

A tile shows one map pixel as a ``zoom`` × ``zoom`` block (every ``step``-th pixel of a large map),
its colour ``lut[round((a - vmin) / (vmax - vmin) · 255)]`` with ``lut`` the 256 colours of the
panel's matplotlib colormap.  Tiles are placed pixel-exactly (``Figure.figimage``), labels and
bars are matplotlib's.  The array math (``color_index``, ``colorize``, ``enlarge``, ``fit_tile``)
needs no matplotlib; :class:`Canvas` and ``colormap_lut`` import it on use (``require``), so
importing this module imports no matplotlib.
"""

from __future__ import annotations

import base64
import functools
import io
import math
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..formats.files import atomic_write

__all__ = ["MISSING", "BACKGROUND", "EMPTY", "TEXT", "require", "colormap_lut", "color_index",
           "colorize", "enlarge", "fit_tile", "rgb_image", "Tile", "Panel", "Picture", "Canvas",
           "num_text"]

MISSING = "convscope's pictures need matplotlib and Pillow: pip install 'convscope[viz]'"
BACKGROUND = (255, 255, 255)
EMPTY = (235, 235, 235)  # cells of a vector grid that hold no number
TEXT = "#222222"


def require() -> Any:
    """matplotlib's Figure and Agg canvas, or an ImportError saying how to install them."""
    try:
        import PIL.Image  # noqa: F401, PLC0415
        from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: PLC0415
        from matplotlib.figure import Figure  # noqa: PLC0415
    except ImportError as exc:
        raise ImportError(f"{MISSING} ({exc.name} is not installed)") from None
    except BaseException:  # Ctrl-C mid-import: matplotlib's modules that did load stay in
        for name in [m for m in sys.modules if m == "matplotlib" or m.startswith("matplotlib.")]:
            del sys.modules[name]  # sys.modules half set up; the next import would fail on them
        raise
    return Figure, FigureCanvasAgg


# ---------------------------------------------------------------------------------------------
# pure array math: colours and tiles


@functools.lru_cache(maxsize=None)
def colormap_lut(name: str) -> np.ndarray:
    """The 256 colours of a matplotlib colormap as uint8 (256, 3)."""
    require()
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


def colorize(a: np.ndarray, vmin: float, vmax: float, lut: np.ndarray) -> np.ndarray:
    """(h, w) values -> (h, w, 3) uint8 through ``lut``; NaN -> the EMPTY grey."""
    idx = color_index(a, vmin, vmax)
    rgb = lut[np.clip(idx, 0, 255)]
    rgb[idx < 0] = EMPTY
    return rgb


def enlarge(rgb: np.ndarray, zoom: int, step: int) -> np.ndarray:
    """Every ``step``-th pixel, each drawn as a ``zoom`` × ``zoom`` block."""
    rgb = rgb[::step, ::step]
    return np.repeat(np.repeat(rgb, zoom, axis=0), zoom, axis=1)


def fit_tile(h: int, w: int, target: int, limit: int) -> tuple[int, int]:
    """(zoom, step) drawing an h × w map about ``target`` pixels across, never over ``limit``."""
    side = max(h, w)
    if side > limit:
        return 1, math.ceil(side / limit)
    return max(1, min(round(target / side), limit // side)), 1


def rgb_image(image: np.ndarray) -> np.ndarray:
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
    layer: int | str | None = None  # the layer drawn: 3, or '3.1' inside block 3
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
        self.path = atomic_write(path, self.png)
        return self.path

    def data_uri(self) -> str:
        """``data:image/png;base64,...``, to embed in HTML."""
        return "data:image/png;base64," + base64.b64encode(self.png).decode("ascii")

    def _repr_png_(self) -> bytes:  # Jupyter shows the picture
        return self.png


class Canvas:
    """A figure laid out in pixels: exact tiles (figimage) under matplotlib text and axes."""

    def __init__(self, width: int, height: int, dpi: int = 100) -> None:
        Figure, Canvas = require()
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
        self.text(x - 4, y + h / 2, num_text(vmin), 8, ha="right", va="center")
        self.text(x + w + 4, y + h / 2, num_text(vmax), 8, ha="left", va="center")
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


def num_text(v: float) -> str:
    return f"{v:.3g}" if v != 0 else "0"
