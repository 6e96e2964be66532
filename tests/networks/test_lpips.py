"""LPIPS from the imported heads: zero on identical images, symmetric, and the formula
checked against a float64 numpy computation from the same activations."""

import numpy as np
import pytest

from jaxcombine.errors import JaxcombineError
from jaxcombine.io import images
from jaxcombine.networks import lpips as lpips_lib
from jaxcombine.networks import model
from jaxcombine.options.layers import LPIPS_NETS

SIDE = 64  # AlexNet's conv3 to conv5 need 31 px, VGG16's block5_conv3 16


@pytest.fixture(scope="module")
def pair():
    """Two real pictures of one shape: the astronaut and the painting, cropped alike."""
    a = images.read(images.CONTENT, size=SIDE)
    b = images.read(images.STYLE, size=SIDE)
    h, w = min(a.shape[0], b.shape[0]), min(a.shape[1], b.shape[1])
    return a[:h, :w], b[:h, :w]


def numpy_lpips(feats_x, feats_y, heads):
    """The LPIPS formula in float64: unit-normalise channels, square the difference, weight
    channels by the head, average positions, sum layers."""
    total = 0.0
    for tap, w in heads.items():
        a, b = (np.asarray(f[tap][0], np.float64) for f in (feats_x, feats_y))
        a = a / (np.sqrt((a * a).sum(-1, keepdims=True)) + 1e-10)
        b = b / (np.sqrt((b * b).sum(-1, keepdims=True)) + 1e-10)
        total += float((((a - b) ** 2) @ np.asarray(w, np.float64).reshape(-1)).mean())
    return total


@pytest.mark.parametrize("net", [pytest.param("vgg", marks=pytest.mark.slow), "alex"])
def test_lpips_is_the_formula_zero_on_identical_images_and_symmetric(
    tv_weights, pair, net, compiled
):
    import jax

    a, b = pair
    arch, taps = LPIPS_NETS[net]
    heads = {tap: tv_weights[f"lpips-{net}"].arrays[tap][0] for tap in taps}
    assert all((w >= 0).all() for w in heads.values())  # LPIPS' heads are non-negative
    variables = model.variables(model.trim(tv_weights[arch].arrays, taps, arch))
    forward = jax.jit(model.features, static_argnames=("taps", "arch"))
    fa, fb = (forward(variables, x[None], taps=taps, arch=arch) for x in (a, b))
    want = numpy_lpips(fa, fb, heads)

    d_ab = float(lpips_lib.lpips(a, b, net))
    # float32 activations normalised to unit length: each unit entry is off by a few ulp
    # (~1e-7) from the float64 value of the same activations; the distance sums such
    # differences, so it agrees to a few 1e-6 relative.
    assert want > 0.05
    assert abs(d_ab - want) <= 1e-5 * want
    assert float(lpips_lib.lpips(b, a, net)) == pytest.approx(d_ab, rel=1e-6)
    # Identical images: 0 up to rounding of the two normalisations, (a few ulp)^2 per
    # channel weighted by the heads: far below any real distance.
    bound = sum(float(w.sum()) for w in heads.values()) * (4 * np.finfo(np.float32).eps) ** 2
    assert 0 <= float(lpips_lib.lpips(a, a, net)) <= bound
    # A batch gives each pair's distance; a second call at that size compiles nothing.
    batch = lpips_lib.lpips(np.stack([a, b]), np.stack([b, a]), net)
    np.testing.assert_allclose(np.asarray(batch), [d_ab, d_ab], rtol=1e-5)
    assert compiled  # the listener hears compiles (the batch of two was a new shape)
    compiled.clear()
    lpips_lib.lpips(np.stack([b, b]), np.stack([a, b]), net)
    assert compiled == []


def test_lpips_grows_with_a_perturbation(tv_weights, pair):
    a, _ = pair
    noise = np.random.default_rng(0).normal(size=a.shape)
    d = [float(lpips_lib.lpips(a, np.clip(a + s * noise, 0, 255), "alex")) for s in (4, 32)]
    assert 0 < d[0] < d[1]


def test_bad_lpips_calls_fail_in_one_line(tv_weights, pair):
    a, b = pair
    with pytest.raises(JaxcombineError, match="unknown LPIPS net 'squeeze'; choose vgg, alex"):
        lpips_lib.lpips(a, b, "squeeze")
    with pytest.raises(JaxcombineError, match="two RGB images of one shape"):
        lpips_lib.lpips(a, b[:-1], "vgg")
    with pytest.raises(
        JaxcombineError, match="too small for layer conv3: each side must be at least 31 pixels"
    ):
        lpips_lib.lpips(a[:20, :20], b[:20, :20], "alex")
