"""The recipe loss: every term of a recipe, each through its statistic (:mod:`.base`).

Normalisation — why a weight means the same thing at every layer and size: every
statistic is a mean over positions and every term is normalised by its target, so a
term is 1.0 when the output is all zero (as far from the target as zero is) and 0 at
the target, whatever the layer's activation scale or the image size (each
statistic's module says how). Total variation is the mean squared difference of
neighbouring pixels, in units of the 0–255 range (so 1.0 means neighbours differ by
the full range).

Each term has a target (:func:`target`: from the source image's features, several
style images blended with weights) and a term (:func:`term`: the output's features
against that target). Random statistics draw from a PRNG key: term i from
``fold_in(key, i)``. A hypercolumn term (:mod:`jaxcombine.stats.hypercolumns`) reads
the maps of several layers and the image (:func:`inputs`), its mask at the image's
size, and draws its positions from the step's key itself, so that terms that sample
alike read the same positions.

Masks (:mod:`jaxcombine.stats.masks`): a term may carry a mask over the *output*; its
statistic is then the masked region's (each statistic weighs positions by the mask
over its area Σm), compared with the source's whole-image target. With per-style
masks every style term is one masked term per style against that style's own target.
Masks travel in the targets pytree (``targets["masks"]``, and with per-style masks
``targets["style_masks"]`` with ``targets["style_weights"]``), traced like the
targets; only their presence (``Term.mask``, the pytree's keys) is structure.
"""

from __future__ import annotations

from typing import Any, Mapping

import jax
import jax.numpy as jnp

from jaxcombine.options.recipe import Recipe, Term
from jaxcombine.stats import base
from jaxcombine.stats import hypercolumns as hypercolumns_lib
from jaxcombine.stats import masks as masks_lib

EPS = base.EPS
relative_mse = base.relative_mse
masked_relative_mse = base.masked_relative_mse


def statistic(features: jax.Array, name: str, mask: jax.Array | None = None) -> jax.Array:
    """The value of statistic ``name`` of a feature map, in float32, for the statistics
    that have one array value (``mask``: of the masked region; ignored by a spatial one)."""
    stat = base.get(name)
    if not hasattr(stat, "value"):
        raise ValueError(f"statistic {name!r} has no single value; use losses.target/term")
    return stat.value(features, mask)


def total_variation(rgb: jax.Array) -> jax.Array:
    """Mean squared neighbour difference of (…, H, W, 3) pixels in 0–255, over 255²."""
    dy = jnp.diff(rgb, axis=-3)
    dx = jnp.diff(rgb, axis=-2)
    return (jnp.mean(jnp.square(dy)) + jnp.mean(jnp.square(dx))) / (255.0**2)


# --------------------------------------------------------------------------- targets and terms


def inputs(t: Term, features: Mapping[str, Any], pixels: Any, regions: Any = None) -> Any:
    """What term ``t``'s statistic reads from a forward's ``features`` (layer → maps) of
    ``pixels``: its layer's map, or for a hypercolumn term the
    :class:`~jaxcombine.stats.hypercolumns.Maps` of its layers and the image (and the
    ``regions`` of the images where its positions may lie). Leading axes (a stack of
    images) and lists (images of different sizes) are kept."""
    if t.hypercolumn is None:
        return features[t.layer]
    return hypercolumns_lib.maps(t.hypercolumn, features, pixels, regions)


def one_image(source: Any, i: int) -> Any:
    """Image ``i`` of a stack or list of :func:`inputs`."""
    return source.at(i) if isinstance(source, hypercolumns_lib.Maps) else source[i]


def target(
    name: str,
    features: "jax.Array | list[jax.Array]",
    weights: jax.Array,
    content: Any = None,
) -> Any:
    """The target of statistic ``name`` from (S, H, W, C) source features, S images
    blended with ``weights`` (S,) (normalised here); how each blends is its module's.

    ``features`` may be a list of S maps (H_s, W_s, C): of one size they are stacked;
    of different sizes (styles at their own ``style_scale``) the statistic takes each
    map's statistics alone (a spatial one cannot: a ValueError). A hypercolumn
    statistic takes :func:`inputs` as they are; a paired one also the ``content``'s.
    """
    weights = jnp.asarray(weights, jnp.float32)
    weights = weights / jnp.sum(weights)
    stat = base.get(name)
    if stat.paired:
        return stat.target(features, weights, content=content)
    if stat.hypercolumn:
        return stat.target(features, weights)
    if isinstance(features, (list, tuple)) and len({f.shape for f in features}) <= 1:
        features = jnp.stack(features)
    elif isinstance(features, (list, tuple)):
        features = list(features)
    return stat.target(features, weights)


