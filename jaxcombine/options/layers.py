"""The networks' geometry as data: layer names, kernel shapes, downsampling, sizes.

Pure Python (no JAX), so the configuration and recipes validate layer names and image
sizes without loading a framework; :mod:`jaxcombine.networks.model` builds the networks
from these tables and :mod:`jaxcombine.run.memory` sizes their activations.
"""

from __future__ import annotations

from typing import Sequence

from jaxcombine.errors import JaxcombineError

_CONVS_PER_BLOCK = {"vgg16": (2, 2, 3, 3, 3), "vgg19": (2, 2, 4, 4, 4)}
_WIDTHS = (64, 128, 256, 512, 512)
ARCHITECTURES = tuple(_CONVS_PER_BLOCK)
POOLINGS = ("max", "avg")
CONVS = ("xla", "winograd")


def layer_names(arch: str = "vgg19") -> tuple[str, ...]:
    """All tap names of ``arch`` in forward order, e.g. ``block1_conv1 … block5_pool``."""
    names = []
    for block, n_convs in enumerate(_check_arch(arch), start=1):
        names += [f"block{block}_conv{i}" for i in range(1, n_convs + 1)]
        names.append(f"block{block}_pool")
    return tuple(names)


def conv_layer_names(arch: str = "vgg19") -> tuple[str, ...]:
    """The layers that carry weights, in forward order."""
    return tuple(n for n in layer_names(arch) if "_conv" in n)


def conv_shapes(arch: str = "vgg19") -> dict[str, tuple[int, int, int, int]]:
    """Expected HWIO kernel shape of every conv layer."""
    shapes, c_in = {}, 3
    for block, n_convs in enumerate(_check_arch(arch), start=1):
        for i in range(1, n_convs + 1):
            c_out = _WIDTHS[block - 1]
            shapes[f"block{block}_conv{i}"] = (3, 3, c_in, c_out)
            c_in = c_out
    return shapes


def _check_arch(arch: str) -> tuple[int, ...]:
    try:
        return _CONVS_PER_BLOCK[arch]
    except KeyError:
        raise JaxcombineError(
            f"unknown model {arch!r}; choose one of {', '.join(ARCHITECTURES)}"
        ) from None


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


def _layer_min_side(name: str) -> int:
    """``blockB_convN`` needs B-1 halvings to stay non-empty, ``blockB_pool`` B."""
    block = int(name[len("block")])
    return 2**block if name.endswith("_pool") else 2 ** (block - 1)


def min_side(layers: Sequence[str]) -> int:
    """Smallest image side (pixels) for which every tap in ``layers`` is non-empty."""
    return max((_layer_min_side(name) for name in layers), default=1)


def check_size(height: int, width: int, layers: Sequence[str]) -> None:
    """One-line error when an image is too small for the deepest of ``layers``."""
    need = min_side(layers)
    if min(height, width) < need:
        raise JaxcombineError(
            f"image of {width}x{height} is too small for layer "
            f"{max(layers, key=_layer_min_side)}: each side must be at least {need} pixels"
        )


def downsampling(layers: Sequence[str], arch: str = "vgg19") -> dict[str, int]:
    """Downsampling factor of every layer the forward to the deepest of ``layers`` runs."""
    names = layer_names(arch)
    deepest = check_layers(layers, arch)[-1]
    out, d = {}, 1
    for name in names[: names.index(deepest) + 1]:
        if name.endswith("_pool"):
            d *= 2
        out[name] = d
    return out


def layer_shapes(
    layers: Sequence[str], height: int, width: int, arch: str = "vgg19"
) -> dict[str, tuple[int, int, int]]:
    """(H, W, C) of every activation the forward to the deepest of ``layers`` computes.

    Block b's convs run at the input halved b-1 times (odd edges dropped, as the
    networks' 2×2 pools do); its pool halves once more.
    """
    shapes, convs = {}, conv_shapes(arch)
    for name in downsampling(layers, arch):
        block = int(name[len("block")])
        h, w = height >> (block - 1), width >> (block - 1)
        if name.endswith("_pool"):
            shapes[name] = (h >> 1, w >> 1, convs[f"block{block}_conv1"][-1])
        else:
            shapes[name] = (h, w, convs[name][-1])
    return shapes
