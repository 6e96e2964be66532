"""Float32 tolerances derived from the computation, not tuned to one CPU (issue 20, item 13).

A float32 result differs between CPUs (Intel, AMD; LAPACK builds; vector widths) by its
rounding error, so a test's tolerance is a bound on that error computed from the data in
float64, with the sizes and the conditioning that set it.
"""

import numpy as np

EPS32 = float(np.finfo(np.float32).eps)


def w2_rounding(x, target, mask=None) -> float:
    """A float32 error bound for ``statistics.w2_gaussian(x, target, mask)``, derived from the
    computation in float64: LAPACK's symmetric eigen-solve of the m×m matrix M (AᵀA or AAᵀ)
    errs by about ε·m·λmax per eigenvalue, so √λ errs by that over 2√λ, and an eigenvalue
    that is 0 in exact arithmetic may come out as noise up to ε·m·λmax (√ of it, once per
    such eigenvalue); the other terms are sums over n points and C channels."""
    pts = np.asarray(x, np.float64).reshape(-1, x.shape[-1])
    n, c = pts.shape
    w = np.full(n, 1.0 / n) if mask is None else np.asarray(mask, np.float64).reshape(-1)
    w = w / w.sum()
    mean = w @ pts
    xc = pts - mean
    a = np.sqrt(w)[:, None] * (xc @ np.asarray(target["cov_sqrt"], np.float64))
    m = a.T @ a if n >= c else a @ a.T
    lam = np.linalg.eigvalsh(m)
    noise = EPS32 * m.shape[0] * lam.max()
    real = lam[lam > noise]
    cross_err = np.sum(noise / (2 * np.sqrt(real))) + (len(lam) - len(real)) * np.sqrt(noise)
    terms = (
        np.sum((mean - np.asarray(target["mean"], np.float64)) ** 2)
        + np.sum(w[:, None] * xc**2)
        + np.trace(np.asarray(target["cov"], np.float64))
        + 2 * np.sum(np.sqrt(real))
    )
    return float((EPS32 * (np.log2(n) + c + 2) * terms + 2 * cross_err) / target["scale"])
