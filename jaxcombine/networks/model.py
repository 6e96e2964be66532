"""The backbones' feature extractors in Flax linen, built from their layer tables.

A backbone (:mod:`jaxcombine.options.layers`) is data: its layers in forward order, its
input convention and its weights. :class:`Network` is one forward for all of them: it
takes RGB 0–255 (…, H, W, 3), converts it as the backbone expects (the Keras VGGs: BGR
minus the ImageNet mean pixel; torchvision's networks: RGB 0–1 normalised by the
ImageNet mean and std), runs the layers up to the deepest requested tap and returns
``{tap: activation}`` (NHWC; conv taps post-ReLU).

Why linen: the networks are frozen and stateless, so the model is exactly a pure function
``apply(params, image) -> {layer: activation}``. Linen's params are a plain nested dict
keyed by layer name — the checkpoint's own structure — which the engine passes into
``jit``/``vmap`` as an argument (never closed over) and never donates.

Convolutions run either as ``lax.conv`` differentiated by JAX (``conv="xla"``: XLA or
cuDNN picks the algorithm), or with kernels prepared once by :func:`variables` in a
second collection, ``"winograd"`` (``conv="winograd"``, :mod:`jaxcombine.networks.winograd`):
Winograd F(4×4, 3×3) where the table says so (VGG: from block 2 on), direct 3×3
convolutions elsewhere, and an explicit adjoint kernel for every 3×3 backward; other
kernels (AlexNet's 11×11 and 5×5) stay ``lax.conv``. Which is faster is a per-backend
measurement (:data:`DEFAULT_CONV`, docs/benchmarks.md).
"""

from __future__ import annotations

from typing import Mapping, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

from jaxcombine.errors import JaxcombineError
from jaxcombine.networks import winograd
from jaxcombine.options.config import AUTO
from jaxcombine.options.layers import (
    BACKBONES,
    CONVS,
    PAD_MODES,
    PADDINGS,
    POOLINGS,
    Conv,
    InputConvention,
    Pool,
    backbone,
    check_layers,
    layer_names,
)

# Chosen by measurement (docs/benchmarks.md): on XLA:CPU direct convolutions
# already run near the matmul peak, so only Winograd's 4× fewer multiplications
# make them faster; elsewhere the vendor library chooses.
DEFAULT_CONV = {"cpu": "winograd"}


def default_conv(backend: str | None = None, dtype: str = "float32") -> str:
    """The convolution algorithm for ``backend`` (default: JAX's); Winograd needs float32."""
    if jnp.dtype(dtype) != jnp.float32:
        return "xla"
    return DEFAULT_CONV.get(backend or jax.default_backend(), "xla")


def conv_for(setting: str, dtype: str = "float32") -> str:
    """The algorithm a ``conv`` option asks for: itself, or for ``auto`` the default of this
    backend and ``dtype`` (:func:`default_conv`)."""
    return default_conv(dtype=dtype) if setting == AUTO else setting


def _convs_by_name() -> dict[str, Conv]:
    """Every conv of every backbone by name; a name shared by several backbones (the VGGs'
    ``block1_conv1``…) is the same layer in each, so the structure follows from the name."""
    out: dict[str, Conv] = {}
    for bb in BACKBONES.values():
        for layer in bb.layers:
            if isinstance(layer, Conv):
                assert out.setdefault(layer.name, layer) == layer, layer.name
    return out


def _stages(layers: Sequence[Conv | Pool]) -> list[tuple[Conv | Pool, ...]]:
    """``layers`` cut after each pool: the VGG blocks (and AlexNet's three stages)."""
    out, current = [], []
    for layer in layers:
        current.append(layer)
        if isinstance(layer, Pool):
            out.append(tuple(current))
            current = []
    return out + ([tuple(current)] if current else [])


def _stage_names() -> dict[str, str]:
    """Layer name → its stage's module name (``block<k>``: the k-th run of layers that a pool
    closes), the same for every backbone that has the layer."""
    out: dict[str, str] = {}
    for bb in BACKBONES.values():
        for k, stage in enumerate(_stages(bb.layers), start=1):
            for layer in stage:
                assert out.setdefault(layer.name, f"block{k}") == f"block{k}", layer.name
    return out


_CONVS = _convs_by_name()
_STAGE = _stage_names()


def uses_winograd(layer: str, conv: str) -> bool:
    """Whether conv layer ``layer`` runs as Winograd (not direct) under algorithm ``conv``."""
    return conv == "winograd" and _CONVS[layer].winograd


def _prepared(layer: Conv, conv: str) -> bool:
    """Whether ``layer`` reads its kernels from the ``"winograd"`` collection (every 3×3
    'SAME' conv under ``conv="winograd"``, transformed or not)."""
    return conv == "winograd" and layer.same3x3


