"""``meanstd``: each channel's mean and standard deviation (AdaIN's statistics, Huang &
Belongie 2017), relative squared error of the (2, C) stack.

Blended styles average the per-image (mean, std) stacks with the weights. A sum over
positions: tiles add Σ where·f and Σ where·f².
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from jaxcombine.stats import base, statistics


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
    return jnp.stack([mean, jnp.sqrt(var + base.EPS)], axis=-2)


def _from_moments(s1: jax.Array, s2: jax.Array, n: int) -> jax.Array:
    """(2, C) mean and std from Σf and Σf² over n positions."""
    mean = s1 / n
    var = jnp.maximum(s2 / n - jnp.square(mean), 0.0)
    return jnp.stack([mean, jnp.sqrt(var + base.EPS)])


@dataclasses.dataclass(frozen=True)
class MeanStd(base.Matched):
    name = "meanstd"
    tileable = True

    def value(self, features: jax.Array, mask: jax.Array | None = None) -> jax.Array:
        return mean_std(features.astype(jnp.float32), mask)

    def sums(self, features, where, target):
        c = features.shape[-1]
        fm = (where[..., None] * features).reshape(-1, c)
        return {"s1": jnp.sum(fm, axis=0), "s2": jnp.sum(fm * features.reshape(-1, c), axis=0)}

    def from_sums(self, sums, count, target):
        return base.relative_mse(_from_moments(sums["s1"], sums["s2"], count), target)

    def target_from_sums(self, sums, counts, weights):
        return base.blend(
            weights, [_from_moments(s["s1"], s["s2"], n) for s, n in zip(sums, counts)]
        )


MEANSTD = base.register(MeanStd())
