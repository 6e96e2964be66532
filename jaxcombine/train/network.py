"""The transformation network: Johnson, Alahi & Fei-Fei (2016), with instance normalisation.

RGB 0–255 in, RGB 0–255 out, any size (a multiple of 4: :func:`stylize` pads):

* a 9×9 convolution (``width`` channels), two stride-2 3×3 convolutions (2·``width``,
  4·``width``), ``res_blocks`` residual blocks at a quarter of the resolution, two
  upsamplings (nearest ×2 then a 3×3 convolution: resize-convolution, which leaves no
  checkerboard, Odena et al. 2016), and a 9×9 convolution to RGB through a scaled tanh;
* every convolution but the last is followed by instance normalisation (Ulyanov et al.
  2016) and every normalisation but a residual block's second by a ReLU. Padding is by
  reflection, so borders look like the interior;
* its 3×3 stride-1 convolutions (the residual blocks' and the upsamplings': 83% of the
  FLOPs at width 32 with 5 blocks) run as XLA's convolutions or, with ``conv="winograd"``,
  by Winograd's algorithm (:func:`jaxcombine.networks.winograd.conv3x3_valid`): the same
  parameters either way, so a network trained with one is applied with the other;
* conditional instance normalisation (Dumoulin, Shlens & Kudlur 2017): each
  normalisation has a scale and a shift per style, ``(styles, C)``, and ``style`` (B,)
  picks a row per image. With ``styles=1`` it is plain instance normalisation.

Instance normalisation takes statistics over the whole image, so a tile of an image would
not be normalised as the image is. :func:`forward` therefore accepts the statistics of the
first normalisations (``norm_stats``) and can stop at normalisation ``upto``, returning its
input: :mod:`jaxcombine.train.stylize` gathers each layer's statistics over the tiles of an
image, one layer after another, and the tiled result equals the whole one.
"""

from __future__ import annotations

import functools
import hashlib
from typing import Any, Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxcombine.networks import model, winograd

EPS = 1e-5  # instance normalisation's variance floor (torch's and flax's default)
# The widest input of the 9x9 output layer that XLA:CPU's own convolution runs well: at 512²
# on the 2-core EPYC it took 56, 85 ms from 8, 16 channels and 608-951 ms from 20-32, where
# conv_by_taps took 107-124 ms throughout (docs/benchmarks.md). Both compute the same layer.
OUTPUT_BY_XLA_UP_TO = 16


class _Reached(Exception):
    """Raised (while tracing) at normalisation ``upto`` to return its input early."""

    def __init__(self, value: jax.Array):
        self.value = value


def norm_count(res_blocks: int) -> int:
    """How many instance normalisations the network has: 3 down, 2 per block, 2 up."""
    return 3 + 2 * res_blocks + 2


def receptive_radius(res_blocks: int) -> int:
    """Pixels of context on each side that one output pixel depends on (at input scale):
    the overlap a tile needs for its core to be computed exactly."""
    # Backwards from an output pixel: at a quarter resolution 2 px per residual block plus
    # 3 for the upsampling path (3x3 at 1/2, nearest x2 twice, 3x3 and 9x9 at 1); then
    # x2 + 1 through each stride-2 3x3, and 4 for the first 9x9: 4 (3 + 2R) + 7, plus 1
    # for the rounding of nearest upsampling.
    return 4 * (3 + 2 * res_blocks) + 8


