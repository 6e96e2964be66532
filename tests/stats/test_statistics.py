"""The distribution statistics (covariance, w2, swd) against closed forms, and swd's
per-step random directions: seeded, reproducible, traced (no recompiles)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import recipe_files
from float32 import w2_rounding

from jaxcombine.engine import program
from jaxcombine.options import config as config_lib
from jaxcombine.run import job
from jaxcombine.run import prepare as prepare_lib
from jaxcombine.stats import losses, statistics

ONE = jnp.ones((1,), jnp.float32)
KEY = jax.random.key(7)
# jitted: one compile per function rather than one per primitive (eager mode)
distance = jax.jit(losses.distance, static_argnums=0)
term = jax.jit(losses.term, static_argnums=0)
target = jax.jit(losses.target, static_argnums=0)


def features(seed=0, shape=(10, 10, 16)):
    """Positive, correlated, ReLU-like features with a few dead channels."""
    rng = np.random.default_rng(seed)
    mix = rng.normal(size=(shape[-1], shape[-1]))
    f = np.maximum(rng.normal(size=shape) @ mix + 1.0, 0.0)
    f[..., :2] = 0.0
    return jnp.asarray(f, jnp.float32)


@pytest.mark.parametrize("name", ["w2", "swd"])
def test_distances_vanish_on_identical_features_and_grow_with_a_shift(name):
    f = features()
    scale = float(jnp.std(f))
    values = [float(distance(name, f + s * scale, f, KEY)) for s in (0.0, 0.3, 1.0, 3.0)]
    assert abs(values[0]) < 1e-5, values
    assert 0 < values[1] < values[2] < values[3], values
    assert float(distance(name, jnp.zeros_like(f), f, KEY)) == pytest.approx(1.0, abs=0.3)


def test_covariance_ignores_a_constant_shift_and_gram_does_not():
    f = features()
    shifted = f + 5.0
    assert float(distance("covariance", shifted, f)) < 1e-6
    assert float(distance("gram", shifted, f)) > 0.1
    np.testing.assert_allclose(
        statistics.covariance(f),
        np.cov(np.asarray(f).reshape(-1, 16).T, bias=True),
        rtol=1e-4,
        atol=1e-4,
    )


def _sqrtm(m):
    w, v = np.linalg.eigh(m)
    return (v * np.sqrt(np.clip(w, 0.0, None))) @ v.T


def test_w2_matches_the_closed_form_for_gaussians():
    """‖μx−μt‖² + tr(Σx + Σt − 2(Σt^½ Σx Σt^½)^½), over tr Σt + ‖μt‖², in float64 numpy."""
    rng = np.random.default_rng(1)
    x = rng.normal(size=(64, 6)) @ rng.normal(size=(6, 6)) + rng.normal(size=6)
    y = rng.normal(size=(64, 6)) @ rng.normal(size=(6, 6)) * 2.0 - 1.0
    mx, my = x.mean(0), y.mean(0)
    cx, cy = np.cov(x.T, bias=True), np.cov(y.T, bias=True)
    root = _sqrtm(cy)
    w2 = np.sum((mx - my) ** 2) + np.trace(cx + cy - 2 * _sqrtm(root @ cx @ root))
    expected = w2 / (np.trace(cy) + np.sum(my**2))
    as_map = lambda a: jnp.asarray(a.reshape(8, 8, 6), jnp.float32)  # noqa: E731
    fitted = target("w2", as_map(y)[None], ONE)
    np.testing.assert_allclose(fitted["cov_sqrt"] @ fitted["cov_sqrt"], cy, rtol=1e-3, atol=1e-4)
    # float32 rounding of the eigen-solve (w2_rounding), twice for the target's own fit
    tol = 3 * w2_rounding(as_map(x), fitted)
    assert tol < 1e-3 * expected
    assert abs(float(term("w2", as_map(x), fitted)) - expected) <= tol
    # fewer points than channels: the smaller (N×N) Gram gives the same value
    few = rng.normal(size=(4, 12)) ** 2
    fx = np.maximum(rng.normal(size=(4, 12)), 0)
    cf, cfx = np.cov(few.T, bias=True), np.cov(fx.T, bias=True)
    r = _sqrtm(cf)
    w2 = np.sum((fx.mean(0) - few.mean(0)) ** 2) + np.trace(cfx + cf - 2 * _sqrtm(r @ cfx @ r))
    fx32, few32 = (jnp.asarray(a.reshape(2, 2, 12), jnp.float32) for a in (fx, few))
    value = distance("w2", fx32, few32)
    expected = w2 / (np.trace(cf) + np.sum(few.mean(0) ** 2))
    # 4 centred points: the 4×4 Gram has a zero eigenvalue, which float32 returns as noise
    # of up to ε·4·λmax (its root counts in w2_rounding)
    tol = 3 * w2_rounding(fx32, target("w2", few32[None], ONE))
    assert tol < 0.05 * expected
    assert abs(float(value) - expected) <= tol


def test_gradients_are_finite_on_rank_deficient_features():
    f = features(shape=(3, 3, 32))  # 9 points in 32 dimensions, 2 dead channels
    for name in ("w2", "swd", "covariance"):
        grad = jax.grad(lambda x: distance(name, x, f, KEY))(f * 1.1 + 0.1)
        assert bool(jnp.all(jnp.isfinite(grad))) and float(jnp.abs(grad).max()) > 0, name


def test_swd_quantile_matching_and_blends():
    """A target of every point twice (2N points: the quantile path) scores like the N points
    (the plain sort); a blend with weights (1, 0) is the first style alone."""
    x, y, z = features(1), features(2), features(3)
    single = target("swd", y[None], ONE)
    doubled = target("swd", jnp.concatenate([y, y], axis=0)[None], ONE)
    a = float(term("swd", x, single, KEY))
    assert float(term("swd", x, doubled, KEY)) == pytest.approx(a, rel=1e-5)
    blend = target("swd", jnp.stack([y, z]), jnp.asarray([1.0, 0.0]))
    assert float(term("swd", x, blend, KEY)) == pytest.approx(a, rel=1e-5)
    w2_blend = target("w2", jnp.stack([y, z]), jnp.asarray([1.0, 0.0]))
    w2_single = target("w2", y[None], ONE)
    assert abs(float(term("w2", x, w2_blend)) - float(term("w2", x, w2_single))) <= 2 * (
        w2_rounding(x, w2_single)
    )
    # an even blend is the mixture: its mean is the mean of the means
    even = target("w2", jnp.stack([y, z]), jnp.asarray([1.0, 1.0]))
    np.testing.assert_allclose(even["mean"], (y.mean((0, 1)) + z.mean((0, 1))) / 2, rtol=1e-5)
    # other keys draw other directions
    assert float(term("swd", x, single, jax.random.key(8))) != pytest.approx(a, rel=1e-3)


SWD = {"init": "content", "terms": [recipe_files.term("style", "block1_conv1", "swd")]}


def test_swd_draws_are_seeded_reproducible_and_traced(vgg19, tmp_path, compiled):
    """Same seed: the same history twice; another seed: another history, and no compile."""
    path = tmp_path / "swd.toml"
    recipe_files.write(path, SWD)
    run = lambda seed: (
        job.combine(
            recipe=str(path),
            size=24,
            steps=4,
            chunk=4,  # noqa: E731
            seed=seed,
        ).outcome.history
    )
    first = run(3)
    before = len(compiled)  # the first run's compiles
    again, other = run(3), run(4)
    assert compiled[before:] == []
    np.testing.assert_array_equal(first, again)
    assert not np.allclose(first, other)
    # the directions change every step: one image scores differently at steps 0 and 1
    prep = prepare_lib.prepare(config_lib.RunConfig(recipe=str(path), size=24, seed=3))
    key = program.seed_keys(3, 1)[0]
    loss = jax.jit(
        lambda variables, targets, x, step: program.loss_components(
            prep.problem, variables, targets, x, program.step_key(key, step)
        )[0]
    )
    at = lambda step: float(loss(prep.variables, prep.targets, prep.x0[0], jnp.int32(step)))
    assert at(0) != pytest.approx(at(1), rel=1e-3) and at(0) == at(0)


def test_host_sort_equals_xla_sort(monkeypatch):
    """On CPU the sort order comes from numpy (one device) or XLA (several): same values,
    same gradients."""
    x = jnp.asarray(np.random.default_rng(0).standard_normal((3, 50)), jnp.float32)
    loss = lambda v: jnp.sum(statistics.sort_rows(v) * jnp.arange(50.0)[None])  # noqa: E731
    host = jax.jit(jax.value_and_grad(loss))(x)
    monkeypatch.setattr(statistics, "HOST_SORT_BACKENDS", ())
    xla = jax.jit(jax.value_and_grad(loss))(x)
    np.testing.assert_array_equal(statistics.sort_rows(x), jnp.sort(x, axis=-1))
    np.testing.assert_allclose(host[0], xla[0], rtol=1e-6)
    np.testing.assert_array_equal(host[1], xla[1])
