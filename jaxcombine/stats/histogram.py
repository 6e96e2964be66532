"""``histogram``: each channel's histogram matched to the style's (Risser, Wilmot & Barnes,
"Stable and Controllable Neural Texture Synthesis and Style Transfer Using Histogram
Losses", 2017).

Per channel, the output's activations are ranked, and each is replaced by the style's
value at the same quantile: the *histogram-matched* version of the output's own
features, held fixed (stop-gradient) as the term's target. The term is the squared error
to it, a mean over positions and channels, over the style's mean squared activation
E[y²], so an all-zero output scores 1.0 (exactly when the style has as many positions;
about 1.0 otherwise) and a matched histogram 0, at every layer and size. It is the 1-D
W2² of each channel's distribution, i.e. ``swd`` along the channel axes.

Blended styles (and styles of other sizes) are one weighted point set: the style's
quantiles are weighted quantiles (each point of style s weighs wₛ/Nₛ). With a mask the
output is a weighted point set too: sorted output point i spans the quantile levels
[cᵢ₋₁, cᵢ) of its cumulative weight and is matched to the style's quantile at their
middle, its error weighted by wᵢ (as :func:`statistics.sliced_wasserstein`). The target
sorts the style's values once; a step sorts the output's. Ranks are over all positions:
not tileable.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from jaxcombine.stats import base, statistics


def histogram_target(features, weights: jax.Array) -> dict[str, jax.Array]:
    """``sorted`` (C, M): each channel's style values ascending; ``cum`` (C, M): their
    cumulative weights (absent for one style, whose M points weigh 1/M each); ``scale``:
    the weighted mean of y² over points and channels."""
    stack = base.stacked(features)
    if stack is not None and stack.shape[0] == 1:
        y = statistics.points(stack[0])  # (M, C)
        return {"sorted": jnp.sort(y.T, axis=-1), "scale": jnp.mean(jnp.square(y))}
    maps = list(stack) if stack is not None else list(features)
    if len(maps) != weights.shape[0]:
        raise ValueError(f"{len(maps)} feature maps for {weights.shape[0]} weights")
    ys = [statistics.points(f).reshape(-1, f.shape[-1]) for f in maps]
    y = jnp.concatenate(ys)  # (M, C)
    pw = jnp.concatenate([jnp.full((p.shape[0],), w / p.shape[0]) for w, p in zip(weights, ys)])
    order = jnp.argsort(y.T, axis=-1)
    return {
        "sorted": jnp.take_along_axis(y.T, order, axis=-1),
        "cum": jnp.cumsum(pw[order], axis=-1),
        "scale": jnp.sum(pw * jnp.mean(jnp.square(y), axis=-1)),
    }


def quantiles(target: dict[str, jax.Array], levels: jax.Array) -> jax.Array:
    """The style's value at ``levels`` ((n,) or (C, n), in [0, 1]) of each channel: (C, n)."""
    ordered = target["sorted"]
    c, m = ordered.shape
    cum = target.get("cum")
    if cum is None:
        cum = jnp.broadcast_to((jnp.arange(m, dtype=jnp.float32) + 1.0) / m, (c, m))
    levels = jnp.broadcast_to(levels, (c, levels.shape[-1]))
    idx = jax.vmap(jnp.searchsorted)(cum, levels)
    return jnp.take_along_axis(ordered, jnp.minimum(idx, m - 1), axis=-1)


def matched(
    features: jax.Array, target: dict[str, jax.Array], mask: jax.Array | None = None
) -> tuple[jax.Array, jax.Array]:
    """(the histogram-matched features (C, N), no gradient; each position's weight (N,)):
    every output value replaced by the style's at its rank (weighted ranks with a mask)."""
    x = statistics.points(features).T  # (C, N)
    c, n = x.shape
    if mask is None:
        order = statistics.argsort_rows(x)
        weights = jnp.full((n,), 1.0 / n, jnp.float32)
        if "cum" not in target and target["sorted"].shape[-1] == n:
            q = target["sorted"]
        else:
            q = quantiles(target, (jnp.arange(n, dtype=jnp.float32) + 0.5) / n)
    else:
        weights = statistics.point_weights(mask, features)
        order = statistics.argsort_rows(x, host=False)  # no host sort under masks: see swd
        ranked = weights[order]  # (C, N)
        q = quantiles(target, jnp.cumsum(ranked, axis=-1) - 0.5 * ranked)
    remapped = jnp.zeros_like(x).at[jnp.arange(c)[:, None], order].set(q)
    return jax.lax.stop_gradient(remapped), weights


@dataclasses.dataclass(frozen=True)
class Histogram(base.Family):
    name = "histogram"

    def target(self, features, weights):
        return histogram_target(features, weights)

    def term(self, features, target, *, key=None, mask=None):
        x = statistics.points(features).T  # (C, N)
        if x.shape[0] != target["sorted"].shape[0]:
            raise ValueError(f"features {features.shape} vs target {target['sorted'].shape}")
        remapped, weights = matched(features, target, mask)
        err = jnp.einsum("n,cn->", weights, jnp.square(x - remapped)) / x.shape[0]
        return err / (target["scale"] + base.EPS)


HISTOGRAM = base.register(Histogram())
