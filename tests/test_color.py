"""Colour preservation (issue 13): the colour maths."""

import numpy as np

from jaxcombine import color

def _chroma(rgb):
    return color.rgb_to_ycbcr(np.asarray(rgb, np.float64))[..., 1:]


def _ks(a, b):
    """Largest gap between the empirical CDFs of two samples (Kolmogorov–Smirnov)."""
    a, b = np.sort(np.ravel(a)), np.sort(np.ravel(b))
    grid = np.concatenate([a, b])
    return np.abs(np.searchsorted(a, grid, "right") / a.size
                  - np.searchsorted(b, grid, "right") / b.size).max()


def _pair(seed=0):
    """A colourful 'content' and a differently coloured, differently sized 'style'."""
    rng = np.random.default_rng(seed)
    content = rng.uniform(0, 255, (16, 20, 3)) * [1.0, 0.7, 0.4] + [0, 40, 100]
    style = rng.beta(2, 5, (24, 18, 3)) * 255 @ np.array([[1, .5, 0], [0, 1, .3], [.2, 0, .6]])
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
    assert np.array_equal(np.argsort(matched[..., 0], None, "stable"),
                          np.argsort(style[..., 0], None, "stable"))  # monotone: order kept
    same_size = color.match_histograms(style[:16, :18], content[:16, :18])
    np.testing.assert_allclose(np.sort(same_size.reshape(-1, 3), 0),
                               np.sort(content[:16, :18].reshape(-1, 3), 0), atol=1e-3)


def test_recombine_keeps_the_contents_chroma_and_the_results_luminance():
    content, _ = _pair()
    result = np.random.default_rng(1).uniform(60, 190, (2, 16, 20, 3)).astype(np.float32)
    out = color.recombine(result, content)
    inside = ((out > 0) & (out < 255)).all(-1)  # where the clip to 0-255 did nothing
    assert inside.mean() > 0.5
    want = np.broadcast_to(_chroma(content), out.shape[:-1] + (2,))
    np.testing.assert_allclose(_chroma(out)[inside], want[inside], atol=1e-3)
    np.testing.assert_allclose(color.luminance(out)[inside], color.luminance(result)[inside],
                               atol=1e-3)
