"""Colour preservation (issue 13): each mode does what it says, from the API, a recipe and a batch."""

import json
import textwrap

import numpy as np
import pytest
import recipe_files
from PIL import Image

from jaxcombine.batch import runner as batch
from jaxcombine.errors import JaxcombineError
from jaxcombine.io import color, images
from jaxcombine.options import config, rules
from jaxcombine.options import config as config_lib
from jaxcombine.run import job
from jaxcombine.run import prepare as prepare_lib

SHALLOW_PATH = recipe_files.SHALLOW
TINY = dict(size=32, steps=4, chunk=2, conv="xla")  # Winograd compiles 2-3x slower


@pytest.fixture(scope="module")
def shallow():
    return str(SHALLOW_PATH)


def _chroma(rgb):
    return color.rgb_to_ycbcr(np.asarray(rgb, np.float64))[..., 1:]


def _ks(a, b):
    """Largest gap between the empirical CDFs of two samples (Kolmogorov–Smirnov)."""
    a, b = np.sort(np.ravel(a)), np.sort(np.ravel(b))
    grid = np.concatenate([a, b])
    return np.abs(
        np.searchsorted(a, grid, "right") / a.size - np.searchsorted(b, grid, "right") / b.size
    ).max()


def _pair(seed=0):
    """A colourful 'content' and a differently coloured, differently sized 'style'."""
    rng = np.random.default_rng(seed)
    content = rng.uniform(0, 255, (16, 20, 3)) * [1.0, 0.7, 0.4] + [0, 40, 100]
    style = rng.beta(2, 5, (24, 18, 3)) * 255 @ np.array([[1, 0.5, 0], [0, 1, 0.3], [0.2, 0, 0.6]])
    return content.astype(np.float32), style.astype(np.float32)


# --------------------------------------------------------------------------- the maths


def test_stats_gives_the_style_the_contents_colour_mean_and_covariance():
    content, style = _pair()
    mu_c, cov_c = color.mean_cov(content)
    mu_s, cov_s = color.mean_cov(style)
    assert np.abs(cov_s - cov_c).max() > 100  # far apart before
    mu, cov = color.mean_cov(color.match_stats(style, content))
    np.testing.assert_allclose(mu, mu_c, atol=1e-3)
    np.testing.assert_allclose(cov, cov_c, rtol=1e-5, atol=1e-3)
    # a grey style (singular covariance) gives finite colours, not NaN
    assert np.isfinite(color.match_stats(np.repeat(style[..., :1], 3, -1), content)).all()


def test_histogram_gives_each_style_channel_the_contents_distribution():
    content, style = _pair()
    matched = color.match_histograms(style, content)
    for c in range(3):
        assert _ks(style[..., c], content[..., c]) > 0.2  # far apart before
        assert _ks(matched[..., c], content[..., c]) < 0.01
    assert np.array_equal(
        np.argsort(matched[..., 0], None, "stable"), np.argsort(style[..., 0], None, "stable")
    )  # monotone: order kept
    same_size = color.match_histograms(style[:16, :18], content[:16, :18])
    np.testing.assert_allclose(
        np.sort(same_size.reshape(-1, 3), 0),
        np.sort(content[:16, :18].reshape(-1, 3), 0),
        atol=1e-3,
    )


def test_recombine_keeps_the_contents_chroma_and_the_results_luminance():
    content, _ = _pair()
    result = np.random.default_rng(1).uniform(60, 190, (2, 16, 20, 3)).astype(np.float32)
    out = color.recombine(result, content)
    inside = ((out > 0) & (out < 255)).all(-1)  # where the clip to 0-255 did nothing
    assert inside.mean() > 0.5
    want = np.broadcast_to(_chroma(content), out.shape[:-1] + (2,))
    np.testing.assert_allclose(_chroma(out)[inside], want[inside], atol=1e-3)
    np.testing.assert_allclose(
        color.luminance(out)[inside], color.luminance(result)[inside], atol=1e-3
    )


# --------------------------------------------------------------------------- in a run


def test_luminance_run_keeps_the_contents_chroma_in_every_written_image(vgg19, shallow, tmp_path):
    """Two vmapped starts; final images, snapshots and Result.images all carry the content's
    chroma (within uint8 rounding, 0.5, where no channel is clipped) and a new luminance."""
    result = job.combine(
        recipe=shallow,
        preserve_color="luminance",
        init="content,noise",
        snapshot_every=2,
        out=tmp_path,
        **TINY,
    )
    content = images.read(images.CONTENT, size=TINY["size"])
    assert result.labels == ("content", "noise-s0") and np.isfinite(result.outcome.totals).all()
    written = [np.asarray(Image.open(tmp_path / f"{lab}.png")) for lab in result.labels]
    written += [np.asarray(Image.open(p)) for p in sorted((tmp_path / "snapshots").glob("*.png"))]
    assert len(written) == 2 + 4
    for lab in result.labels:
        np.testing.assert_array_equal(result.images[lab], written[result.labels.index(lab)])
    for img in written:
        inside = ((img > 0) & (img < 255)).all(-1)
        err = np.abs(_chroma(img) - _chroma(content))
        assert inside.mean() > 0.7 and err[inside].max() < 0.51, err[inside].max()
    noise_y = color.luminance(result.images["noise-s0"].astype(np.float32))
    assert np.abs(noise_y - color.luminance(content)).mean() > 5  # the luminance did change
    # luminance only was optimised: the pixels of both starts stayed grey
    assert np.abs(np.diff(result.outcome.pixels, axis=-1)).max() < 1e-3
    record = json.loads((tmp_path / "run.json").read_text())
    assert record["config"]["preserve_color"] == "luminance"


