"""torchvision's VGG16 and AlexNet as backbones: their geometry, their activations against
an independent float64 numpy reference on a real photo, and runs that use them."""

import json
import subprocess
import sys

import numpy as np
import pytest
import recipe_files
from recipe_files import term

from jaxcombine.errors import JaxcombineError
from jaxcombine.io import images
from jaxcombine.networks import model
from jaxcombine.options import layers

# float32 convolutions summed in different orders (and 11×11×3 or 5×5×64 terms per output
# for AlexNet's first convolutions): agreement to 1e-4 of each layer's largest activation
# is what two correct implementations reach, as for VGG19 (tests/test_model.py).
RTOL_OF_MAX = 1e-4

# torchvision's normalisation, written out here rather than taken from the package.
IMAGENET_MEAN = np.array([0.485, 0.456, 0.406])
IMAGENET_STD = np.array([0.229, 0.224, 0.225])

# The two networks as torchvision builds them (torchvision/models/{vgg,alexnet}.py):
# ("conv", name, kernel, stride, padding) then ReLU, or ("pool", name, window, stride).
TORCHVISION_VGG16 = [
    *(
        entry
        for b, n in enumerate((2, 2, 3, 3, 3), start=1)
        for entry in (
            *(("conv", f"block{b}_conv{i}", 3, 1, 1) for i in range(1, n + 1)),
            ("pool", f"block{b}_pool", 2, 2),
        )
    )
]
TORCHVISION_ALEXNET = [
    ("conv", "conv1", 11, 4, 2),
    ("pool", "pool1", 3, 2),
    ("conv", "conv2", 5, 1, 2),
    ("pool", "pool2", 3, 2),
    ("conv", "conv3", 3, 1, 1),
    ("conv", "conv4", 3, 1, 1),
    ("conv", "conv5", 3, 1, 1),
    ("pool", "pool5", 3, 2),
]


def _conv_relu(x, kernel, bias, stride, padding, mode="constant"):
    """Strided convolution in plain numpy (NHWC × HWIO), the input padded by ``np.pad``'s
    ``mode`` (zeros, or ``reflect``: mirrored, the edge pixel not repeated), then ReLU."""
    k = kernel.shape[0]
    xp = np.pad(x, ((0, 0), (padding, padding), (padding, padding), (0, 0)), mode=mode)
    h = (xp.shape[1] - k) // stride + 1
    w = (xp.shape[2] - k) // stride + 1
    out = np.zeros((x.shape[0], h, w, kernel.shape[-1]), np.float64)
    for dy in range(k):
        for dx in range(k):
            patch = xp[
                :, dy : dy + stride * (h - 1) + 1 : stride, dx : dx + stride * (w - 1) + 1 : stride
            ]
            out += np.einsum("nhwc,co->nhwo", patch, kernel[dy, dx], optimize=True)
    return np.maximum(out + bias, 0.0)


def _pool(x, window, stride, kind):
    """Unpadded pooling, ragged edges dropped (torch's floor mode)."""
    h = (x.shape[1] - window) // stride + 1
    w = (x.shape[2] - window) // stride + 1
    views = [
        x[:, dy : dy + stride * (h - 1) + 1 : stride, dx : dx + stride * (w - 1) + 1 : stride]
        for dy in range(window)
        for dx in range(window)
    ]
    return np.max(views, axis=0) if kind == "max" else np.mean(views, axis=0)


def reference(weights, rgb, table, pooling, mode="constant"):
    """Every layer's activation, from torchvision's description alone: RGB 0–1 normalised
    by the ImageNet mean and std, then the table (each convolution's input padded by
    ``np.pad``'s ``mode``)."""
    x = ((rgb / 255.0 - IMAGENET_MEAN) / IMAGENET_STD)[None].astype(np.float64)
    out = {}
    for kind, name, *geometry in table:
        if kind == "pool":
            x = _pool(x, *geometry, pooling)
        else:
            kernel, bias = weights[name]
            x = _conv_relu(
                x, kernel.astype(np.float64), bias.astype(np.float64), *geometry[1:], mode
            )
        out[name] = x[0]
    return out


@pytest.fixture(scope="module")
def photos():
    """The bundled astronaut, downscaled: 40 px for VGG16, 67 px for AlexNet (the smallest
    its pool5 takes is 63; an odd side exercises the floor rules)."""
    return {side: images.read(images.CONTENT, size=side) for side in (40, 67)}


