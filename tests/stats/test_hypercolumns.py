"""Hypercolumns (jaxcombine.stats.hypercolumns) and their statistics against direct numpy
computations in float64: bilinear reading, relaxed EMD, moments, palette, self-similarity
and nearest-neighbour targets, on small sets (every grid position used, so the numbers are
deterministic)."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import recipe_files
from PIL import Image
from recipe_files import hypercolumn

from jaxcombine import stats
from jaxcombine.engine import program
from jaxcombine.io import images
from jaxcombine.networks import model
from jaxcombine.options import layers as layers_lib
from jaxcombine.options.config import RunConfig
from jaxcombine.options.recipe import Hypercolumn
from jaxcombine.run import job
from jaxcombine.run import prepare as prepare_lib
from jaxcombine.stats import hypercolumns as hc
from jaxcombine.stats import losses

# float32 of O(1) values through a few sums of at most ~100 terms: ~1e-5 relative
RTOL = 1e-5
RGB_MEAN = np.array([0.485, 0.456, 0.406]) * 255.0
RGB_STD = np.array([0.229, 0.224, 0.225]) * 255.0


def numpy_bilinear(layer: np.ndarray, y: float, x: float) -> np.ndarray:
    """The value of an (h, w, C) map at fractional cell coordinates, clamped, in float64."""
    h, w = layer.shape[:2]
    y, x = min(max(y, 0.0), h - 1.0), min(max(x, 0.0), w - 1.0)
    y0, x0 = int(np.floor(y)), int(np.floor(x))
    y1, x1 = min(y0 + 1, h - 1), min(x0 + 1, w - 1)
    fy, fx = y - y0, x - x0
    layer = layer.astype(np.float64)
    return (
        layer[y0, x0] * (1 - fy) * (1 - fx)
        + layer[y0, x1] * (1 - fy) * fx
        + layer[y1, x0] * fy * (1 - fx)
        + layer[y1, x1] * fy * fx
    )


def numpy_hypercolumns(arrays, image, spec, positions) -> np.ndarray:
    """(N, D) float64: each entry read at its own grid's coordinate (p - (d-1)/2)/d."""
    rows = []
    for y, x in positions:
        parts = []
        for name, a in zip(spec.layers, arrays):
            d = 1 if name == "rgb" else layers_lib.downsampling([name])[name]
            parts.append(numpy_bilinear(a, (y - (d - 1) / 2) / d, (x - (d - 1) / 2) / d))
        rows.append(np.concatenate(parts))
    return np.asarray(rows)


def random_maps(rng, spec: Hypercolumn, size: int, channels=(3, 4)):
    """A Maps of random arrays shaped as VGG's layers of a size×size image, the arrays it
    holds (as numpy) and the image. Its rgb entry is checked against numpy's normalisation."""
    image = rng.uniform(0, 255, (size, size, 3)).astype(np.float32)
    features = {}
    for name, c in zip(spec.layers, channels):
        if name != "rgb":
            h, w, _ = layers_lib.layer_shapes([name], size, size)[name]
            features[name] = jnp.asarray(rng.normal(size=(h, w, c)).astype(np.float32))
    maps = maps_of(spec, features, jnp.asarray(image))
    arrays = [np.asarray(a) for a in maps.arrays]
    if "rgb" in spec.layers:
        rgb = (image - RGB_MEAN) / RGB_STD * spec.scale_of(spec.layers.index("rgb"), 3)
        np.testing.assert_allclose(arrays[spec.layers.index("rgb")], rgb, rtol=1e-5, atol=1e-5)
    return maps, arrays, image


def cosine_cost(x, y):
    xn = x / np.linalg.norm(x, axis=1, keepdims=True)
    yn = y / np.linalg.norm(y, axis=1, keepdims=True)
    return 1.0 - xn @ yn.T


# one compiled program per call shape, not one per operation as eager dispatch compiles
sample = jax.jit(hc.sample)
bilinear = jax.jit(hc.bilinear)
maps_of = jax.jit(hc.maps, static_argnums=0)
draw = jax.jit(hc.draw, static_argnums=(1, 2))


def term(name: str, features, target, **options):
    """The term of statistic ``name`` (with ``options``), compiled, at key 0."""
    stat = stats.get(name, **options)
    return float(jax.jit(lambda f, t: stat.term(f, t, key=jax.random.key(0)))(features, target))


