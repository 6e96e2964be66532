"""Spatial masks (issue 13, part 2): a masked term sees its region only, a style governs its own."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import recipe_files
from cli_run import assert_one_line_error, jaxcombine
from float32 import w2_rounding
from PIL import Image
from recipe_files import term

from jaxcombine.engine import program
from jaxcombine.errors import JaxcombineWarning
from jaxcombine.networks import model
from jaxcombine.options import recipe
from jaxcombine.run import job
from jaxcombine.stats import losses, masks, statistics

MATCHED = ("gram", "meanstd", "covariance")
# Sums and sorts in float32: each value is a ratio of two sums of at most a few hundred
# terms (pairwise: < 10 roundings of 2⁻²⁴ each, ~1e-6 relative) and the masked and unmasked
# forms sum in different orders, so 2e-5 leaves a 10x margin. W2 goes through an
# eigen-solve instead: its tolerance is derived from the data (w2_rounding).
SUMS_RTOL = 2e-5


# The statistics' maths, each call one compiled program: run eagerly, every primitive of
# the sorting statistics compiles on its own, several seconds a test.
_target = jax.jit(losses.target, static_argnums=0)
_term = jax.jit(losses.term, static_argnums=0)


def _features(seed=0, shape=(6, 8, 5)):
    """Non-negative, like ReLU maps; drawn by numpy (jax.random compiles per shape)."""
    return jnp.asarray(np.random.default_rng(seed).standard_normal(shape), jnp.float32) ** 2


def _half(shape=(6, 8), right=True):
    m = np.zeros(shape, np.float32)
    m[:, shape[1] // 2 :] = 1.0
    return jnp.asarray(m if right else 1.0 - m)


# --------------------------------------------------------------------------- the maths


@pytest.mark.parametrize("name", [*MATCHED, "activations", "w2", "swd", "histogram", "cmd"])
def test_an_all_ones_mask_is_the_unmasked_term(name):
    x, y = _features(0), _features(1)
    target = _target(name, y[None], jnp.ones(1))
    key = jax.random.key(3)
    ones = jnp.ones(x.shape[:2])
    plain, masked = _term(name, x, target, key), _term(name, x, target, key, ones)
    if name == "w2":
        assert abs(float(masked) - float(plain)) <= 2 * w2_rounding(x, target)
    else:
        np.testing.assert_allclose(masked, plain, rtol=SUMS_RTOL)
    assert plain > 1e-3  # a real difference, not 0 == 0


@pytest.mark.parametrize("name", MATCHED)
def test_an_all_ones_mask_gives_the_unmasked_statistic(name):
    x = _features(0)
    np.testing.assert_allclose(
        losses.statistic(x, name, jnp.ones(x.shape[:2])),
        losses.statistic(x, name),
        rtol=1e-5,
        atol=1e-6,
    )


@pytest.mark.parametrize("name", [*MATCHED, "activations", "w2", "swd", "histogram", "cmd"])
def test_a_binary_mask_is_the_term_of_its_region_alone(name):
    """Normalised by the region's area, not H·W: the masked term of a half equals the
    term of that half cut out (activations against the target's same half). The target
    has 63 points, so no level (k+½)/24 of the half's points falls on one of its steps."""
    x, y = _features(0), _features(1, (7, 9, 5))
    x = x.at[:, :4].multiply(3.0)  # a left half unlike the right: the mask must matter
    key = jax.random.key(4)
    if name == "activations":
        target, half_target = y[:6, :8], y[:6, 4:8]
    else:
        target = half_target = _target(name, y[None], jnp.ones(1))
    masked = _term(name, x, target, key, _half())
    cut = _term(name, x[:, 4:], half_target, key)
    if name == "w2":
        assert abs(float(masked) - float(cut)) <= 2 * w2_rounding(x[:, 4:], target)
    else:
        np.testing.assert_allclose(masked, cut, rtol=SUMS_RTOL)
    assert not np.isclose(masked, _term(name, x, target, key), rtol=1e-3)


def test_a_weighted_mask_weights_the_points():
    """Mask values 2:1 are one point counted twice (w2's weighted mean and covariance).

    8 points in 5 channels, so the 5×5 matrix of the cross term has full rank (with 3
    points, as before, its zero eigenvalue came out of float32 as noise of ~ε·λmax, whose
    root differed from one CPU to another by 1.6e-5 relative: issue 20, item 13); the
    tolerance is derived from the data (:func:`w2_rounding`)."""
    x = _features(0, (2, 4, 5))
    target = statistics.gaussian_target(_features(1)[None], jnp.ones(1))
    doubled = jnp.concatenate([x.reshape(1, 8, 5), x[:1, :1]], axis=1)  # point 0 twice
    weights = np.ones((2, 4), np.float32)
    weights[0, 0] = 2.0
    w2 = jax.jit(statistics.w2_gaussian)
    weighted = float(w2(x, target, jnp.asarray(weights)))
    tol = w2_rounding(x, target, weights) + w2_rounding(doubled, target)
    assert tol < 1e-3 * weighted
    assert abs(weighted - float(w2(doubled, target))) <= tol
    assert abs(weighted - float(w2(x, target))) > 100 * tol  # not a no-op


@pytest.mark.parametrize("layer", ["block1_conv1", "block2_conv2", "block3_pool", "block5_conv1"])
def test_masks_reach_each_layer_by_area_averages_of_its_shape(vgg19, layer):
    h, w = 37, 50  # odd sides: pooling drops the odd edge, and so must the mask
    feats = model.VGG(taps=(layer,)).apply(
        model.variables(model.trim(vgg19.arrays, [layer])), jnp.zeros((1, h, w, 3))
    )[layer]
    m = np.random.default_rng(0).uniform(size=(h, w)).astype(np.float32)
    at = masks.at_layer(jnp.asarray(m), layer, feats.shape)
    k = 2 ** masks.poolings(layer)
    blocks = m[: at.shape[0] * k, : at.shape[1] * k].reshape(at.shape[0], k, at.shape[1], k)
    np.testing.assert_allclose(at, blocks.mean(axis=(1, 3)), rtol=1e-5)


# --------------------------------------------------------------------------- in a network


def _grad(vgg19, rec, mask):
    """Gradient of ``rec``'s loss at a random image, the term masked by ``mask`` (H, W)."""
    rng = np.random.default_rng(0)
    content, style = (jnp.asarray(rng.uniform(0, 255, (32, 32, 3)), jnp.float32) for _ in range(2))
    problem = program.Problem(rec.structure())
    variables = model.variables(model.trim(vgg19.arrays, rec.layers))
    targets = program.compute_targets(
        problem, variables, content, style[None], masks=jnp.asarray(mask)[None]
    )
    x = jnp.asarray(rng.uniform(0, 255, (32, 32, 3)), jnp.float32)
    key = jax.random.key(0)
    loss = lambda p: program.loss(problem, variables, targets, p, key=key)[0]
    return np.asarray(jax.jit(jax.grad(loss))(x))  # one program, not one per primitive


@pytest.mark.parametrize(
    "statistic",
    [
        "activations",
        # in the slow tier: the one-value statistics (base.Matched) and the point-set ones
        # (swd, w2: their masks weight points, as test_a_weighted_mask_... checks)
        *(
            pytest.param(s, marks=pytest.mark.slow)
            for s in ("gram", "meanstd", "covariance", "w2", "swd")
        ),
    ],
)
def test_a_zero_mask_leaves_its_region_untouched(vgg19, statistic):
    """A term masked to columns >= 16 of a 32-px image gives exactly zero gradient left of
    the receptive-field border: block2_conv1 (masked by the 2x2 average of the mask, so
    from its column 8) sees input columns from 2*8 - 4 = 12 on. Columns < 12: exactly 0."""
    source = "content" if statistic == "activations" else "style"
    rec = recipe.Recipe(
        "m",
        tuple(
            recipe.Term(layer, source, statistic, mask=0)
            for layer in ("block1_conv1", "block2_conv1")
        ),
        masks=("m",),
    )
    mask = np.zeros((32, 32), np.float32)
    mask[:, 16:] = 1.0
    g = _grad(vgg19, rec, mask)
    assert np.abs(g[:, :12]).max() == 0.0
    assert np.abs(g[:, 16:]).max() > 0.0 and np.isfinite(g).all()
    unmasked = _grad(
        vgg19,
        rec.replace(
            terms=tuple(recipe.Term(t.layer, t.source, t.statistic) for t in rec.terms), masks=()
        ),
        mask,
    )
    assert np.abs(unmasked[:, :12]).max() > 0.0  # without the mask the left half moves


# --------------------------------------------------------------------------- runs


RUN = dict(size=40, steps=30, chunk=10, lr=8.0, init="content")  # style-only, far enough to see
RECIPE = {"terms": [term("style", ["block1_conv1", "block2_conv1"], "gram", mask="right.png")]}


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("masks")
    right = np.zeros((40, 40), np.uint8)
    right[:, 20:] = 255
    Image.fromarray(right).save(d / "right.png")
    Image.fromarray(255 - right).convert("RGB").save(d / "left.jpg", quality=100)  # any mode
    recipe_files.write(d / "masked.toml", RECIPE)
    recipe_files.write(
        d / "style.toml", {"terms": [term("style", ["block1_conv1", "block2_conv1"], "gram")]}
    )
    rng = np.random.default_rng(0)
    texture = rng.uniform(0, 1, (48, 48, 1))
    Image.fromarray((texture * [255, 40, 20]).astype(np.uint8)).save(d / "red.png")
    Image.fromarray((texture * [20, 60, 255]).astype(np.uint8)).save(d / "blue.png")
    Image.fromarray(np.full((48, 48, 3), 128, np.uint8)).save(d / "grey.png")
    (d / "corrupt.png").write_bytes(b"\x89PNG not really")
    return d


def test_a_recipe_mask_is_read_relative_to_the_recipe_file(files):
    rec = recipe.load(str(files / "masked.toml"))
    assert rec.masks == (str(files / "right.png"),)
    assert rec.labels == ("style:gram:block1_conv1@mask1", "style:gram:block2_conv1@mask1", "tv")
    assert recipe.from_dict(rec.to_dict()).masks == rec.masks  # written back as the path
    other = rec.replace(masks=(str(files / "left.jpg"),))
    assert other.structure() == rec.structure()  # another file: the same program
    assert (
        rec.structure()
        != recipe.load(str(files / "masked.toml"))
        .replace(terms=tuple(t.__class__(t.layer, t.source, t.statistic) for t in rec.terms))
        .structure()
    )


def test_a_half_mask_styles_one_half_and_not_the_other(vgg19, files):
    """Real weights, 40 px, 30 steps from a grey content: the left half (mask 0, beyond the
    receptive-field margin) stays exactly the content, the right half takes the red style."""
    r = job.combine(
        recipe=str(files / "masked.toml"),
        content=str(files / "grey.png"),
        style=(str(files / "red.png"),),
        **RUN,
    )
    px = r.outcome.pixels[0]
    assert np.abs(px[:, :12] - 128.0).max() == 0.0
    assert np.abs(px[:, 24:] - 128.0).mean() > 30.0
    assert (px[:, 24:, 0] - px[:, 24:, 2]).mean() > 60.0


@pytest.mark.slow
def test_each_style_governs_its_own_region_in_one_program(vgg19, files, compiled):
    """Two styles × two masks, two vmapped starts: the left takes the red style, the
    right the blue; other masks of the same size compile nothing new."""
    base = dict(
        recipe=str(files / "style.toml"),
        content=str(files / "grey.png"),
        style=(str(files / "red.png"), str(files / "blue.png")),
        **RUN,
    )
    base["init"] = "content,noise"
    # XLA's convolutions in the CPU's default loop form: which region takes which style
    # does not depend on the convolution algorithm (the tests above, which assert exact
    # zeros beyond a receptive field, keep the default Winograd layers), and Winograd's
    # programs compile 2-3 times slower on the CPU
    base.update(conv="xla", loop="scan")
    r = job.combine(style_masks=(str(files / "left.jpg"), str(files / "right.png")), **base)
    assert r.outcome.pixels.shape[0] == 2 and np.isfinite(r.history).all()
    for px in r.outcome.pixels:
        red_minus_blue = px[..., 0] - px[..., 2]
        assert red_minus_blue[:, :16].mean() > 80 > -80 > red_minus_blue[:, 24:].mean()
    before = len(compiled)
    assert before > 0  # the listener hears compiles
    swapped = job.combine(style_masks=(str(files / "right.png"), str(files / "left.jpg")), **base)
    assert compiled[before:] == []
    red_minus_blue = swapped.outcome.pixels[0, ..., 0] - swapped.outcome.pixels[0, ..., 2]
    assert red_minus_blue[:, 24:].mean() > 80 > -80 > red_minus_blue[:, :16].mean()
    unmasked = job.combine(**base)  # without masks both halves get the same blend
    red_minus_blue = unmasked.outcome.pixels[0, ..., 0] - unmasked.outcome.pixels[0, ..., 2]
    assert abs(red_minus_blue[:, 24:].mean() - red_minus_blue[:, :16].mean()) < 40


def test_style_masks_and_a_recipe_mask_multiply(vgg19, files):
    """A style term with its own mask (right) under style masks (left for red, right for
    blue): only the blue style's right half is left, so the left half is untouched. The
    red style's part of the masked term is empty, and the run says so."""
    with pytest.warns(JaxcombineWarning, match=r"style mask 1 overlap on 0\.0%"):
        r = job.combine(
            recipe=str(files / "masked.toml"),
            content=str(files / "grey.png"),
            style=(str(files / "red.png"), str(files / "blue.png")),
            style_masks=(str(files / "left.jpg"), str(files / "right.png")),
            **RUN,
        )
    px = r.outcome.pixels[0]
    assert np.abs(px[:, :12] - 128.0).max() == 0.0
    assert (px[:, 24:, 2] - px[:, 24:, 0]).mean() > 60


@pytest.mark.parametrize(
    "args, fragment",
    [
        (
            ["--style", "RED", "--style", "BLUE", "--style-mask", "LEFT"],
            "give one style mask per style image: 1 for 2",
        ),
        (["--style-mask", "missing.png"], "style mask not found: missing.png"),
        (["--style-mask", "CORRUPT"], "not an image Pillow can read"),
        (["--recipe", "MISSING_RECIPE"], "mask not found"),
        (["--recipe", "RECIPE", "--size", "64", "--style-mask", "BLACK"], "black everywhere"),
    ],
)
def test_bad_masks_are_one_line_errors(vgg19, files, tmp_path, args, fragment):
    recipe_files.write(tmp_path / "gone.toml", recipe_files.with_terms(RECIPE, mask="gone.png"))
    Image.new("L", (8, 8), 0).save(tmp_path / "black.png")
    names = {
        "RED": files / "red.png",
        "BLUE": files / "blue.png",
        "LEFT": files / "left.jpg",
        "CORRUPT": files / "corrupt.png",
        "MISSING_RECIPE": tmp_path / "gone.toml",
        "RECIPE": files / "masked.toml",
        "BLACK": tmp_path / "black.png",
    }
    proc = jaxcombine(
        "run",
        "--size",
        "32",
        "--steps",
        "1",
        "--quiet",
        "--out",
        tmp_path / "o",
        *[names.get(a, a) for a in args],
        cwd=tmp_path,
    )
    assert proc.returncode == 2
    assert_one_line_error(proc, fragment)
