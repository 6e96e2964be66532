"""VGG16/VGG19 feature extractors in Flax linen, with Keras layer names.

Why linen: the network is frozen and stateless, so the model is exactly a
pure function ``apply(params, image) -> {layer: activation}``. Linen's params
are a plain nested dict keyed by layer name — the Keras checkpoint's own
structure — which the engine passes into ``jit``/``vmap`` as an argument
(never closed over) and never donates.

Inputs are NHWC in "VGG space" (:func:`preprocess`: BGR, 0–255, ImageNet mean
subtracted), as the Keras weights expect. Conv taps are post-ReLU, as in
Keras. The forward stops at the deepest requested tap.

Convolutions run either as ``lax.conv`` differentiated by JAX (``conv="xla"``:
XLA or cuDNN picks the algorithm), or with kernels prepared once by
:func:`variables` in a second collection, ``"winograd"`` (``conv="winograd"``,
:mod:`jaxcombine.networks.winograd`): Winograd F(4×4, 3×3) from block 2 on, direct
convolutions in block 1, and an explicit adjoint kernel for every backward.
Which is faster is a per-backend measurement (:data:`DEFAULT_CONV`,
docs/benchmarks.md).
"""

from __future__ import annotations

from typing import Mapping, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

from jaxcombine.errors import JaxcombineError
from jaxcombine.networks import winograd
from jaxcombine.options.layers import (  # noqa: F401  (the geometry, re-exported)
    ARCHITECTURES,
    CONVS,
    POOLINGS,
    check_layers,
    check_size,
    conv_layer_names,
    conv_shapes,
    layer_names,
    min_side,
)

# BGR ImageNet mean used by the original Caffe/Keras VGG weights.
VGG_MEAN_BGR = (103.939, 116.779, 123.68)

# Chosen by measurement (docs/benchmarks.md): on XLA:CPU direct convolutions
# already run near the matmul peak, so only Winograd's 4× fewer multiplications
# make them faster; elsewhere the vendor library chooses.
DEFAULT_CONV = {"cpu": "winograd"}
# Block 1's 64-channel convolutions at full resolution were measured faster direct.
WINOGRAD_FROM_BLOCK = 2


def default_conv(backend: str | None = None, dtype: str = "float32") -> str:
    """The convolution algorithm for ``backend`` (default: JAX's); Winograd needs float32."""
    if jnp.dtype(dtype) != jnp.float32:
        return "xla"
    return DEFAULT_CONV.get(backend or jax.default_backend(), "xla")


def uses_winograd(layer: str, conv: str) -> bool:
    """Whether conv layer ``layer`` runs as Winograd (not direct) under algorithm ``conv``."""
    return conv == "winograd" and int(layer[len("block")]) >= WINOGRAD_FROM_BLOCK


def preprocess(rgb: jax.Array) -> jax.Array:
    """RGB in 0–255 (…, H, W, 3) → VGG input: BGR minus the ImageNet mean."""
    return rgb[..., ::-1] - _mean(rgb)


def deprocess(bgr: jax.Array) -> jax.Array:
    """Inverse of :func:`preprocess` (no clipping)."""
    return (bgr + _mean(bgr))[..., ::-1]


def _mean(x: jax.Array) -> jax.Array:
    """The BGR mean shaped to broadcast against ``x`` without implicit rank promotion."""
    return jnp.asarray(VGG_MEAN_BGR, dtype=x.dtype).reshape((1,) * (x.ndim - 1) + (3,))


