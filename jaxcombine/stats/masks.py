"""Spatial masks: which part of the output a term (or a style) governs.

A mask is a greyscale image read as weights 0..1 (0..255 / 255; any mode is
converted to luma first), fitted to the output's size exactly as a style image is
(:func:`images.fit`: cover, then centre-crop), and brought to each VGG layer's
resolution by area averaging along the network's own stride chain: average-pooled
2×2 once per pooling before the layer, odd edges dropped as :func:`model.pool2x2`
drops them, so mask and feature map line up position for position.

Two places carry masks:

* a recipe term, ``mask = "region.png"`` (a path relative to the recipe file);
* the run option ``style_masks`` (one per style): each style then governs its
  region, every style term computing one masked statistic per style against that
  style's own, unblended target (:func:`losses.terms`).

Masks are small (H, W) float32 arrays in the targets pytree (traced, never closed
over); only whether a term or the styles have masks is part of the program's structure.
"""

from __future__ import annotations

import os
from typing import Sequence

import jax
import numpy as np

from jaxcombine.errors import JaxcombineError
from jaxcombine.io import images

LUMA = np.array([0.299, 0.587, 0.114], np.float32)  # ITU-R BT.601, as Pillow's convert("L")


def read(
    path: str | os.PathLike,
    height: int,
    width: int,
    *,
    max_pixels: int = images.DEFAULT_MAX_PIXELS,
    what: str = "mask",
) -> np.ndarray:
    """A mask file → (height, width) float32 weights in 0..1, fitted like a style image.

    One-line :class:`JaxcombineError` for a missing, unreadable or all-zero mask
    (an empty region has no statistics to match)."""
    if not os.path.exists(path):
        raise JaxcombineError(f"{what} not found: {path}")
    rgb = images.to_rgb(images.open_image(path, max_pixels=max_pixels), path)
    grey = np.clip(rgb @ LUMA, 0.0, 255.0)
    fitted = images.fit(np.repeat(grey[..., None], 3, axis=-1), height, width)[..., 0]
    mask = np.clip(fitted / 255.0, 0.0, 1.0).astype(np.float32)
    if not np.isfinite(mask).all():
        raise JaxcombineError(f"{what} {path}: has NaN or infinite values")
    if mask.max() <= 0.0:
        raise JaxcombineError(f"{what} {path}: is black everywhere; a mask must select some region")
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


def poolings(layer: str) -> int:
    """How many 2×2 poolings precede ``layer``: ``blockB_convN`` B-1, ``blockB_pool`` B."""
    block = int(layer[len("block")])
    return block if layer.endswith("_pool") else block - 1


def average_pool(mask: jax.Array) -> jax.Array:
    """2×2, stride-2 mean of an (H, W) mask, odd edges dropped (like :func:`model.pool2x2`)."""
    h, w = mask.shape
    return mask[: h // 2 * 2, : w // 2 * 2].reshape(h // 2, 2, w // 2, 2).mean(axis=(1, 3))


def at_layer(mask: jax.Array, layer: str, shape: Sequence[int] | None = None) -> jax.Array:
    """An image-size (H, W) mask at ``layer``'s resolution (area averages); ``shape``
    (…, h, w, C), the layer's feature map, is checked against the result."""
    for _ in range(poolings(layer)):
        mask = average_pool(mask)
    if shape is not None and tuple(mask.shape) != tuple(shape[-3:-1]):
        raise ValueError(f"mask {mask.shape} at {layer} does not match its features {tuple(shape)}")
    return mask
