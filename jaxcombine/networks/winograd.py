"""3×3 'SAME' convolutions by Winograd's minimal filtering, F(4×4, 3×3).

Each 4×4 block of outputs is computed from a 6×6 tile of the input as

    Y = Aᵀ [ (G g Gᵀ) ⊙ (Bᵀ d B) ] A        (Lavin & Gray, 2015)

summed over input channels — so the channel sum becomes 36 independent
matrix products of shape (tiles × C_in) @ (C_in × C_out): 36 products per 16
outputs instead of 9 × 16, a 4× cut in multiplications. On XLA:CPU, where a
direct convolution already runs near the matmul peak, this is the remaining
lever (docs/benchmarks.md); GPU libraries make the same choice internally.

The kernel transform ``G g Gᵀ`` depends only on the frozen weights, so it is
computed once (:func:`kernels`) and passed in. The input gradient of a
stride-1 'SAME' 3×3 convolution is the same convolution with the kernel
flipped and its in/out channels swapped (its adjoint), so the backward pass is
one more forward convolution with that kernel's transform (custom VJP), not
the slower transpose of the tiling. No gradient flows to the kernels: they are
constants here.

Layers where Winograd does not pay (few channels, large images) can keep a
direct convolution and still get the precomputed adjoint (``kernels(k,
transform=False)``). That matters on XLA:CPU: inside a rolled ``lax.scan`` the
adjoint autodiff writes is a kernel layout no fast convolution path takes, ~8×
slower (docs/benchmarks.md); an explicit HWIO adjoint is a plain convolution.

Accuracy: the transforms are exact in real arithmetic; in float32 outputs
differ from ``lax.conv`` by about 1e-5 of their largest value. Use float32.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

# Interpolation points 0, ±1, ±2, ∞: the usual F(4, 3) choice (Lavin & Gray, 2015).
_BT = np.array(
    [
        [4, 0, -5, 0, 1, 0],
        [0, -4, -4, 1, 1, 0],
        [0, 4, -4, -1, 1, 0],
        [0, -2, -1, 2, 1, 0],
        [0, 2, -1, -2, 1, 0],
        [0, 4, 0, -5, 0, 1],
    ],
    np.float32,
)
_G = np.array(
    [
        [1 / 4, 0, 0],
        [-1 / 6, -1 / 6, -1 / 6],
        [-1 / 6, 1 / 6, -1 / 6],
        [1 / 24, 1 / 12, 1 / 6],
        [1 / 24, -1 / 12, 1 / 6],
        [0, 0, 1],
    ],
    np.float32,
)
_AT = np.array(
    [[1, 1, 1, 1, 1, 0], [0, 1, -1, 2, -2, 0], [0, 1, 1, 4, 4, 0], [0, 1, -1, 8, -8, 1]], np.float32
)
OUT_TILE, IN_TILE = _AT.shape  # 4 outputs per side from 6 inputs per side


def transform_kernel(kernel: np.ndarray) -> np.ndarray:
    """HWIO (3, 3, I, O) kernel → (36, I, O): ``G g Gᵀ`` per channel pair, on the host
    (once per run; nothing to compile)."""
    return _transform(np.asarray(kernel, np.float32), np)


def _transform(kernel, xp):
    """``G g Gᵀ`` of an HWIO (3, 3, I, O) kernel, (36, I, O), with ``xp`` = numpy (on the
    host) or jax.numpy (inside a program): two matmuls, rows then columns."""
    g = kernel.reshape(3, -1)  # (kernel row, column · I · O)
    u = xp.matmul(_G, g).reshape(IN_TILE, 3, -1)
    u = xp.matmul(_G, u)  # (6, 6, I·O): _G applied to each row's 3 columns
    return u.reshape(IN_TILE * IN_TILE, *kernel.shape[2:])


def kernels(kernel: np.ndarray, transform: bool = True) -> dict[str, jax.Array]:
    """What :func:`conv3x3` needs, on the device: ``fwd`` from the kernel, ``bwd`` from
    its adjoint — their Winograd transforms, or (``transform=False``) the HWIO kernels."""
    kernel = np.asarray(kernel, np.float32)
    adjoint = np.ascontiguousarray(kernel[::-1, ::-1].swapaxes(2, 3))  # flipped, in/out swapped
    if transform:
        kernel, adjoint = transform_kernel(kernel), transform_kernel(adjoint)
    return {"fwd": jnp.asarray(kernel), "bwd": jnp.asarray(adjoint)}


@jax.custom_vjp
def conv3x3(x: jax.Array, fwd: jax.Array, bwd: jax.Array) -> jax.Array:
    """(…, H, W, I) → (…, H, W, O): like ``lax.conv`` with padding 'SAME', stride 1, no bias.

    ``fwd``, ``bwd``: from :func:`kernels`. Winograd transforms (36, I, O) run as
    Winograd, HWIO kernels (3, 3, I, O) as a direct convolution.
    """
    return _convolve(x, fwd)


def _conv3x3_fwd(x, fwd, bwd):
    return _convolve(x, fwd), bwd


def _conv3x3_bwd(bwd, g):
    return _convolve(g, bwd), None, None


conv3x3.defvjp(_conv3x3_fwd, _conv3x3_bwd)


def _convolve(x: jax.Array, u: jax.Array) -> jax.Array:
    *lead, h, w, c = x.shape
    x = x.reshape(-1, h, w, c)
    if u.ndim == 4:  # an HWIO kernel: direct
        y = jax.lax.conv_general_dilated(
            x, u.astype(x.dtype), (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")
        )
        return y.reshape(*lead, h, w, u.shape[-1])
    th, tw = -(-h // OUT_TILE), -(-w // OUT_TILE)  # tiles per column / row
    v = _input_transform(x, th, tw)  # (36, N·th·tw, I)
    m = jnp.einsum("pnc,pco->pno", v, u.astype(x.dtype))
    y = _output_transform(m.reshape(IN_TILE, IN_TILE, -1, th, tw, u.shape[-1]))
    return y[:, :h, :w].reshape(*lead, h, w, u.shape[-1])


def conv3x3_valid(x: jax.Array, kernel: jax.Array) -> jax.Array:
    """(B, H + 2, W + 2, I) → (B, H, W, O): a stride-1 'VALID' 3×3 convolution with an
    HWIO ``kernel``, by Winograd F(4×4, 3×3), the kernel transformed inside the program.

    For networks that pad their own input (the transform network pads by reflection) and
    whose kernels are parameters: plain JAX operations, so JAX differentiates it in both
    arguments (:func:`conv3x3`'s custom rule serves fixed kernels). float32 only, as
    :func:`conv3x3`: the transforms' sums lose too much in 16 bits."""
    n, hp, wp, _ = x.shape
    h, w = hp - 2, wp - 2
    th, tw = -(-h // OUT_TILE), -(-w // OUT_TILE)
    v = _input_transform(x, th, tw, border=0)  # (36, N·th·tw, I)
    u = _transform(kernel.astype(x.dtype), jnp)  # (36, I, O), traced
    m = jnp.einsum("pnc,pco->pno", v, u)
    y = _output_transform(m.reshape(IN_TILE, IN_TILE, n, th, tw, -1))
    return y[:, :h, :w]


def _input_transform(x: jax.Array, th: int, tw: int, border: int = 1) -> jax.Array:
    """``Bᵀ d B`` of every overlapping 6×6 tile (stride 4) of the input, zero-padded by
    ``border`` at the top and left (1: a 'SAME' convolution; 0: the input is padded
    already) and as far as the last tile needs at the bottom and right.

    Rows first over whole-width strips, then columns: two passes of strided
    slices and small sums that XLA fuses, rather than materialising the tiles.
    """
    n, h, w, c = x.shape
    s = OUT_TILE
    x = jnp.pad(
        x,
        ((0, 0), (border, s * th + 2 - h - border), (border, s * tw + 2 - w - border), (0, 0)),
    )
    rows = [x[:, i : i + s * th : s] for i in range(IN_TILE)]  # (N, th, W', C) each
    r = jnp.stack([_combine(_BT[a], rows) for a in range(IN_TILE)])
    cols = [r[:, :, :, j : j + s * tw : s] for j in range(IN_TILE)]  # (6, N, th, tw, C) each
    v = jnp.stack([_combine(_BT[b], cols) for b in range(IN_TILE)], axis=1)
    return v.reshape(IN_TILE * IN_TILE, n * th * tw, c)


def _output_transform(m: jax.Array) -> jax.Array:
    """(6, 6, N, th, tw, O) products → ``Aᵀ M A`` laid out as (N, 4·th, 4·tw, O)."""
    _, _, n, th, tw, o = m.shape
    r = jnp.stack([_combine(_AT[i], list(m)) for i in range(OUT_TILE)])  # (4, 6, N, th, tw, O)
    cols = [r[:, j] for j in range(IN_TILE)]
    y = jnp.stack([_combine(_AT[j], cols) for j in range(OUT_TILE)], axis=1)  # (4, 4, N, th, tw, O)
    return y.transpose(2, 3, 0, 4, 1, 5).reshape(n, OUT_TILE * th, OUT_TILE * tw, o)


def _combine(coefficients: np.ndarray, terms: list[jax.Array]) -> jax.Array:
    """Σ cᵢ·termᵢ over the non-zero coefficients (the transforms are sparse)."""
    out = None
    for c, t in zip(coefficients.tolist(), terms):
        if c == 0:
            continue
        t = t if c == 1 else -t if c == -1 else t * jnp.asarray(c, t.dtype)
        out = t if out is None else out + t
    return out
