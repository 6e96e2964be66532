"""``moments``: the mean and covariance of sampled hypercolumns (STROTSS's ℓm).

Kolkin et al. add to the relaxed EMD, which ignores how many points share a nearest
neighbour, a match of the first two moments of the same samples:
‖μx − μy‖₁/D + ‖Σx − Σy‖₁/D², D the hypercolumn's length. The style's moments are of
its points at this step's style positions (several styles: the weighted mixture's).
Not tileable.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from jaxcombine.stats import base
from jaxcombine.stats import hypercolumns as hc


def weighted_moments(points: jax.Array, weights: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(mean (D,), covariance (D, D)) of (N, D) points with weights (N,) summing to 1."""
    mean = weights @ points
    centred = points - mean[None, :]
    return mean, (centred * weights[:, None]).T @ centred


@dataclasses.dataclass(frozen=True)
class Moments(hc.StyleSampled):
    name = "moments"

    def compare(self, x, y, weights):
        n = x.shape[0]
        mx, cx = weighted_moments(x, jnp.full((n,), 1.0 / n, jnp.float32))
        my, cy = weighted_moments(y, weights)
        return jnp.mean(jnp.abs(mx - my)) + jnp.mean(jnp.abs(cx - cy))


MOMENTS = base.register(Moments())
