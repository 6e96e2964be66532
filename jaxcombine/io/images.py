"""Reading and writing images: any mode Pillow reads in, RGB float32 0–255 out.

Images enter the engine as ``float32`` arrays shaped (H, W, 3) in 0–255 RGB.
Everything Pillow opens is accepted: EXIF orientation is applied; grey,
palette, CMYK, 16-bit integer and float images are converted; transparency
is composited on white. Writing is atomic (PNG by default; JPEG, TIFF or
WebP by extension).
"""

from __future__ import annotations

import contextlib
import io
import os
import warnings
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from jaxcombine.errors import JaxcombineError
from jaxcombine.io.records import atomic_write_bytes
from jaxcombine.options.config import DEFAULT_MAX_PIXELS

RESAMPLE = Image.Resampling.LANCZOS
BUNDLED = Path(__file__).resolve().parents[1] / "data"
CONTENT = BUNDLED / "astronaut.png"  # NASA, public domain (see README)
STYLE = BUNDLED / "starry_night.jpg"  # van Gogh, 1889, public domain

_FORMATS = {
    ".png": "PNG",
    ".jpg": "JPEG",
    ".jpeg": "JPEG",
    ".tif": "TIFF",
    ".tiff": "TIFF",
    ".webp": "WEBP",
}


