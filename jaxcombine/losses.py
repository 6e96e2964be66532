"""Loss terms as pure functions of feature maps, and the recipe loss built from them.

Normalisation — why a weight means the same thing at every layer and size:
every statistic is a mean over positions (Gram and covariance matrices divide
by H·W; mean and std are per channel), and every matched statistic's term is a
*relative* squared error,

    term = mean((S(x) - S_target)²) / mean(S_target²),

so a term is 1.0 when the generated statistic is as far from the target as
zero is, whatever the layer's activation scale or the image size. The two
distribution distances (:mod:`jaxcombine.statistics`) are normalised the same
way: ``w2`` divides W2² by the target's E‖y‖² = tr Σ + ‖μ‖², ``swd`` the sliced
distance by the target's mean squared value, so both are 1.0 for an all-zero
output too. Total variation is the mean squared difference of neighbouring
pixels, in units of the 0–255 range (so 1.0 means neighbours differ by the full range).

Each statistic has a target (:func:`target`: from the source image's features,
several style images blended with weights) and a term (:func:`term`: the
output's features against that target). ``swd`` draws random directions, so
terms take a PRNG key; the others ignore it.
"""

from __future__ import annotations

from typing import Any, Mapping

import jax
import jax.numpy as jnp

from jaxcombine import statistics
from jaxcombine.config import STATISTICS  # noqa: F401  (losses.STATISTICS)
from jaxcombine.recipe import Recipe, Term

EPS = 1e-8
# Statistics compared by relative squared error; the others are distribution distances.
MATCHED = ("activations", "gram", "meanstd", "covariance")
RANDOM = ("swd",)  # statistics whose term needs a PRNG key


def gram(features: jax.Array) -> jax.Array:
    """(…, H, W, C) → (…, C, C) channel correlations, divided by H·W."""
    *batch, h, w, c = features.shape
    f = features.reshape(*batch, h * w, c)
    return jnp.einsum("...pc,...pd->...cd", f, f) / (h * w)


def mean_std(features: jax.Array) -> jax.Array:
    """(…, H, W, C) → (…, 2, C): per-channel mean and standard deviation."""
    mean = jnp.mean(features, axis=(-3, -2))
    std = jnp.sqrt(jnp.var(features, axis=(-3, -2)) + EPS)
    return jnp.stack([mean, std], axis=-2)


def statistic(features: jax.Array, name: str) -> jax.Array:
    """The statistic ``name`` (one of :data:`MATCHED`) of a feature map, in float32."""
    features = features.astype(jnp.float32)
    if name == "activations":
        return features
    if name == "gram":
        return gram(features)
    if name == "meanstd":
        return mean_std(features)
    if name == "covariance":
        return statistics.covariance(features)
    raise ValueError(f"statistic {name!r} is not a matched statistic; use losses.target/term")


def relative_mse(x: jax.Array, target: jax.Array) -> jax.Array:
    """mean((x - target)²) / mean(target²): scale-free squared error."""
    if x.shape != target.shape:
        raise ValueError(f"shape mismatch: {x.shape} vs target {target.shape}")
    return jnp.mean(jnp.square(x - target)) / (jnp.mean(jnp.square(target)) + EPS)


def total_variation(rgb: jax.Array) -> jax.Array:
    """Mean squared neighbour difference of (…, H, W, 3) pixels in 0–255, over 255²."""
    dy = jnp.diff(rgb, axis=-3)
    dx = jnp.diff(rgb, axis=-2)
    return (jnp.mean(jnp.square(dy)) + jnp.mean(jnp.square(dx))) / (255.0**2)


# --------------------------------------------------------------------------- targets and terms


def target(name: str, features: jax.Array, weights: jax.Array) -> Any:
    """The target of statistic ``name`` from (S, H, W, C) source features, S images
    blended with ``weights`` (S,) (normalised here).

    Blending: activations, Gram matrices and mean/std are averaged with the
    weights; ``covariance`` and ``w2`` take the covariance (and mean) of the
    weighted mixture of the images' feature points (the Gram blend less the
    blended mean's outer product); ``swd`` keeps every image's points with its weight.
    """
    weights = jnp.asarray(weights, jnp.float32)
    weights = weights / jnp.sum(weights)
    if name == "covariance":  # Σ wₛ (Σₛ + (μₛ − μ)(μₛ − μ)ᵀ): centred first, for float32
        means = jnp.mean(statistics.points(features), axis=1)  # (S, C)
        spread = means - jnp.tensordot(weights, means, axes=1)[None]
        return jnp.tensordot(weights, statistics.covariance(features)
                             + spread[:, :, None] * spread[:, None, :], axes=1)
    if name in MATCHED:
        return jnp.tensordot(weights, statistic(features, name), axes=1)
    if name == "w2":
        return statistics.gaussian_target(features, weights)
    if name == "swd":
        return statistics.swd_target(features, weights)
    raise ValueError(f"unknown statistic {name!r}")


def term(name: str, features: jax.Array, target: Any, key: jax.Array | None = None) -> jax.Array:
    """Unweighted term of one (H, W, C) feature map against its ``target`` (:func:`target`).

    ``key`` (a PRNG key) is needed by the random statistics (:data:`RANDOM`)."""
    if name in MATCHED:
        return relative_mse(statistic(features, name), target)
    if name == "w2":
        return statistics.w2_gaussian(features, target)
    if name == "swd":
        if key is None:
            raise ValueError("statistic 'swd' draws random directions: pass a PRNG key")
        return statistics.sliced_wasserstein(features, target, key)
    raise ValueError(f"unknown statistic {name!r}")


def distance(name: str, features: jax.Array, reference: jax.Array,
             key: jax.Array | None = None) -> jax.Array:
    """The term of ``features`` with ``reference`` (both (H, W, C)) as the source image."""
    return term(name, features, target(name, reference[None], jnp.ones((1,), jnp.float32)), key)


def target_key(term: Term) -> str:
    """Targets are shared between terms with the same (source, statistic, layer)."""
    return term.label


def terms(features: Mapping[str, jax.Array], targets: Mapping[str, Any],
          rgb: jax.Array, recipe: Recipe, key: jax.Array | None = None) -> jax.Array:
    """Unweighted value of every component in ``recipe.labels`` order (terms…, tv).

    Term i of a random statistic draws from ``fold_in(key, i)``."""
    values = []
    for i, t in enumerate(recipe.terms):
        k = None if key is None or t.statistic not in RANDOM else jax.random.fold_in(key, i)
        values.append(term(t.statistic, features[t.layer], targets[target_key(t)], k))
    values.append(total_variation(rgb))
    return jnp.stack(values)


def weights(recipe: Recipe) -> jax.Array:
    """Weight of every component in ``recipe.labels`` order."""
    return jnp.asarray([t.weight for t in recipe.terms] + [recipe.tv_weight], jnp.float32)