def to_input(rgb: jax.Array, convention: InputConvention) -> jax.Array:
    """RGB in 0–255 (…, H, W, 3) → the network's input under ``convention``."""
    x = rgb[..., ::-1] if convention.channels == "bgr" else rgb
    if convention.scale != 1.0:
        x = x * jnp.asarray(convention.scale, x.dtype)
    x = x - _per_channel(convention.mean, x)
    if convention.std != (1.0, 1.0, 1.0):
        x = x / _per_channel(convention.std, x)
    return x


def _per_channel(values: Sequence[float], x: jax.Array) -> jax.Array:
    """``values`` shaped to broadcast against ``x`` without implicit rank promotion."""
    return jnp.asarray(values, dtype=x.dtype).reshape((1,) * (x.ndim - 1) + (3,))


def pool2x2(x: jax.Array, kind: str = "max") -> jax.Array:
    """2×2, stride-2 pooling of (…, H, W, C), odd edges dropped (Keras' 'valid').

    Written as a reshape and a reduction rather than ``nn.max_pool``: the same
    values, but its gradient is an elementwise mask instead of XLA's
    ``select_and_scatter``, which is slow on CPU (docs/benchmarks.md).
    """
    *batch, h, w, c = x.shape
    x = x[..., : h // 2 * 2, : w // 2 * 2, :].reshape(*batch, h // 2, 2, w // 2, 2, c)
    return x.max(axis=(-4, -2)) if kind == "max" else x.mean(axis=(-4, -2))


def pool(x: jax.Array, layer: Pool, kind: str = "max") -> jax.Array:
    """``layer``'s pooling of (…, H, W, C), no padding (torch's and Keras' default)."""
    if (layer.size, layer.stride) == (2, 2):
        return pool2x2(x, kind)
    lead = (1,) * (x.ndim - 3)
    window, strides = (*lead, layer.size, layer.size, 1), (*lead, layer.stride, layer.stride, 1)
    if kind == "max":
        return lax.reduce_window(x, -jnp.inf, lax.max, window, strides, "VALID")
    total = lax.reduce_window(x, jnp.zeros((), x.dtype), lax.add, window, strides, "VALID")
    return total / jnp.asarray(layer.size * layer.size, x.dtype)


class Network(nn.Module):
    """Backbone ``arch`` up to the deepest of ``taps``; RGB 0–255 in, ``{tap: activation}`` out.

    Attributes:
      arch: a backbone of :data:`ARCHITECTURES` (``"vgg19"``, ``"vgg16"``, ``"vgg16-tv"``,
        ``"alexnet"``).
      taps: its layer names to return, e.g. ``("block1_conv1", "block4_conv2")``.
      pooling: ``"max"`` (as trained) or ``"avg"`` (smoother gradients, Gatys et al.).
      dtype: computation dtype (``bfloat16`` on accelerators if it helps).
      remat: recompute each block in the backward pass instead of storing its
        activations (trades compute for memory; lets larger images fit).
      conv: ``"xla"`` or ``"winograd"`` (float32 only; needs the ``"winograd"``
        collection from ``variables(..., conv="winograd")``).
      padding: what each convolution reads beyond the edge: ``"zeros"`` (as trained),
        ``"reflect"`` (the input mirrored at its edge, the edge pixel not repeated) or
        ``"circular"`` (the opposite edge: the network then commutes with cyclic shifts,
        by multiples of its stride, so its features carry nothing of where they sit).

    Params are ``{"block<k>": {"<layer>": {"kernel": HWIO, "bias": O}}}`` (block k: the
    layers up to the k-th pool; no kernel where ``conv="winograd"`` prepared it in the
    ``"winograd"`` collection); :func:`variables` builds them from named weights.
    """

    arch: str = "vgg19"
    taps: tuple[str, ...] = ("block5_pool",)
    pooling: str = "max"
    dtype: jnp.dtype = jnp.float32
    remat: bool = False
    conv: str = "xla"
    padding: str = "zeros"

    @nn.compact
    def __call__(self, rgb: jax.Array) -> dict[str, jax.Array]:
        bb = backbone(self.arch)
        taps = check_layers(self.taps, self.arch)
        if self.pooling not in POOLINGS:
            raise JaxcombineError(f"unknown pooling {self.pooling!r}; choose max or avg")
        check_conv(self.conv, self.dtype)
        if self.padding not in PADDINGS:
            raise JaxcombineError(f"unknown padding {self.padding!r}; choose {', '.join(PADDINGS)}")
        names = [layer.name for layer in bb.layers]
        needed = bb.layers[: names.index(taps[-1]) + 1]  # stop at the deepest tap
        block_cls = nn.remat(_Block) if self.remat else _Block
        out: dict[str, jax.Array] = {}
        x = to_input(rgb, bb.input).astype(self.dtype)
        for stage in _stages(needed):
            x, acts = block_cls(
                stage,
                tuple(layer.name for layer in stage if layer.name in taps),
                self.pooling,
                self.dtype,
                self.conv,
                self.padding,
                name=_STAGE[stage[0].name],
            )(x)
            out.update(acts)
        return out


VGG = Network  # the name it had when it ran only the Keras VGGs


class _Block(nn.Module):
    """The layers (each conv followed by ReLU) of one stage, cut short at a tap; returns
    the stage's output and its ``taps`` (only those: under ``remat`` every output of a
    block is kept for the backward pass, so returning the others would store them)."""

    layers: tuple[Conv | Pool, ...]
    taps: tuple[str, ...]
    pooling: str
    dtype: jnp.dtype
    conv: str
    padding: str = "zeros"

    @nn.compact
    def __call__(self, x):
        acts = {}
        for layer in self.layers:
            if isinstance(layer, Pool):
                x = pool(x, layer, self.pooling)
            else:
                conv = _Conv(layer, self.dtype, self.conv, self.padding, name=layer.name)
                x = nn.relu(conv(x))
            if layer.name in self.taps:
                acts[layer.name] = x
        return x, acts


class _Conv(nn.Module):
    """``layer``'s convolution plus bias; params named as ``nn.Conv``'s. Under
    ``conv="winograd"`` a 3×3 'SAME' conv uses the ``"winograd"`` collection's kernels,
    not ``params``' kernel.

    With ``padding="reflect"`` or ``"circular"`` the input is padded by the layer's
    padding first (mirrored, or wrapped around) and the convolution reads no zeros: a
    'VALID' one, or under Winograd the 'SAME' one of the padded input with its one-pixel
    rim cut off (the same numbers; the prepared kernels and their backward rule serve
    unchanged, at (H+2)(W+2)/HW of the work)."""

    layer: Conv
    dtype: jnp.dtype
    conv: str
    padding: str = "zeros"

    @nn.compact
    def __call__(self, x):
        spec = self.layer
        bias = self.param("bias", nn.initializers.zeros, (spec.features,), jnp.float32)
        *lead, h, w, c = x.shape
        x = x.reshape(-1, h, w, c)
        padded = self.padding != "zeros"
        if padded:
            p = spec.padding
            x = jnp.pad(x, ((0, 0), (p, p), (p, p), (0, 0)), mode=PAD_MODES[self.padding])
        if _prepared(spec, self.conv):
            u = {key: self.get_variable("winograd", key) for key in ("fwd", "bwd")}
            if u["fwd"] is None:
                raise JaxcombineError(
                    "conv='winograd' needs the variables from model.variables(..., conv='winograd')"
                )
            y = winograd.conv3x3(x, u["fwd"], u["bwd"])
            if padded:
                y = y[:, 1:-1, 1:-1]
        else:
            kernel = self.param(
                "kernel",
                nn.initializers.lecun_normal(),
                (spec.size, spec.size, x.shape[-1], spec.features),
                jnp.float32,
            )
            y = lax.conv_general_dilated(
                x,
                kernel.astype(self.dtype),
                (spec.stride, spec.stride),
                "VALID" if padded else "SAME" if spec.same3x3 else ((spec.padding,) * 2,) * 2,
                dimension_numbers=("NHWC", "HWIO", "NHWC"),
            )
        return (y + bias.astype(self.dtype).reshape(1, 1, 1, -1)).reshape(*lead, *y.shape[1:])


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
    """Named ``{layer: (kernel_HWIO, bias)}`` (any backbone's) → the model's linen variables.

    With ``conv="winograd"`` they hold, per 3×3 'SAME' layer, the prepared forward and
    adjoint kernels instead of the kernel (:func:`winograd.kernels`: transformed where
    :func:`uses_winograd`), computed here once; the raw kernel, which that
    algorithm never reads, is not put on the device.
    """
    check_conv(conv)
    out: dict = {"params": {}}
    for name, (kernel, bias) in weights.items():
        block = _STAGE[name]
        layer = {"bias": jnp.asarray(bias)}
        if not _prepared(_CONVS[name], conv):
            layer["kernel"] = jnp.asarray(kernel)
        out["params"].setdefault(block, {})[name] = layer
        if _prepared(_CONVS[name], conv):
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
    padding: str = "zeros",
) -> dict[str, jax.Array]:
    """Activations of ``taps`` for RGB 0–255 images shaped (…, H, W, 3)."""
    model = Network(
        arch=arch, taps=check_layers(taps, arch), pooling=pooling, conv=conv, padding=padding
    )
    return model.apply(variables_, rgb)


def trim(
    weights: Mapping[str, tuple], taps: Sequence[str], arch: str = "vgg19"
) -> dict[str, tuple]:
    """Only the conv weights the forward to the deepest of ``taps`` uses."""
    names = layer_names(arch)
    needed = set(names[: names.index(check_layers(taps, arch)[-1]) + 1])
    return {name: wb for name, wb in weights.items() if name in needed}