class TransformNet(nn.Module):
    """Johnson et al.'s residual network (see the module's docstring).

    Attributes:
      width: channels of the first layer (32 in the paper); 2x and 4x after the strides.
      res_blocks: residual blocks at a quarter resolution (5 in the paper).
      styles: rows of the conditional normalisations' scale and shift tables.
      conv: "xla" or "winograd": the algorithm of the 3×3 stride-1 convolutions (not a
        parameter: it changes how, not what, the network computes, to float32 rounding).
    """

    width: int = 32
    res_blocks: int = 5
    styles: int = 1
    conv: str = "xla"

    @nn.compact
    def __call__(
        self,
        rgb: jax.Array,
        style: jax.Array | None = None,
        norm_stats: Sequence[tuple[jax.Array, jax.Array]] = (),
        upto: int | None = None,
    ) -> jax.Array:
        """(B, H, W, 3) 0–255 → (B, H, W, 3) 0–255; H and W multiples of 4.

        ``style`` (B,) int: each image's style row (default 0). ``norm_stats``: (mean,
        variance), each (B, C), to use for the first normalisations instead of the
        image's own; ``upto``: return the input (B, h, w, C) of normalisation ``upto``."""
        b, h, w, _ = rgb.shape
        model.check_conv(self.conv)  # the network computes in float32
        if h % 4 or w % 4:
            raise ValueError(f"the network needs sides that are multiples of 4, got {h}x{w}")
        style = jnp.zeros((b,), jnp.int32) if style is None else style
        count = iter(range(norm_count(self.res_blocks)))

        def norm(x: jax.Array, relu: bool = True) -> jax.Array:
            i = next(count)
            if i == upto:
                raise _Reached(x)
            given = norm_stats[i] if i < len(norm_stats) else None
            x = _InstanceNorm(self.styles, name=f"norm{i}")(x, style, given)
            return nn.relu(x) if relu else x

        def conv(x: jax.Array, features: int, size: int, stride: int = 1, **kw) -> jax.Array:
            p = size // 2
            x = jnp.pad(x, ((0, 0), (p, p), (p, p), (0, 0)), mode="reflect")
            if self.conv == "winograd" and size == 3 and stride == 1:
                kw["conv_general_dilated"] = _conv_by_winograd
            return nn.Conv(features, (size, size), (stride, stride), "VALID", **kw)(x)

        def up_conv(x: jax.Array, features: int) -> jax.Array:
            # nearest ×2, reflection pad, 3×3: computed at the source's resolution (see
            # resize_conv); reflecting the doubled image is replicating the source
            x = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)), mode="edge")
            three = winograd.conv3x3_valid if self.conv == "winograd" else _conv_by_xla
            by_phases = _as_3x3_valid(
                "resize_conv", functools.partial(resize_conv, three_by_three=three)
            )
            return nn.Conv(
                features, (3, 3), padding="VALID", use_bias=False, conv_general_dilated=by_phases
            )(x)

        c = self.width
        x = rgb.astype(jnp.float32) / 127.5 - 1.0
        x = norm(conv(x, c, 9, use_bias=False))
        x = norm(conv(x, 2 * c, 3, 2, use_bias=False))
        x = norm(conv(x, 4 * c, 3, 2, use_bias=False))
        for _ in range(self.res_blocks):
            y = norm(conv(x, 4 * c, 3, use_bias=False))
            x = x + norm(conv(y, 4 * c, 3, use_bias=False), relu=False)
        x = norm(up_conv(x, 2 * c))
        x = norm(up_conv(x, c))
        if c > OUTPUT_BY_XLA_UP_TO:  # XLA's own is faster below: see conv_by_taps
            x = conv(x, 3, 9, conv_general_dilated=_conv_by_taps)
        else:
            x = conv(x, 3, 9)
        return 127.5 * (jnp.tanh(x) + 1.0)


