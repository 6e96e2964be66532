"""``self_similarity``: the content kept as the pattern of its own likenesses (STROTSS's ℓc).

Kolkin et al.'s content loss: at this step's positions, the cosine self-distance matrix
Dᵢⱼ = 1 − cos(xᵢ, xⱼ) of the output's hypercolumns and the same matrix of the content's
at the same positions, each column divided by its sum; the term is the mean absolute
difference of the two (L1, over N² entries). It asks that what looks alike in the content
look alike in the output, not that the output keep the content's features. The target
is the content's :class:`~jaxcombine.stats.hypercolumns.Maps`, read at the output's
positions each step. Not tileable.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from jaxcombine.stats import base
from jaxcombine.stats import hypercolumns as hc


def normalised_self_distances(points: jax.Array) -> jax.Array:
    """(N, N) cosine self-distances of (N, D) points, each column divided by its sum."""
    d = hc.cosine_distances(points, points)
    return d / (jnp.sum(d, axis=0, keepdims=True) + hc.EPS)


@dataclasses.dataclass(frozen=True)
class SelfSimilarity(base.Family):
    name = "self_similarity"
    random = True
    hypercolumn = True

    def target(self, features, weights, *, content=None):
        images = hc.per_image(features)
        if len(images) != 1:
            raise ValueError("self_similarity's target is one image's (the content's)")
        return images[0]

    def term(self, features, target, *, key=None, mask=None):
        if features.shape != target.shape:
            raise ValueError(f"output {features.shape} and content {target.shape} differ")
        _, where = hc.draw(hc.positions_key(key, 0), features.shape, features.spec, mask)
        dx = normalised_self_distances(hc.sample(features, where))
        dc = normalised_self_distances(jax.lax.stop_gradient(hc.sample(target, where)))
        return jnp.mean(jnp.abs(dx - dc))


SELF_SIMILARITY = base.register(SelfSimilarity())
