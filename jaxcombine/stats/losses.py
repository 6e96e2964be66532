"""Loss terms as pure functions of feature maps, and the recipe loss built from them.

Normalisation — why a weight means the same thing at every layer and size:
every statistic is a mean over positions (Gram and covariance matrices divide
by H·W; mean and std are per channel), and every matched statistic's term is a
*relative* squared error,

    term = mean((S(x) - S_target)²) / mean(S_target²),

so a term is 1.0 when the generated statistic is as far from the target as
zero is, whatever the layer's activation scale or the image size. The two
distribution distances (:mod:`jaxcombine.stats.statistics`) are normalised the same
way: ``w2`` divides W2² by the target's E‖y‖² = tr Σ + ‖μ‖², ``swd`` the sliced
distance by the target's mean squared value, so both are 1.0 for an all-zero
output too. Total variation is the mean squared difference of neighbouring
pixels, in units of the 0–255 range (so 1.0 means neighbours differ by the full range).

Each statistic has a target (:func:`target`: from the source image's features,
several style images blended with weights) and a term (:func:`term`: the
output's features against that target). ``swd`` draws random directions, so
terms take a PRNG key; the others ignore it.

Masks (:mod:`jaxcombine.stats.masks`): a term may carry a mask over the *output*. Its
statistic is then the masked region's — Gram, covariance, mean/std and the Gaussian
and sliced distances weighted by the mask and normalised by its area Σm instead of
H·W — compared with the source's whole-image target, and an ``activations`` error
is the mask-weighted mean over the region relative to the target's there. Masks
travel in the targets pytree (``targets["masks"]``, and with per-style masks
``targets["style_masks"]`` with ``targets["style_weights"]``), traced like the
targets; only their presence (``Term.mask``, the pytree's keys) is structure.
"""

from __future__ import annotations

from typing import Any, Mapping

import jax
import jax.numpy as jnp

from jaxcombine.options.recipe import Recipe, Term
from jaxcombine.stats import masks as masks_lib
from jaxcombine.stats import statistics

EPS = 1e-8
# Statistics compared by relative squared error; the others are distribution distances.
MATCHED = ("activations", "gram", "meanstd", "covariance")
RANDOM = ("swd",)  # statistics whose term needs a PRNG key


def gram(features: jax.Array, mask: jax.Array | None = None) -> jax.Array:
    """(…, H, W, C) → (…, C, C) channel correlations, divided by H·W (or, with an (H, W)
    ``mask``, weighted by it and divided by its area Σm)."""
    *batch, h, w, c = features.shape
    f = features.reshape(*batch, h * w, c)
    if mask is not None:
        return jnp.einsum("p,...pc,...pd->...cd", statistics.point_weights(mask, features), f, f)
    return jnp.einsum("...pc,...pd->...cd", f, f) / (h * w)


def mean_std(features: jax.Array, mask: jax.Array | None = None) -> jax.Array:
    """(…, H, W, C) → (…, 2, C): per-channel mean and standard deviation (of the masked
    region, each position weighted by ``mask`` over its area, when one is given)."""
    if mask is not None:
        w = statistics.point_weights(mask, features)
        f = statistics.points(features)
        mean = jnp.einsum("p,...pc->...c", w, f)
        var = jnp.einsum("p,...pc->...c", w, jnp.square(f - mean[..., None, :]))
    else:
        mean = jnp.mean(features, axis=(-3, -2))
        var = jnp.var(features, axis=(-3, -2))
    return jnp.stack([mean, jnp.sqrt(var + EPS)], axis=-2)


def statistic(features: jax.Array, name: str, mask: jax.Array | None = None) -> jax.Array:
    """The statistic ``name`` (one of :data:`MATCHED`) of a feature map, in float32
    (``mask``: of the masked region; ignored by ``activations``, see :func:`term`)."""
    features = features.astype(jnp.float32)
    if name == "activations":
        return features
    if name == "gram":
        return gram(features, mask)
    if name == "meanstd":
        return mean_std(features, mask)
    if name == "covariance":
        return statistics.covariance(features, mask)
    raise ValueError(f"statistic {name!r} is not a matched statistic; use losses.target/term")


def relative_mse(x: jax.Array, target: jax.Array) -> jax.Array:
    """mean((x - target)²) / mean(target²): scale-free squared error."""
    if x.shape != target.shape:
        raise ValueError(f"shape mismatch: {x.shape} vs target {target.shape}")
    return jnp.mean(jnp.square(x - target)) / (jnp.mean(jnp.square(target)) + EPS)


