"""Tiled loss and gradient (jaxcombine.engine.tiles) against the untiled ones, real VGG19 weights."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import recipe_files

from jaxcombine.engine import program, tiles
from jaxcombine.errors import JaxcombineError
from jaxcombine.networks import model
from jaxcombine.options import recipe as recipe_lib
from jaxcombine.options.recipe import Recipe, Term

# Every supported statistic on the two shallowest taps (halo 4 px, stride 2): tiles of
# 8 px over a 37x30 image give 5x4 windows, both axes tiled, odd edges dropped by the pool.
SHALLOW = Recipe(
    "all",
    (
        Term("block2_conv1", "content", "activations", 1.0),
        Term("block1_conv1", "style", "gram", 1.0),
        Term("block2_conv1", "style", "gram", 0.5),
        Term("block2_conv1", "style", "meanstd", 2.0),
        Term("block1_conv1", "style", "covariance", 1.0),
        Term("block2_conv1", "style", "w2", 1.0),
        Term("block1_conv1", "style", "cmd", 1.0),
    ),
    tv_weight=1e-3,
)


def images(shape, seed=0):
    rng = np.random.default_rng(seed)
    content, style, x = (rng.uniform(0, 255, (*shape, 3)).astype(np.float32) for _ in range(3))
    # smooth, image-like structure: sums of a few sines, so every layer is active
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    x = (0.5 * x + 60 * (2 + np.sin(yy / 5.0)[..., None] + np.cos(xx / 7.0)[..., None])).clip(
        0, 255
    )
    return jnp.asarray(content), jnp.asarray(style[None]), jnp.asarray(x, jnp.float32)


targets_of = jax.jit(program.compute_targets, static_argnames="problem")


@functools.partial(jax.jit, static_argnames="problem")
def untiled_value_and_grad(problem, variables, targets, x, weights):
    """The whole image's loss, its components and gradient: one program per problem and
    shape, shared by the tests that compare tilings against it."""
    return jax.value_and_grad(
        lambda q: program.loss(problem, variables, targets, q, weights), has_aux=True
    )(x)


def both(vgg19, rec, shape, tile):
    problem = program.Problem(recipe=rec.structure())
    variables = model.variables(model.trim(vgg19.arrays, rec.layers))
    content, styles, x = images(shape)
    targets = targets_of(problem, variables, content, styles)
    weights = jnp.asarray([t.weight for t in rec.terms] + [rec.tv_weight], jnp.float32)
    untiled = untiled_value_and_grad(problem, variables, targets, x, weights)
    # a new function each call: traced afresh, so a patched tiles.halo is seen
    tiled = jax.jit(lambda v, t, p: tiles.value_and_grad(problem, v, t, p, weights, tile=tile))(
        variables, targets, x
    )
    return untiled, tiled


def assert_same(untiled, tiled, rtol):
    (v0, c0), g0 = untiled
    (v1, c1), g1 = tiled
    np.testing.assert_allclose(c1, c0, rtol=rtol)
    np.testing.assert_allclose(v1, v0, rtol=rtol)
    scale = float(jnp.max(jnp.abs(g0)))
    assert scale > 0
    err = float(jnp.max(jnp.abs(g1 - g0)))
    assert err <= rtol * scale, (err, scale)


def test_plan_covers_the_image_once_with_aligned_windows():
    for length in (37, 250, 256, 300):
        axis = tiles.plan_axis(length, 64, 80, 16)
        assert axis.window >= min(length, 64 + 160) and axis.window <= length
        assert axis.origins[0] == 0 and np.all(axis.origins % 16 == 0)
        assert np.all(axis.origins + axis.window <= length)
        assert np.all(axis.origins <= np.maximum(axis.starts - 80, 0))  # halo before
        assert np.all(axis.origins + axis.window >= np.minimum(axis.ends + 80, length))  # after
        assert axis.starts[0] == 0 and axis.ends[-1] == length
        assert np.all(axis.starts[1:] == axis.ends[:-1])


def test_halo_follows_the_architecture():
    # spoiled rows from an edge, VGG19: block1 2 → pool 1 → block2 3 → pool 2 → block3 6
    # → pool 3 → block4 7 → pool 4 → block5_conv1 5 rows of 16 px
    assert tiles.reach(["block5_conv1"]) == 80
    assert tiles.stride(["block5_conv1"]) == 16 and tiles.halo(["block5_conv1"]) == 80
    assert tiles.reach(["block3_conv1"]) == 12 and tiles.halo(["block3_conv1"]) == 12
    assert tiles.reach(["block2_conv1"]) == 4 and tiles.stride(["block2_conv1"]) == 2
    assert tiles.reach(["block5_conv1"], "vgg16") == 64


def test_every_supported_statistic_matches_untiled(vgg19):
    """Value and gradient equal the untiled ones to 2e-4 relative (the gradient: of its
    largest magnitude), with 20 windows whose halos overlap along both axes."""
    untiled, tiled = both(vgg19, SHALLOW, (37, 30), tile=8)
    assert_same(untiled, tiled, rtol=2e-4)


@pytest.mark.slow  # the negative control of the quick exactness tests above
def test_a_halo_too_small_is_not_exact(vgg19, monkeypatch):
    """The same comparison fails once the halo is narrower than an edge reaches (4 px here)."""
    monkeypatch.setattr(tiles, "halo", lambda layers, arch="vgg19": 2)
    untiled, tiled = both(vgg19, SHALLOW, (37, 30), tile=8)
    with pytest.raises(AssertionError):
        assert_same(untiled, tiled, rtol=2e-4)


@pytest.mark.slow
def test_gatys_to_block5_matches_untiled(vgg19):
    """The gatys recipe (Grams to block5_conv1, content block4_conv2): 80 px halos, windows
    of 224 rows over 250 (4 tiles, the last clamped back onto the stride), whole rows of 48."""
    rec = recipe_lib.load("gatys")
    untiled, tiled = both(vgg19, rec, (250, 48), tile=64)
    assert_same(untiled, tiled, rtol=2e-4)


@pytest.mark.parametrize("statistic", ["swd", "histogram"])
def test_sorting_statistics_are_refused(statistic):
    rec = Recipe(statistic, (Term("block1_conv1", "style", statistic),))
    with pytest.raises(JaxcombineError, match=f"'{statistic}' is not a sum over positions"):
        tiles.check(rec)
    with pytest.raises(JaxcombineError, match="multiple of 16"):
        tiles.plan(256, 256, 40, ["block5_conv1"])


@pytest.mark.slow
def test_targets_match_untiled_with_blended_styles(vgg19):
    """Every target (a blend of two styles with weights 0.3/0.7, the content's activation
    map) equals program.compute_targets' to 1e-4 relative (of each target's largest value)."""
    problem = program.Problem(recipe=SHALLOW.structure())
    variables = model.variables(model.trim(vgg19.arrays, SHALLOW.layers))
    content, style, _ = images((37, 30))
    styles = jnp.concatenate([style, images((37, 30), seed=1)[1]])
    sw = jnp.asarray([0.3, 0.7], jnp.float32)
    want = program.compute_targets(problem, variables, content, styles, sw)
    got = jax.jit(lambda v, c, s, w: tiles.targets(problem, v, c, s, w, tile=8))(
        variables, content, styles, sw
    )
    assert got.keys() == want.keys()
    for key in want:
        for g, w in zip(jax.tree.leaves(got[key]), jax.tree.leaves(want[key])):
            assert g.shape == w.shape, key
            err = float(jnp.max(jnp.abs(g - w)) / jnp.max(jnp.abs(w)))
            assert err < 1e-4, (key, err)


@pytest.mark.slow
def test_a_tiled_run_matches_the_untiled_one():
    """``combine(tile=...)``: the same losses at every step (1e-4 relative) and pixels
    (0.05 of 0-255 but for under 1% of them, within one step of 4 for those) as the
    whole-image run, from 16 px tiles, coarse to fine: 4 steps
    at 32x32, then 4 at 64x64 (the single-scale path is the last scale's)."""

    from jaxcombine.run.job import combine

    shallow = recipe_files.SHALLOW
    opts = dict(
        recipe=str(shallow), size=64, steps=4, chunk=2, init="content,noise", scales=(32, 64)
    )
    whole, tiled = combine(**opts), combine(**opts, tile=16)
    assert tiled.config.tile == 16
    assert len(tiled.history) == len(whole.history) == 8
    np.testing.assert_allclose(tiled.history, whole.history, rtol=1e-4, atol=1e-8)
    # Adam divides by the gradient's own scale: where a pixel's gradient is near zero, the
    # tiles' other summation order can flip its sign and move it by up to the learning
    # rate a step. So nearly all pixels agree to 0.05, and the rare flipped ones stay
    # within a step or two (a build of XLA at another optimisation level moved 0.7% of
    # them, by up to 1.64 of 255; as test_rows allows for its sharded sums)
    diff = np.abs(tiled.outcome.pixels - whole.outcome.pixels)
    assert np.mean(diff > 0.05) < 0.01, np.mean(diff > 0.05)
    assert diff.max() < 4.0, diff.max()


def test_tiles_leave_out_the_terms_a_stage_does_not_compute(vgg19, recipe_file):
    """A Gram term that counts only in the final pass reads 0 in the scale and is
    matched in the pass; tiled, the history is the whole-image run's."""
    from jaxcombine.run.job import combine

    content, style = recipe_files.shallow()["terms"]
    recipe = recipe_file(recipe_files.shallow(terms=[content, {**style, "during": "final"}]))
    opts = dict(recipe=recipe, size=32, steps=2, final_steps=2, chunk=2, init="content", conv="xla")
    whole, tiled = combine(**opts), combine(**opts, tile=16)
    gram = tiled.history[:, 0, 1:3]
    assert np.all(gram[:2] == 0.0) and np.all(gram[2:] > 0.1)
    np.testing.assert_allclose(tiled.history, whole.history, rtol=1e-4, atol=1e-8)


def test_tile_option_is_checked():
    from jaxcombine.options.config import RunConfig
    from jaxcombine.options.rules import ConfigError
    from jaxcombine.run.prepare import prepare

    with pytest.raises(ConfigError, match="tile must be an integer >= 0"):
        RunConfig(tile=-16)
    with pytest.raises(JaxcombineError, match="tile must be a multiple of 16"):
        prepare(RunConfig(tile=24, size=64))
    with pytest.raises(JaxcombineError, match="'swd' is not a sum"):
        prepare(RunConfig(tile=32, size=64, recipe="swd"))
