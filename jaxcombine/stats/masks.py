"""Spatial masks: which part of the output a term (or a style) governs.

A mask is an image file read as weights 0..1 at the output's size
(:mod:`jaxcombine.io.masks`: alpha when it has transparency, else luma), brought to each
VGG layer's resolution by area averaging along the network's own stride chain: average-pooled
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

from typing import Sequence

import jax


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