# Reflect padding on both algorithms: XLA's 'VALID' convolution of the mirrored input,
# and Winograd's 'SAME' one with its rim cut off (AlexNet's conv3..5 are Winograd's).
CASES = [
    ("vgg16-tv", TORCHVISION_VGG16, 40, "max", "xla", "zeros"),
    ("alexnet", TORCHVISION_ALEXNET, 67, "max", "xla", "zeros"),
    ("alexnet", TORCHVISION_ALEXNET, 67, "avg", "xla", "zeros"),
    ("alexnet", TORCHVISION_ALEXNET, 67, "max", "winograd", "zeros"),
    ("vgg16-tv", TORCHVISION_VGG16, 40, "max", "xla", "reflect"),
    ("alexnet", TORCHVISION_ALEXNET, 67, "max", "winograd", "reflect"),
    ("vgg16-tv", TORCHVISION_VGG16, 40, "max", "xla", "circular"),
]


@pytest.mark.parametrize("arch, table, side, pooling, conv, padding", CASES)
def test_every_layer_matches_the_numpy_reference(
    tv_weights, photos, arch, table, side, pooling, conv, padding
):
    import jax

    assert [name for _, name, *_ in table] == list(layers.layer_names(arch))
    photo = photos[side]
    ref = reference(tv_weights[arch].arrays, photo, table, pooling, layers.PAD_MODES[padding])
    taps = layers.layer_names(arch)
    got = jax.jit(model.features, static_argnames=("taps", "arch", "pooling", "conv", "padding"))(
        model.variables(tv_weights[arch].arrays, conv),
        photo[None],
        taps=taps,
        arch=arch,
        pooling=pooling,
        conv=conv,
        padding=padding,
    )
    assert set(got) == set(taps)
    for name in taps:
        g, r = np.asarray(got[name][0]), ref[name]
        assert g.shape == r.shape, name
        assert np.abs(g - r).max() <= RTOL_OF_MAX * np.abs(r).max() + 1e-5, name
        assert np.abs(r).max() > 0, name  # a dead layer would make the check vacuous


