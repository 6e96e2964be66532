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

Masks (:mod:`jaxcombine.stats.masks`): every function here takes an optional ``mask``
(H, W) of weights ≥ 0 over the output's positions; the point set is then weighted
by it, normalised by its area Σm (:func:`point_weights`), so statistics describe
the masked region alone and points of weight 0 get no gradient.

Square roots in float32, and why eigh rather than Newton–Schulz: VGG
covariances are rank-deficient (dead ReLU channels; fewer positions than
channels in deep layers). Newton–Schulz iterations converge slowest on the
smallest eigenvalues — the ones a square root amplifies — so they need a
regularising ε·I (crowsonkb adds 1e-4·I and runs 12 iterations) that biases
the distance, and 12+ C×C matmuls forward and backward per layer and step.
Here only eigenvalues are needed: with A = Xc Σt^½ (centred output points
times the target's root), tr((Σt^½ Σx Σt^½)^½) = Σ √λ(AᵀA)/√N, and AᵀA (or
AAᵀ when there are fewer points than channels: the same non-zero eigenvalues,
a smaller matrix) goes through one eigen-solve (:mod:`jaxcombine.stats.linalg`). Its rounding noise (~1e-7·λmax)
would get an unbounded gradient from √λ near 0, so eigenvalues below
:data:`EIG_FLOOR`·λmax count as 0 (no value, no gradient); above it the
gradient, A V Λ^-½ Vᵀ, is A's polar factor, bounded. On real VGG19 features at
192 px this is within 1e-4 (in units of the normalised term) of a float64
reference for every block*_conv1 layer. The target's root Σt^½ is computed
once, with the targets, from the SVD of the centred target points
(Σt = ZᵀZ, Σt^½ = V diag(σ) Vᵀ: no squared condition number, error ~1e-7·σmax);
an SVD of the output's N×C points every step would avoid the squaring too, but
measured ~3× the eigh's time on CPU (125 against 45 ms per step, value and gradient,
for block1..5_conv1 at 192 px).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from jaxcombine.stats import linalg

EPS = 1e-8
EIG_FLOOR = 1e-8  # eigenvalues below this fraction of the largest are rounding noise


def points(features: jax.Array) -> jax.Array:
    """(…, H, W, C) → (…, H·W, C) float32: a feature map as a set of points."""
    *batch, h, w, c = features.shape
    return features.astype(jnp.float32).reshape(*batch, h * w, c)


def point_weights(mask: jax.Array, features: jax.Array) -> jax.Array:
    """(H, W) mask over the positions of (…, H, W, C) ``features`` → (H·W,) weights summing
    to 1 (the mask divided by its area Σm; an all-zero mask gives all-zero weights)."""
    if mask.shape != features.shape[-3:-1]:
        raise ValueError(f"mask {mask.shape} does not match features {features.shape}")
    m = mask.astype(jnp.float32).reshape(-1)
    return m / (jnp.sum(m) + EPS)


def covariance(features: jax.Array, mask: jax.Array | None = None) -> jax.Array:
    """(…, H, W, C) → (…, C, C): mean-centred Gram matrix, divided by H·W
    (or the mask's area: the covariance of the masked region's points).

    Unlike the Gram matrix it ignores a constant shift of the features.
    """
    x = points(features)
    if mask is not None:
        w = point_weights(mask, features)
        xc = x - jnp.einsum("p,...pc->...c", w, x)[..., None, :]
        return jnp.einsum("p,...pc,...pd->...cd", w, xc, xc)
    xc = x - jnp.mean(x, axis=-2, keepdims=True)
    return jnp.einsum("...pc,...pd->...cd", xc, xc) / x.shape[-2]


# --------------------------------------------------------------------------- W2