SPEC = Hypercolumn(("rgb", "block1_conv1", "block2_conv1", "block3_conv1"), samples=64)
CHANNELS = (3, 4, 5, 6)


def test_layer_scales_multiply_each_entry():
    ones = {"block1_conv1": jnp.ones((4, 4, 8)), "block2_conv1": jnp.ones((2, 2, 16))}
    image = jnp.zeros((4, 4, 3))
    by_channels = Hypercolumn(("block1_conv1", "block2_conv1"), scales="channels")
    assert [float(a[0, 0, 0]) for a in hc.maps(by_channels, ones, image).arrays] == [1 / 8, 1 / 16]
    given = Hypercolumn(("block2_conv1", "block1_conv1"), scales=(3.0, 0.5))
    assert [float(a[0, 0, 0]) for a in hc.maps(given, ones, image).arrays] == [3.0, 0.5]


def test_strides_follow_the_backbones_downsampling():
    for arch in ("vgg19", "vgg16-tv"):
        names = [n for n in layers_lib.layer_names(arch) if n.startswith("block")]
        spec = Hypercolumn(tuple(names))
        assert hc.strides(spec) == tuple(layers_lib.downsampling(names, arch)[n] for n in names)


def test_sampling_is_exact_at_cell_centres_and_bilinear_elsewhere():
    rng = np.random.default_rng(0)
    maps, arrays, _ = random_maps(rng, SPEC, 8, CHANNELS)
    # every layer's cell centres, in image pixels: c·d + (d-1)/2, read exactly
    for name, a, d in zip(SPEC.layers, arrays, maps.strides):
        h, w = a.shape[:2]
        ys, xs = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
        centres = np.stack([ys.ravel() * d + (d - 1) / 2, xs.ravel() * d + (d - 1) / 2], 1)
        got = bilinear(
            maps.arrays[SPEC.layers.index(name)], (jnp.asarray(centres) - (d - 1) / 2) / d
        )
        np.testing.assert_array_equal(np.asarray(got), a.reshape(-1, a.shape[-1]))
    # integer pixel positions read block1 and rgb exactly
    pixels = np.stack(np.meshgrid(np.arange(8), np.arange(8), indexing="ij"), -1).reshape(-1, 2)
    got = np.asarray(sample(maps, jnp.asarray(pixels, jnp.float32)))
    np.testing.assert_array_equal(got[:, 3:7], arrays[1].reshape(-1, 4))
    # fractional positions (and some beyond the edges) against float64 numpy
    where = rng.uniform(-1.0, 8.0, (40, 2))
    got = np.asarray(sample(maps, jnp.asarray(where, jnp.float32)))
    want = numpy_hypercolumns(arrays, None, SPEC, where)
    np.testing.assert_allclose(got, want, rtol=RTOL, atol=1e-5)


def test_sampling_is_differentiable():
    rng = np.random.default_rng(1)
    maps, arrays, _ = random_maps(rng, SPEC, 8, CHANNELS)
    where = jnp.asarray([[2.5, 3.25]], jnp.float32)
    grads = jax.jit(jax.grad(lambda m: jnp.sum(hc.sample(m, where))))(maps)
    # block2 (stride 2): coordinate (2.5 - 0.5)/2 = 1.0 and (3.25 - 0.5)/2 = 1.375
    g = np.asarray(grads.arrays[2])[..., 0]
    assert g[1, 1] == pytest.approx(0.625) and g[1, 2] == pytest.approx(0.375)
    assert g.sum() == pytest.approx(1.0)


def test_positions_are_drawn_without_replacement_or_inside_a_mask():
    spec = Hypercolumn(("rgb",), samples=20)
    index, where = draw(jax.random.key(3), (8, 8), spec)
    assert len(set(np.asarray(index).tolist())) == 20
    mask = jnp.zeros((8, 8)).at[:, :3].set(1.0)
    _, where = draw(jax.random.key(3), (8, 8), spec, mask)
    assert where.shape == (20, 2) and np.all(np.asarray(where)[:, 1] < 3)
    # a grid with fewer points than samples is read whole, in order, with no key
    index, where = hc.draw(None, (8, 8), Hypercolumn(("rgb",), samples=99, stride=4))
    np.testing.assert_array_equal(
        np.asarray(where), [[1.5, 1.5], [1.5, 5.5], [5.5, 1.5], [5.5, 5.5]]
    )


