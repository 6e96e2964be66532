"""``nearest``: every content hypercolumn replaced by its nearest style hypercolumn (NNST).

Kolkin et al. 2022, "Neural Neighbor Style Transfer": the target is the content's
hypercolumns at every point of the term's grid (``stride``), each replaced by the style
hypercolumn (every grid point of every style, inside its region if it has one) nearest to it by cosine distance after
both are centred by the style's mean (:func:`nearest_targets`); the term is the mean
cosine distance 1 − cos(xᵢ, tᵢ) between the output's hypercolumns and those targets at
this step's grid points (all of them when ``samples`` covers the grid).

:attr:`paired`: the target needs the content's features and the style's. It is built
once per scale, with the other targets, in blocks of :attr:`Nearest.chunk` content
points, so the search holds a chunk × (style points) similarity matrix, never the whole
one. Several styles are one set of candidates (a style of weight 0 offers none), centred
by their blended mean. Not tileable.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from jaxcombine.stats import base
from jaxcombine.stats import hypercolumns as hc


def nearest_indices(
    queries: jax.Array, candidates: jax.Array, allowed: jax.Array | None = None, chunk: int = 1024
) -> jax.Array:
    """(P,) index of the candidate (Q, D) of largest cosine similarity to each query
    (P, D), ``chunk`` queries at a time; ``allowed`` (Q,) bool excludes candidates."""
    q = queries / (jnp.linalg.norm(queries, axis=-1, keepdims=True) + hc.EPS)
    c = candidates / (jnp.linalg.norm(candidates, axis=-1, keepdims=True) + hc.EPS)
    p = q.shape[0]
    chunk = max(1, min(chunk, p))
    blocks = -(-p // chunk)
    q = jnp.pad(q, ((0, blocks * chunk - p), (0, 0))).reshape(blocks, chunk, -1)

    def best(block):
        similarity = block @ c.T
        if allowed is not None:
            similarity = jnp.where(allowed[None, :], similarity, -jnp.inf)
        return jnp.argmax(similarity, axis=1).astype(jnp.int32)

    return jax.lax.map(best, q).reshape(-1)[:p]


def nearest_targets(
    content: hc.Maps, styles: list[hc.Maps], weights: jax.Array, chunk: int = 1024
) -> jax.Array:
    """(P, D) the style hypercolumn nearest (centred cosine) to the content's at each of
    the P points of its grid, in :func:`hypercolumns.grid` order."""
    stride = content.spec.stride
    queries = hc.sample(content, jnp.asarray(hc.grid(content.shape, stride)))
    points = [hc.sample(s, jnp.asarray(hc.grid(s.shape, stride))) for s in styles]
    mean = sum(w * jnp.mean(y, axis=0) for w, y in zip(weights, points))
    candidates = jnp.concatenate(points)
    allowed = []  # a style of weight 0 offers no candidate, nor a cell outside its region
    for w, y, s in zip(weights, points, styles):
        ok = jnp.full((y.shape[0],), w > 0)
        allowed.append(ok if s.region is None else ok & (hc.cell_weights(s.region, stride) > 0))
    allowed = jnp.concatenate(allowed)
    index = nearest_indices(queries - mean[None, :], candidates - mean[None, :], allowed, chunk)
    return candidates[index]


@dataclasses.dataclass(frozen=True)
class Nearest(base.Family):
    name = "nearest"
    random = True
    hypercolumn = True
    paired = True

    chunk: int = 1024  # content points searched at once

    def target(self, features, weights, *, content=None):
        if content is None:
            raise ValueError("statistic 'nearest' builds its target from the content too")
        (source,) = hc.per_image(content)
        rows = nearest_targets(source, hc.per_image(features), weights, self.chunk)
        return {"rows": jax.lax.stop_gradient(rows)}

    def term(self, features, target, *, key=None, mask=None):
        index, where = hc.draw(hc.positions_key(key, 0), features.shape, features.spec, mask)
        x = hc.sample(features, where)
        t = target["rows"][index]
        if t.shape != x.shape:
            raise ValueError(f"output hypercolumns {x.shape} and targets {t.shape} differ")
        xn = x / (jnp.linalg.norm(x, axis=-1, keepdims=True) + hc.EPS)
        tn = t / (jnp.linalg.norm(t, axis=-1, keepdims=True) + hc.EPS)
        return jnp.mean(1.0 - jnp.sum(xn * tn, axis=-1))


NEAREST = base.register(Nearest())
