"""``gram``: channel correlations Σ f fᵀ / N (Gatys et al. 2016), relative squared error.

Blended styles average their Gram matrices with the weights. A sum over positions:
tiles add Σ where·f fᵀ and divide by the layer's position count.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from jaxcombine.stats import base, statistics


def gram(features: jax.Array, mask: jax.Array | None = None) -> jax.Array:
    """(…, H, W, C) → (…, C, C) channel correlations, divided by H·W (or, with an (H, W)
    ``mask``, weighted by it and divided by its area Σm)."""
    *batch, h, w, c = features.shape
    f = features.reshape(*batch, h * w, c)
    if mask is not None:
        return jnp.einsum("p,...pc,...pd->...cd", statistics.point_weights(mask, features), f, f)
    return jnp.einsum("...pc,...pd->...cd", f, f) / (h * w)


@dataclasses.dataclass(frozen=True)
class Gram(base.Matched):
    name = "gram"
    tileable = True

    def value(self, features: jax.Array, mask: jax.Array | None = None) -> jax.Array:
        return gram(features.astype(jnp.float32), mask)

    def sums(self, features, where, target):
        c = features.shape[-1]
        fm = (where[..., None] * features).reshape(-1, c)
        return {"S2": fm.T @ features.reshape(-1, c)}

    def from_sums(self, sums, count, target):
        return base.relative_mse(sums["S2"] / count, target)

    def target_from_sums(self, sums, counts, weights):
        return base.blend(weights, [s["S2"] / n for s, n in zip(sums, counts)])


GRAM = base.register(Gram())