def gaussian_target(
    features: "jax.Array | list[jax.Array]", weights: jax.Array
) -> dict[str, jax.Array]:
    """The Gaussian fit of (S, H, W, C) feature maps mixed with ``weights`` (S,), summing to 1.

    Several maps (blended styles) are pooled as one weighted set of points, so
    the fit is the mixture's: μ = Σ wₛ μₛ and Σ = Σ wₛ E_s[(y − μ)(y − μ)ᵀ]
    (crowsonkb/style-transfer-pytorch blends means and second raw moments
    linearly, which is the same). Returns ``mean`` (C,), ``cov`` (C, C),
    ``cov_sqrt`` = Σ^½ (C, C), computed from the SVD of the stacked, centred and
    √weight-scaled points (Σ = ZᵀZ), and ``scale`` = tr Σ + ‖μ‖², the mean
    squared norm of the target points (the W2 term is divided by it).

    ``features`` may also be a list of S maps (H_s, W_s, C) of different sizes (styles
    at their own ``style_scale``): each map's points then carry weight wₛ/Nₛ.
    """
    if isinstance(features, (list, tuple)):
        return _gaussian_mixture([points(f).reshape(-1, f.shape[-1]) for f in features], weights)
    y = points(features)  # (S, N, C)
    if y.ndim != 3 or weights.shape != y.shape[:1]:
        raise ValueError(
            f"expected (S, H, W, C) features and (S,) weights, got {features.shape}, "
            f"{weights.shape}"
        )
    n = y.shape[1]
    mean = jnp.einsum("s,snc->c", weights, y) / n
    z = (y - mean[None, None]) * jnp.sqrt(weights / n)[:, None, None]
    return _gaussian_fit(mean, z.reshape(-1, y.shape[-1]))


def _gaussian_mixture(ys: list[jax.Array], weights: jax.Array) -> dict[str, jax.Array]:
    """:func:`gaussian_target` of point sets (Nₛ, C) of different sizes."""
    if len(ys) != weights.shape[0]:
        raise ValueError(f"{len(ys)} point sets for {weights.shape[0]} weights")
    mean = sum(w * jnp.mean(y, axis=0) for w, y in zip(weights, ys))
    z = jnp.concatenate([(y - mean[None]) * jnp.sqrt(w / y.shape[0]) for w, y in zip(weights, ys)])
    return _gaussian_fit(mean, z)


def _gaussian_fit(mean: jax.Array, z: jax.Array) -> dict[str, jax.Array]:
    """The target dict from the mean and the centred, √weight-scaled points ``z`` (P, C):
    Σ = ZᵀZ, and Σ^½ = V diag(σ) Vᵀ from Z's SVD (no squared condition number)."""
    _, s, vt = linalg.svd(z)
    cov = z.T @ z
    return {
        "mean": mean,
        "cov": cov,
        "cov_sqrt": (vt.T * s[None]) @ vt,
        "scale": jnp.trace(cov) + jnp.sum(jnp.square(mean)),
    }


def w2_gaussian(
    features: jax.Array, target: dict[str, jax.Array], mask: jax.Array | None = None
) -> jax.Array:
    """W2² between the Gaussian fit of (H, W, C) ``features`` and ``target``
    (:func:`gaussian_target`), over the target's ``scale`` = E‖y‖².

    So the term is 1.0 for an all-zero feature map (as the relative squared
    errors are) and 0 for features with the target's mean and covariance,
    whatever the layer's activation scale or the image size. Clamped at 0
    (float32 rounding can make an exact match slightly negative). With a ``mask`` the
    fit is that of the masked points, each weighted by its mask value over the area:
    μ = Σ wᵢxᵢ, Σx = Σ wᵢ(xᵢ−μ)(xᵢ−μ)ᵀ, and the cross term's A = diag(√w) Xc Σt^½.
    """
    x = points(features)
    if x.ndim != 2 or target["cov"].shape != (x.shape[-1],) * 2:
        raise ValueError(
            f"shape mismatch: features {features.shape} vs target {target['cov'].shape}"
        )
    if mask is not None:
        w = point_weights(mask, features)
        mean = w @ x
        xc = x - mean[None]
        cross = trace_sqrt_gram(jnp.sqrt(w)[:, None] * (xc @ target["cov_sqrt"]))
        w2 = (
            jnp.sum(jnp.square(mean - target["mean"]))
            + jnp.sum(w[:, None] * jnp.square(xc))
            + jnp.trace(target["cov"])
            - 2.0 * cross
        )
        return jnp.maximum(w2, 0.0) / (target["scale"] + EPS)
    n = x.shape[0]
    mean = jnp.mean(x, axis=0)
    xc = x - mean[None]
    cross = trace_sqrt_gram(xc @ target["cov_sqrt"]) / jnp.sqrt(jnp.float32(n))
    w2 = (
        jnp.sum(jnp.square(mean - target["mean"]))
        + jnp.sum(jnp.square(xc)) / n
        + jnp.trace(target["cov"])
        - 2.0 * cross
    )
    return jnp.maximum(w2, 0.0) / (target["scale"] + EPS)


