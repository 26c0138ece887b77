"""Image files through Pillow: one image for a model's input, or a folder of class folders;
and the photo heuristics of prediction (which background a model was trained on, what goes
under a transparent image).

Pillow is imported only when an image is read; without it these functions raise ImportError
saying how to install it.
"""

from __future__ import annotations

import os
import re
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from .. import limits
from .formats import DataError

__all__ = ["IMAGE_EXTENSIONS", "load_image", "load_image_folder", "image_folder_classes",
           "border_level", "estimate_background", "load_image_for_model", "open_image",
           "choose_input_shape", "FOLDER_SIDE"]

#: The longer side an image folder of larger images is trained at by default (the aspect ratio
#: kept): a 1000×750 photo becomes 64×48; ``--input-size HxW`` chooses another.
FOLDER_SIDE = 64

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")
_FITS = ("stretch", "crop", "pad")


def _pil() -> Any:
    try:
        from PIL import Image, ImageOps
    except ImportError as exc:  # pragma: no cover - exercised only without Pillow
        raise ImportError(
            "reading image files needs Pillow: pip install pillow"
        ) from exc
    return Image, ImageOps


def open_image(path: str | os.PathLike[str]) -> Any:
    """The Pillow image of ``path``, opened (header read, nothing decoded yet) and checked
    against ``max_pixels``: Pillow's decompression-bomb limit is set to it and its warning
    becomes convscope's one-line DataError, never a Python warning line."""
    Image, _ = _pil()
    cap = limits.limit("max_pixels")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Pillow's notes on odd headers: never a warning line
        warnings.simplefilter("error", Image.DecompressionBombWarning)  # but this one refuses
        Image.MAX_IMAGE_PIXELS = None  # the header is read; the size is checked just below
        try:
            img = Image.open(path)
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            found = re.search(r"\((\d+) pixels\)", str(exc))  # a plugin's own check
            raise DataError(f"{path}: " + (limits.exceeds(
                "max_pixels", int(found.group(1)) if found else cap + 1, "the image's size in "
                "pixels") or "")) from None
        finally:
            Image.MAX_IMAGE_PIXELS = cap  # Pillow's own check, elsewhere, at convscope's limit
    msg = limits.exceeds("max_pixels", img.width * img.height,
                         f"the image's size ({img.width}×{img.height}) in pixels")
    if msg:
        img.close()
        raise DataError(f"{path}: {msg}")
    return img


def _decode(path: str | os.PathLike[str], w: int, h: int) -> Any:
    """The decoded image of ``path``, no larger than needed for a (w, h) target: a JPEG is
    decoded at 1/2, 1/4 or 1/8 scale (``draft``), another format reduced by a whole factor
    after decoding (``reduce``), always staying at least twice (JPEG) or three times the
    target's size, as ``resize(reducing_gap=3)`` would reduce it anyway."""
    _, ImageOps = _pil()
    with open_image(path) as opened:
        if opened.format == "JPEG":
            side = 2 * max(w, h)  # either way round: EXIF may turn the photo
            opened.draft(opened.mode, (side, side))
        opened.load()
        img = opened
        ImageOps.exif_transpose(img, in_place=True)  # before reduce, which drops the EXIF
        factor = min(img.width, img.height) // (3 * max(w, h))  # as resize's reducing_gap
        if factor >= 2 and img.mode not in ("P", "1"):
            try:
                img = img.reduce(factor)
            except (ValueError, NotImplementedError):  # a mode reduce does not take
                pass
    return img


def _check_shape(input_shape: tuple[int, int, int]) -> tuple[int, int, int]:
    try:
        c, h, w = (int(v) for v in input_shape)
    except (TypeError, ValueError):
        raise DataError(f"input_shape must be (C, H, W), got {input_shape!r}") from None
    if c not in (1, 3, 4) or h < 1 or w < 1:
        raise DataError(f"input_shape must be (C, H, W) with C in 1, 3, 4 and H, W >= 1; got {input_shape!r}")
    return c, h, w


def _to_mode(img: Any, channels: int, background: int) -> Any:
    """Convert any Pillow mode to L (1 channel), RGB (3) or RGBA (4); alpha is composited
    over a ``background`` grey level unless 4 channels are wanted."""
    Image, _ = _pil()
    if img.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        a = np.asarray(img, dtype=np.float64)
        scale = 255.0 / 65535.0 if img.mode.startswith("I;16") or a.max(initial=0) > 255 else 1.0
        img = Image.fromarray(np.clip(a * scale + 0.5, 0, 255).astype(np.uint8), "L")
    if img.mode == "P":
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
    has_alpha = img.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in img.info
    if channels == 4:
        return img.convert("RGBA")
    if has_alpha:
        rgba = img.convert("RGBA")
        base = Image.new("RGBA", rgba.size, (background,) * 3 + (255,))
        img = Image.alpha_composite(base, rgba)
    return img.convert("L" if channels == 1 else "RGB")


