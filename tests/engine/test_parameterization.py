"""The Laplacian pyramid: a direct numpy computation of the decomposition (float64), the
exact reconstruction, and the projection onto valid images."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from float32 import EPS32

from jaxcombine.engine.parameterization import (
    Parameterization,
    default_levels,
    level_shapes,
)


def resize_matrix(n_in: int, n_out: int) -> np.ndarray:
    """(n_out, n_in) float64 bilinear resampling, antialiased when shrinking (the triangle
    kernel widened by the shrink factor, weights normalised to sum 1), pixel centres at
    i + 0.5: the resampling jax.image.resize(..., "linear") documents."""
    if n_in == n_out:
        return np.eye(n_in)
    shrink = n_in / n_out
    width = max(shrink, 1.0)
    centres = (np.arange(n_out) + 0.5) * shrink - 0.5
    w = np.maximum(0.0, 1.0 - np.abs(centres[:, None] - np.arange(n_in)[None, :]) / width)
    return w / w.sum(1, keepdims=True)


def resize(x: np.ndarray, h: int, w: int) -> np.ndarray:
    """(..., H, W, C) → (..., h, w, C) in float64, one axis after the other."""
    rows, cols = resize_matrix(x.shape[-3], h), resize_matrix(x.shape[-2], w)
    return np.einsum("hH,...HWc,wW->...hwc", rows, x, cols)


def numpy_pyramid(x: np.ndarray, levels: int) -> list[np.ndarray]:
    """The decomposition, directly: coarsest first, each level the downsampled residual of
    the coarser ones; the finest, the residual left at full size."""
    height, width = x.shape[-3:-1]
    shapes = level_shapes(height, width, levels)
    residual, coarse = x.astype(np.float64), []
    for h, w in reversed(shapes[1:]):
        level = resize(residual, h, w)
        residual = residual - resize(level, height, width)
        coarse.insert(0, level)
    return [residual, *coarse]


def numpy_image(levels: list[np.ndarray]) -> np.ndarray:
    height, width = levels[0].shape[-3:-1]
    return levels[0] + sum(resize(c, height, width) for c in levels[1:])


@pytest.fixture(scope="module")
def photo():
    rng = np.random.default_rng(0)
    smooth = resize(rng.uniform(0, 255, (2, 6, 5, 3)), 21, 17)  # detail at every scale
    return np.clip(smooth + rng.normal(0, 20, smooth.shape), 0, 255).astype(np.float32)


def test_the_numpy_resampling_is_jax_s():
    """The reference's own check: its matrices resample as jax.image.resize does."""
    x = np.random.default_rng(1).uniform(0, 255, (1, 21, 17, 3)).astype(np.float32)
    for h, w in ((11, 9), (6, 5), (42, 34)):
        got = np.asarray(jax.image.resize(jnp.asarray(x), (1, h, w, 3), "linear"))
        # float32: each axis a weighted sum of its taps (≤ 2·shrink + 2 of them), each
        # product and sum rounding once, on values up to 255
        taps = sum(2 * max(n / m, 1) + 2 for n, m in ((21, h), (17, w)))
        bound = 2 * taps * EPS32 * 255
        np.testing.assert_allclose(got, resize(x.astype(np.float64), h, w), rtol=0, atol=bound)


def test_level_shapes_and_default_levels():
    assert level_shapes(37, 29, 4) == ((37, 29), (19, 15), (10, 8), (5, 4))
    assert default_levels(512, 512) == 6  # the coarsest 16 px
    assert default_levels(64, 96) == 3 and default_levels(31, 200) == 1
    assert Parameterization("pixels").levels_at(512, 512) == 1
    assert Parameterization("laplacian", 2).levels_at(512, 512) == 2


def test_pyramid_matches_numpy_and_reconstructs_exactly(photo):
    """Coefficients equal the direct float64 computation to float32 rounding; the image
    they stand for is the image: exactly in float64 (the construction), and in float32 to
    the rounding of its 2L−1 sums of terms no larger than the largest coefficient sum."""
    levels = 3
    pyramid = Parameterization("laplacian", levels)
    got = jax.jit(pyramid.decompose)(photo)
    want = numpy_pyramid(photo, levels)
    assert [g.shape[1:3] for g in got] == [(21, 17), (11, 9), (6, 5)]
    np.testing.assert_allclose(numpy_image(want), photo, rtol=0, atol=1e-9)
    scale = sum(np.abs(resize(c, 21, 17)).max() for c in want[1:]) + np.abs(want[0]).max()
    bound = (2 * levels + 2) * EPS32 * scale  # each sum and difference rounds once
    for g, w in zip(got, want):
        np.testing.assert_allclose(np.asarray(g), w, rtol=0, atol=bound)
    np.testing.assert_allclose(np.asarray(jax.jit(pyramid.image)(got)), photo, rtol=0, atol=bound)


def test_a_one_level_pyramid_is_the_pixels(photo):
    one = Parameterization("laplacian", 1)
    (level,) = one.decompose(photo)
    np.testing.assert_array_equal(np.asarray(level), photo)
    np.testing.assert_array_equal(np.asarray(one.image((level,))), photo)
    wild = photo * 2 - 100  # outside 0–255
    (projected,) = one.project((jnp.asarray(wild),))
    pixels = Parameterization("pixels").project(jnp.asarray(wild))
    np.testing.assert_array_equal(np.asarray(projected), np.asarray(pixels))


def test_projection_keeps_coarse_levels_and_a_valid_grey_image(photo):
    pyramid = Parameterization("laplacian", 3)
    params = tuple(a * 1.7 - 40 for a in jax.jit(pyramid.decompose)(photo))  # out of range
    projected = jax.jit(pyramid.project)(params)
    for a, b in zip(projected[1:], params[1:]):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    image = jax.jit(pyramid.image)
    img = np.asarray(image(projected))
    tol = 4 * EPS32 * 255 * 3
    assert img.min() >= -tol and img.max() <= 255 + tol
    np.testing.assert_allclose(img, np.clip(np.asarray(image(params)), 0, 255), atol=tol)
    grey = np.asarray(image(jax.jit(pyramid.project, static_argnames="grey")(params, grey=True)))
    np.testing.assert_allclose(grey, grey.mean(-1, keepdims=True).repeat(3, -1), atol=tol)