def term(
    name: str,
    features: jax.Array,
    target: Any,
    key: jax.Array | None = None,
    mask: jax.Array | None = None,
) -> jax.Array:
    """Unweighted term of one (H, W, C) feature map against its ``target`` (:func:`target`).

    ``key`` (a PRNG key) is needed by the random statistics; ``mask`` (H, W), at the
    map's resolution, restricts the output's statistic to a region."""
    return base.get(name).term(features, target, key=key, mask=mask)


def distance(
    name: str, features: jax.Array, reference: jax.Array, key: jax.Array | None = None
) -> jax.Array:
    """The term of ``features`` with ``reference`` (both (H, W, C)) as the source image."""
    return base.get(name).distance(features, reference, key)


def spatial_layers(recipe: Recipe) -> list[str]:
    """Layers whose target is a feature map of the output's shape (a spatial statistic's):
    what grows with the image in memory, and what row shards must slice."""
    return list(dict.fromkeys(t.layer for t in recipe.terms if base.get(t.statistic).spatial))


def spatial_target_keys(recipe: Recipe) -> list[str]:
    """:func:`target_key` of every term whose target is a feature map (see above)."""
    return [target_key(t) for t in recipe.terms if base.get(t.statistic).spatial]


def target_key(term: Term) -> str:
    """Targets are shared between terms with the same (source, statistic, layer), masked
    or not (a mask restricts the output's statistic, not the target's); a hypercolumn
    term's "layer" is everything that changes its maps (:attr:`Hypercolumn.key`)."""
    layer = term.layer if term.hypercolumn is None else term.hypercolumn.key
    return f"{term.source}:{term.statistic}:{layer}"


def terms(
    features: Mapping[str, jax.Array],
    targets: Mapping[str, Any],
    rgb: jax.Array,
    recipe: Recipe,
    key: jax.Array | None = None,
) -> jax.Array:
    """Unweighted value of every component in ``recipe.labels`` order (terms…, tv).

    Term i of a random statistic draws from ``fold_in(key, i)``; a hypercolumn term
    from ``fold_in(key, hypercolumns.POSITIONS)``, the same for all of them. A term that
    does not count in this stage (:attr:`Term.skipped`) is not computed: it reads 0."""
    values = []
    for i, t in enumerate(recipe.terms):
        if t.skipped:
            values.append(jnp.zeros((), jnp.float32))
            continue
        stat = base.get(t.statistic)
        stream = hypercolumns_lib.POSITIONS if stat.hypercolumn else i
        k = None if key is None or not stat.random else jax.random.fold_in(key, stream)
        values.append(_masked_term(t, inputs(t, features, rgb), targets, k))
    values.append(total_variation(rgb))
    return jnp.stack(values)


def _at_term(mask: jax.Array, t: Term, features: Any) -> jax.Array:
    """An image-size mask where term ``t`` reads it: at its layer's resolution, or as it
    is for a hypercolumn term (whose positions are image pixels)."""
    if t.hypercolumn is not None:
        return mask
    return masks_lib.at_layer(mask, t.layer, features.shape)


def _masked_term(
    t: Term, features: Any, targets: Mapping[str, Any], key: jax.Array | None
) -> jax.Array:
    """One term with its masks: the term's own (``targets["masks"][t.mask]``) and, for a
    style term when styles have masks, one masked term per style against that style's
    own target (``targets[key][s]``), weighted by the normalised style weights."""
    mask = None
    if t.mask is not None:
        if "masks" not in targets:
            raise ValueError(f"term {t.label} has a mask: compute the targets with its masks")
        mask = targets["masks"][t.mask]
    target_ = targets[target_key(t)]
    if t.source == "style" and "style_masks" in targets:
        per_style = targets["style_masks"]
        weights_ = targets["style_weights"]
        total = jnp.zeros((), jnp.float32)
        for s in range(per_style.shape[0]):
            m = per_style[s] if mask is None else per_style[s] * mask
            total = total + weights_[s] * term(
                t.statistic,
                features,
                target_[s],
                key,
                _at_term(m, t, features),
            )
        return total
    if mask is not None:
        mask = _at_term(mask, t, features)
    return term(t.statistic, features, target_, key, mask)


def weights(recipe: Recipe) -> jax.Array:
    """Weight of every component in ``recipe.labels`` order."""
    return jnp.asarray([t.weight for t in recipe.terms] + [recipe.tv_weight], jnp.float32)