def pool2x2(x: jax.Array, kind: str = "max") -> jax.Array:
    """2×2, stride-2 pooling of (…, H, W, C), odd edges dropped (Keras' 'valid').

    Written as a reshape and a reduction rather than ``nn.max_pool``: the same
    values, but its gradient is an elementwise mask instead of XLA's
    ``select_and_scatter``, which is slow on CPU (docs/benchmarks.md).
    """
    *batch, h, w, c = x.shape
    x = x[..., : h // 2 * 2, : w // 2 * 2, :].reshape(*batch, h // 2, 2, w // 2, 2, c)
    return x.max(axis=(-4, -2)) if kind == "max" else x.mean(axis=(-4, -2))


class VGG(nn.Module):
    """VGG up to the deepest of ``taps``; returns ``{tap: activation}`` (NHWC).

    Attributes:
      arch: ``"vgg19"`` or ``"vgg16"``.
      taps: Keras layer names to return, e.g. ``("block1_conv1", "block4_conv2")``.
      pooling: ``"max"`` (as trained) or ``"avg"`` (smoother gradients, Gatys et al.).
      dtype: computation dtype (``bfloat16`` on accelerators if it helps).
      remat: recompute each block in the backward pass instead of storing its
        activations (trades compute for memory; lets larger images fit).
      conv: ``"xla"`` or ``"winograd"`` (float32 only; needs the ``"winograd"``
        collection from ``variables(..., conv="winograd")``).

    Params are ``{"block<b>": {"<keras layer>": {"kernel": HWIO, "bias": O}}}`` (no
    kernel under ``conv="winograd"``: its ``"winograd"`` collection holds them prepared);
    :func:`variables` builds them from Keras-named weights.
    """

    arch: str = "vgg19"
    taps: tuple[str, ...] = ("block5_pool",)
    pooling: str = "max"
    dtype: jnp.dtype = jnp.float32
    remat: bool = False
    conv: str = "xla"

    @nn.compact
    def __call__(self, x: jax.Array) -> dict[str, jax.Array]:
        taps = check_layers(self.taps, self.arch)
        if self.pooling not in POOLINGS:
            raise JaxcombineError(f"unknown pooling {self.pooling!r}; choose max or avg")
        check_conv(self.conv, self.dtype)
        names = layer_names(self.arch)
        needed = names[: names.index(taps[-1]) + 1]  # stop at the deepest tap
        block_cls = nn.remat(_Block) if self.remat else _Block
        out: dict[str, jax.Array] = {}
        x = x.astype(self.dtype)
        for block in range(1, 6):
            block_names = tuple(n for n in needed if n.startswith(f"block{block}_"))
            if not block_names:
                break
            block_taps = tuple(n for n in block_names if n in taps)
            x, acts = block_cls(
                block_names,
                block_taps,
                conv_shapes(self.arch)[f"block{block}_conv1"][-1],
                self.pooling,
                self.dtype,
                self.conv,
                name=f"block{block}",
            )(x)
            out.update(acts)
        return out


class _Block(nn.Module):
    """The convs (each followed by ReLU) and the pool of one VGG block, cut short at a tap;
    returns the block's output and its ``taps`` (only those: under ``remat`` every output
    of a block is kept for the backward pass, so returning the others would store them)."""

    names: tuple[str, ...]
    taps: tuple[str, ...]
    features: int
    pooling: str
    dtype: jnp.dtype
    conv: str

    @nn.compact
    def __call__(self, x):
        acts = {}
        for name in self.names:
            if name.endswith("_pool"):
                x = pool2x2(x, self.pooling)
            else:
                conv = _Conv3x3(self.features, self.dtype, self.conv == "winograd", name=name)
                x = nn.relu(conv(x))
            if name in self.taps:
                acts[name] = x
        return x, acts


class _Conv3x3(nn.Module):
    """3×3, stride-1, 'SAME' convolution plus bias; params named as ``nn.Conv``'s.
    ``prepared``: use the ``"winograd"`` collection's kernels, not ``params``' kernel."""

    features: int
    dtype: jnp.dtype
    prepared: bool

    @nn.compact
    def __call__(self, x):
        bias = self.param("bias", nn.initializers.zeros, (self.features,), jnp.float32)
        *lead, h, w, c = x.shape
        x = x.reshape(-1, h, w, c)
        if self.prepared:
            u = {key: self.get_variable("winograd", key) for key in ("fwd", "bwd")}
            if u["fwd"] is None:
                raise JaxcombineError(
                    "conv='winograd' needs the variables from model.variables(..., conv='winograd')"
                )
            y = winograd.conv3x3(x, u["fwd"], u["bwd"])
        else:
            kernel = self.param(
                "kernel",
                nn.initializers.lecun_normal(),
                (3, 3, x.shape[-1], self.features),
                jnp.float32,
            )
            y = lax.conv_general_dilated(
                x,
                kernel.astype(self.dtype),
                (1, 1),
                "SAME",
                dimension_numbers=("NHWC", "HWIO", "NHWC"),
            )
        return (y + bias.astype(self.dtype).reshape(1, 1, 1, -1)).reshape(
            *lead, h, w, self.features
        )


def check_conv(conv: str, dtype: jnp.dtype | str = jnp.float32) -> None:
    """One-line error for an unknown algorithm, or Winograd in reduced precision."""
    if conv not in CONVS:
        raise JaxcombineError(f"unknown conv {conv!r}; choose {', '.join(CONVS)}")
    if conv == "winograd" and jnp.dtype(dtype) != jnp.float32:
        raise JaxcombineError(
            "conv 'winograd' needs float32 (its transforms lose too much "
            "precision in 16 bits); use conv 'xla'"
        )


def variables(weights: Mapping[str, tuple], conv: str = "xla") -> dict:
    """Keras-named ``{layer: (kernel_HWIO, bias)}`` → the model's linen variables.

    With ``conv="winograd"`` they hold, per layer, the prepared forward and adjoint
    kernels instead of the kernel (:func:`winograd.kernels`: transformed where
    :func:`uses_winograd`), computed here once; the raw kernel, which that
    algorithm never reads, is not put on the device.
    """
    check_conv(conv)
    out: dict = {"params": {}}
    for name, (kernel, bias) in weights.items():
        block = name.split("_")[0]
        layer = {"bias": jnp.asarray(bias)}
        if conv == "xla":
            layer["kernel"] = jnp.asarray(kernel)
        out["params"].setdefault(block, {})[name] = layer
        if conv == "winograd":
            out.setdefault("winograd", {}).setdefault(block, {})[name] = winograd.kernels(
                kernel, transform=uses_winograd(name, conv)
            )
    return out


def features(
    variables_: Mapping,
    rgb: jax.Array,
    taps: Sequence[str],
    *,
    arch: str = "vgg19",
    pooling: str = "max",
    conv: str = "xla",
) -> dict[str, jax.Array]:
    """Activations of ``taps`` for RGB 0–255 images shaped (…, H, W, 3)."""
    model = VGG(arch=arch, taps=check_layers(taps, arch), pooling=pooling, conv=conv)
    return model.apply(variables_, preprocess(rgb))


def trim(
    weights: Mapping[str, tuple], taps: Sequence[str], arch: str = "vgg19"
) -> dict[str, tuple]:
    """Only the conv weights the forward to the deepest of ``taps`` uses."""
    names = layer_names(arch)
    needed = set(names[: names.index(check_layers(taps, arch)[-1]) + 1])
    return {name: wb for name, wb in weights.items() if name in needed}
