"""The backbones as data: layer tables, input conventions, geometry and sizes.

A backbone is its layer table (convolutions and poolings in forward order, each with its
kernel, stride and padding), its input convention (colour order, scaling, mean and std)
and the name of its weights. Pure Python (no JAX), so the configuration and recipes
validate layer names and image sizes without loading a framework;
:mod:`jaxcombine.networks.model` builds one forward from these tables and
:mod:`jaxcombine.run.memory` sizes their activations.

The backbones:

* ``vgg19``, ``vgg16``: the Keras applications VGGs (Simonyan & Zisserman), BGR 0–255
  minus the ImageNet mean pixel; Keras' layer names (``block1_conv1`` … ``block5_pool``).
* ``vgg16-tv``: torchvision's ImageNet VGG16: the same layers as Keras' VGG16 (and so the
  same names: ``block<b>_conv<i>`` is torchvision's ``features`` conv in that place), but
  RGB in 0–1 normalised by the ImageNet mean and std.
* ``alexnet``: torchvision's AlexNet (``conv1`` … ``conv5``; 3×3 stride-2 max pools
  ``pool1``, ``pool2``, ``pool5``), RGB 0–1 normalised as ``vgg16-tv``.

Every conv tap is post-ReLU.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Sequence

from jaxcombine.errors import JaxcombineError

POOLINGS = ("max", "avg")
# What a convolution reads beyond the image's edge: zeros (as the networks were trained),
# the image mirrored at its edge (reflect), or the image's opposite edge (circular: the
# image is a torus, every layer commutes with shifting it, and none can tell where a
# position is).
PADDINGS = ("zeros", "reflect", "circular")
# np.pad / jnp.pad's mode for each padding.
PAD_MODES = {"zeros": "constant", "reflect": "reflect", "circular": "wrap"}
CONVS = ("xla", "winograd")


@dataclasses.dataclass(frozen=True)
class Conv:
    """A convolution (then ReLU): ``size``×``size`` kernel, ``stride``, symmetric zero
    ``padding``, ``features`` output channels. ``winograd``: run by Winograd's algorithm
    under ``conv="winograd"`` (only 3×3, stride 1, padding 1 can be)."""

    name: str
    features: int
    size: int = 3
    stride: int = 1
    padding: int = 1
    winograd: bool = False

    @property
    def same3x3(self) -> bool:
        """3×3, stride 1, 'SAME': the convolutions the Winograd module (and its adjoint) runs."""
        return (self.size, self.stride, self.padding) == (3, 1, 1)


@dataclasses.dataclass(frozen=True)
class Pool:
    """A ``size``×``size`` pooling of stride ``stride``, no padding, ragged edges dropped."""

    name: str
    size: int = 2
    stride: int = 2


@dataclasses.dataclass(frozen=True)
class InputConvention:
    """How RGB 0–255 pixels become the network's input: channels reordered (``"rgb"`` or
    ``"bgr"``), multiplied by ``scale``, minus ``mean``, divided by ``std`` (both in the
    network's channel order)."""

    channels: str
    scale: float
    mean: tuple[float, float, float]
    std: tuple[float, float, float] = (1.0, 1.0, 1.0)


@dataclasses.dataclass(frozen=True)
class Backbone:
    """One network: ``layers`` in forward order, its ``input`` convention and a one-line
    ``source`` (where its weights come from)."""

    name: str
    layers: tuple[Conv | Pool, ...]
    input: InputConvention
    source: str

    @property
    def uniform(self) -> bool:
        """Every conv 3×3 'SAME' and every pool 2×2 stride 2: each layer's grid is the
        image's halved once per pool before it, which tiles and masks rely on."""
        return all(
            layer.same3x3 if isinstance(layer, Conv) else (layer.size, layer.stride) == (2, 2)
            for layer in self.layers
        )


# ImageNet statistics: Caffe's mean pixel (BGR, 0–255) for the Keras VGGs,
# torchvision's per-channel mean and std (RGB, 0–1) for its networks.
KERAS_INPUT = InputConvention("bgr", 1.0, (103.939, 116.779, 123.68))
TORCHVISION_INPUT = InputConvention(
    "rgb", 1.0 / 255.0, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
)
_VGG_WIDTHS = (64, 128, 256, 512, 512)


def _vgg(convs_per_block: Sequence[int]) -> tuple[Conv | Pool, ...]:
    """The VGG table: blocks of 3×3 convs, each block closed by a 2×2 pool; Winograd
    from block 2 on (block 1's 64-channel convs at full size were measured faster direct)."""
    layers: list[Conv | Pool] = []
    for block, (n, width) in enumerate(zip(convs_per_block, _VGG_WIDTHS), start=1):
        layers += [
            Conv(f"block{block}_conv{i}", width, winograd=block >= 2) for i in range(1, n + 1)
        ]
        layers.append(Pool(f"block{block}_pool"))
    return tuple(layers)


BACKBONES: dict[str, Backbone] = {
    b.name: b
    for b in (
        Backbone("vgg19", _vgg((2, 2, 4, 4, 4)), KERAS_INPUT, "Keras applications VGG19"),
        Backbone("vgg16", _vgg((2, 2, 3, 3, 3)), KERAS_INPUT, "Keras applications VGG16"),
        Backbone("vgg16-tv", _vgg((2, 2, 3, 3, 3)), TORCHVISION_INPUT, "torchvision VGG16"),
        Backbone(
            "alexnet",
            (
                Conv("conv1", 64, size=11, stride=4, padding=2),
                Pool("pool1", 3, 2),
                Conv("conv2", 192, size=5, padding=2),
                Pool("pool2", 3, 2),
                Conv("conv3", 384, winograd=True),
                Conv("conv4", 256, winograd=True),
                Conv("conv5", 256, winograd=True),
                Pool("pool5", 3, 2),
            ),
            TORCHVISION_INPUT,
            "torchvision AlexNet",
        ),
    )
}
ARCHITECTURES = tuple(BACKBONES)
# Every backbone's conv layer names (a name the VGGs share is the same layer in each).
CONV_NAMES = frozenset(
    layer.name for bb in BACKBONES.values() for layer in bb.layers if isinstance(layer, Conv)
)


def backbone(arch: str = "vgg19") -> Backbone:
    """The table of ``arch``; a one-line error naming the choices for an unknown one."""
    try:
        return BACKBONES[arch]
    except (KeyError, TypeError):
        raise JaxcombineError(
            f"unknown model {arch!r}; choose one of {', '.join(ARCHITECTURES)}"
        ) from None


def layer_names(arch: str = "vgg19") -> tuple[str, ...]:
    """All tap names of ``arch`` in forward order, e.g. ``block1_conv1 … block5_pool``."""
    return tuple(layer.name for layer in backbone(arch).layers)


def conv_layer_names(arch: str = "vgg19") -> tuple[str, ...]:
    """The layers that carry weights, in forward order."""
    return tuple(layer.name for layer in backbone(arch).layers if isinstance(layer, Conv))


def is_pool(name: str, arch: str = "vgg19") -> bool:
    """Whether tap ``name`` of ``arch`` is a pooling (else a conv)."""
    return isinstance(_layer(arch, name), Pool)


def _layer(arch: str, name: str) -> Conv | Pool:
    for layer in backbone(arch).layers:
        if layer.name == name:
            return layer
    check_layers([name], arch)  # raises the one-line error
    raise AssertionError(name)


def conv_shapes(arch: str = "vgg19") -> dict[str, tuple[int, int, int, int]]:
    """Expected HWIO kernel shape of every conv layer."""
    shapes, c_in = {}, 3
    for layer in backbone(arch).layers:
        if isinstance(layer, Conv):
            shapes[layer.name] = (layer.size, layer.size, c_in, layer.features)
            c_in = layer.features
    return shapes


def check_layers(layers: Sequence[str], arch: str = "vgg19") -> tuple[str, ...]:
    """Validate tap names; return them in forward order without duplicates."""
    valid = layer_names(arch)
    unknown = [name for name in layers if name not in valid]
    if unknown:
        raise JaxcombineError(
            f"unknown layer {unknown[0]!r} for {arch}; valid layers: {', '.join(valid)}"
        )
    if not layers:
        raise JaxcombineError("no layers requested")
    wanted = set(layers)
    return tuple(name for name in valid if name in wanted)


def _out(length: int, layer: Conv | Pool) -> int:
    """Output length along one axis (torch's and lax's floor rule; may be ≤ 0)."""
    pad = layer.padding if isinstance(layer, Conv) else 0
    return (length + 2 * pad - layer.size) // layer.stride + 1


@functools.lru_cache(maxsize=None)
def _min_sides(arch: str) -> dict[str, int]:
    """Smallest input side for which each layer's output is non-empty (a search: the
    output length grows with the input, so the first side that works is the answer)."""
    out, side = {}, 1
    for i, layer in enumerate(backbone(arch).layers):
        while True:
            n = side
            for earlier in backbone(arch).layers[: i + 1]:
                n = _out(n, earlier)
            if n >= 1:
                break
            side += 1
        out[layer.name] = side
    return out


def min_side(layers: Sequence[str], arch: str = "vgg19") -> int:
    """Smallest image side (pixels) for which every tap in ``layers`` is non-empty."""
    sides = _min_sides(backbone(arch).name)
    return max((sides[name] for name in check_layers(layers, arch)), default=1)


def check_size(height: int, width: int, layers: Sequence[str], arch: str = "vgg19") -> None:
    """One-line error when an image is too small for the deepest of ``layers``."""
    need = min_side(layers, arch)
    if min(height, width) < need:
        sides = _min_sides(arch)
        raise JaxcombineError(
            f"image of {width}x{height} is too small for layer "
            f"{max(check_layers(layers, arch), key=sides.__getitem__)}: each side must be at "
            f"least {need} pixels"
        )


def _forward(layers: Sequence[str], arch: str) -> tuple[Conv | Pool, ...]:
    """The layers the forward to the deepest of ``layers`` runs."""
    table = backbone(arch).layers
    deepest = check_layers(layers, arch)[-1]
    return table[: [layer.name for layer in table].index(deepest) + 1]


def downsampling(layers: Sequence[str], arch: str = "vgg19") -> dict[str, int]:
    """Stride (input pixels per output cell) of every layer the forward to the deepest of
    ``layers`` runs."""
    out, d = {}, 1
    for layer in _forward(layers, arch):
        d *= layer.stride
        out[layer.name] = d
    return out


def layer_shapes(
    layers: Sequence[str], height: int, width: int, arch: str = "vgg19"
) -> dict[str, tuple[int, int, int]]:
    """(H, W, C) of every activation the forward to the deepest of ``layers`` computes
    (VGG: block b's convs at the input halved b-1 times, odd edges dropped)."""
    shapes, h, w, c = {}, height, width, 3
    for layer in _forward(layers, arch):
        h, w = _out(h, layer), _out(w, layer)
        c = layer.features if isinstance(layer, Conv) else c
        shapes[layer.name] = (h, w, c)
    return shapes


def check_uniform(arch: str, what: str) -> None:
    """One-line refusal of ``what`` (tiles, masks) on a backbone whose grids are not plain
    halvings of the image (:attr:`Backbone.uniform`)."""
    if not backbone(arch).uniform:
        raise JaxcombineError(
            f"{what} needs a network of 3x3 convolutions and 2x2 pools; {arch} has others "
            f"(use {', '.join(a for a in ARCHITECTURES if BACKBONES[a].uniform)})"
        )


# --------------------------------------------------------------------------- LPIPS heads

# LPIPS (Zhang et al. 2018): per network, the taps it compares and, as a weight set of
# its own, a 1×1 conv head (C → 1, no bias) per tap.
LPIPS_NETS = {
    "vgg": (
        "vgg16-tv",
        ("block1_conv2", "block2_conv2", "block3_conv3", "block4_conv3", "block5_conv3"),
    ),
    "alex": ("alexnet", ("conv1", "conv2", "conv3", "conv4", "conv5")),
}
LPIPS_HEADS = {f"lpips-{net}": backbone_name for net, (backbone_name, _) in LPIPS_NETS.items()}
# Everything the weights folder can hold, each as ``<name>.h5`` + ``<name>.json``.
WEIGHT_SETS = ARCHITECTURES + tuple(LPIPS_HEADS)


def weight_shapes(name: str) -> dict[str, tuple[int, int, int, int]]:
    """HWIO kernel shape of every layer of weight set ``name``, in order: a backbone's convs,
    or an LPIPS head's 1×1 convs (named by the tap each reads; their bias, stored as one
    zero so every set is (kernel, bias) pairs, has shape (1,))."""
    if name in LPIPS_HEADS:
        net = name[len("lpips-") :]
        bb, taps = LPIPS_NETS[net]
        shapes = conv_shapes(bb)
        return {tap: (1, 1, shapes[tap][-1], 1) for tap in taps}
    if name not in BACKBONES:
        raise JaxcombineError(f"unknown weights {name!r}; choose one of {', '.join(WEIGHT_SETS)}")
    return conv_shapes(name)