def trace_sqrt_gram(a: jax.Array) -> jax.Array:
    """tr((AᵀA)^½) = Σ √λ, from the eigenvalues of the smaller of AᵀA and AAᵀ; eigenvalues
    below :data:`EIG_FLOOR`·λmax count as 0 (see the module docstring). The eigen-solve
    is :mod:`jaxcombine.stats.linalg`'s, which never deadlocks XLA:CPU under ``vmap``."""
    n, c = a.shape
    return linalg.sum_sqrt_eigenvalues(a.T @ a if n >= c else a @ a.T, EIG_FLOOR)


# --------------------------------------------------------------------------- sliced W


def directions(key: jax.Array, channels: int, count: int) -> jax.Array:
    """(channels, count) random unit vectors, uniform on the sphere."""
    d = jax.random.normal(key, (channels, count), jnp.float32)
    return d / jnp.linalg.norm(d, axis=0, keepdims=True)


def swd_target(features: "jax.Array | list[jax.Array]", weights: jax.Array) -> dict[str, jax.Array]:
    """What :func:`sliced_wasserstein` compares against: the points themselves.

    Directions change every step, so sorted projections cannot be kept; the
    (S, H, W, C) maps are stored as (S, N, C) points with their blend
    ``weights`` (S,), summing to 1: several styles are one weighted point set.
    A list of maps (H_s, W_s, C) of different sizes (styles at their own
    ``style_scale``) is stored as one set (1, ΣNₛ, C) with ``point_weights``
    (ΣNₛ,): wₛ/Nₛ for each point of map s.
    """
    if isinstance(features, (list, tuple)):
        ys = [points(f).reshape(-1, f.shape[-1]) for f in features]
        if len(ys) != weights.shape[0]:
            raise ValueError(f"{len(ys)} feature maps for {weights.shape[0]} weights")
        pw = jnp.concatenate(
            [
                jnp.full((y.shape[0],), 1.0, jnp.float32) * (w / y.shape[0])
                for w, y in zip(weights.astype(jnp.float32), ys)
            ]
        )
        return {
            "points": jnp.concatenate(ys)[None],
            "weights": jnp.ones((1,), jnp.float32),
            "point_weights": pw,
        }
    y = points(features)
    if y.ndim != 3 or weights.shape != y.shape[:1]:
        raise ValueError(
            f"expected (S, H, W, C) features and (S,) weights, got {features.shape}, "
            f"{weights.shape}"
        )
    return {"points": y, "weights": weights.astype(jnp.float32)}


# Chosen by measurement (docs/benchmarks.md): XLA:CPU sorts through one comparator call
# per comparison, 7-25x slower than numpy's argsort of the same (64, 36864) projections,
# so on these backends the order is computed on the host (a pure callback; the values
# are then gathered in the program, so gradients flow as through jnp.sort). Elsewhere
# (GPU radix sorts), and whenever there are several devices (the starts are then
# sharded, and a host callback in a partitioned CPU program was seen to hang), XLA's own.
HOST_SORT_BACKENDS = ("cpu",)


def argsort_rows(values: jax.Array, host: bool = True) -> jax.Array:
    """The order sorting each row of ``values`` (…, M): int32, no gradient. ``host=False``:
    always XLA's own sort (no host callback)."""
    values = jax.lax.stop_gradient(values)
    if not host or jax.default_backend() not in HOST_SORT_BACKENDS or jax.device_count() > 1:
        return jnp.argsort(values, axis=-1).astype(jnp.int32)
    return jax.pure_callback(
        lambda v: np.argsort(v, axis=-1).astype(np.int32),
        jax.ShapeDtypeStruct(values.shape, jnp.int32),
        values,
        vmap_method="broadcast_all",
    )


