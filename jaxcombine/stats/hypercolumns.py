"""Hypercolumns: several layers read at one image position as one vector, and where from.

The one home of sampling for the statistics of hypercolumns (``emd``, ``moments``,
``palette``, ``self_similarity``, ``nearest``, ``nearest_each_step``; STROTSS, Kolkin et
al. 2019; NNST, Kolkin et al. 2022). A recipe's ``hypercolumn`` term
(:class:`~jaxcombine.options.recipe.Hypercolumn`) names its layers (and ``"rgb"``, the
image's colours); :func:`maps` gathers them, each scaled, into :class:`Maps`;
:func:`draw` picks positions and :func:`sample` reads the hypercolumns there.

Coordinates. Positions are (y, x) in image pixels, pixel (i, j)'s centre at (i, j). A
layer after p 2×2 poolings has stride d = 2^p (:func:`jaxcombine.stats.masks.poolings`,
as the mask of a layer is pooled): its cell c covers pixels c·d … c·d + d − 1 (the pools
drop odd edges) and sits at their centre, c·d + (d − 1)/2. Image position y therefore
reads the layer at (y − (d − 1)/2)/d, bilinearly from the four cells around it, clamped
to the outermost cells' centres at the edges. Interpolation weights are exact (a cell
centre reads that cell alone) and the reading is differentiable in the maps.

Positions lie on a grid of ``stride`` pixels: the centres of its stride×stride cells,
ragged edges dropped (stride 1: every pixel). Each step draws ``samples`` of them without
replacement from the run's PRNG key (all, in order, when the grid has no more), or, with
a mask (the term's over the output, a style's region over the style), with replacement
in proportion to the mask's mean over each cell, so every sample lies in the region. The key is the step's, folded with :data:`POSITIONS`:
terms with the same grid, samples and mask read the same positions (STROTSS's moments
and palette share the relaxed EMD's), every start draws its own, and the seed is traced.
With ``jitter`` each drawn position then moves, uniformly and afresh each step, to any
point of its cell (± (stride − 1)/2 pixels on each axis); it keeps its index, so a
target built per cell (``nearest``'s) still applies. Read at the cells' centres alone, a
stride-4 grid reads two pixels in four of every row and column of a full-resolution
layer, and the ``nnst`` preset's outputs grew a period-4 pattern in flat areas
(docs/evaluation.md, "`nnst` at 256 px").

Rotations. A style term with ``rotations`` also reads the style turned by 90°, 180° and
270° (:func:`turns`), as three more styles that share the style's weight and its region
(turned with it): NNST offers its nearest-neighbour search every stroke in four
orientations. Each turned image goes through the network, so its features are those of
the turned strokes, not the style's features turned.
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jaxcombine.options.layers import TORCHVISION_INPUT
from jaxcombine.options.recipe import RGB, Hypercolumn
from jaxcombine.stats import base
from jaxcombine.stats import masks as masks_lib

POSITIONS = 0x9C01  # folded into the step's key: the positions stream (output, then styles)
JITTER = 0x9C02  # folded into a stream's key: the offsets of its positions within their cells
EPS = 1e-8


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class Maps:
    """What a hypercolumn term reads from one image (or a stack of S, leading axis).

    ``arrays``: one (…, h, w, C) map per entry of ``spec.layers``, scaled; ``image``:
    the (…, H, W, 3) pixels (0–255) whose positions are drawn and whose colours a
    palette reads; ``region``: None, or (…, H, W) weights: where a style's positions
    may be drawn (``--style-region``). ``spec`` is structure (static in the pytree)."""

    arrays: tuple[jax.Array, ...]
    image: jax.Array
    spec: Hypercolumn = dataclasses.field(metadata=dict(static=True))
    region: jax.Array | None = None

    @property
    def shape(self) -> tuple[int, int]:
        """The image's (H, W): positions are in its pixels."""
        return tuple(self.image.shape[-3:-1])

    @property
    def strides(self) -> tuple[int, ...]:
        return strides(self.spec)

    @property
    def channels(self) -> int:
        """The length of one hypercolumn."""
        return sum(a.shape[-1] for a in self.arrays)

    def at(self, i: int) -> "Maps":
        """Image ``i`` of a stack."""
        region = None if self.region is None else self.region[i]
        return Maps(tuple(a[i] for a in self.arrays), self.image[i], self.spec, region)