def conv_by_taps(x: jax.Array, kernel: jax.Array) -> jax.Array:
    """A stride-1 'VALID' convolution, (B, H, W, C) with an (kh, kw, C, O) kernel, as one
    matmul and shifted sums: the same products as ``lax.conv``, summed in another order.

    For the output layer (9×9, C → 3) XLA:CPU's convolution runs at a few GFLOP/s: it
    gathers each output pixel's kh·kw·C = 2592 inputs (im2col) to feed only 3 outputs, so it
    moves 81× the image through memory per output channel block. Here every pixel's C
    channels meet every tap at once (a (B·H·W, C) × (C, kh·kw·O) matmul, 243 outputs per
    pixel), and each tap's share is added at its offset: over the kernel's columns, then its
    rows. Measured in docs/benchmarks.md ("stylize")."""
    kh, kw = kernel.shape[:2]
    h, w = x.shape[1] - kh + 1, x.shape[2] - kw + 1
    taps = jnp.einsum("bpqc,ijco->bpqijo", x, kernel)  # (B, H', W', kh, kw, O)
    rows = sum(taps[:, :, j : j + w, :, j] for j in range(kw))  # (B, H', W, kh, O)
    return sum(rows[:, i : i + h, :, i] for i in range(kh))  # (B, H, W, O)


def resize_conv(
    source: jax.Array, kernel: jax.Array, three_by_three: Callable[..., jax.Array] | None = None
) -> jax.Array:
    """Nearest ×2 upsampling, then a 3×3 'VALID' convolution, computed without the
    upsampled image: ``source`` (B, h + 2, w + 2, C), already padded by one pixel, and a
    (3, 3, C, O) kernel give the (B, 2h, 2w, O) convolution of the doubled image padded
    by one (the doubled interior of ``source``).

    Each output pixel (2i + a, 2j + b) sees three rows of the doubled image, which are two
    rows of the source: rows i - 1, i (twice) when a = 0; rows i (twice), i + 1 when a = 1;
    so does each column. Summing the kernel's taps that fall on the same source pixel gives
    one 3×3 kernel per phase (a, b) over the source's rows and columns i - 1, i, i + 1,
    with zeros where a phase sees nothing; the four phases are one convolution with 4·O
    outputs at the source's resolution, then interleaved. The same products as the
    doubled convolution, two of each nine pre-added, at a quarter of the positions:
    docs/benchmarks.md measures 1.5–2× less time for the network's two upsamplings.

    ``three_by_three``: the 3×3 'VALID' convolution to use (XLA's by default)."""
    three_by_three = three_by_three or _conv_by_xla
    b, h, w, _ = source.shape
    h, w, o = h - 2, w - 2, kernel.shape[-1]

    def rows(k: jax.Array, phase: int) -> jax.Array:  # the taps on source rows -1, 0, +1
        zero = jnp.zeros_like(k[:1])
        if phase == 0:
            return jnp.concatenate([k[:1], k[1:2] + k[2:3], zero])
        return jnp.concatenate([zero, k[:1] + k[1:2], k[2:3]])

    phases = [
        jnp.swapaxes(rows(jnp.swapaxes(rows(kernel, a), 0, 1), b), 0, 1)
        for a in (0, 1)
        for b in (0, 1)
    ]  # (a, b) in order: 00, 01, 10, 11, each (3, 3, C, O)
    y = three_by_three(source, jnp.stack(phases, axis=-1).reshape(*kernel.shape[:3], 4 * o))
    y = y.reshape(b, h, w, o, 2, 2)  # the channel o·4 + 2a + b is phase (a, b) of output o
    return y.transpose(0, 1, 4, 2, 5, 3).reshape(b, 2 * h, 2 * w, o)


def _conv_by_xla(lhs: jax.Array, rhs: jax.Array) -> jax.Array:
    """XLA's 'VALID' stride-1 convolution, NHWC with an HWIO kernel."""
    return jax.lax.conv_general_dilated(
        lhs, rhs, (1, 1), "VALID", dimension_numbers=("NHWC", "HWIO", "NHWC")
    )


def _conv_by_taps(lhs, rhs, window_strides, padding, **unused) -> jax.Array:
    """:func:`conv_by_taps` in ``lax.conv_general_dilated``'s place inside ``nn.Conv`` (its
    parameters keep their names and shapes); only what the output layer asks for."""
    if tuple(window_strides) != (1, 1) or padding not in ("VALID", ((0, 0), (0, 0))):
        raise ValueError(f"conv_by_taps: stride 1, VALID only, got {window_strides} {padding}")
    return conv_by_taps(lhs, rhs)


