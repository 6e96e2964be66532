"""``w2``: squared Wasserstein-2 distance between Gaussian fits of the output's and the
target's feature points, over the target's E‖y‖² (:func:`statistics.w2_gaussian`: the
maths and its float32 choices are documented in :mod:`jaxcombine.stats.statistics`).

The target is the Gaussian fit of the blended styles' pooled points, with its square
root Σt^½ computed once (:func:`statistics.gaussian_target`). A function of sums over
positions: the output's mean and covariance come from Σ where·f and Σ where·f fᵀ, and
the cross term tr((Σt^½ Σ Σt^½)^½) from that C×C matrix's eigenvalues (floored as the
direct form is); a tiled target's Σt^½ comes from an eigendecomposition of its
covariance instead of the SVD of its points (equal to float32 rounding of Σ).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from jaxcombine.stats import base, covariance, linalg, statistics


def from_moments(mean: jax.Array, cov: jax.Array, target) -> jax.Array:
    """:func:`statistics.w2_gaussian` from the output's mean and covariance: the cross term
    tr((Σt^½ Σ Σt^½)^½) from the eigenvalues of that C×C matrix, floored alike."""
    root = target["cov_sqrt"]
    cross = linalg.sum_sqrt_eigenvalues(root @ cov @ root, statistics.EIG_FLOOR)
    w2 = (
        jnp.sum(jnp.square(mean - target["mean"]))
        + jnp.trace(cov)
        + jnp.trace(target["cov"])
        - 2.0 * cross
    )
    return jnp.maximum(w2, 0.0) / (target["scale"] + base.EPS)


@dataclasses.dataclass(frozen=True)
class W2(base.Family):
    name = "w2"
    tileable = True

    def target(self, features, weights):
        return statistics.gaussian_target(features, weights)

    def term(self, features, target, *, key=None, mask=None):
        return statistics.w2_gaussian(features, target, mask)

    def sums(self, features, where, target):
        return covariance.first_and_second(features, where)

    def from_sums(self, sums, count, target):
        mean = sums["s1"] / count
        return from_moments(mean, sums["S2"] / count - jnp.outer(mean, mean), target)

    def target_from_sums(self, sums, counts, weights):
        mean, cov = covariance.mean_and_covariance(sums, counts, weights)
        lam, vec = linalg.eigh(cov)
        root = (vec * jnp.sqrt(jnp.maximum(lam, 0.0))[None]) @ vec.T
        return {
            "mean": mean,
            "cov": cov,
            "cov_sqrt": root,
            "scale": jnp.trace(cov) + jnp.sum(jnp.square(mean)),
        }


W2_GAUSSIAN = base.register(W2())
