"""The histogram (Risser et al. 2017) and cmd (Kalischek et al. 2021) statistics against a
direct float64 numpy computation, and checks that neither is a no-op."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from float32 import EPS32

from jaxcombine import stats
from jaxcombine.stats import losses

# jitted: one compile per function rather than one per primitive (eager mode)
distance = jax.jit(losses.distance, static_argnums=0)
term_of = jax.jit(losses.term, static_argnums=0)
target_of = jax.jit(losses.target, static_argnums=0)


def features(seed, shape=(6, 5, 4), shift=0.0):
    """ReLU-like features: a skewed positive distribution per channel (as VGG's)."""
    rng = np.random.default_rng(seed)
    return (rng.gamma(2.0, 1.5, shape) * (1 + np.arange(shape[-1])) + shift).astype(np.float32)


def one(x):
    return jnp.ones((1,), jnp.float32)


# --------------------------------------------------------------------------- numpy references


def weighted_quantile(values, weights, levels):
    """The first pooled value whose cumulative weight reaches each level (as searchsorted)."""
    order = np.argsort(values, kind="stable")
    cum = np.cumsum(weights[order])
    idx = np.minimum(np.searchsorted(cum, levels), len(values) - 1)
    return values[order][idx]


def histogram_term_np(x, styles, style_weights, mask=None):
    """Risser et al.'s loss, literally: per channel, each output value replaced by the style's
    value at its rank (weighted ranks with a mask), squared error, over the style's E[y²]."""
    x = x.astype(np.float64).reshape(-1, x.shape[-1])
    ys = [s.astype(np.float64).reshape(-1, s.shape[-1]) for s in styles]
    w = np.asarray(style_weights, np.float64) / np.sum(style_weights)
    pw = np.concatenate([np.full(len(y), wi / len(y)) for wi, y in zip(w, ys)])
    y = np.concatenate(ys)
    n = len(x)
    wx = np.full(n, 1.0 / n) if mask is None else mask.reshape(-1) / mask.sum()
    err = 0.0
    for c in range(x.shape[1]):
        order = np.argsort(x[:, c], kind="stable")
        ranked = wx[order]
        levels = np.cumsum(ranked) - 0.5 * ranked
        remapped = np.empty(n)
        remapped[order] = weighted_quantile(y[:, c], pw, levels)
        err += np.sum(wx * (x[:, c] - remapped) ** 2)
    return err / x.shape[1] / np.sum(pw * np.mean(y**2, axis=1))


def moments_np(points, weights, order=5):
    """(order, C): weighted mean, then central moments 2…order."""
    mean = weights @ points
    return np.stack([mean] + [weights @ (points - mean) ** k for k in range(2, order + 1)])


def mixture_moments_np(styles, style_weights, order=5):
    ys = [s.astype(np.float64).reshape(-1, s.shape[-1]) for s in styles]
    w = np.asarray(style_weights, np.float64) / np.sum(style_weights)
    pw = np.concatenate([np.full(len(y), wi / len(y)) for wi, y in zip(w, ys)])
    return moments_np(np.concatenate(ys), pw, order)


def in_units(moments):
    """Moments of the features over the target's unit (the root of its mean variance)."""
    unit = np.sqrt(np.mean(moments[1]))
    return moments / unit ** np.arange(1, len(moments) + 1)[:, None]


def cmd_term_np(x, target_moments, mask=None):
    pts = x.astype(np.float64).reshape(-1, x.shape[-1])
    w = np.full(len(pts), 1.0 / len(pts)) if mask is None else mask.reshape(-1) / mask.sum()
    m = moments_np(pts, w, target_moments.shape[0])
    rel = np.mean((m - target_moments) ** 2, axis=1) / np.mean(target_moments**2, axis=1)
    return np.mean(rel)


def cmd_tolerance(x, target_moments, mask=None):
    """A float32 bound for the cmd term, from the computation: order k's moments come from
    power sums about the target's mean μₜ, cₖ = Σⱼ C(k,j) mⱼ (−δ)ᵏ⁻ʲ, each mⱼ summed over
    N positions (pairwise: log2 N roundings of 2⁻²⁴ each, plus k for the powers); the term
    is Σ 2|mₖ − tₖ|·errₖ / (K·C·mean tₖ²) to first order."""
    pts = x.astype(np.float64).reshape(-1, x.shape[-1])
    d = np.abs(pts - target_moments[0])
    delta = np.abs(np.mean(pts - target_moments[0], axis=0))
    n = len(pts)
    k_max = target_moments.shape[0]
    m = moments_np(pts, np.full(n, 1.0 / n), k_max)
    total = 0.0
    for k in range(1, k_max + 1):
        spread = sum(
            math.comb(k, j) * np.mean(d**j, axis=0) * delta ** (k - j) for j in range(k + 1)
        )
        err = EPS32 * (np.log2(n) + k + 2) * spread  # (C,) per channel
        scale = np.mean(target_moments[k - 1] ** 2)
        total += np.sum(2 * np.abs(m[k - 1] - target_moments[k - 1]) * err) / (x.shape[-1] * scale)
    return total / k_max


# --------------------------------------------------------------------------- histogram


def test_histogram_equals_the_direct_computation():
    x, y = features(0), features(1)
    got = float(distance("histogram", jnp.asarray(x), jnp.asarray(y)))
    want = histogram_term_np(x, [y], [1.0])
    # two float32 sums of N·C = 120 squares (pairwise: log2 120 < 7 roundings) and the
    # values themselves (one rounding): relative error < 2·8·2⁻²⁴ ≈ 1e-6; 10x margin
    assert want > 0.05
    assert got == pytest.approx(want, rel=1e-5)


def test_histogram_blends_styles_of_other_sizes_and_masks_by_weighted_quantiles():
    x = features(0, (4, 4, 3))
    styles = [features(1, (5, 5, 3)), features(2, (3, 3, 3), shift=4.0)]
    weights = jnp.asarray([0.3, 0.7])
    target = target_of("histogram", [jnp.asarray(s) for s in styles], weights)
    got = float(term_of("histogram", jnp.asarray(x), target))
    assert got == pytest.approx(histogram_term_np(x, styles, [0.3, 0.7]), rel=1e-5)
    mask = np.random.default_rng(3).uniform(0, 1, (4, 4)).astype(np.float32)
    got = float(term_of("histogram", jnp.asarray(x), target, mask=jnp.asarray(mask)))
    assert got == pytest.approx(histogram_term_np(x, styles, [0.3, 0.7], mask), rel=1e-5)


def test_histogram_is_no_no_op():
    y = jnp.asarray(features(1, (8, 8, 4)))
    target = target_of("histogram", y[None], one(y))
    term = lambda x: term_of("histogram", x, target)  # noqa: E731
    assert float(term(y)) == 0.0  # the style itself: every value is already its own rank's
    assert float(term(jnp.zeros_like(y))) == pytest.approx(1.0, rel=1e-6)  # the convention
    shifted = [float(term(y + s)) for s in (0.5, 1.0, 2.0)]
    assert 0 < shifted[0] < shifted[1] < shifted[2]
    # a permutation of the style's values within each channel matches its histogram
    perm = jnp.asarray(np.random.default_rng(0).permutation(64))
    permuted = y.reshape(64, 4)[perm].reshape(8, 8, 4)
    assert float(term(permuted)) == 0.0
    # the gradient is that of ‖x − r‖² with the remapped r held fixed: 2(x − r)/(N·C·E[y²])
    x = jnp.asarray(features(5, (8, 8, 4)))
    g = jax.grad(term)(x)
    pts = np.asarray(x).reshape(64, 4)
    r = np.empty_like(pts)
    for c in range(4):
        r[np.argsort(pts[:, c]), c] = np.sort(np.asarray(y).reshape(64, 4)[:, c])
    want = 2 * (pts - r) / (64 * 4 * float(jnp.mean(jnp.square(y))))
    assert np.abs(want).max() > 0
    np.testing.assert_allclose(np.asarray(g).reshape(64, 4), want, rtol=1e-4, atol=1e-9)


# --------------------------------------------------------------------------- cmd


def test_cmd_equals_the_direct_computation():
    x, y = features(0), features(1)
    target = target_of("cmd", jnp.asarray(y)[None], one(y))
    want_moments = mixture_moments_np([y], [1.0])
    # the target: central moments of one map, straight from the points (no expansion)
    np.testing.assert_allclose(target["moments"], in_units(want_moments), rtol=1e-5, atol=0)
    got = float(term_of("cmd", jnp.asarray(x), target))
    want = cmd_term_np(x, want_moments)
    tol = cmd_tolerance(x, want_moments) + 1e-5 * want  # + the target's own rounding
    assert want > 0.05 and tol < 0.01 * want
    assert abs(got - want) <= tol, (got, want, tol)


def test_cmd_blends_styles_of_other_sizes_and_masks():
    x = features(0, (4, 4, 3))
    styles = [features(1, (5, 5, 3)), features(2, (3, 3, 3), shift=4.0)]
    target = target_of("cmd", [jnp.asarray(s) for s in styles], jnp.asarray([0.3, 0.7]))
    want_moments = mixture_moments_np(styles, [0.3, 0.7])  # the pooled mixture's moments
    np.testing.assert_allclose(target["moments"], in_units(want_moments), rtol=2e-5)
    mask = np.random.default_rng(3).uniform(0, 1, (4, 4)).astype(np.float32)
    got = float(term_of("cmd", jnp.asarray(x), target, mask=jnp.asarray(mask)))
    want = cmd_term_np(x, want_moments, mask)
    assert abs(got - want) <= cmd_tolerance(x, want_moments) + 1e-4 * want, (got, want)


def test_cmd_is_no_no_op():
    y = jnp.asarray(features(1, (8, 8, 4)))
    target = target_of("cmd", y[None], one(y))
    term = lambda x: term_of("cmd", x, target)  # noqa: E731
    assert float(term(y)) < 1e-9  # its own moments (float32 rounding only)
    assert float(term(jnp.zeros_like(y))) == pytest.approx(1.0, rel=1e-3)  # the convention
    shifted = [float(term(y + s)) for s in (0.5, 1.0, 2.0)]  # the mean moves
    assert 0 < shifted[0] < shifted[1] < shifted[2]
    scaled = [float(term(y * s)) for s in (1.1, 1.3)]  # the higher moments move
    assert 0 < scaled[0] < scaled[1]
    g = jax.grad(term)(y * 1.3)
    assert float(jnp.max(jnp.abs(g))) > 0
    assert stats.get("cmd", order=3).target(y[None], one(y))["moments"].shape == (3, 4)