def masked_relative_mse(x: jax.Array, target: jax.Array, mask: jax.Array) -> jax.Array:
    """:func:`relative_mse` of (H, W, C) maps over an (H, W) ``mask``: the squared error and
    the target's square, each a mask-weighted mean over the region (divided by Σm·C)."""
    if x.shape != target.shape:
        raise ValueError(f"shape mismatch: {x.shape} vs target {target.shape}")
    w = statistics.point_weights(mask, x)
    err = jnp.einsum("p,pc->", w, jnp.square(statistics.points(x - target)))
    ref = jnp.einsum("p,pc->", w, jnp.square(statistics.points(target)))
    return err / (ref + EPS)


def total_variation(rgb: jax.Array) -> jax.Array:
    """Mean squared neighbour difference of (…, H, W, 3) pixels in 0–255, over 255²."""
    dy = jnp.diff(rgb, axis=-3)
    dx = jnp.diff(rgb, axis=-2)
    return (jnp.mean(jnp.square(dy)) + jnp.mean(jnp.square(dx))) / (255.0**2)


# --------------------------------------------------------------------------- targets and terms


def target(name: str, features: "jax.Array | list[jax.Array]", weights: jax.Array) -> Any:
    """The target of statistic ``name`` from (S, H, W, C) source features, S images
    blended with ``weights`` (S,) (normalised here).

    Blending: activations, Gram matrices and mean/std are averaged with the
    weights; ``covariance`` and ``w2`` take the covariance (and mean) of the
    weighted mixture of the images' feature points (the Gram blend less the
    blended mean's outer product); ``swd`` keeps every image's points with its weight.
    ``features`` may be a list of S maps (H_s, W_s, C) of different sizes (styles at
    their own ``style_scale``): the same blends, each map's statistics taken alone
    (activations of different sizes cannot blend: a ValueError).
    """
    weights = jnp.asarray(weights, jnp.float32)
    weights = weights / jnp.sum(weights)
    if isinstance(features, (list, tuple)):
        if len({f.shape for f in features}) > 1:
            return _mixed_target(name, list(features), weights)
        features = jnp.stack(features)
    if name == "covariance":  # Σ wₛ (Σₛ + (μₛ − μ)(μₛ − μ)ᵀ): centred first, for float32
        means = jnp.mean(statistics.points(features), axis=1)  # (S, C)
        spread = means - jnp.tensordot(weights, means, axes=1)[None]
        return jnp.tensordot(
            weights,
            statistics.covariance(features) + spread[:, :, None] * spread[:, None, :],
            axes=1,
        )
    if name in MATCHED:
        return jnp.tensordot(weights, statistic(features, name), axes=1)
    if name == "w2":
        return statistics.gaussian_target(features, weights)
    if name == "swd":
        return statistics.swd_target(features, weights)
    raise ValueError(f"unknown statistic {name!r}")


def _mixed_target(name: str, features: list[jax.Array], weights: jax.Array) -> Any:
    """:func:`target` of maps (H_s, W_s, C) of different sizes, weights normalised."""
    if name == "activations":
        raise ValueError("activations of style images of different sizes cannot be blended")
    if name == "covariance":
        means = jnp.stack([jnp.mean(statistics.points(f), axis=0) for f in features])
        spread = means - jnp.tensordot(weights, means, axes=1)[None]
        covs = jnp.stack([statistics.covariance(f) for f in features])
        return jnp.tensordot(weights, covs + spread[:, :, None] * spread[:, None, :], axes=1)
    if name in MATCHED:
        return jnp.tensordot(weights, jnp.stack([statistic(f, name) for f in features]), axes=1)
    if name == "w2":
        return statistics.gaussian_target(features, weights)
    if name == "swd":
        return statistics.swd_target(features, weights)
    raise ValueError(f"unknown statistic {name!r}")


def term(
    name: str,
    features: jax.Array,
    target: Any,
    key: jax.Array | None = None,
    mask: jax.Array | None = None,
) -> jax.Array:
    """Unweighted term of one (H, W, C) feature map against its ``target`` (:func:`target`).

    ``key`` (a PRNG key) is needed by the random statistics (:data:`RANDOM`); ``mask``
    (H, W), at the map's resolution, restricts the output's statistic to a region."""
    if name == "activations" and mask is not None:
        return masked_relative_mse(features.astype(jnp.float32), target, mask)
    if name in MATCHED:
        return relative_mse(statistic(features, name, mask), target)
    if name == "w2":
        return statistics.w2_gaussian(features, target, mask)
    if name == "swd":
        if key is None:
            raise ValueError("statistic 'swd' draws random directions: pass a PRNG key")
        return statistics.sliced_wasserstein(features, target, key, mask=mask)
    raise ValueError(f"unknown statistic {name!r}")


def distance(
    name: str, features: jax.Array, reference: jax.Array, key: jax.Array | None = None
) -> jax.Array:
    """The term of ``features`` with ``reference`` (both (H, W, C)) as the source image."""
    return term(name, features, target(name, reference[None], jnp.ones((1,), jnp.float32)), key)


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
        k = None if key is None or t.statistic not in RANDOM else jax.random.fold_in(key, i)
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