def _resize(img: Any, h: int, w: int, fit: str, background: int) -> Any:
    Image, _ = _pil()
    resample = Image.Resampling.BILINEAR
    if img.size == (w, h):
        return img
    if fit == "crop":  # centre-crop to the target aspect ratio, then resize
        sw, sh = img.size
        scale = max(w / sw, h / sh)
        cw, ch = min(sw, round(w / scale)), min(sh, round(h / scale))
        left, top = (sw - cw) // 2, (sh - ch) // 2
        return img.resize((w, h), resample, box=(left, top, left + cw, top + ch), reducing_gap=3.0)
    if fit == "pad":  # resize to fit inside, keep the aspect ratio, pad with background
        sw, sh = img.size
        scale = min(w / sw, h / sh)
        nw, nh = max(1, round(sw * scale)), max(1, round(sh * scale))
        inner = img.resize((nw, nh), resample, reducing_gap=3.0)
        fill = background if img.mode == "L" else ((background,) * 3 + (255,))[:len(img.getbands())]
        canvas = Image.new(img.mode, (w, h), fill)
        canvas.paste(inner, ((w - nw) // 2, (h - nh) // 2))
        return canvas
    return img.resize((w, h), resample, reducing_gap=3.0)


def load_image(source: str | os.PathLike[str] | Any, input_shape: tuple[int, int, int],
               fit: str = "stretch", background: int = 0) -> np.ndarray:
    """Load one image (a path or a Pillow image) as a uint8 array of shape ``input_shape``.

    Any size and mode (grey, RGB, RGBA, palette, 16-bit, CMYK...) is accepted: EXIF rotation
    is applied; channels become 1 (grey), 3 (RGB) or 4 (RGBA); transparency is composited
    over the grey level ``background`` (0 = black, like MNIST's background). ``fit`` is
    ``"stretch"`` (resize to H x W), ``"crop"`` (centre-crop to the aspect ratio first) or
    ``"pad"`` (keep the aspect ratio, pad with ``background``).
    """
    c, h, w = _check_shape(input_shape)
    if fit not in _FITS:
        raise DataError(f"fit must be one of {_FITS}, got {fit!r}")
    Image, ImageOps = _pil()
    name = str(source) if isinstance(source, (str, os.PathLike)) else "<image>"
    try:
        with warnings.catch_warnings():  # Pillow's notes (corrupt EXIF, ...): it still reads
            warnings.simplefilter("ignore")
            if isinstance(source, (str, os.PathLike)):
                img = _decode(source, w, h)
            else:
                img = ImageOps.exif_transpose(source) or source
            img = _resize(_to_mode(img, c, background), h, w, fit, background)
    except FileNotFoundError:
        raise DataError(f"{name}: no such image file") from None
    except DataError:
        raise
    except Image.DecompressionBombError as exc:
        raise DataError(f"{name}: image too large for Pillow's safety limit ({exc})") from exc
    except MemoryError:
        raise DataError(f"{name}: out of memory decoding the image; see the limit max_pixels "
                        "(--max-pixels N or CONVSCOPE_MAX_PIXELS=N)") from None
    except (OSError, ValueError, SyntaxError) as exc:
        raise DataError(f"{name}: cannot read image ({exc})") from exc
    arr = np.asarray(img, dtype=np.uint8)
    arr = arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1)
    return np.ascontiguousarray(arr)


def image_folder_classes(root: str | os.PathLike[str]) -> tuple[list[str], list[list[Path]]]:
    """Class names (sorted sub-folder names) and each class's image files (sorted).

    Raises DataError when ``root`` has no class sub-folders or a class has no images.
    """
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: not a folder")
    classes = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not classes:
        raise DataError(f"{root}: expected one sub-folder per class (e.g. {root}/cat/1.png), found none")
    files = []
    for cls in classes:
        imgs = sorted(p for p in (root / cls).rglob("*")
                      if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS
                      and not p.name.startswith("."))
        if not imgs:
            raise DataError(f"{root / cls}: class folder has no images ({', '.join(IMAGE_EXTENSIONS)})")
        files.append(imgs)
    return classes, files


def infer_input_shape(paths: list[Path]) -> tuple[int, int, int]:
    """(C, H, W) for a set of images: C = 1 if all are grey else 3; H, W their common size
    (scaled to :data:`FOLDER_SIDE` on the longer side when larger), or 32 x 32 when sizes
    differ.  :func:`choose_input_shape` says why."""
    return choose_input_shape(paths)[0]


def choose_input_shape(paths: list[Path], size: tuple[int, int] | None = None
                       ) -> tuple[tuple[int, int, int], str]:
    """((C, H, W), note) for a set of images: C = 1 if all are grey else 3; H, W ``size`` when
    given, else their common size, scaled down to :data:`FOLDER_SIDE` on the longer side (the
    aspect ratio kept) when larger, or 32 x 32 when sizes differ.  ``note`` says what was
    chosen when the images are resized by default ('' when they are not)."""
    c, sizes = _scan(paths)
    if size is not None:
        limits.check("max_pixels", int(size[0]) * int(size[1]), f"the input size "
                     f"{size[0]}x{size[1]} in pixels", DataError)
        return (c, int(size[0]), int(size[1])), ""
    if len(sizes) != 1:
        return (c, 32, 32), (f"the images have {len(sizes)} different sizes: each is resized to "
                             "32x32 (H x W); choose with --input-size HxW")
    h, w = sizes.pop()
    if max(h, w) <= FOLDER_SIDE:
        return (c, h, w), ""
    scale = FOLDER_SIDE / max(h, w)
    sh, sw = max(1, round(h * scale)), max(1, round(w * scale))
    return (c, sh, sw), (f"the images are {h}x{w} (H x W): each is resized to {sh}x{sw}, "
                         f"{FOLDER_SIDE} on the longer side, for a model of sensible size; choose "
                         "with --input-size HxW")


def _scan(paths: list[Path]) -> tuple[int, set[tuple[int, int]]]:
    """(1 if every image is grey else 3, the set of their (H, W)): headers only."""
    grey, sizes = True, set()
    for p in paths:
        try:
            with open_image(p) as img:
                sizes.add((img.height, img.width))
                if img.mode not in ("1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "F"):
                    grey = grey and img.mode == "P" and _palette_is_grey(img)
        except DataError:
            raise
        except (OSError, ValueError, SyntaxError) as exc:
            raise DataError(f"{p}: cannot read image ({exc})") from exc
    return (1 if grey else 3), sizes


def _palette_is_grey(img: Any) -> bool:
    pal = np.asarray(img.convert("RGB"))
    return bool((pal[..., 0] == pal[..., 1]).all() and (pal[..., 1] == pal[..., 2]).all())


def load_image_folder(root: str | os.PathLike[str],
                      input_shape: tuple[int, int, int] | None = None,
                      fit: str = "stretch") -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Load ``root/<class>/<image>`` files as ``(x uint8 (N,C,H,W), y int64 (N,), classes)``.

    Classes are the sorted sub-folder names; labels index into them. Without ``input_shape``
    it is inferred with :func:`infer_input_shape`.
    """
    classes, files = image_folder_classes(root)
    flat = [p for group in files for p in group]
    shape = _check_shape(input_shape) if input_shape is not None else infer_input_shape(flat)
    x = np.empty((len(flat), *shape), dtype=np.uint8)
    for i, p in enumerate(flat):
        x[i] = load_image(p, shape, fit=fit)
    y = np.concatenate([np.full(len(g), k, dtype=np.int64) for k, g in enumerate(files)])
    return x, y, classes


# ---------------------------------------------------------------------------------------------
# photos for a trained model: backgrounds and transparency


def border_level(img: np.ndarray) -> float:
    """Median grey level of an image's one-pixel border (uint8 (C, H, W))."""
    grey = img.astype(np.float64).mean(axis=0)
    border = np.concatenate([grey[0], grey[-1], grey[:, 0], grey[:, -1]])
    return float(np.median(border))


def estimate_background(images: np.ndarray, sample: int = 2000) -> int | None:
    """The grey level of the training images' borders (0 for MNIST's black), or None when the
    borders do not share one (photos).  ``images`` uint8 (N, C, H, W).

    The median of the one-pixel borders of up to ``sample`` images, kept when at least 80% of
    those border pixels lie within 32 grey levels of it."""
    if images.ndim != 4 or len(images) == 0:
        return None
    idx = np.linspace(0, len(images) - 1, min(sample, len(images))).astype(int)
    grey = images[idx].astype(np.float32).mean(axis=1)
    border = np.concatenate([grey[:, 0].ravel(), grey[:, -1].ravel(), grey[:, :, 0].ravel(),
                             grey[:, :, -1].ravel()])
    level = float(np.median(border))
    return int(round(level)) if np.mean(np.abs(border - level) <= 32) >= 0.8 else None


def _luma(rgb: np.ndarray) -> np.ndarray:
    """ITU-R 601 luma of RGB (3, H, W) floats, as Pillow's convert('L')."""
    return rgb[0] * 0.299 + rgb[1] * 0.587 + rgb[2] * 0.114


def load_image_for_model(path: str | os.PathLike[str], shape: tuple[int, int, int],
                         fit: str = "stretch") -> np.ndarray:
    """One image as uint8 ``shape`` (C, H, W) for a model.  A transparent background goes under
    the strokes in the contrasting grey (white under dark strokes, black under light ones);
    ``fit="pad"`` pads with the image's own background (its border's grey level)."""
    c, h, w = shape
    if c == 4:
        return load_image(path, shape, fit)
    rgba = load_image(path, (4, h, w), "stretch").astype(np.float64)  # to look at, not to keep
    alpha = rgba[3] / 255.0
    if alpha.min() >= 1.0:
        level = border_level(np.round(_luma(rgba[:3]))[None])
        return load_image(path, shape, fit, background=int(round(level)))
    weight = alpha.sum()
    level = float((_luma(rgba[:3]) * alpha).sum() / weight) if weight > 0 else 0.0
    bg = 255 if level < 128 else 0
    if fit != "stretch":
        rgba = load_image(path, (4, h, w), fit, background=bg).astype(np.float64)
        alpha = rgba[3] / 255.0
    rgb = rgba[:3] * alpha + bg * (1 - alpha)
    out = _luma(rgb)[None] if c == 1 else rgb
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)