def sort_rows(values: jax.Array) -> jax.Array:
    """Each row of ``values`` (…, M) sorted ascending; differentiable like ``jnp.sort``."""
    return jnp.take_along_axis(values, argsort_rows(values), axis=-1)


def _quantiles(
    values: jax.Array, weights: jax.Array, levels: jax.Array, host: bool = True
) -> jax.Array:
    """Quantiles at ``levels`` ((n,), or (D, n): one set per row) of each row of ``values``
    (D, M) whose columns carry ``weights`` (M,) summing to 1: the target's sorted
    projections, resampled to the output's points. ``host``: see :func:`argsort_rows`."""
    order = argsort_rows(values, host)
    ordered = jnp.take_along_axis(values, order, axis=-1)
    cum = jnp.cumsum(weights[order], axis=-1)  # (D, M)
    levels = jnp.broadcast_to(levels, (values.shape[0], levels.shape[-1]))
    idx = jax.vmap(jnp.searchsorted)(cum, levels)
    return jnp.take_along_axis(ordered, jnp.minimum(idx, values.shape[-1] - 1), axis=-1)


def sliced_wasserstein(
    features: jax.Array,
    target: dict[str, jax.Array],
    key: jax.Array,
    count: int | None = None,
    mask: jax.Array | None = None,
) -> jax.Array:
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

    With a ``mask`` the output is a weighted point set too (weights wᵢ = mᵢ/Σm):
    sorted output point i spans the quantile levels [cᵢ₋₁, cᵢ) of its cumulative
    weight, is compared with the target's quantile at the middle of that span, and
    counts wᵢ times: the 1-D W2² between the two weighted distributions, with the
    target's quantile function read at one level per output point (exact for the
    unmasked case above). Points of weight 0 get no gradient. The masked form sorts with
    XLA's own sort, no host callback: with style masks a step holds several such sorts
    per term, and host-sort callbacks in that program were seen to hang XLA:CPU.
    """
    x = points(features)
    y, w = target["points"], target["weights"]
    if x.ndim != 2 or y.shape[-1] != x.shape[-1]:
        raise ValueError(f"shape mismatch: features {features.shape} vs target points {y.shape}")
    n, c = x.shape
    theta = directions(key, c, c if count is None else count)
    proj = jnp.einsum("nc,cd->dn", x, theta)  # (D, N)
    py = jnp.einsum("smc,cd->dsm", y, theta)  # (D, S, M)
    m = py.shape[-1]
    pw = target.get("point_weights")
    if pw is None:
        scale = jnp.einsum("s,s->", w, jnp.mean(jnp.square(y), axis=(1, 2)))
        pw = jnp.repeat(w / m, m)
    else:
        scale = jnp.einsum("p,p->", pw, jnp.mean(jnp.square(y[0]), axis=-1))
    flat = py.reshape(py.shape[0], -1)
    if mask is not None:
        wx = point_weights(mask, features)
        order = argsort_rows(proj, host=False)
        px = jnp.take_along_axis(proj, order, axis=-1)
        wsorted = wx[order]  # (D, N)
        levels = jnp.cumsum(wsorted, axis=-1) - 0.5 * wsorted
        qy = _quantiles(flat, pw, levels, host=False)
        return jnp.mean(jnp.sum(wsorted * jnp.square(px - qy), axis=-1)) / (scale + EPS)
    px = sort_rows(proj)  # (D, N): one sorted row per direction
    if "point_weights" not in target and py.shape[1:] == (1, n):
        qy = sort_rows(py[:, 0])
    else:
        qy = _quantiles(flat, pw, (jnp.arange(n, dtype=jnp.float32) + 0.5) / n)
    return jnp.mean(jnp.square(px - qy)) / (scale + EPS)
