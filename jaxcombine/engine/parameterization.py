"""What the optimiser updates, and the image it stands for: pixels or a Laplacian pyramid.

The engine's state holds *parameters* (``State.params``); the loss, snapshots, outputs,
the next scale and the iterate average read the *image* they stand for through
:meth:`Parameterization.image`. Two kinds (``--parameterization``):

* ``pixels``: the parameters are the image (k, H, W, 3) itself;
* ``laplacian``: a tuple of L levels, finest first, level l shaped
  (k, ⌈H/2^l⌉, ⌈W/2^l⌉, 3). The image is their sum, each level upsampled to full size
  (bilinear, ``jax.image.resize``). An update to a coarse coefficient moves a whole
  region of the image, so with a per-coefficient step size (Adam, RMSprop) the low
  frequencies move as fast as the high ones (the STROTSS and NNST parameterisation).

The decomposition (:meth:`Parameterization.decompose`) is chosen so that
``image(decompose(x)) == x`` exactly in exact arithmetic (float32: to rounding),
whatever the resampling: from the coarsest level up, each level is the antialiased
bilinear downsample of what the coarser levels leave unexplained, and the finest
level is the remaining residual at full size. The pyramid has more coefficients than
the image has pixels, so the converse (``decompose(image(c)) == c``) does not hold:
which coefficients stand for an image is this decomposition's choice.

A one-level pyramid is the pixels (same numbers, same updates). Only the kind and the
number of levels (the state's shapes) select a compiled program.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import jax
import jax.numpy as jnp

from jaxcombine.options.config import PARAMETERIZATIONS

# The default number of levels: halve while the coarsest level's shorter side keeps at
# least this many px (at 512 px: 6 levels, the coarsest 16 px; at 64 px: 3).
COARSEST_SIDE = 16
PIXEL_RANGE = (0.0, 255.0)


def default_levels(height: int, width: int) -> int:
    """The pyramid's levels for an image of this size when none are given."""
    short = min(height, width)
    if short < 2 * COARSEST_SIDE:
        return 1
    return 1 + int(math.floor(math.log2(short / COARSEST_SIDE)))


def level_shapes(height: int, width: int, levels: int) -> tuple[tuple[int, int], ...]:
    """(height, width) of each level, finest first: ⌈H/2^l⌉ × ⌈W/2^l⌉."""
    return tuple((-(-height // 2**lv), -(-width // 2**lv)) for lv in range(levels))


def _resize(x: jax.Array, height: int, width: int) -> jax.Array:
    """(..., h, w, C) → (..., height, width, C), bilinear (antialiased when shrinking)."""
    if x.shape[-3:-1] == (height, width):
        return x
    return jax.image.resize(x, (*x.shape[:-3], height, width, x.shape[-1]), "linear")


@dataclasses.dataclass(frozen=True)
class Parameterization:
    """``kind``: ``pixels`` | ``laplacian``; ``levels``: the pyramid's levels at every
    scale, or None (``laplacian``: :func:`default_levels` of each scale's size)."""

    kind: str = "pixels"
    levels: int | None = None

    def __post_init__(self) -> None:
        if self.kind not in PARAMETERIZATIONS:
            raise ValueError(
                f"unknown parameterization {self.kind!r}; choose {', '.join(PARAMETERIZATIONS)}"
            )

    def levels_at(self, height: int, width: int) -> int:
        """The levels of the pyramid at this size (1 for pixels)."""
        if self.kind == "pixels":
            return 1
        return self.levels if self.levels is not None else default_levels(height, width)

    def decompose(self, images: Any) -> Any:
        """Parameters standing for ``images`` (..., H, W, 3): the images themselves, or
        the pyramid's levels, finest first (see the module docstring)."""
        images = jnp.asarray(images, jnp.float32)
        if self.kind == "pixels":
            return images
        height, width = images.shape[-3:-1]
        shapes = level_shapes(height, width, self.levels_at(height, width))
        residual, coarse = images, []
        for h, w in reversed(shapes[1:]):  # coarsest first
            level = _resize(residual, h, w)
            residual = residual - _resize(level, height, width)
            coarse.insert(0, level)
        return (residual, *coarse)

    def image(self, params: Any) -> jax.Array:
        """The image (..., H, W, 3) the parameters stand for."""
        if self.kind == "pixels":
            return params
        finest, *coarse = params
        rest = self._coarse_sum(finest, coarse)
        return finest if rest is None else finest + rest

    def project(self, params: Any, grey: bool = False) -> Any:
        """Parameters whose image lies in 0–255 (and is grey, if asked): the image is
        clipped, the correction going into the finest level (coarse levels unchanged);
        ``grey``: every level onto R = G = B. A one-level pyramid projects as pixels."""
        if self.kind == "pixels":
            params = jnp.clip(params, *PIXEL_RANGE)
            return grey_projection(params) if grey else params
        finest, *coarse = params
        rest = self._coarse_sum(finest, coarse)
        if rest is None:  # one level: the pixels
            params = (jnp.clip(finest, *PIXEL_RANGE),)
        else:
            params = (jnp.clip(finest + rest, *PIXEL_RANGE) - rest, *coarse)
        return jax.tree.map(grey_projection, params) if grey else params

    @staticmethod
    def _coarse_sum(finest: jax.Array, coarse: list) -> jax.Array | None:
        """Σ of the coarse levels upsampled to the finest's size (None when there are none)."""
        height, width = finest.shape[-3:-1]
        total = None
        for level in coarse:
            up = _resize(level, height, width)
            total = up if total is None else total + up
        return total


def grey_projection(x: jax.Array) -> jax.Array:
    """Orthogonal projection of (..., 3) onto R = G = B: the channel mean in each channel."""
    return jnp.broadcast_to(jnp.mean(x, axis=-1, keepdims=True), x.shape)
