"""``nearest_each_step``: each output hypercolumn to its nearest style one, found every step.

Kolkin et al. 2022 end NNST with a pass that matches each layer apart ("feature
splitting"): at every step, on a grid offset at random, each output feature vector is
compared with every style one by cosine distance, each set first centred by its own
mean, and the term is the mean over the output points of the distance to the nearest
style point (:func:`nearest_rows`). It is the row half of the relaxed EMD (:mod:`.emd`),
centred: nothing asks every style point to be used, so the output may take its features
from part of the style, as the nearest-neighbour targets (:mod:`.nearest`) let it; unlike
those targets, built once per scale from the content, the matches follow the output as it
changes. A recipe gives one term per layer (a hypercolumn of one entry) to match the
layers apart, as NNST does, with ``during = "final"`` for its final pass. Several styles
are one weighted point set (a style of weight 0 offers no point). Not tileable.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from jaxcombine.stats import base
from jaxcombine.stats import hypercolumns as hc


def nearest_rows(x: jax.Array, y: jax.Array, weights: jax.Array) -> jax.Array:
    """The mean over output points ``x`` (N, D) of the cosine distance to the nearest style
    point ``y`` (M, D), after ``x`` is centred by its mean and ``y`` by its mean under
    ``weights`` (M,); a point of weight 0 is no one's nearest."""
    mean = weights @ y / jnp.sum(weights)
    cost = hc.cosine_distances(x - jnp.mean(x, axis=0, keepdims=True), y - mean[None, :])
    return jnp.mean(jnp.min(jnp.where(weights[None, :] > 0, cost, jnp.inf), axis=1))


@dataclasses.dataclass(frozen=True)
class NearestEachStep(hc.StyleSampled):
    name = "nearest_each_step"

    def compare(self, x, y, weights):
        return nearest_rows(x, y, weights)


NEAREST_EACH_STEP = base.register(NearestEachStep())
