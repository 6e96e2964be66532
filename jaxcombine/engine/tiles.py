"""Exact loss and pixel gradient computed tile by tile: memory set by the tile, not the image.

Why: a step's memory is the VGG activations of the whole image kept for the
backward pass, so the largest image is bounded by one device's memory. A *tileable*
statistic (:class:`jaxcombine.stats.Statistic`) is a function of sums over positions
(its :meth:`~jaxcombine.stats.Statistic.sums`: a Gram matrix of Σ f fᵀ, mean/std of
Σ f and Σ f², an activations term of Σ (f − t)² …), so:

1. **Pass 1** runs the forward on overlapping windows, one at a time, and adds
   up each window's sums over its *interior* positions: the global sums M.
2. The loss L(M) (each statistic's ``from_sums``) and its gradient ∂L/∂M are
   computed once, globally.
3. **Pass 2** runs, per window, the vjp of (window pixels → the window's interior
   sums) with the cotangent ∂L/∂M held fixed, and adds the window's pixel
   gradient (halo included) into the image's. By the chain rule over
   M = Σ_tiles M_tile this is the exact gradient, not an approximation.

A window is its tile plus a **halo** on each side at least as wide as a window
edge's zero padding reaches into the deepest tap (:func:`reach`: 80 px for
``block5_conv1``, from the architecture), so the interior features equal the
whole image's; its origin is
a multiple of the **stride** 2^(pools before the deepest tap), so the pooled
grids line up with the whole image's. Windows have one shape (clamped inside
the image, the last ones shifted back), so one compiled program serves every
tile; the tiles are a ``lax.scan`` and only one window's activations exist at a
time. Costs: the forward twice (passes 1 and 2) and the halos' area.

Targets are tiled the same way (:func:`targets`): each image's sums
(``target_sums``), finished and blended by ``target_from_sums``; a *spatial*
statistic's target (a feature map of the output's shape) is assembled from the
windows' interiors and sliced back to each window. Statistics that are no sum over
positions (sorts: ``tileable`` False) are refused in one line (:func:`check`).
Total variation is computed on the whole image (pixels only). No statistic is named
here. Tested against the untiled gradient: tests/test_tiles.py.
"""

from __future__ import annotations

from typing import Any, Mapping, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxcombine.errors import JaxcombineError
from jaxcombine.options import layers as layers_lib
from jaxcombine.stats import base, losses


def check(recipe: Any) -> None:
    """One-line error if ``recipe`` has a statistic that is no sum over positions."""
    bad = [t.statistic for t in recipe.terms if not base.get(t.statistic).tileable]
    if bad:
        tileable = [name for name in base.names() if base.get(name).tileable]
        raise JaxcombineError(
            f"tiled gradients support {', '.join(tileable)}; statistic "
            f"{bad[0]!r} is not a sum over positions (use tile 0)"
        )


def stride(layers: Any, arch: str = "vgg19") -> int:
    """2^(pools up to the deepest tap): tile origins are multiples of it."""
    layers_lib.check_uniform(arch, "tiles")
    return max(layers_lib.downsampling(layers, arch).values())