QUARTER_TURNS = (0, 1, 2, 3)  # a rotations term's images of each style: k × 90°


def turns(image: Any) -> list[Any]:
    """An (H, W, …) image (or region) and its turns by 90°, 180° and 270°
    (counter-clockwise), in :data:`QUARTER_TURNS` order; an H×W image's odd turns are W×H."""
    return [jnp.rot90(image, k, axes=(0, 1)) for k in QUARTER_TURNS]


def turned_shapes(shape: Sequence[int]) -> list[tuple[int, int]]:
    """The (height, width) of each of :func:`turns`' images of an image of ``shape``."""
    h, w = shape[0], shape[1]
    return [(h, w) if k % 2 == 0 else (w, h) for k in QUARTER_TURNS]


def strides(spec: Hypercolumn) -> tuple[int, ...]:
    """Image pixels per cell of each entry: 1 for ``rgb``, 2^poolings for a layer."""
    return tuple(1 if name == RGB else 2 ** masks_lib.poolings(name) for name in spec.layers)


def colours(pixels: jax.Array) -> jax.Array:
    """``rgb`` entry of 0–255 pixels: normalised as torchvision's networks see them, so the
    colours weigh about as much as one unit-scale feature channel each."""
    c = TORCHVISION_INPUT
    shape = (1,) * (pixels.ndim - 1) + (3,)
    mean = jnp.asarray(c.mean, jnp.float32).reshape(shape)
    std = jnp.asarray(c.std, jnp.float32).reshape(shape)
    return (pixels.astype(jnp.float32) * c.scale - mean) / std


def maps(
    spec: Hypercolumn, features: Mapping[str, Any], pixels: Any, regions: Any = None
) -> "Maps | list[Maps]":
    """:class:`Maps` of ``spec`` from a forward's ``features`` (layer → (…, h, w, C)) and
    the ``pixels`` it saw (…, H, W, 3), each entry times its scale, with the images'
    ``regions`` (…, H, W) if given. Lists (images of different sizes: each layer a list
    of maps, ``pixels`` and ``regions`` lists) give a list of Maps."""
    if isinstance(pixels, (list, tuple)):
        return [
            maps(
                spec,
                {name: features[name][i] for name in spec.taps},
                p,
                None if regions is None else regions[i],
            )
            for i, p in enumerate(pixels)
        ]
    arrays = []
    for i, name in enumerate(spec.layers):
        a = colours(pixels) if name == RGB else features[name].astype(jnp.float32)
        arrays.append(a * spec.scale_of(i, a.shape[-1]))
    region = None if regions is None else jnp.asarray(regions, jnp.float32)
    return Maps(tuple(arrays), jnp.asarray(pixels, jnp.float32), spec, region)


def per_image(source: "Maps | Sequence[Maps]") -> list[Maps]:
    """A target's source as one :class:`Maps` per image: a stack (S, …) split, a list kept."""
    if isinstance(source, (list, tuple)):
        return list(source)
    return [source.at(i) for i in range(source.image.shape[0])]


# --------------------------------------------------------------------------- positions


def grid(shape: Sequence[int], stride: int) -> np.ndarray:
    """(P, 2) float32 positions (y, x) of the centres of an (H, W) image's stride×stride
    cells, row by row, ragged edges dropped."""
    h, w = shape[0] // stride, shape[1] // stride
    if h < 1 or w < 1:
        raise ValueError(f"an image of {shape[1]}x{shape[0]} has no cell of stride {stride}")
    centre = (stride - 1) / 2
    ys, xs = np.meshgrid(np.arange(h) * stride + centre, np.arange(w) * stride + centre)
    return np.stack([ys.T.reshape(-1), xs.T.reshape(-1)], axis=1).astype(np.float32)