def _as_3x3_valid(name: str, three_by_three: Callable[..., jax.Array]) -> Callable[..., jax.Array]:
    """``three_by_three(lhs, rhs)``, a 3×3 stride-1 'VALID' convolution (Winograd's, or
    :func:`resize_conv`), in ``lax.conv_general_dilated``'s place inside ``nn.Conv`` (its
    parameters keep their names and shapes); anything else ``nn.Conv`` asks for is refused."""

    def conv_general_dilated(lhs, rhs, window_strides, padding, **unused) -> jax.Array:
        if rhs.shape[:2] != (3, 3) or tuple(window_strides) != (1, 1):
            raise ValueError(f"{name}: 3x3, stride 1 only, got {rhs.shape[:2]} {window_strides}")
        if padding not in ("VALID", ((0, 0), (0, 0))):
            raise ValueError(f"{name}: VALID only, got {padding}")
        return three_by_three(lhs, rhs)

    return conv_general_dilated


_conv_by_winograd = _as_3x3_valid("winograd", winograd.conv3x3_valid)


class _InstanceNorm(nn.Module):
    """Instance normalisation with a scale and shift per style (conditional with
    ``styles`` > 1); statistics over (H, W) per image and channel, or ``given``."""

    styles: int

    @nn.compact
    def __call__(self, x, style, given=None):
        c = x.shape[-1]
        scale = self.param("scale", nn.initializers.ones, (self.styles, c), jnp.float32)
        shift = self.param("shift", nn.initializers.zeros, (self.styles, c), jnp.float32)
        if given is None:
            mean = jnp.mean(x, axis=(1, 2))
            var = jnp.var(x, axis=(1, 2))
        else:
            mean, var = given
        x = (x - mean[:, None, None]) * jax.lax.rsqrt(var[:, None, None] + EPS)
        return x * scale[style][:, None, None] + shift[style][:, None, None]


def forward(
    net: TransformNet,
    params: Any,
    rgb: jax.Array,
    style: jax.Array | None = None,
    norm_stats: Sequence[tuple[jax.Array, jax.Array]] = (),
    upto: int | None = None,
) -> jax.Array:
    """``net`` applied with ``params``; with ``upto``, the input of that normalisation."""
    try:
        return net.apply({"params": params}, rgb, style, tuple(norm_stats), upto)
    except _Reached as reached:
        return reached.value


def init(net: TransformNet, key: jax.Array) -> Any:
    """Fresh parameters of ``net`` (shapes do not depend on the image size)."""
    return net.init(key, jnp.zeros((1, 16, 16, 3), jnp.float32))["params"]


def fingerprint(params: Any) -> str:
    """``sha256:<hex>`` of the parameters by name (flattened paths in sorted order, then
    each array as little-endian float32 bytes): the same however they were stored."""
    h = hashlib.sha256()
    flat = jax.tree_util.tree_flatten_with_path(params)[0]
    for path, leaf in sorted(flat, key=lambda pl: jax.tree_util.keystr(pl[0])):
        h.update(jax.tree_util.keystr(path).encode())
        h.update(np.ascontiguousarray(np.asarray(leaf), dtype="<f4").data)
    return f"sha256:{h.hexdigest()}"


def activation_bytes_per_pixel(width: int, res_blocks: int, *, backward: bool) -> int:
    """Upper bound on the bytes per input pixel of one image's activations: every
    convolution's output with its normalised and rectified copies (3 maps per layer), at
    full, half and quarter resolution; twice that when the backward pass keeps them."""
    full = 3 * width * 2 + 3  # 9x9 in, last up, 9x9 out
    half = 3 * 2 * width * 2 / 4
    quarter = 3 * 4 * width * (1 + 2 * res_blocks) / 16
    floats = full + half + quarter
    return int(4 * floats * (2 if backward else 1))
