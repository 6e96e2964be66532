"""Style scale (issue 14, part 2): each style is sized relative to the output."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import recipe_files
from cli_run import assert_one_line_error, jaxcombine
from recipe_files import term

from jaxcombine.engine import program
from jaxcombine.errors import JaxcombineError
from jaxcombine.io import images
from jaxcombine.networks import model
from jaxcombine.options.config import RunConfig
from jaxcombine.run import job, memory
from jaxcombine.run import plan as plan_lib
from jaxcombine.run import prepare as prepare_lib
from jaxcombine.stats import statistics
from jaxcombine.stats.gram import gram

EVERY = {
    "terms": [
        term("content", "block1_conv2"),
        term("style", "block1_conv1", "gram"),
        term("style", "block1_conv1", "meanstd"),
        term("style", "block1_conv2", "covariance"),
        term("style", "block1_conv2", "w2"),
        term("style", "block1_conv1", "swd"),
    ]
}
TWO = (str(images.STYLE), str(images.CONTENT))  # two styles, the photo as the second


@pytest.fixture(scope="module")
def every(tmp_path_factory):
    path = tmp_path_factory.mktemp("recipe") / "every.toml"
    recipe_files.write(path, EVERY)
    return str(path)


# XLA's convolutions in the CPU's default loop form (a rolled scan): how a style is sized
# does not depend on the convolution algorithm, and Winograd's programs compile 2-3 times
# slower on the CPU. The two tests that use it share its programs.
SHALLOW_RUN = dict(
    recipe="tests/shallow.toml", size=32, steps=3, chunk=3, init="content", conv="xla", loop="scan"
)


def _leaves(targets):
    return {
        jax.tree_util.keystr(k): np.asarray(v)
        for k, v in jax.tree_util.tree_flatten_with_path(targets)[0]
    }


def test_style_scale_one_is_the_unscaled_behaviour_exactly(vgg19):
    base = RunConfig(**SHALLOW_RUN)
    plain, one = prepare_lib.prepare(base), prepare_lib.prepare(base.replace(style_scale=(1.0,)))
    a, b = _leaves(plain.targets), _leaves(one.targets)
    assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)
    # ... which is the targets of the style fitted to the output, as before style_scale
    direct = program.compute_targets(
        plain.problem, plain.variables, jnp.asarray(plain.content), jnp.asarray(plain.styles)
    )
    assert all(np.array_equal(a[k], v) for k, v in _leaves(direct).items())
    r1, r2 = job.combine(base), job.combine(base.replace(style_scale=(1.0,)))
    assert np.array_equal(r1.outcome.pixels, r2.outcome.pixels)


def test_style_scale_changes_the_targets_and_the_result(vgg19):
    base = RunConfig(**SHALLOW_RUN)
    plain, big = prepare_lib.prepare(base), prepare_lib.prepare(base.replace(style_scale=(2.0,)))
    assert big.style_images[0].shape == (64, 64, 3) and plain.style_images[0].shape == (32, 32, 3)
    key = "style:gram:block1_conv1"
    g1, g2 = np.asarray(plain.targets[key]), np.asarray(big.targets[key])
    assert np.abs(g1 - g2).max() > 0.05 * np.abs(g1).max()
    # the target is the Gram matrix of the style read at 64 px
    feats = model.VGG(taps=("block1_conv1",), conv=plain.problem.conv).apply(
        plain.variables, jnp.asarray(big.style_images[0])[None]
    )
    np.testing.assert_allclose(g2, gram(feats["block1_conv1"][0]), rtol=1e-5)
    assert big.x0.shape == plain.x0.shape  # the output (and a style start) keep their size
    r1, r2 = job.combine(base), job.combine(base.replace(style_scale=(2.0,)))
    assert np.abs(r1.outcome.pixels - r2.outcome.pixels).max() > 0.5


@pytest.mark.slow  # quick siblings: the one-style scale tests and the swd mixture below
def test_two_styles_at_different_scales_blend_every_statistic(vgg19, every):
    config = RunConfig(
        recipe=every,
        style=TWO,
        style_scale=(0.5, 2.0),
        style_weights=(1.0, 3.0),
        size=32,
        steps=2,
        chunk=2,
        init="content,noise",
    )
    prep = prepare_lib.prepare(config)
    sizes = [s.shape[:2] for s in prep.style_images]
    assert sizes == [(16, 16), (64, 64)]
    net = model.VGG(taps=("block1_conv1", "block1_conv2"), conv=prep.problem.conv)
    feats = [
        {k: v[0] for k, v in net.apply(prep.variables, jnp.asarray(s)[None]).items()}
        for s in prep.style_images
    ]
    w = np.array([0.25, 0.75])
    t = prep.targets
    np.testing.assert_allclose(
        t["style:gram:block1_conv1"],
        sum(wi * gram(f["block1_conv1"]) for wi, f in zip(w, feats)),
        rtol=1e-5,
    )
    means = [np.mean(np.asarray(f["block1_conv2"]).reshape(-1, 64), axis=0) for f in feats]
    np.testing.assert_allclose(
        t["style:w2:block1_conv2"]["mean"], w[0] * means[0] + w[1] * means[1], rtol=1e-5
    )
    pooled = np.concatenate([np.asarray(f["block1_conv2"]).reshape(-1, 64) for f in feats])
    weights = np.concatenate([np.full(16 * 16, w[0] / 256), np.full(64 * 64, w[1] / 4096)])
    mu = weights @ pooled
    np.testing.assert_allclose(
        t["style:covariance:block1_conv2"],
        (weights[:, None] * (pooled - mu)).T @ (pooled - mu),
        rtol=2e-4,
        atol=1e-3,
    )
    swd = t["style:swd:block1_conv1"]
    assert swd["points"].shape == (1, 16 * 16 + 64 * 64, 64)
    np.testing.assert_allclose(swd["point_weights"], weights, rtol=1e-6)
    r = job.combine(config)  # and it runs: two starts in one program
    assert r.history.shape == (2, 2, 7) and np.isfinite(r.history).all()
    assert not np.array_equal(r.outcome.pixels[0], prep.x0[0])


def test_swd_of_a_weighted_pooled_target_is_that_of_the_mixture():
    """Points of weight 2w are as if counted twice: two copies of one style at one
    size give the same sliced distance as that style's points once."""
    y = jnp.asarray(np.random.default_rng(1).standard_normal((4, 4, 3)), jnp.float32)
    x = jnp.asarray(np.random.default_rng(2).standard_normal((5, 5, 3)), jnp.float32)
    key = jax.random.key(0)
    # jitted: one compile per function and input structure, not one per primitive
    target, distance = jax.jit(statistics.swd_target), jax.jit(statistics.sliced_wasserstein)
    once = target(y[None], jnp.ones(1))
    twice_mixed = target([y, jnp.concatenate([y, y], axis=0)], jnp.asarray([0.5, 0.5]))
    np.testing.assert_allclose(distance(x, twice_mixed, key), distance(x, once, key), rtol=1e-5)