def reach(layers: Any, arch: str = "vgg19") -> int:
    """How far (px) a window's edge changes the features of the deepest tap.

    The zero padding at an edge where the image goes on spoils the first row of
    a 3×3 convolution's output, and each further convolution one row more; a
    2×2 pool halves the spoiled rows, rounding up (a pooled cell with one spoiled
    input is spoiled). In rows of the tap times its downsampling: 80 px for
    ``block5_conv1`` (5 cells of 16 px).
    """
    spoiled, worst = 0, 0
    for name, d in layers_lib.downsampling(layers, arch).items():
        spoiled = -(-spoiled // 2) if name.endswith("_pool") else spoiled + 1
        worst = max(worst, spoiled * d)
    return worst


def halo(layers: Any, arch: str = "vgg19") -> int:
    """The halo each window adds on each side: :func:`reach` rounded up to :func:`stride`."""
    s = stride(layers, arch)
    return -(-reach(layers, arch) // s) * s


class Axis(NamedTuple):
    """The windows along one image axis (numpy: a plan depends on shapes only)."""

    window: int  # window length, px (the same for every window)
    origins: np.ndarray  # (n,) first pixel of each window, multiples of the stride
    starts: np.ndarray  # (n,) first interior pixel of each tile
    ends: np.ndarray  # (n,) one past its last


def plan_axis(length: int, tile: int, halo_px: int, stride_px: int) -> Axis:
    """Tiles of ``tile`` px (a multiple of ``stride_px``) over ``length`` px, each with its window.

    The window is ``tile + 2·halo`` px, lengthened to be ≡ ``length`` mod the stride
    (so a window clamped against the image's far edge still starts on the stride),
    or the whole axis if that is longer.
    """
    if tile < stride_px or tile % stride_px:
        raise JaxcombineError(
            f"tile must be a multiple of {stride_px} px (2^pools before the "
            f"deepest layer), got {tile}"
        )
    n = -(-length // tile)
    window = tile + 2 * halo_px
    window = length if window >= length else window + (length - window) % stride_px
    starts = np.arange(n) * tile
    ends = np.minimum(starts + tile, length)
    origins = np.clip(starts - halo_px, 0, length - window)
    return Axis(window, origins, starts, ends)


def plan(height: int, width: int, tile: int, layers: Any, arch: str = "vgg19") -> tuple[Axis, Axis]:
    """The windows over rows and over columns for ``tile``-px tiles of an image."""
    h, s = halo(layers, arch), stride(layers, arch)
    return plan_axis(height, tile, h, s), plan_axis(width, tile, h, s)


# --------------------------------------------------------------------------- sums per window


def _interior(axis_origin, start, end, d: int, size: int, length: int) -> jax.Array:
    """(size,) float mask: which of a window's rows at downsampling ``d`` are its tile's."""
    idx = axis_origin // d + jnp.arange(size)
    hi = jnp.where(end >= length, length // d, end // d)
    return ((idx >= start // d) & (idx < hi)).astype(jnp.float32)


def _where(where: jax.Array, d: int, f: jax.Array, shape: tuple[int, int]) -> jax.Array:
    """(h, w) float mask of a window's feature map at downsampling ``d``: its tile's
    interior. ``where`` = (origin_y, origin_x, start_y, end_y, start_x, end_x)."""
    oy, ox, y0, y1, x0, x1 = (where[i] for i in range(6))
    hw, ww = f.shape[:2]
    return (
        _interior(oy, y0, y1, d, hw, shape[0])[:, None]
        * _interior(ox, x0, x1, d, ww, shape[1])[None, :]
    )


def _window_sums(
    problem: Any,
    variables: Mapping,
    targets: Mapping,
    window: jax.Array,
    where: jax.Array,
    shape: tuple[int, int],
) -> dict[str, Any]:
    """Each term's sums over the tile's interior positions of one window (H_w, W_w, 3).

    ``where`` = (origin_y, origin_x, start_y, end_y, start_x, end_x) of the window
    and its tile; ``shape`` the whole image's (H, W). A spatial target is sliced to the
    window.
    """
    feats = problem.network().apply(variables, window[None])
    levels = layers_lib.downsampling(problem.recipe.layers, problem.arch)
    out: dict[str, Any] = {}
    for t in problem.recipe.terms:
        key = losses.target_key(t)
        if key in out or t.skipped:  # a term this stage does not compute (Term.during)
            continue
        stat = base.get(t.statistic)
        f = feats[t.layer][0].astype(jnp.float32)
        d = levels[t.layer]
        target = targets[key]
        if stat.spatial:
            target = jax.lax.dynamic_slice(target, (where[0] // d, where[1] // d, 0), f.shape)
        out[key] = stat.sums(f, _where(where, d, f, shape), target)
    return out


def _terms(problem: Any, targets: Mapping, sums: Mapping, shape: tuple[int, int]) -> list:
    """Every term's value from the global sums (each statistic's ``from_sums``); a term
    this stage does not compute reads 0, as in :func:`losses.terms`."""
    levels = layers_lib.downsampling(problem.recipe.layers, problem.arch)
    values = []
    for t in problem.recipe.terms:
        if t.skipped:
            values.append(jnp.zeros((), jnp.float32))
            continue
        key = losses.target_key(t)
        d = levels[t.layer]
        n = (shape[0] // d) * (shape[1] // d)
        values.append(base.get(t.statistic).from_sums(sums[key], n, targets[key]))
    return values


# --------------------------------------------------------------------------- the two passes


def _tiles(pixels: jax.Array, tile: int, problem: Any) -> tuple[tuple[int, int], jax.Array]:
    """Window shape and the (n_tiles, 6) int32 table of windows and tiles, rows major."""
    rows, cols = plan(pixels.shape[0], pixels.shape[1], tile, problem.recipe.layers, problem.arch)
    table = [
        (oy, ox, y0, y1, x0, x1)
        for oy, y0, y1 in zip(rows.origins, rows.starts, rows.ends)
        for ox, x0, x1 in zip(cols.origins, cols.starts, cols.ends)
    ]
    return (rows.window, cols.window), jnp.asarray(np.asarray(table, np.int32))


def _window(pixels: jax.Array, where: jax.Array, size: tuple[int, int]) -> jax.Array:
    return jax.lax.dynamic_slice(pixels, (where[0], where[1], 0), (*size, pixels.shape[-1]))


def value(
    problem: Any,
    variables: Mapping,
    targets: Mapping,
    pixels: jax.Array,
    weights: jax.Array,
    *,
    tile: int,
) -> tuple[jax.Array, jax.Array]:
    """(weighted total, components) for one image (H, W, 3), from ``tile``-px tiles
    (pass 1 only: what a line search needs)."""
    total, comps, _ = _pass1(problem, variables, targets, pixels, weights, tile)
    return total, comps


def _pass1(problem, variables, targets, pixels, weights, tile):
    check(problem.recipe)
    shape = pixels.shape[:2]
    size, table = _tiles(pixels, tile, problem)

    def one(where):  # one tile's sums
        return _window_sums(problem, variables, targets, _window(pixels, where, size), where, shape)

    zeros = jax.tree.map(jnp.zeros_like, jax.eval_shape(one, table[0]))
    sums, _ = jax.lax.scan(lambda acc, w: (jax.tree.map(jnp.add, acc, one(w)), None), zeros, table)

    def total(sums, pixels):
        comps = jnp.stack(_terms(problem, targets, sums, shape) + [losses.total_variation(pixels)])
        return jnp.dot(weights, comps), comps

    return *total(sums, pixels), (sums, total, size, table)


def value_and_grad(
    problem: Any,
    variables: Mapping,
    targets: Mapping,
    pixels: jax.Array,
    weights: jax.Array,
    *,
    tile: int,
) -> tuple[tuple[jax.Array, jax.Array], jax.Array]:
    """``((total, components), ∂total/∂pixels)`` of one image (H, W, 3), exactly, tile by tile.

    The same value as ``jax.value_and_grad(engine.loss, has_aux=True)`` (to float32
    rounding), with memory set by ``tile`` (a multiple of :func:`stride`) plus the
    halos instead of by the image. ``weights``: the components' (recipe order, TV last).
    """
    value_, comps, (sums, total, size, table) = _pass1(
        problem, variables, targets, pixels, weights, tile
    )
    d_sums, d_pixels = jax.grad(lambda s, p: total(s, p)[0], argnums=(0, 1))(sums, pixels)
    shape = pixels.shape[:2]

    def add_tile(grad, where):
        window = _window(pixels, where, size)
        _, vjp = jax.vjp(
            lambda w: _window_sums(problem, variables, targets, w, where, shape), window
        )
        (g,) = vjp(d_sums)
        start = (where[0], where[1], 0)
        return jax.lax.dynamic_update_slice(grad, _window(grad, where, size) + g, start), None

    grad, _ = jax.lax.scan(add_tile, d_pixels, table)  # TV's gradient, then every tile's
    return (value_, comps), grad


# --------------------------------------------------------------------------- targets


def targets(
    problem: Any,
    variables: Mapping,
    content: jax.Array,
    styles: jax.Array,
    style_weights: jax.Array | None = None,
    *,
    tile: int,
) -> dict[str, Any]:
    """What :func:`engine.compute_targets` returns, computed tile by tile (a forward only),
    so the targets of a large image need no more memory than its steps.

    Each statistic's target comes from each image's sums over every position
    (``target_sums``), blended with the weights by ``target_from_sums``; a spatial
    statistic's from the images' whole feature maps, assembled from the windows'
    interiors (its ``target``).
    """
    check(problem.recipe)
    if style_weights is None:
        style_weights = jnp.full((styles.shape[0],), 1.0 / styles.shape[0])
    style_weights = style_weights / jnp.sum(style_weights)
    full = layers_lib.layer_shapes(problem.recipe.layers, *content.shape[:2], problem.arch)
    out: dict[str, Any] = {}
    for source, imgs, w in (
        ("content", content[None], jnp.ones((1,), jnp.float32)),
        ("style", styles, style_weights),
    ):
        terms = [t for t in problem.recipe.terms if t.source == source and not t.skipped]
        if not terms:
            continue
        per_image = [_image_sums(problem, variables, img, terms, tile) for img in imgs]
        for t in terms:
            key, stat = losses.target_key(t), base.get(t.statistic)
            if stat.spatial:
                out[key] = stat.target(jnp.stack([m[key] for m in per_image]), w)
            else:
                n = full[t.layer][0] * full[t.layer][1]
                out[key] = stat.target_from_sums([m[key] for m in per_image], [n] * len(imgs), w)
    return out


def _image_sums(problem: Any, variables: Mapping, img: jax.Array, terms: list, tile: int) -> dict:
    """Per target of ``terms``: the statistic's ``target_sums`` over every position of
    the image, or, for a spatial statistic, its whole feature map."""
    shape = img.shape[:2]
    size, table = _tiles(img, tile, problem)
    levels = layers_lib.downsampling(problem.recipe.layers, problem.arch)
    full = layers_lib.layer_shapes(problem.recipe.layers, *shape, problem.arch)
    stats = {losses.target_key(t): (base.get(t.statistic), t.layer) for t in terms}

    def window(where):
        feats = problem.network().apply(variables, _window(img, where, size)[None])
        out = {}
        for key, (stat, layer) in stats.items():
            f = feats[layer][0].astype(jnp.float32)
            inner = _where(where, levels[layer], f, shape)
            out[key] = inner[..., None] * f if stat.spatial else stat.target_sums(f, inner)
        return out

    def add(acc, where):
        new = dict(acc)
        for key, part in window(where).items():
            stat, layer = stats[key]
            if stat.spatial:  # the interior's features, placed in the whole map
                at = (where[0] // levels[layer], where[1] // levels[layer], 0)
                old = jax.lax.dynamic_slice(acc[key], at, part.shape)
                new[key] = jax.lax.dynamic_update_slice(acc[key], old + part, at)
            else:
                new[key] = jax.tree.map(jnp.add, acc[key], part)
        return new, None

    shapes = jax.eval_shape(window, table[0])
    init = {
        key: jnp.zeros(full[layer], jnp.float32)
        if stat.spatial
        else jax.tree.map(lambda a: jnp.zeros(a.shape, a.dtype), shapes[key])
        for key, (stat, layer) in stats.items()
    }
    sums, _ = jax.lax.scan(add, init, table)
    return sums
