"""``covariance``: the mean-centred Gram matrix (:func:`statistics.covariance`), relative
squared error; unlike ``gram`` it ignores a constant shift of the features.

Blended styles take the covariance of the weighted mixture of their points,
Σ wₛ (Σₛ + (μₛ − μ)(μₛ − μ)ᵀ) (centred first, for float32). A function of sums over
positions: tiles add Σ where·f and Σ where·f fᵀ.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from jaxcombine.stats import base, statistics


def mixture_covariance(features, weights: jax.Array) -> jax.Array:
    """Covariance of the weighted mixture of (S, H, W, C) maps, or of a list of maps of
    different sizes (each map's own mean and covariance, then the spread of the means)."""
    stack = base.stacked(features)
    if stack is not None:
        means = jnp.mean(statistics.points(stack), axis=1)  # (S, C)
        covs = statistics.covariance(stack)
    else:
        means = jnp.stack([jnp.mean(statistics.points(f), axis=0) for f in features])
        covs = jnp.stack([statistics.covariance(f) for f in features])
    spread = means - jnp.tensordot(weights, means, axes=1)[None]
    return jnp.tensordot(weights, covs + spread[:, :, None] * spread[:, None, :], axes=1)


def mean_and_covariance(sums, counts, weights) -> tuple[jax.Array, jax.Array]:
    """The blended mean and mixture covariance from each image's Σf (``s1``) and Σffᵀ
    (``S2``): μ = Σ wₛ s1ₛ/nₛ, Σ = Σ wₛ S2ₛ/nₛ − μμᵀ."""
    mean = base.blend(weights, [s["s1"] / n for s, n in zip(sums, counts)])
    second = base.blend(weights, [s["S2"] / n for s, n in zip(sums, counts)])
    return mean, second - jnp.outer(mean, mean)


def first_and_second(features: jax.Array, where: jax.Array) -> dict[str, jax.Array]:
    """Σ where·f (C,) and Σ where·f fᵀ (C, C) over an (H, W, C) map's positions."""
    c = features.shape[-1]
    fm = (where[..., None] * features).reshape(-1, c)
    return {"s1": jnp.sum(fm, axis=0), "S2": fm.T @ features.reshape(-1, c)}


@dataclasses.dataclass(frozen=True)
class Covariance(base.Family):
    name = "covariance"
    tileable = True

    def value(self, features: jax.Array, mask: jax.Array | None = None) -> jax.Array:
        return statistics.covariance(features.astype(jnp.float32), mask)

    def target(self, features, weights):
        return mixture_covariance(features, weights)

    def term(self, features, target, *, key=None, mask=None):
        return base.relative_mse(self.value(features, mask), target)

    def sums(self, features, where, target):
        return first_and_second(features, where)

    def from_sums(self, sums, count, target):
        mean = sums["s1"] / count
        return base.relative_mse(sums["S2"] / count - jnp.outer(mean, mean), target)

    def target_from_sums(self, sums, counts, weights):
        return mean_and_covariance(sums, counts, weights)[1]


COVARIANCE = base.register(Covariance())