def test_jitter_moves_each_position_within_its_cell_and_keeps_its_index():
    still = Hypercolumn(("rgb",), samples=16, stride=4)
    moved = dataclasses.replace(still, jitter=True)
    key = jax.random.key(5)
    index, centres = draw(key, (16, 16), still)
    jindex, where = draw(key, (16, 16), moved)
    np.testing.assert_array_equal(np.asarray(jindex), np.asarray(index))
    offsets = np.asarray(where) - np.asarray(centres)
    # within the cell: its centre lies 1.5 px from the cell's edge pixels
    assert np.all(np.abs(offsets) <= 1.5) and np.abs(offsets).max() > 0.5
    # each position and axis draws its own offset, not one for all
    assert len(set(np.round(offsets.ravel(), 6).tolist())) == offsets.size
    # over steps the offsets reach across the cell, so every pixel of it is read
    steps = np.concatenate(
        [np.asarray(draw(jax.random.key(s), (16, 16), moved)[1]) - centres for s in range(64)]
    )
    assert steps.min() < -1.3 and steps.max() > 1.3
    # the same key, the same positions; another key, others
    np.testing.assert_array_equal(np.asarray(draw(key, (16, 16), moved)[1]), np.asarray(where))
    assert not np.allclose(np.asarray(draw(jax.random.key(6), (16, 16), moved)[1]), where)
    # a stride of 1 has nowhere to move
    one = Hypercolumn(("rgb",), samples=16, stride=1, jitter=True)
    np.testing.assert_array_equal(
        np.asarray(draw(key, (16, 16), one)[1]),
        np.asarray(draw(key, (16, 16), dataclasses.replace(one, jitter=False))[1]),
    )
    # a grid read whole needs no key to stay put, but one to move
    with pytest.raises(ValueError, match="needs a PRNG key"):
        draw(None, (8, 8), dataclasses.replace(moved, samples=99))


def _pair(seed: int, spec=SPEC, styles=1, channels=CHANNELS):
    rng = np.random.default_rng(seed)
    out = random_maps(rng, spec, 8, channels)
    srcs = [random_maps(rng, spec, 8, channels) for _ in range(styles)]
    return out, srcs


def _all_points(arrays, spec):
    return numpy_hypercolumns(arrays, None, spec, hc.grid((8, 8), spec.stride))


def test_relaxed_emd_moments_and_palette_match_numpy():
    (out, a_out, img_out), styles = _pair(2, styles=2)
    weights = np.array([0.25, 0.75])
    stack = [m for m, _, _ in styles]
    x = _all_points(a_out, SPEC)
    ys = [_all_points(a, SPEC) for _, a, _ in styles]
    y = np.concatenate(ys)
    w = np.concatenate([np.full(len(p), wt / len(p)) for wt, p in zip(weights, ys)])

    def term_of(name):
        return term(name, out, losses.target(name, stack, jnp.asarray(weights, jnp.float32)))

    cost = cosine_cost(x, y)
    emd = max(cost.min(axis=1).mean(), w @ cost.min(axis=0))
    assert term_of("emd") == pytest.approx(emd, rel=RTOL)
    mx, my = x.mean(0), w @ y
    cx = (x - mx).T @ (x - mx) / len(x)
    cy = ((y - my) * w[:, None]).T @ (y - my)
    moments = np.abs(mx - my).mean() + np.abs(cx - cy).mean()
    assert term_of("moments") == pytest.approx(moments, rel=1e-4)
    colours = lambda img: img.reshape(-1, 3).astype(np.float64) / 255.0  # noqa: E731
    cx, cy = colours(img_out), np.concatenate([colours(i) for _, _, i in styles])
    dist = np.sqrt(((cx[:, None] - cy[None]) ** 2).sum(-1))
    palette = max(dist.min(axis=1).mean(), w @ dist.min(axis=0))
    assert term_of("palette") == pytest.approx(palette, rel=1e-4)