def cell_weights(mask: jax.Array, stride: int) -> jax.Array:
    """(P,) a (H, W) mask's mean over each grid cell (:func:`grid`'s order)."""
    h, w = mask.shape[0] // stride, mask.shape[1] // stride
    cells = mask[: h * stride, : w * stride].reshape(h, stride, w, stride)
    return cells.mean(axis=(1, 3)).reshape(-1).astype(jnp.float32)


def draw(
    key: jax.Array | None,
    shape: Sequence[int],
    spec: Hypercolumn,
    mask: jax.Array | None = None,
) -> tuple[jax.Array, jax.Array]:
    """(indices (n,) into :func:`grid`, positions (n, 2)): ``spec.samples`` grid points of
    an (H, W) image, moved within their cells if ``spec.jitter`` (see the module
    docstring for the rule); n = min(samples, P)."""
    points = grid(shape, spec.stride)
    count = points.shape[0]
    n = min(spec.samples, count)
    jitter = spec.jitter and spec.stride > 1
    if key is None and (jitter or mask is not None or n < count):
        raise ValueError("sampling hypercolumn positions needs a PRNG key")
    if mask is None and n == count:
        index = jnp.arange(count, dtype=jnp.int32)
    else:
        if mask is None:
            index = jax.random.choice(key, count, (n,), replace=False)
        else:
            w = cell_weights(mask, spec.stride)
            index = jax.random.choice(key, count, (n,), replace=True, p=w / (jnp.sum(w) + EPS))
    where = jnp.asarray(points)[index]
    if jitter:
        half = (spec.stride - 1) / 2.0
        where = where + jax.random.uniform(
            jax.random.fold_in(key, JITTER), where.shape, minval=-half, maxval=half
        )
    return index, where


def positions_key(key: jax.Array | None, stream: int) -> jax.Array | None:
    """The key of one stream of positions: 0 the output's (and the content's, which reads
    the same positions), 1 + s style s's."""
    return None if key is None else jax.random.fold_in(key, stream)


# --------------------------------------------------------------------------- reading


def bilinear(layer: jax.Array, coords: jax.Array) -> jax.Array:
    """(N, C) values of an (h, w, C) map at (N, 2) fractional cell coordinates (y, x),
    clamped to the map; exact at integer coordinates."""
    h, w = layer.shape[0], layer.shape[1]
    y = jnp.clip(coords[:, 0], 0.0, h - 1.0)
    x = jnp.clip(coords[:, 1], 0.0, w - 1.0)
    y0 = jnp.floor(y).astype(jnp.int32)
    x0 = jnp.floor(x).astype(jnp.int32)
    y1 = jnp.minimum(y0 + 1, h - 1)
    x1 = jnp.minimum(x0 + 1, w - 1)
    fy = (y - y0)[:, None]
    fx = (x - x0)[:, None]
    top = layer[y0, x0] * (1.0 - fx) + layer[y0, x1] * fx
    bottom = layer[y1, x0] * (1.0 - fx) + layer[y1, x1] * fx
    return top * (1.0 - fy) + bottom * fy


def sample(source: Maps, positions: jax.Array) -> jax.Array:
    """(N, D) hypercolumns of one image's :class:`Maps` at (N, 2) image positions: every
    entry read bilinearly in its own grid (module docstring), concatenated in order."""
    columns = []
    for layer, d in zip(source.arrays, source.strides):
        columns.append(bilinear(layer, (positions - (d - 1) / 2.0) / d))
    return jnp.concatenate(columns, axis=-1)


def sample_colours(source: Maps, positions: jax.Array) -> jax.Array:
    """(N, 3) the image's RGB in 0–1 at (N, 2) positions (a palette's points)."""
    return bilinear(source.image, positions) / 255.0


# --------------------------------------------------------------------------- shared maths


def cosine_distances(x: jax.Array, y: jax.Array) -> jax.Array:
    """(N, M) 1 − cos(xᵢ, yⱼ) of (N, D) and (M, D) points."""
    xn = x / (jnp.linalg.norm(x, axis=-1, keepdims=True) + EPS)
    yn = y / (jnp.linalg.norm(y, axis=-1, keepdims=True) + EPS)
    return 1.0 - xn @ yn.T


