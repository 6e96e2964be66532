"""``activations``: the feature map itself, compared position by position.

The target is the source's map (several styles: their weighted mean, which needs one
size), so it is *spatial*: it has the output's shape. The term is the relative squared
error; with a mask, the mask-weighted mean over the region relative to the target's
there. Tiles add up Σ where·(f − t)² over each tile's interior, the target sliced to
the window.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from jaxcombine.stats import base


@dataclasses.dataclass(frozen=True)
class Activations(base.Family):
    name = "activations"
    tileable = True
    spatial = True

    def value(self, features: jax.Array, mask: jax.Array | None = None) -> jax.Array:
        """The map in float32 (a mask enters the comparison, not the value)."""
        return features.astype(jnp.float32)

    def target(self, features, weights):
        if base.stacked(features) is None:
            raise ValueError("activations of style images of different sizes cannot be blended")
        return jnp.tensordot(weights, self.value(features), axes=1)

    def term(self, features, target, *, key=None, mask=None):
        if mask is not None:
            return base.masked_relative_mse(self.value(features), target, mask)
        return base.relative_mse(self.value(features), target)

    def sums(self, features, where, target):
        return {"sq": jnp.sum(where[..., None] * jnp.square(features - target))}

    def from_sums(self, sums, count, target):
        return sums["sq"] / target.size / (jnp.mean(jnp.square(target)) + base.EPS)


ACTIVATIONS = base.register(Activations())