@pytest.mark.parametrize("weights", [(0.25, 0.75), (1.0, 0.0)])
def test_nearest_each_step_matches_numpy(weights):
    """NNST's final pass: each output point to its nearest style point, each set centred
    by its own (weighted) mean; a style of weight 0 offers no point."""
    spec = Hypercolumn(("block1_conv1",), samples=64, stride=1)
    (out, a_out, _), styles = _pair(7, spec, styles=2, channels=(6,))
    weights = np.asarray(weights)
    x = _all_points(a_out, spec)
    ys = [_all_points(a, spec) for _, a, _ in styles]
    w = np.concatenate([np.full(len(p), wt / len(p)) for wt, p in zip(weights, ys)])
    y = np.concatenate(ys)
    cost = cosine_cost(x - x.mean(0), y - w @ y / w.sum())
    want = np.where(w[None, :] > 0, cost, np.inf).min(axis=1).mean()
    target = losses.target(
        "nearest_each_step", [m for m, _, _ in styles], jnp.asarray(weights, jnp.float32)
    )
    got = term("nearest_each_step", out, target)
    assert got == pytest.approx(want, rel=1e-4)
    # centring matters: the uncentred distances give another value
    assert got != pytest.approx(np.where(w[None, :] > 0, cosine_cost(x, y), np.inf).min(1).mean())


def test_self_similarity_matches_numpy():
    (out, a_out, _), [(content, a_content, _)] = _pair(4)
    target = losses.target("self_similarity", [content], jnp.ones((1,)))
    got = term("self_similarity", out, target)

    def normalised(points):
        d = cosine_cost(points, points)
        return d / d.sum(axis=0, keepdims=True)

    want = np.abs(normalised(_all_points(a_out, SPEC)) - normalised(_all_points(a_content, SPEC)))
    assert got == pytest.approx(want.mean(), rel=1e-4)


@pytest.mark.parametrize("chunk", [3, 1024])
def test_nearest_targets_equal_a_brute_force_search(chunk):
    spec = Hypercolumn(("block1_conv1", "block2_conv1"), scales="channels", samples=64, stride=2)
    (out, a_out, _), styles = _pair(5, spec, styles=2, channels=(4, 5))
    content = random_maps(np.random.default_rng(6), spec, 8, (4, 5))
    weights = np.array([0.5, 0.5])
    stat = stats.get("nearest", chunk=chunk)
    target = jax.jit(lambda s, w, c: stat.target(s, w, content=c))(
        [m for m, _, _ in styles], jnp.asarray(weights, jnp.float32), [content[0]]
    )
    queries = numpy_hypercolumns(content[1], None, spec, hc.grid((8, 8), 2))
    candidates = np.concatenate(
        [numpy_hypercolumns(a, None, spec, hc.grid((8, 8), 2)) for _, a, _ in styles]
    )
    mean = candidates.mean(axis=0)  # equal weights, equal sizes
    best = np.argmin(cosine_cost(queries - mean, candidates - mean), axis=1)
    np.testing.assert_allclose(np.asarray(target["rows"]), candidates[best], rtol=RTOL, atol=1e-6)
    # the term: mean cosine distance of the output's hypercolumns to those rows
    got = term("nearest", out, target)
    x = numpy_hypercolumns(a_out, None, spec, hc.grid((8, 8), 2))
    assert got == pytest.approx(np.mean(np.diag(cosine_cost(x, candidates[best]))), rel=1e-4)


