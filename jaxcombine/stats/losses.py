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
``fold_in(key, i)``.

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
from jaxcombine.stats import masks as masks_lib
from jaxcombine.stats.gram import gram  # noqa: F401  (the maths, by its old name)
from jaxcombine.stats.meanstd import mean_std  # noqa: F401

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


def target(name: str, features: "jax.Array | list[jax.Array]", weights: jax.Array) -> Any:
    """The target of statistic ``name`` from (S, H, W, C) source features, S images
    blended with ``weights`` (S,) (normalised here); how each blends is its module's.

    ``features`` may be a list of S maps (H_s, W_s, C): of one size they are stacked;
    of different sizes (styles at their own ``style_scale``) the statistic takes each
    map's statistics alone (a spatial one cannot: a ValueError).
    """
    weights = jnp.asarray(weights, jnp.float32)
    weights = weights / jnp.sum(weights)
    if isinstance(features, (list, tuple)) and len({f.shape for f in features}) <= 1:
        features = jnp.stack(features)
    elif isinstance(features, (list, tuple)):
        features = list(features)
    return base.get(name).target(features, weights)


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
    or not (a mask restricts the output's statistic, not the target's)."""
    return f"{term.source}:{term.statistic}:{term.layer}"


def terms(
    features: Mapping[str, jax.Array],
    targets: Mapping[str, Any],
    rgb: jax.Array,
    recipe: Recipe,
    key: jax.Array | None = None,
) -> jax.Array:
    """Unweighted value of every component in ``recipe.labels`` order (terms…, tv).

    Term i of a random statistic draws from ``fold_in(key, i)``."""
    values = []
    for i, t in enumerate(recipe.terms):
        random = base.get(t.statistic).random
        k = None if key is None or not random else jax.random.fold_in(key, i)
        values.append(_masked_term(t, features[t.layer], targets, k))
    values.append(total_variation(rgb))
    return jnp.stack(values)


def _masked_term(
    t: Term, features: jax.Array, targets: Mapping[str, Any], key: jax.Array | None
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
                masks_lib.at_layer(m, t.layer, features.shape),
            )
        return total
    if mask is not None:
        mask = masks_lib.at_layer(mask, t.layer, features.shape)
    return term(t.statistic, features, target_, key, mask)


def weights(recipe: Recipe) -> jax.Array:
    """Weight of every component in ``recipe.labels`` order."""
    return jnp.asarray([t.weight for t in recipe.terms] + [recipe.tv_weight], jnp.float32)