# Each padding's every layer against numpy runs in the quick tier (CASES); this property,
# and Winograd's gradient under circular padding, in the slow one.
@pytest.mark.slow
def test_padding_decides_what_features_know_of_where_they_sit(tv_weights):
    """Why the paddings exist: features that know where they sit let a style's arrangement
    travel with its statistics. On a uniform grey image every position sees the same thing
    under reflect and circular padding, so each feature map is constant, while under zeros
    the edge shows through. Under circular padding the network commutes with cyclic
    shifts (by multiples of its stride): a shifted photo's features are the photo's,
    shifted. And Winograd's gradient under circular padding equals XLA's."""
    import jax
    import jax.numpy as jnp

    taps = ("block1_conv2", "block3_conv3", "block4_conv3")
    strides = (1, 4, 8)
    variables = model.variables(model.trim(tv_weights["vgg16-tv"].arrays, taps, "vgg16-tv"))
    photo = jnp.asarray(images.read(images.CONTENT, size=32))
    shift = (8, 16)
    # one batch, one program per padding: a uniform grey, the photo, the photo shifted
    batch = jnp.stack([jnp.full_like(photo, 118.0), photo, jnp.roll(photo, shift, (0, 1))])
    spread, unshifted = {}, {}
    for padding in layers.PADDINGS:
        net = model.Network(arch="vgg16-tv", taps=taps, padding=padding)
        feats = jax.jit(net.apply)(variables, batch)
        spread[padding] = max(
            float(jnp.ptp(f[0], axis=(0, 1)).max() / jnp.abs(f[0]).max()) for f in feats.values()
        )
        unshifted[padding] = max(
            float(
                jnp.abs(
                    jnp.roll(feats[t][1], (shift[0] // d, shift[1] // d), (0, 1)) - feats[t][2]
                ).max()
            )
            / float(jnp.abs(feats[t][1]).max())
            for t, d in zip(taps, strides)
        )
    assert spread["zeros"] > 0.1 and unshifted["zeros"] > 0.1, (spread, unshifted)
    assert spread["reflect"] < 1e-5 and spread["circular"] < 1e-5, spread
    assert unshifted["circular"] < 1e-5 and unshifted["reflect"] > 0.1, unshifted

    # Winograd pads and crops alike for both paddings (model._Conv): one suffices here
    small = jnp.asarray(images.read(images.CONTENT, size=67))[None]
    alexnet = tv_weights["alexnet"].arrays

    def grad(conv):
        net = model.Network(arch="alexnet", taps=("conv5",), conv=conv, padding="circular")
        v = model.variables(alexnet, conv)
        return jax.jit(jax.grad(lambda x: jnp.mean(net.apply(v, x)["conv5"] ** 2)))(small)

    xla, wino = np.asarray(grad("xla")), np.asarray(grad("winograd"))
    assert np.abs(xla).max() > 0
    assert np.abs(wino - xla).max() <= 1e-4 * np.abs(xla).max()


def test_alexnet_geometry_is_torchvisions():
    shapes = layers.layer_shapes(["pool5"], 224, 224, "alexnet")
    assert shapes == {
        "conv1": (55, 55, 64),
        "pool1": (27, 27, 64),
        "conv2": (27, 27, 192),
        "pool2": (13, 13, 192),
        "conv3": (13, 13, 384),
        "conv4": (13, 13, 256),
        "conv5": (13, 13, 256),
        "pool5": (6, 6, 256),
    }
    assert layers.downsampling(["pool5"], "alexnet")["pool5"] == 32
    assert (
        layers.min_side(["pool5"], "alexnet") == 63 and layers.min_side(["conv1"], "alexnet") == 7
    )
    with pytest.raises(JaxcombineError, match="too small for layer pool5: .* at least 63 pixels"):
        layers.check_size(62, 100, ["conv1", "pool5"], "alexnet")
    # the VGG tables keep the Keras geometry
    assert layers.min_side(["block5_pool"], "vgg16-tv") == 32
    assert layers.conv_shapes("vgg16-tv") == layers.conv_shapes("vgg16")


def test_layer_names_are_each_backbones_own():
    with pytest.raises(
        JaxcombineError,
        match="unknown layer 'block1_conv1' for alexnet; valid layers: conv1, pool1",
    ):
        layers.check_layers(["block1_conv1"], "alexnet")
    with pytest.raises(
        JaxcombineError,
        match="unknown model 'resnet'; choose one of vgg19, vgg16, vgg16-tv, alexnet",
    ):
        layers.check_layers(["conv1"], "resnet")
    from jaxcombine.options import recipe

    with pytest.raises(JaxcombineError, match="unknown layer 'block4_conv2' for alexnet"):
        recipe.load("gatys", "alexnet")
    assert recipe.load("gatys", "vgg16-tv").layers  # Keras VGG16 names fit torchvision's VGG16


def test_tiles_and_masks_are_refused_on_alexnet_in_one_line():
    from jaxcombine.engine import tiles

    with pytest.raises(
        JaxcombineError, match="tiles needs a network of 3x3 convolutions and 2x2 pools; alexnet"
    ):
        tiles.plan(256, 256, 64, ["conv1"], "alexnet")
    assert tiles.plan(256, 256, 64, ["block2_conv1"], "vgg16-tv")  # same geometry as Keras'
    from jaxcombine.options.config import RunConfig

    with pytest.raises(JaxcombineError, match="masks need a VGG backbone, not alexnet"):
        RunConfig(model="alexnet", style_masks=("mask.png",))


def test_memory_estimates_cover_alexnet():
    from jaxcombine.run import memory

    small, big = (
        memory.estimate_bytes(["conv1", "conv5"], s, s, 1, arch="alexnet", conv="winograd")
        for s in (128, 512)
    )
    assert 0 < small < big
    assert memory.weight_bytes(["conv5"], arch="alexnet") == 4 * sum(
        np.prod(s) + s[-1] for s in layers.conv_shapes("alexnet").values()
    )


# Keras VGG16 names are vgg16-tv's too (shallow.toml); AlexNet's are its own.
SHALLOW_ALEXNET = recipe_files.shallow(
    terms=[term("content", "conv2"), term("style", ["conv1", "conv2"], "gram")]
)


# Slow tier: a run differs between backbones only in the network it reads, whose every
# layer the quick tier checks against its numpy reference (above); the quick tier's runs
# are on VGG19.
@pytest.mark.slow
@pytest.mark.parametrize("arch", ["vgg16-tv", "alexnet"])
def test_a_run_on_each_backbone_lowers_its_loss(tv_weights, tmp_path, recipe_file, arch):
    """Through the CLI, a recipe in the backbone's own layer names; the record names it."""
    recipe = recipe_file(SHALLOW_ALEXNET) if arch == "alexnet" else recipe_files.SHALLOW
    out = tmp_path / "out"
    command = [sys.executable, "-m", "jaxcombine", "run", "--recipe", str(recipe)]
    command += ["--model", arch, "--size", "48", "--steps", "6", "--out", str(out)]
    proc = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    record = json.loads((out / "content.json").read_text())
    assert record["config"]["model"] == arch
    assert record["weights"]["fingerprint"] == tv_weights[arch].fingerprint
    total = np.genfromtxt(out / "content.history.csv", delimiter=",", names=True)["total"]
    assert len(total) == 6 and total[-1] < 0.8 * total[0]