@pytest.mark.parametrize("mode", ["stats", "histogram"])
def test_style_recolouring_reaches_the_targets(vgg19, shallow, mode):
    none = prepare_lib.prepare(config_lib.RunConfig(recipe=shallow, **TINY))
    prep = prepare_lib.prepare(config_lib.RunConfig(recipe=shallow, preserve_color=mode, **TINY))
    style, content = prep.styles[0], prep.content
    if mode == "stats":
        for got, want in zip(color.mean_cov(style), color.mean_cov(content)):
            np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-2)
    else:
        assert all(_ks(style[..., c], content[..., c]) < 0.01 for c in range(3))
    key = "style:gram:block1_conv1"
    assert not np.allclose(prep.targets[key], none.targets[key], rtol=0.05)
    np.testing.assert_array_equal(prep.finish(prep.x0), prep.x0)  # outputs as optimised


def _numpy_colour_transfer(x, reference):
    """``x`` with ``reference``'s colour mean and covariance, computed here directly:
    ``C_r^1/2 C_x^-1/2 (x - m_x) + m_r`` with symmetric square roots from ``eigh``."""
    x64, r64 = (np.asarray(a, np.float64).reshape(-1, 3) for a in (x, reference))

    def sqrt(cov, power):
        w, v = np.linalg.eigh(cov)
        return (v * w**power) @ v.T

    cx, cr = np.cov(x64, rowvar=False, bias=True), np.cov(r64, rowvar=False, bias=True)
    a = sqrt(cr, 0.5) @ sqrt(cx, -0.5)
    return ((x64 - x64.mean(0)) @ a.T + r64.mean(0)).reshape(np.shape(x))


def test_a_recoloured_start_is_the_content_in_the_styles_colours(vgg19, shallow):
    """``init = "content-recoloured"``: the content with the style's colour mean and
    covariance (the style as the run sees it, at the output's size), clipped to 0-255."""
    prep = prepare_lib.prepare(
        config_lib.RunConfig(recipe=shallow, init="content,content-recoloured", **TINY)
    )
    assert prep.labels == ("content", "content-recoloured")
    content, start, style = prep.content, prep.x0[1], prep.styles[0]
    np.testing.assert_array_equal(prep.x0[0], content)
    want = np.clip(_numpy_colour_transfer(content, style), 0, 255)
    np.testing.assert_allclose(start, want, atol=1e-2)
    # the bundled pair's colours differ: the start moved to the style's mean, off the content's
    (mu_content, _), (mu_style, _), (mu_start, _) = map(color.mean_cov, (content, style, start))
    assert np.abs(mu_content - mu_style).max() > 20
    np.testing.assert_allclose(mu_start, mu_style, atol=3)


def test_a_recoloured_start_refuses_preserve_color_in_one_line(shallow):
    with pytest.raises(JaxcombineError, match="init content-recoloured takes the style") as err:
        job.combine(recipe=shallow, init="content-recoloured", preserve_color="stats", **TINY)
    assert "\n" not in str(err.value)


def test_a_recipe_sets_preserve_color_and_the_option_overrides_it(vgg19, tmp_path):
    path = recipe_files.write(tmp_path / "r.toml", recipe_files.shallow(preserve_color="luminance"))
    assert (
        prepare_lib.prepare(config_lib.RunConfig(recipe=str(path), **TINY)).preserve_color
        == "luminance"
    )
    overridden = prepare_lib.prepare(
        config_lib.RunConfig(recipe=str(path), preserve_color="none", **TINY)
    )
    assert (
        overridden.preserve_color == "none"
        and overridden.recipe.to_dict()["preserve_color"] == "none"
    )
    recipe_files.write(path, recipe_files.shallow(preserve_color="purple"))
    with pytest.raises(
        JaxcombineError,
        match="recipe r: unknown preserve_color 'purple'; choose none, luminance, stats, histogram",
    ):
        prepare_lib.prepare(config_lib.RunConfig(recipe=str(path), **TINY))
    with pytest.raises(rules.ConfigError, match="NAME one of lr, tv_weight"):
        config.parse_sweep("preserve_color=none,luminance")  # not a traced number


def test_a_batch_grid_over_preserve_color(vgg19, shallow, tmp_path):
    """Recoloured styles share the plain program (only the targets differ); luminance,
    which optimises grey images, has its own and keeps the content's chroma."""
    (tmp_path / "m.toml").write_text(
        textwrap.dedent(f"""
        [defaults]
        recipe = "{shallow}"
        size = 32
        steps = 2
        init = "noise"
        conv = "xla"
        [grid]
        preserve_color = ["none", "luminance", "stats"]
    """)
    )
    report = batch.run_batch(tmp_path / "m.toml", tmp_path / "out", progress=False)
    assert len(report.done) == 3 and not report.failed
    content = images.read(images.CONTENT, size=32)
    errors, groups = {}, {}
    for rec in (tmp_path / "out").glob("*.json"):
        meta = json.loads(rec.read_text())
        if "id" not in meta:  # batch-report.json
            continue
        mode = meta["config"]["preserve_color"]
        groups[mode] = meta["group_size"]
        img = np.asarray(Image.open(tmp_path / "out" / meta["image"]))
        errors[mode] = np.abs(_chroma(img) - _chroma(content)).mean()
    assert groups == {"none": 2, "stats": 2, "luminance": 1}
    assert errors["luminance"] < 1.0 and errors["none"] > 10 and errors["stats"] > 10, errors
