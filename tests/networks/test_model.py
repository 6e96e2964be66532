"""The Flax VGG against an independent numpy reference, at every layer, on a real photo."""

import numpy as np
import pytest

from jaxcombine.errors import JaxcombineError
from jaxcombine.io import images
from jaxcombine.networks import model
from jaxcombine.options import layers as layers_lib

# float32 convolutions summed in different orders: agreement to 1e-4 of each
# layer's largest activation is what two correct implementations reach.
RTOL_OF_MAX = 1e-4


def _conv_relu(x, kernel, bias):
    """3×3 'same' convolution in plain numpy (NHWC × HWIO), then ReLU."""
    h, w = x.shape[1:3]
    xp = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
    out = np.zeros(x.shape[:3] + (kernel.shape[-1],), np.float64)
    for dy in range(3):
        for dx in range(3):
            out += np.einsum(
                "nhwc,co->nhwo", xp[:, dy : dy + h, dx : dx + w], kernel[dy, dx], optimize=True
            )
    return np.maximum(out + bias, 0.0)


def _pool(x, kind):
    n, h, w, c = x.shape
    x = x[:, : h // 2 * 2, : w // 2 * 2].reshape(n, h // 2, 2, w // 2, 2, c)
    return x.max(axis=(2, 4)) if kind == "max" else x.mean(axis=(2, 4))


def reference(weights, rgb, arch, pooling):
    """Every layer's activation, computed from the Keras description alone."""
    x = (rgb[..., ::-1] - np.array([103.939, 116.779, 123.68]))[None].astype(np.float64)
    out = {}
    for name in layers_lib.layer_names(arch):
        if name.endswith("_pool"):
            x = _pool(x, pooling)
        else:
            kernel, bias = weights[name]
            x = _conv_relu(x, kernel.astype(np.float64), bias.astype(np.float64))
        out[name] = x[0]
    return out


@pytest.fixture(scope="module")
def photo():
    return images.read(images.CONTENT, size=40)  # a real photo, 40×40


@pytest.fixture(scope="module")
def references(vgg19, photo):
    """``pooling`` → the numpy reference, each computed once (both convs share max pooling's)."""
    cache = {}

    def get(pooling):
        if pooling not in cache:
            cache[pooling] = reference(vgg19.arrays, photo, "vgg19", pooling)
        return cache[pooling]

    return get


# Winograd through all of VGG19 compiles about four times longer than XLA's convolutions
# (10 s of the quick tier's CPU): the slow tier runs it. The quick tier checks each Winograd
# convolution against the direct one (test_winograd) and runs AlexNet's network by Winograd
# against its numpy reference (test_backbones).
@pytest.mark.parametrize(
    "pooling, conv",
    [("max", "xla"), ("avg", "xla"), pytest.param("max", "winograd", marks=pytest.mark.slow)],
)
def test_every_layer_matches_the_numpy_reference(vgg19, photo, references, pooling, conv):
    import jax

    taps = layers_lib.layer_names("vgg19")
    ref = references(pooling)
    got = jax.jit(model.features, static_argnames=("taps", "arch", "pooling", "conv"))(
        model.variables(vgg19.arrays, conv), photo[None], taps=taps, pooling=pooling, conv=conv
    )
    assert set(got) == set(taps)
    for name in taps:
        g, r = np.asarray(got[name][0]), ref[name]
        assert g.shape == r.shape, name
        assert np.abs(g - r).max() <= RTOL_OF_MAX * np.abs(r).max() + 1e-5, name
        assert np.abs(r).max() > 0, name  # a dead layer would make the check vacuous


def test_forward_stops_at_the_deepest_tap(vgg19, photo):
    import jax

    net = model.VGG(taps=("block2_conv1",))
    variables = model.variables(model.trim(vgg19.arrays, ["block2_conv1"]))
    assert set(variables["params"]) == {"block1", "block2"}
    assert set(variables["params"]["block2"]) == {"block2_conv1"}
    out = net.apply(variables, jax.numpy.asarray(photo)[None])
    assert list(out) == ["block2_conv1"] and out["block2_conv1"].shape == (1, 20, 20, 128)


def test_vgg16_layers_and_shapes():
    names = layers_lib.layer_names("vgg16")
    assert len(layers_lib.conv_layer_names("vgg16")) == 13 and names[-1] == "block5_pool"
    assert layers_lib.conv_shapes("vgg16")["block3_conv3"] == (3, 3, 256, 256)
    assert "block3_conv4" not in names


def test_unknown_layer_lists_valid_ones():
    with pytest.raises(
        JaxcombineError, match="unknown layer 'block6_conv1'.*valid layers: block1_conv1"
    ):
        layers_lib.check_layers(["block6_conv1"])
    with pytest.raises(JaxcombineError, match="block3_conv4"):
        layers_lib.check_layers(["block3_conv4"], "vgg16")


def test_minimum_size_is_explained():
    assert layers_lib.min_side(["block5_pool"]) == 32 and layers_lib.min_side(["block1_conv1"]) == 1
    with pytest.raises(JaxcombineError, match="at least 16 pixels"):
        layers_lib.check_size(15, 100, ["block5_conv1"])


def test_keras_input_convention_is_bgr_minus_the_mean_pixel(photo):
    convention = layers_lib.backbone("vgg19").input
    bgr = np.asarray(model.to_input(photo, convention))
    np.testing.assert_allclose(bgr[..., 0], photo[..., 2] - 103.939, atol=1e-4)
    np.testing.assert_allclose(bgr[..., 2], photo[..., 0] - 123.68, atol=1e-4)