def read(
    path: str | os.PathLike,
    *,
    size: int | None = None,
    pixels: int | None = None,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> np.ndarray:
    """Read an image as float32 RGB 0–255, shaped (H, W, 3).

    Args:
      size: resize so the longest side is ``size`` pixels.
      pixels: resize to about this many pixels (ignored when ``size`` is given).
      max_pixels: refuse files whose decoded size exceeds this many pixels.
    """
    img = open_image(path, max_pixels=max_pixels)
    rgb = to_rgb(img, path)
    target = target_size(rgb.shape[1], rgb.shape[0], size=size, pixels=pixels)
    return resize(rgb, target)


@contextlib.contextmanager
def _opened(path: str | os.PathLike, max_pixels: int) -> Iterator[Image.Image]:
    """``path`` opened lazily (header read, pixels not decoded) after every guard: it
    exists, is a file, is an image, is not a decompression bomb and has at most
    ``max_pixels`` pixels. Every failure inside, decoding included, is one line."""
    path = Path(path)
    if not path.exists():
        raise JaxcombineError(f"image not found: {path}")
    if path.is_dir():
        raise JaxcombineError(f"expected an image file, got a folder: {path}")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                w, h = img.size
                if w * h > max_pixels:
                    raise JaxcombineError(
                        f"{path}: {w}x{h} is larger than the limit of {max_pixels:,} pixels "
                        "(raise it with --max-pixels if the file is trusted)"
                    )
                if w == 0 or h == 0:
                    raise JaxcombineError(f"{path}: image has zero size")
                yield img
    except JaxcombineError:
        raise
    except UnidentifiedImageError:
        raise JaxcombineError(f"{path}: not an image Pillow can read") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise JaxcombineError(f"{path}: refused as a possible decompression bomb") from None
    except (OSError, SyntaxError, ValueError) as e:  # truncated or corrupt data
        raise JaxcombineError(f"{path}: corrupt or truncated image ({e})") from None


def open_image(path: str | os.PathLike, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> Image.Image:
    """Open and fully decode ``path`` with EXIF orientation applied; one-line errors.
    The one reader of image files: every other reader (:func:`header_size`) shares its guards."""
    with _opened(path, max_pixels) as img:
        img.load()
        return ImageOps.exif_transpose(img)


def header_size(
    path: str | os.PathLike, *, max_pixels: int = DEFAULT_MAX_PIXELS
) -> tuple[int, int]:
    """(height, width) of ``path`` as :func:`open_image` returns it (EXIF orientation
    applied), from the header alone, under the same guards."""
    with _opened(path, max_pixels) as img:
        w, h = img.size
        if img.getexif().get(0x0112, 1) in (5, 6, 7, 8):  # EXIF orientations that turn it
            w, h = h, w
    return h, w


def output_size(
    path: str | os.PathLike, *, size: int | None = None, max_pixels: int = DEFAULT_MAX_PIXELS
) -> tuple[int, int]:
    """(height, width) that ``read(path, size=size)`` returns, from the file's header alone,
    so a memory check can come before an image is decoded and resized."""
    h, w = header_size(path, max_pixels=max_pixels)
    w, h = target_size(w, h, size=size)
    return h, w


def to_rgb(img: Image.Image, name: str | os.PathLike = "image") -> np.ndarray:
    """Any Pillow mode → float32 RGB 0–255 (alpha composited on white)."""
    mode = img.mode
    if mode in ("I;16", "I;16L", "I;16B", "I;16N", "I", "F"):
        a = np.asarray(img, dtype=np.float64)
        if not np.isfinite(a).all():
            raise JaxcombineError(f"{name}: image has NaN or infinite pixels")
        hi = 65535.0 if mode.startswith("I;16") or (mode == "I" and a.max() > 255) else 255.0
        if mode == "F":
            hi = 1.0 if a.max() <= 1.0 else 255.0
        grey = np.clip(a / hi * 255.0, 0, 255).astype(np.float32)
        return np.repeat(grey[..., None], 3, axis=-1)
    if mode == "P":
        img = img.convert("RGBA")
    elif mode in ("1", "L", "CMYK", "YCbCr", "LAB", "HSV"):
        img = img.convert("RGB")
    elif mode == "LA" or mode == "PA":
        img = img.convert("RGBA")
    if img.mode == "RGBA" or img.mode == "RGBa":
        white = Image.new("RGBA", img.size, (255, 255, 255, 255))
        img = Image.alpha_composite(white, img.convert("RGBA")).convert("RGB")
    if img.mode != "RGB":
        try:
            img = img.convert("RGB")
        except ValueError:
            raise JaxcombineError(f"{name}: unsupported image mode {mode}") from None
    return np.asarray(img, dtype=np.float32)


def target_size(
    width: int, height: int, *, size: int | None = None, pixels: int | None = None
) -> tuple[int, int]:
    """(width, height) after resizing by longest side or by pixel count."""
    if size is not None:
        if size < 1:
            raise JaxcombineError(f"size must be a positive number of pixels, got {size}")
        scale = size / max(width, height)
    elif pixels is not None:
        if pixels < 1:
            raise JaxcombineError(f"pixel count must be positive, got {pixels}")
        scale = (pixels / (width * height)) ** 0.5
    else:
        return width, height
    return max(1, round(width * scale)), max(1, round(height * scale))


def resize(rgb: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize float RGB to (width, height) with Lanczos, per channel in float."""
    w, h = size
    if rgb.shape[1] == w and rgb.shape[0] == h:
        return rgb.astype(np.float32, copy=False)
    chans = [
        np.asarray(
            Image.fromarray(rgb[..., c].astype(np.float32), mode="F").resize((w, h), RESAMPLE)
        )
        for c in range(3)
    ]
    return np.clip(np.stack(chans, axis=-1), 0, 255).astype(np.float32)


def fit(rgb: np.ndarray, height: int, width: int) -> np.ndarray:
    """Scale to cover (height, width) keeping the aspect ratio, then centre-crop."""
    h, w = rgb.shape[:2]
    scale = max(height / h, width / w)
    sw, sh = max(width, round(w * scale)), max(height, round(h * scale))
    big = resize(rgb, (sw, sh))
    top, left = (sh - height) // 2, (sw - width) // 2
    return big[top : top + height, left : left + width]


def to_uint8(rgb: np.ndarray) -> np.ndarray:
    return np.clip(np.round(np.asarray(rgb, dtype=np.float32)), 0, 255).astype(np.uint8)


def encode(rgb: np.ndarray, fmt: str = "PNG") -> bytes:
    buf = io.BytesIO()
    img = Image.fromarray(to_uint8(rgb), mode="RGB")
    img.save(buf, format=fmt, **({"quality": 95} if fmt == "JPEG" else {}))
    return buf.getvalue()


def write(path: str | os.PathLike, rgb: np.ndarray) -> Path:
    """Write RGB 0–255 atomically; the format follows the extension (PNG if none known)."""
    path = Path(path)
    fmt = _FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise JaxcombineError(f"{path}: unknown image extension; use one of {', '.join(_FORMATS)}")
    atomic_write_bytes(path, encode(rgb, fmt))
    return path


def contact_sheet(rows: Sequence[Sequence[np.ndarray]], *, pad: int = 4) -> np.ndarray:
    """Tile equally-sized RGB images into one grid image (rows × columns), white padding."""
    n_rows, n_cols = len(rows), max(len(r) for r in rows)
    h, w = rows[0][0].shape[:2]
    sheet = np.full((n_rows * (h + pad) + pad, n_cols * (w + pad) + pad, 3), 255, np.float32)
    for i, row in enumerate(rows):
        for j, img in enumerate(row):
            y, x = pad + i * (h + pad), pad + j * (w + pad)
            sheet[y : y + h, x : x + w] = img
    return sheet
