"""``cmd``: central moment discrepancy (Kalischek, Wegner & Schindler, "In the light of
feature distributions: moment matching for neural style transfer", CVPR 2021).

Each channel's mean and central moments 2…K (K = ``order``, 5 by default) are matched.
Order k is compared by its relative squared error over the channels,
mean_c (mₖ − tₖ)² / mean_c tₖ², and the term is the mean over the K orders: 1.0 for an
all-zero output (every moment 0) and 0 at the target whatever the layer's activation
scale (each order is scale-free), so a weight means the same at every layer. (The
paper weighs order k by 1/|b − a|ᵏ for features bounded in [a, b]; VGG's ReLU features
are unbounded, hence the per-order normalisation.)

Units: a 5th moment of VGG features (up to ~2·10⁴ at block4) overflows float32 when
squared, so every moment is taken of the features divided by the target's ``unit``, the
root of its mean variance over channels; the term is unchanged by this (each order's
relative error is homogeneous in the unit), only the range of the numbers.

Moments over positions: the output's come from the power sums Σ where·(f/u − μₜ)ᵏ about
the target's mean μₜ (binomial expansion; about μₜ, so little float32 cancellation
once the output nears the target), which tiles add up window by window; the untiled
term uses the same sums with where = 1 (or the mask's weights over its area). A target
is each style's points' moments about the blended mean: the mixture's moments, for
blends and styles of other sizes. A tiled target (no mean known in advance) expands raw
power sums Σ fᵏ, which loses float32 digits to cancellation when a channel's mean is
large against its spread (relative error of the order of 1e-7·(|μ|/σ + 1)ᵏ).
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp

from jaxcombine.stats import base, statistics


def power_sums(features: jax.Array, where: jax.Array, centre: jax.Array, order: int) -> jax.Array:
    """(K, C): Σ where·(f − centre)ᵏ over an (H, W, C) map's positions, k = 1…K."""
    d = statistics.points(features) - centre[None]  # (N, C)
    w = where.reshape(-1, 1)
    # one reduction per order, each fused with its power (no (N, C) array per order)
    return jnp.stack([jnp.sum(w * d**k, axis=0) for k in range(1, order + 1)])


def moments_from_sums(sums: jax.Array, count, centre: jax.Array) -> jax.Array:
    """(K, C) mean and central moments 2…K from power sums about ``centre`` over ``count``
    (total weight): with mⱼ = sumsⱼ/count and δ = m₁, cₖ = Σⱼ C(k, j) mⱼ (−δ)ᵏ⁻ʲ."""
    m = sums / count
    delta = m[0]
    raw = [jnp.ones_like(delta), *m]  # m₀ … m_K
    out = [centre + delta]
    for k in range(2, m.shape[0] + 1):
        out.append(sum(math.comb(k, j) * raw[j] * (-delta) ** (k - j) for j in range(k + 1)))
    return jnp.stack(out)


def direct_moments(points: jax.Array, mean: jax.Array, order: int) -> jax.Array:
    """(order-1, C): E[(y − mean)ᵏ] for k = 2…order, over (N, C) points."""
    d = points - mean[None]
    return jnp.stack([jnp.mean(d**k, axis=0) for k in range(2, order + 1)])


def _unit(variance: jax.Array) -> jax.Array:
    """The root of the mean variance over channels (1 where the features are constant)."""
    unit = jnp.sqrt(jnp.mean(variance))
    return jnp.where(unit > 0, unit, 1.0)


@dataclasses.dataclass(frozen=True)
class CentralMoments(base.Family):
    name = "cmd"
    tileable = True

    order: int = 5  # K: the mean and central moments 2…K

    def target(self, features, weights):
        stack = base.stacked(features)
        maps = list(stack) if stack is not None else list(features)
        ys = [statistics.points(f).reshape(-1, f.shape[-1]) for f in maps]
        mean = base.blend(weights, [jnp.mean(y, axis=0) for y in ys])
        unit = _unit(
            base.blend(weights, [jnp.mean(jnp.square(y - mean[None]), axis=0) for y in ys])
        )
        central = base.blend(
            weights, [direct_moments(y / unit, mean / unit, self.order) for y in ys]
        )
        return self._finish(jnp.concatenate([(mean / unit)[None], central]), unit)

    def _finish(self, moments: jax.Array, unit: jax.Array) -> dict[str, jax.Array]:
        """The target dict: ``moments`` (K, C) of the features over ``unit``, and each
        order's mean square ``scale`` (K,)."""
        return {
            "moments": moments,
            "unit": unit,
            "scale": jnp.mean(jnp.square(moments), axis=-1),
        }

    def compare(self, moments: jax.Array, target) -> jax.Array:
        """Mean over orders of each order's relative squared error (the module docstring)."""
        err = jnp.mean(jnp.square(moments - target["moments"]), axis=-1)
        return jnp.mean(err / (target["scale"] + base.EPS))

    def term(self, features, target, *, key=None, mask=None):
        h, w, c = features.shape
        if target["moments"].shape != (self.order, c):
            raise ValueError(f"features {features.shape} vs target {target['moments'].shape}")
        if mask is None:
            where, count = jnp.ones((h, w), jnp.float32), h * w
        else:
            where, count = statistics.point_weights(mask, features).reshape(h, w), 1.0
        return self.from_sums(self.sums(features, where, target), count, target)

    def sums(self, features, where, target):
        if target is None:  # a target's own sums: raw powers, in the features' units
            return {"p": power_sums(features, where, jnp.zeros(features.shape[-1]), self.order)}
        scaled = features / target["unit"]
        return {"p": power_sums(scaled, where, target["moments"][0], self.order)}

    def from_sums(self, sums, count, target):
        return self.compare(moments_from_sums(sums["p"], count, target["moments"][0]), target)

    def target_from_sums(self, sums, counts, weights):
        raw = [s["p"] / n for s, n in zip(sums, counts)]  # E[fᵏ] of each image, k = 1…K
        mean = base.blend(weights, [r[0] for r in raw])
        ones = jnp.ones_like(mean)

        def central(k):  # Σₛ wₛ Eₛ[(f − μ)ᵏ], expanded in the raw moments
            return base.blend(
                weights,
                [
                    sum(
                        math.comb(k, j) * ([ones, *r][j]) * (-mean) ** (k - j) for j in range(k + 1)
                    )
                    for r in raw
                ],
            )

        unit = _unit(central(2))
        moments = [mean / unit] + [central(k) / unit**k for k in range(2, self.order + 1)]
        return self._finish(jnp.stack(moments), unit)


CMD = base.register(CentralMoments())
