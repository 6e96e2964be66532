"""Distribution statistics of feature maps: covariance, Gaussian W2, sliced Wasserstein.

A feature map (H, W, C) is read as N = H·W points in C dimensions. Three ways to
compare two such point sets, all pure functions computed in float32:

* :func:`covariance`: the mean-centred Gram matrix (C×C, divided by N);
* :func:`w2_gaussian`: the squared Wasserstein-2 distance between Gaussian fits
  N(μx, Σx), N(μt, Σt) of the two sets,
  ‖μx − μt‖² + tr(Σx + Σt − 2(Σt^½ Σx Σt^½)^½);
* :func:`sliced_wasserstein`: project both sets onto random unit directions, sort
  each projection, mean squared difference of the sorted values (Heitz et al.,
  "A Sliced Wasserstein Loss for Neural Texture Synthesis", CVPR 2021).

Square roots, and why not Newton–Schulz: float32 has 7 digits, and VGG
covariances are rank-deficient (dead ReLU channels; fewer positions than
channels in deep layers), so both ways of taking a matrix square root of
Σt^½ Σx Σt^½ go wrong there: Newton–Schulz iterations converge slowest on the
smallest eigenvalues (exactly the ones the square root amplifies) and need a
regularising ε·I; an ``eigh`` of that C×C product squares the condition number
first, and the square root of its eigenvalue noise (~1e-7·λmax) is ~3e-4·√λmax
per null direction. Instead both square roots come from singular values of
*feature matrices*, never of their products: Σt^½ = V diag(σ(Zt)) Vᵀ from the
SVD of the centred target features Zt (Σt = ZtᵀZt), and
tr((Σt^½ Σx Σt^½)^½) = ‖Xc Σt^½‖_* / √N, the nuclear norm (sum of singular
values) of the centred output features times Σt^½. Singular values carry an
absolute error of ~1e-7·σmax, with no squaring, and the gradient of the
nuclear norm, U Vᵀ, is bounded even where singular values are 0 (JAX
differentiates singular values alone without the 1/(σi² − σj²) terms of the
vectors). The target's square root is computed once, with the targets.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

EPS = 1e-8


def points(features: jax.Array) -> jax.Array:
    """(…, H, W, C) → (…, H·W, C) float32: a feature map as a set of points."""
    *batch, h, w, c = features.shape
    return features.astype(jnp.float32).reshape(*batch, h * w, c)


def covariance(features: jax.Array) -> jax.Array:
    """(…, H, W, C) → (…, C, C): mean-centred Gram matrix, divided by H·W.

    Unlike the Gram matrix it ignores a constant shift of the features.
    """
    x = points(features)
    xc = x - jnp.mean(x, axis=-2, keepdims=True)
    return jnp.einsum("...pc,...pd->...cd", xc, xc) / x.shape[-2]


# --------------------------------------------------------------------------- W2


def gaussian_target(features: jax.Array, weights: jax.Array) -> dict[str, jax.Array]:
    """The Gaussian fit of (S, H, W, C) feature maps mixed with ``weights`` (S,), summing to 1.

    Several maps (blended styles) are pooled as one weighted set of points, so
    the fit is the mixture's: μ = Σ wₛ μₛ and Σ = Σ wₛ E_s[(y − μ)(y − μ)ᵀ]
    (crowsonkb/style-transfer-pytorch blends means and second raw moments
    linearly, which is the same). Returns ``mean`` (C,), ``cov`` (C, C),
    ``cov_sqrt`` = Σ^½ (C, C), computed from the SVD of the stacked, centred and
    √weight-scaled points (Σ = ZᵀZ), and ``scale`` = tr Σ + ‖μ‖², the mean
    squared norm of the target points (the W2 term is divided by it).
    """
    y = points(features)  # (S, N, C)
    if y.ndim != 3 or weights.shape != y.shape[:1]:
        raise ValueError(f"expected (S, H, W, C) features and (S,) weights, got {features.shape}, "
                         f"{weights.shape}")
    n = y.shape[1]
    mean = jnp.einsum("s,snc->c", weights, y) / n
    z = (y - mean[None, None]) * jnp.sqrt(weights / n)[:, None, None]
    z = z.reshape(-1, y.shape[-1])
    _, s, vt = jnp.linalg.svd(z, full_matrices=False)
    cov = z.T @ z
    cov_sqrt = (vt.T * s[None]) @ vt
    return {"mean": mean, "cov": cov, "cov_sqrt": cov_sqrt,
            "scale": jnp.trace(cov) + jnp.sum(jnp.square(mean))}


def w2_gaussian(features: jax.Array, target: dict[str, jax.Array]) -> jax.Array:
    """W2² between the Gaussian fit of (H, W, C) ``features`` and ``target``
    (:func:`gaussian_target`), over the target's ``scale`` = E‖y‖².

    So the term is 1.0 for an all-zero feature map (as the relative squared
    errors are) and 0 for features with the target's mean and covariance,
    whatever the layer's activation scale or the image size. Clamped at 0
    (float32 rounding can make an exact match slightly negative).
    """
    x = points(features)
    if x.ndim != 2 or target["cov"].shape != (x.shape[-1],) * 2:
        raise ValueError(f"shape mismatch: features {features.shape} vs target "
                         f"{target['cov'].shape}")
    n = x.shape[0]
    mean = jnp.mean(x, axis=0)
    xc = x - mean[None]
    cross = jnp.sum(jnp.linalg.svd(xc @ target["cov_sqrt"], compute_uv=False)) / jnp.sqrt(
        jnp.float32(n))  # tr((Σt^½ Σx Σt^½)^½)
    w2 = (jnp.sum(jnp.square(mean - target["mean"])) + jnp.sum(jnp.square(xc)) / n
          + jnp.trace(target["cov"]) - 2.0 * cross)
    return jnp.maximum(w2, 0.0) / (target["scale"] + EPS)


# --------------------------------------------------------------------------- sliced W


def directions(key: jax.Array, channels: int, count: int) -> jax.Array:
    """(channels, count) random unit vectors, uniform on the sphere."""
    d = jax.random.normal(key, (channels, count), jnp.float32)
    return d / jnp.linalg.norm(d, axis=0, keepdims=True)


def swd_target(features: jax.Array, weights: jax.Array) -> dict[str, jax.Array]:
    """What :func:`sliced_wasserstein` compares against: the points themselves.

    Directions change every step, so sorted projections cannot be kept; the
    (S, H, W, C) maps are stored as (S, N, C) points with their blend
    ``weights`` (S,), summing to 1: several styles are one weighted point set.
    """
    y = points(features)
    if y.ndim != 3 or weights.shape != y.shape[:1]:
        raise ValueError(f"expected (S, H, W, C) features and (S,) weights, got {features.shape}, "
                         f"{weights.shape}")
    return {"points": y, "weights": weights.astype(jnp.float32)}


def _quantiles(values: jax.Array, weights: jax.Array, n: int) -> jax.Array:
    """Quantiles at levels (i + ½)/n, i < n, of each column of ``values`` (M, D) whose
    rows carry ``weights`` (M,) summing to 1: the target's sorted projections,
    resampled to the output's n points."""
    order = jnp.argsort(values, axis=0)
    ordered = jnp.take_along_axis(values, order, axis=0)
    cum = jnp.cumsum(weights[order], axis=0)  # (M, D)
    levels = (jnp.arange(n, dtype=jnp.float32) + 0.5) / n
    idx = jax.vmap(lambda c: jnp.searchsorted(c, levels), in_axes=1, out_axes=1)(cum)
    return jnp.take_along_axis(ordered, jnp.minimum(idx, values.shape[0] - 1), axis=0)