def test_style_activations_refuse_a_style_scale(vgg19, tmp_path):
    recipe = tmp_path / "act.toml"
    recipe_files.write(recipe, {"terms": [term("style", "block1_conv1")]})
    with pytest.raises(JaxcombineError, match="style_scale 2 cannot apply"):
        prepare_lib.prepare(RunConfig(recipe=str(recipe), size=32, style_scale=(2.0,)))
    proc = jaxcombine(
        "run",
        "--recipe",
        recipe,
        "--size",
        "32",
        "--style-scale",
        "0.5",
        "--out",
        tmp_path / "o",
        cwd=tmp_path,
    )
    assert proc.returncode == 2
    assert_one_line_error(proc, "style_scale 0.5 cannot apply to the recipe's style 'activations'")
    with pytest.raises(
        JaxcombineError, match="style 1 at style_scale 0.02: image of 1x1 is too small"
    ):
        prepare_lib.prepare(RunConfig(recipe="tests/shallow.toml", size=32, style_scale=(0.02,)))


def test_a_large_style_scale_is_counted_before_the_run(vgg19):
    """A style at 8x the output's side needs a forward of 64x the output's pixels: the
    pre-flight check counts it and refuses, where style scale 1 fits."""
    config = RunConfig(recipe="gatys", size=128, init="content")
    fits = plan_lib.make(config)
    rec = fits.recipe
    run = memory.estimate_bytes(
        rec.layers, 128, 128, 1, conv=fits.conv, activation_targets=["block4_conv2"]
    )
    scaled = memory.estimate_targets_bytes(rec.layers, [(128, 128), (1024, 1024)])
    assert scaled > 1.3 * run > 1.3 * memory.estimate_targets_bytes(rec.layers, [(128, 128)] * 2)
    limit = config.replace(max_memory=1.05 * fits.memory_bytes / 1e9)
    plan_lib.make(limit)  # fits
    with pytest.raises(
        JaxcombineError, match="needs about .* a style at 1024x1024.* use a smaller --style-scale"
    ):
        plan_lib.make(limit.replace(style_scale=(8.0,)))


@pytest.mark.slow
def test_style_masks_with_styles_of_different_sizes(vgg19, every, tmp_path):
    """Per-style targets (style masks) from styles at two scales: each style's target is
    its own, at its own size, and the run is finite."""
    from PIL import Image

    half = np.zeros((32, 32), np.uint8)
    half[:, 16:] = 255
    Image.fromarray(half).save(tmp_path / "right.png")
    Image.fromarray(255 - half).save(tmp_path / "left.png")
    config = RunConfig(
        recipe=every,
        style=TWO,
        style_scale=(0.5, 2.0),
        size=32,
        steps=2,
        chunk=2,
        style_masks=(str(tmp_path / "left.png"), str(tmp_path / "right.png")),
        init="content",
    )  # one start: masked w2 with several starts hangs XLA:CPU (open)
    prep = prepare_lib.prepare(config)
    swd = prep.targets["style:swd:block1_conv1"]
    assert [t["points"].shape[1] for t in swd] == [16 * 16, 64 * 64]
    assert prep.targets["style_masks"].shape == (2, 32, 32)
    r = job.combine(config)
    assert np.isfinite(r.history).all() and r.history.shape == (2, 1, 7)
