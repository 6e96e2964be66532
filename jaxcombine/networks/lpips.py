"""LPIPS (Zhang et al. 2018, "The Unreasonable Effectiveness of Deep Features as a
Perceptual Metric"): a distance between images that no style recipe optimises.

For each tapped layer l of a frozen network, both images' activations are unit-normalised
along channels, their squared difference is weighted per channel by the learned 1×1 head
``w_l`` (C → 1, non-negative, no bias) and averaged over positions; the distance is the
sum over layers:

    d(x, y) = Σ_l mean_hw Σ_c w_lc (x̂_lhwc − ŷ_lhwc)²,   x̂ = x / (‖x‖_c + 1e-10)

``net="vgg"``: torchvision's VGG16 at ``block1_conv2 … block5_conv3`` (relu1_2 …
relu5_3); ``net="alex"``: AlexNet at ``conv1 … conv5``. Both take RGB 0–1 normalised
by the ImageNet mean and std, which is exactly LPIPS' own input scaling of [-1, 1]
images (shift −0.030, −0.088, −0.188; scale 0.458, 0.448, 0.450), so images go in as
RGB 0–255 like everywhere in jaxcombine. Weights: the ``vgg16-tv``/``alexnet`` and
``lpips-vgg``/``lpips-alex`` sets (``jaxcombine weights fetch vgg16-tv``).

Example::

    d = lpips(a, b, net="alex")   # a, b: (H, W, 3) or (N, H, W, 3), RGB 0–255
"""

from __future__ import annotations

import os
from functools import partial
from typing import Mapping

import jax
import jax.numpy as jnp

from jaxcombine.errors import JaxcombineError
from jaxcombine.networks import model
from jaxcombine.networks import weights as weights_lib
from jaxcombine.options import layers as layers_lib
from jaxcombine.options.layers import LPIPS_NETS

EPS = 1e-10  # LPIPS' own, added to the channel norm

_VARIABLES: dict[tuple, tuple[dict, dict]] = {}


def lpips(
    x: jax.Array,
    y: jax.Array,
    net: str = "vgg",
    *,
    weights: str | os.PathLike | None = None,
) -> jax.Array:
    """LPIPS distance between RGB 0–255 images ``x`` and ``y`` ((H, W, 3) → a scalar, or
    (N, H, W, 3) → (N,)); one compiled program per image size and ``net``."""
    if net not in LPIPS_NETS:
        raise JaxcombineError(f"unknown LPIPS net {net!r}; choose {', '.join(LPIPS_NETS)}")
    x, y = jnp.asarray(x, jnp.float32), jnp.asarray(y, jnp.float32)
    if x.shape != y.shape or x.ndim not in (3, 4) or x.shape[-1] != 3:
        raise JaxcombineError(
            f"LPIPS compares two RGB images of one shape, got {x.shape} and {y.shape}"
        )
    arch, taps = LPIPS_NETS[net]
    layers_lib.check_size(*x.shape[-3:-1], taps, arch)
    variables, heads = load(net, weights)
    batched = x if x.ndim == 4 else x[None]
    d = distance(variables, heads, batched, y if y.ndim == 4 else y[None], net=net)
    return d if x.ndim == 4 else d[0]


def load(net: str, weights: str | os.PathLike | None = None) -> tuple[dict, dict]:
    """The backbone's variables and the heads ``{tap: (C,)}``, on the device, once per
    net and weights folder (reloaded when a file changes: :func:`weights.load` caches)."""
    arch, taps = LPIPS_NETS[net]
    backbone = weights_lib.load(arch, weights)
    head = weights_lib.load(f"lpips-{net}", weights)
    key = (net, backbone.fingerprint, head.fingerprint)
    if key not in _VARIABLES:
        _VARIABLES[key] = (
            model.variables(model.trim(backbone.arrays, taps, arch)),
            {tap: jnp.asarray(head.arrays[tap][0].reshape(-1)) for tap in taps},
        )
    return _VARIABLES[key]


@partial(jax.jit, static_argnames=("net",))
def distance(
    variables: Mapping, heads: Mapping[str, jax.Array], x: jax.Array, y: jax.Array, *, net: str
) -> jax.Array:
    """(N,) LPIPS distances of (N, H, W, 3) RGB 0–255 pairs (the jitted core of :func:`lpips`)."""
    arch, taps = LPIPS_NETS[net]
    # Two forwards (not one of the pair stacked): each image's activations are the same
    # whatever it is compared with. Identical images come out 0 up to float32 rounding
    # (~1e-16: XLA may round the two normalisations differently).
    fx, fy = (model.features(variables, im, taps, arch=arch) for im in (x, y))
    return from_features(fx, fy, heads)


def from_features(
    fx: Mapping[str, jax.Array], fy: Mapping[str, jax.Array], heads: Mapping[str, jax.Array]
) -> jax.Array:
    """(N,) LPIPS distances from both images' activations ``{tap: (N, h, w, C)}`` at every
    tap of ``heads`` (for a caller whose forward already computed them, as the judge's)."""
    total = jnp.zeros((next(iter(fx.values())).shape[0],), jnp.float32)
    for tap, head in heads.items():
        diff = (_unit(fx[tap]) - _unit(fy[tap])) ** 2
        total = total + jnp.mean(diff @ head, axis=(1, 2))
    return total


def _unit(f: jax.Array) -> jax.Array:
    """Activations divided by their norm over channels (plus LPIPS' epsilon)."""
    return f / (jnp.sqrt(jnp.sum(f * f, axis=-1, keepdims=True)) + EPS)
