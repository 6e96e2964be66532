"""Mask files: which part of the output a term (or a style) governs, read as weights 0..1.

A mask file is read through the guarded image reader (:func:`images.open_image`):

* an image with transparency (an alpha channel or a transparent colour, with some pixel
  not fully opaque) is read by its **alpha**: opaque 1, transparent 0, its colours
  ignored. One whose fully opaque pixels are not all of one grey level is refused as
  ambiguous (alpha or grey levels?);
* any other image is read by its luma (ITU-R BT.601, as Pillow's ``convert("L")``): 0..255 / 255.

It is then fitted to the output's size as a style image is (cover, then centre-crop:
:func:`images.fit`), but resampled bilinearly (antialiased when shrinking), never with
Lanczos: Lanczos rings, and its small lobes outside a region would give a term a thin
strip of weight where its mask is 0. :func:`check_coverage` warns, in one line each, when
a mask leaves a masked term without area.

How a mask reaches each layer is :func:`jaxcombine.stats.masks.at_layer`.
"""

from __future__ import annotations

import os
import warnings
from typing import Sequence

import numpy as np
from PIL import Image

from jaxcombine.errors import JaxcombineError, JaxcombineWarning
from jaxcombine.io import images
from jaxcombine.options import layers as layers_lib

LUMA = np.array([0.299, 0.587, 0.114], np.float32)  # ITU-R BT.601, as Pillow's convert("L")
RESAMPLE = Image.Resampling.BILINEAR  # no ringing: 0 outside a region stays 0 (see above)
AMBIGUOUS_GREY_LEVELS = 1.0  # opaque pixels of a transparent mask may differ by this much
# A term × style-mask overlap below this fraction of the term's region counts as empty.
MIN_OVERLAP = 0.01


def read(
    path: str | os.PathLike,
    height: int,
    width: int,
    *,
    max_pixels: int = images.DEFAULT_MAX_PIXELS,
    what: str = "mask",
) -> np.ndarray:
    """A mask file → (height, width) float32 weights in 0..1 (see the module's docstring).

    One-line :class:`JaxcombineError` for a missing, unreadable, ambiguous or all-zero
    mask (an empty region has no statistics to match)."""
    if not os.path.exists(path):
        raise JaxcombineError(f"{what} not found: {path}")
    weights = _weights(images.open_image(path, max_pixels=max_pixels), path, what)
    mask = np.clip(_fit(weights, height, width), 0.0, 1.0).astype(np.float32)
    if not np.isfinite(mask).all():
        raise JaxcombineError(f"{what} {path}: has NaN or infinite values")
    if mask.max() <= 0.0:
        raise JaxcombineError(
            f"{what} {path}: is black everywhere (or transparent); a mask must select some region"
        )
    return mask


def read_all(
    paths: Sequence[str],
    height: int,
    width: int,
    *,
    max_pixels: int = images.DEFAULT_MAX_PIXELS,
    what: str = "mask",
) -> np.ndarray | None:
    """(len(paths), height, width) masks, or None when there are none."""
    if not paths:
        return None
    return np.stack([read(p, height, width, max_pixels=max_pixels, what=what) for p in paths])


def _weights(img: Image.Image, path: str | os.PathLike, what: str) -> np.ndarray:
    """(H, W) float32 0..1 at the file's own size: alpha when it has transparency, else luma."""
    if img.has_transparency_data:
        rgba = np.asarray(img.convert("RGBA"), np.float32)
        alpha = rgba[..., 3]
        if alpha.min() < 255.0:
            opaque = rgba[alpha == 255.0][:, :3] @ LUMA
            if opaque.size and opaque.max() - opaque.min() > AMBIGUOUS_GREY_LEVELS:
                raise JaxcombineError(
                    f"{what} {path}: has both transparency and grey levels in its opaque part; "
                    "a mask is read by its alpha when it has transparency, so make it either "
                    "a shape on a transparent background or an opaque greyscale image"
                )
            return alpha / 255.0
    rgb = images.to_rgb(img, path)
    return np.clip(rgb @ LUMA, 0.0, 255.0) / 255.0


def _fit(mask: np.ndarray, height: int, width: int) -> np.ndarray:
    """Scale (H, W) ``mask`` to cover (height, width), then centre-crop (:func:`images.fit`'s
    geometry), resampling with :data:`RESAMPLE`."""
    h, w = mask.shape
    scale = max(height / h, width / w)
    sw, sh = max(width, round(w * scale)), max(height, round(h * scale))
    if (sw, sh) != (w, h):
        mask = np.asarray(
            Image.fromarray(mask.astype(np.float32), mode="F").resize((sw, sh), RESAMPLE)
        )
    top, left = (sh - height) // 2, (sw - width) // 2
    return mask[top : top + height, left : left + width]


# --------------------------------------------------------------------------- coverage


def area_at(mask: np.ndarray, layer: str, arch: str = "vgg19") -> float:
    """The area, in ``layer``'s positions, that an output-size (H, W) ``mask`` keeps there:
    the sum of its area-averaged map (:func:`jaxcombine.stats.masks.at_layer`), i.e. the
    mask over the pixels the layer's pools keep (odd edges dropped) divided by the
    pixels per position."""
    d = layers_lib.downsampling([layer], arch)[layer]
    h, w = mask.shape
    return float(mask[: h // d * d, : w // d * d].sum()) / (d * d)


def check_coverage(
    recipe,
    term_masks: np.ndarray | None,
    style_masks: np.ndarray | None,
    *,
    arch: str = "vgg19",
) -> list[str]:
    """Warn (:class:`JaxcombineWarning`, one line each) and return the messages, when masks
    leave a term with nothing to measure:

    * a masked term's mask covers less than one position of its layer;
    * a style term's mask times a style's mask overlaps on less than :data:`MIN_OVERLAP`
      of the term's region (that style's part of the term would rest on a sliver);
    * style masks are given but the recipe has no style term (they change nothing).
    """
    notes = []
    style_terms = [t for t in recipe.terms if t.source == "style"]
    if style_masks is not None and not style_terms:
        notes.append(f"--style-mask has no effect: recipe {recipe.name} has no style term")
    for t in recipe.terms:
        if t.mask is None:
            continue
        mask, name = term_masks[t.mask], recipe.masks[t.mask]
        if t.hypercolumn is None:
            area, where = area_at(mask, t.layer, arch), t.layer
        else:  # a hypercolumn term samples its positions on a grid of image pixels
            area, where = float(mask.sum()) / t.hypercolumn.stride**2, "its grid"
        if area < 1.0:
            notes.append(
                f"mask {name} covers {area:.2g} positions of {where} (less than one): "
                f"term {t.label} has almost no area there"
            )
        if t.source == "style" and style_masks is not None:
            for i, style_mask in enumerate(style_masks):
                overlap = float((mask * style_mask).sum()) / float(mask.sum())
                if overlap < MIN_OVERLAP:
                    notes.append(
                        f"mask {name} and style mask {i + 1} overlap on {overlap:.1%} of the "
                        f"mask's region: style {i + 1}'s part of {t.label} is empty"
                    )
    for note in dict.fromkeys(notes):
        warnings.warn(note, JaxcombineWarning, stacklevel=2)
    return notes
