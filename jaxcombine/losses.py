"""Loss terms as pure functions of feature maps, and the recipe loss built from them.

Normalisation — why a weight means the same thing at every layer and size:
every statistic is a mean over positions (Gram matrices divide by H·W; mean
and std are per channel), and every term is a *relative* squared error,

    term = mean((S(x) - S_target)²) / mean(S_target²),

so a term is 1.0 when the generated statistic is as far from the target as
zero is, whatever the layer's activation scale or the image size. Total
variation is the mean squared difference of neighbouring pixels, in units of
the 0–255 range (so 1.0 means neighbours differ by the full range).
"""

from __future__ import annotations

from typing import Mapping

import jax
import jax.numpy as jnp

from jaxcombine.recipe import Recipe, Term

EPS = 1e-8


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
    """The statistic ``name`` of a feature map, computed in float32."""
    features = features.astype(jnp.float32)
    if name == "activations":
        return features
    if name == "gram":
        return gram(features)
    if name == "meanstd":
        return mean_std(features)
    raise ValueError(f"unknown statistic {name!r}")


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


def target_key(term: Term) -> str:
    """Targets are shared between terms with the same (source, statistic, layer)."""
    return term.label


def terms(features: Mapping[str, jax.Array], targets: Mapping[str, jax.Array],
          rgb: jax.Array, recipe: Recipe) -> jax.Array:
    """Unweighted value of every component in ``recipe.labels`` order (terms…, tv)."""
    values = [relative_mse(statistic(features[t.layer], t.statistic), targets[target_key(t)])
              for t in recipe.terms]
    values.append(total_variation(rgb))
    return jnp.stack(values)


def weights(recipe: Recipe) -> jax.Array:
    """Weight of every component in ``recipe.labels`` order."""
    return jnp.asarray([t.weight for t in recipe.terms] + [recipe.tv_weight], jnp.float32)