def sliced_wasserstein(features: jax.Array, target: dict[str, jax.Array], key: jax.Array,
                       count: int | None = None) -> jax.Array:
    """Sliced W2² between (H, W, C) ``features`` and ``target`` (:func:`swd_target`),
    over ``count`` (default C, as Heitz et al.) directions drawn from ``key``,
    divided by the target's mean squared value.

    Each direction θ: sort θ·x over the N output points and compare with the
    target's projections at the same quantiles. A single target with N points
    (the usual case: style images are fitted to the output's size) is simply
    sorted, as in Heitz et al.; blended styles or another point count take the
    weighted quantiles of the pooled projections. For random unit θ,
    E[(θ·y)²] = ‖y‖²/C, so dividing by mean(y²) makes an all-zero output score
    about 1.0, like the other terms.
    """
    x = points(features)
    y, w = target["points"], target["weights"]
    if x.ndim != 2 or y.shape[-1] != x.shape[-1]:
        raise ValueError(f"shape mismatch: features {features.shape} vs target points {y.shape}")
    n, c = x.shape
    theta = directions(key, c, c if count is None else count)
    px = jnp.sort(x @ theta, axis=0)
    py = y @ theta  # (S, M, D)
    if py.shape[:2] == (1, n):
        qy = jnp.sort(py[0], axis=0)
    else:
        m = py.shape[1]
        qy = _quantiles(py.reshape(-1, py.shape[-1]), jnp.repeat(w / m, m), n)
    scale = jnp.einsum("s,s->", w, jnp.mean(jnp.square(y), axis=(1, 2)))
    return jnp.mean(jnp.square(px - qy)) / (scale + EPS)