def euclidean_distances(x: jax.Array, y: jax.Array) -> jax.Array:
    """(N, M) ‖xᵢ − yⱼ‖ of (N, D) and (M, D) points (a gradient-safe square root)."""
    sq = (
        jnp.sum(jnp.square(x), axis=-1)[:, None]
        + jnp.sum(jnp.square(y), axis=-1)[None, :]
        - 2.0 * x @ y.T
    )
    return jnp.sqrt(jnp.maximum(sq, 0.0) + EPS)


def relaxed_emd(cost: jax.Array, weights: jax.Array | None = None) -> jax.Array:
    """Kolkin et al.'s relaxed earth mover's distance of an (N, M) cost matrix: the larger
    of the mean row minimum (each output point to its nearest target point) and the
    mean column minimum (each target point to its nearest output point), each the lower
    bound of the transport cost with one marginal constraint dropped. ``weights`` (M,),
    summing to 1, weigh the target points' column minima (several styles); a point of
    weight 0 is no row's nearest."""
    if weights is None:
        return jnp.maximum(jnp.mean(jnp.min(cost, axis=1)), jnp.mean(jnp.min(cost, axis=0)))
    rows = jnp.min(jnp.where(weights[None, :] > 0, cost, jnp.inf), axis=1)
    return jnp.maximum(jnp.mean(rows), jnp.dot(weights, jnp.min(cost, axis=0)))


def style_points(
    key: jax.Array | None,
    target: Mapping[str, Any],
    read: Any = sample,
) -> tuple[jax.Array, jax.Array]:
    """(points (M, D), weights (M,)): ``read`` (:func:`sample`, :func:`sample_colours`)
    at positions drawn in every style of a target (:func:`style_target`), each style's
    points weighing its blend weight shared among them."""
    points, weights = [], []
    for s, source in enumerate(target["styles"]):
        _, where = draw(positions_key(key, 1 + s), source.shape, source.spec, source.region)
        points.append(read(source, where))
        weights.append(jnp.full((where.shape[0],), 1.0 / where.shape[0]) * target["weights"][s])
    return jnp.concatenate(points), jnp.concatenate(weights)


def style_target(features: "Maps | Sequence[Maps]", weights: jax.Array) -> dict[str, Any]:
    """The target of a statistic that draws style positions every step: each style's
    :class:`Maps` (``styles``) and the blend ``weights``."""
    return {"styles": tuple(per_image(features)), "weights": weights.astype(jnp.float32)}


def output_points(
    key: jax.Array | None, features: Maps, mask: jax.Array | None, read: Any = sample
) -> jax.Array:
    """``read`` at the output positions of this step (the positions stream 0)."""
    _, where = draw(positions_key(key, 0), features.shape, features.spec, mask)
    return read(features, where)


class StyleSampled(base.Family):
    """A statistic of this step's output points against points drawn from the style
    (``emd``, ``moments``, ``palette``): the flags, the target (:func:`style_target`) and
    the two draws in one place, as :class:`~jaxcombine.stats.base.Matched` holds them for
    one-value statistics. A subclass says what is read at each position (``read``:
    :func:`sample` or :func:`sample_colours`) and how the two weighted point sets compare
    (:meth:`compare`)."""

    random: ClassVar[bool] = True
    hypercolumn: ClassVar[bool] = True
    read: ClassVar[Any] = staticmethod(sample)

    def compare(self, x: jax.Array, y: jax.Array, weights: jax.Array) -> jax.Array:
        """The term of output points ``x`` (N, D) against style points ``y`` (M, D)
        weighing ``weights`` (M,)."""
        raise NotImplementedError

    def target(self, features, weights, *, content=None):
        return style_target(features, weights)

    def term(self, features, target, *, key=None, mask=None):
        x = output_points(key, features, mask, self.read)
        y, weights = style_points(key, target, self.read)
        return self.compare(x, y, weights)