def _turned_styles(tmp_path):
    """A 24x32 content and style (the odd turns 32x24: images of their own shape), a
    recipe of a ``nearest`` and an ``emd`` term with ``rotations = true``, prepared; and
    a numpy brute force's view of them: the hypercolumns of the style's four turns (each
    taken by the network one image at a time), the content's, and the mean the
    centred cosine distance subtracts."""
    wide = tmp_path / "wide.png"
    Image.open(images.CONTENT).convert("RGB").resize((32, 24)).save(wide)
    layers = ["block1_conv1", "block2_conv1"]
    terms = [
        hypercolumn(
            "nearest", layers=layers, samples=64, stride=4, layer_scales="channels", rotations=True
        ),
        hypercolumn("emd", layers=["rgb", *layers], samples=32, rotations=True),
    ]
    recipe = recipe_files.write(tmp_path / "turns.toml", {"terms": terms, "init": "content"})
    config = RunConfig(recipe=str(recipe), content=str(wide), size=32, steps=2, conv="xla")
    prep = prepare_lib.prepare(config)
    nearest, _ = prep.problem.recipe.terms
    spec = nearest.hypercolumn
    net = model.VGG(taps=tuple(layers), conv=prep.problem.conv)

    def points(image):
        feats = net.apply(prep.variables, jnp.asarray(np.ascontiguousarray(image))[None])
        arrays = [np.asarray(feats[n][0]) / feats[n].shape[-1] for n in layers]
        return numpy_hypercolumns(arrays, None, spec, hc.grid(image.shape[:2], spec.stride))

    style = np.asarray(prep.style_images[0])
    turned = [points(np.rot90(style, k)) for k in range(4)]
    candidates = np.concatenate(turned)
    queries = points(prep.seen(prep.content))
    mean = candidates.mean(axis=0)  # four turns of one weight and of as many points each
    return config, prep, style, turned, candidates, queries, mean


def test_a_rotations_term_searches_the_style_and_its_three_turns(vgg19, tmp_path):
    """``rotations = true`` (NNST's augmentation): the style turned by 90°, 180° and 270°
    goes through the network as three more styles, each a quarter of the style's weight.
    The nearest-neighbour rows equal a brute-force search over the four images'
    features."""
    _, prep, style, turned, candidates, queries, mean = _turned_styles(tmp_path)
    nearest, emd = prep.problem.recipe.terms
    assert style.shape == (24, 32, 3)
    best = np.argmin(cosine_cost(queries - mean, candidates - mean), axis=1)
    got = np.asarray(prep.targets[losses.target_key(nearest)]["rows"])
    np.testing.assert_allclose(got, candidates[best], rtol=RTOL, atol=1e-6)
    assert np.any(best >= len(turned[0])), "no content point took a turned stroke"
    # a sampled statistic draws from each of the four images, a quarter of the weight each
    target = prep.targets[losses.target_key(emd)]
    assert [m.shape for m in target["styles"]] == [(24, 32), (32, 24), (24, 32), (32, 24)]
    np.testing.assert_allclose(np.asarray(target["weights"]), [0.25] * 4)


@pytest.mark.slow  # two more compiles (a step, guided targets); the search runs above
def test_turned_styles_run_a_step_and_turn_each_guided_region_with_them(vgg19, tmp_path):
    """A step runs on the four images' targets; guided, each style's target holds its own
    four images, each region turned with them, and its nearest rows are the brute force's
    inside that style's turned region."""
    config, prep, style, _, candidates, queries, mean = _turned_styles(tmp_path)
    nearest, emd = prep.problem.recipe.terms
    spec = nearest.hypercolumn
    history = job.combine(config).outcome.history
    assert history.shape[0] == 2 and np.all(np.isfinite(history))
    # guided: each style's target holds its own four images, each region turned with them
    regions = np.zeros((2, 24, 32), np.float32)
    regions[0, :, :16], regions[1, 12:] = 1.0, 1.0
    guided = program.compute_targets(
        prep.problem,
        prep.variables,
        jnp.asarray(prep.content),
        jnp.asarray(np.stack([style, style[::-1]])),
        style_masks=jnp.ones((2, 24, 32)),
        style_regions=jnp.asarray(regions),
    )
    per_style = guided[losses.target_key(emd)]
    assert len(per_style) == 2
    for target, region in zip(per_style, regions):
        assert len(target["styles"]) == 4
        for k, maps in enumerate(target["styles"]):
            np.testing.assert_array_equal(np.asarray(maps.region), np.rot90(region, k))
    # style 0's rows: its four images' candidates inside their turned region (the left half)
    allowed = np.concatenate(
        [np.asarray(hc.cell_weights(np.rot90(regions[0], k), spec.stride)) > 0 for k in range(4)]
    )
    cost = np.where(allowed[None, :], cosine_cost(queries - mean, candidates - mean), np.inf)
    rows = np.asarray(guided[losses.target_key(nearest)][0]["rows"])
    np.testing.assert_allclose(rows, candidates[np.argmin(cost, axis=1)], rtol=RTOL, atol=1e-6)
