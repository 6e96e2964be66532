"""Colour preservation: keep the content photo's colours, take only the painting's strokes.

Gatys et al. 2016, "Preserving Color in Neural Artistic Style Transfer", give two
ways, both here (``preserve_color`` in :mod:`jaxcombine.options.config`); all functions are
pure numpy on float RGB 0–255 images shaped (..., H, W, 3):

* ``luminance`` — transfer style on luminance only. Content and style enter VGG as
  grey images (their luminance in all three channels; the style's luminance first
  shifted and scaled to the content's mean and spread, as in the paper); the pixels
  are optimised as grey images (``engine.Problem.grey``: one value per pixel, the
  paper's luminance-only output), and every written image is that luminance with
  the content's chroma (:func:`recombine`). Colour space: YCbCr (ITU-R BT.601, full range, as in JPEG).
  It is linear and exactly invertible, needs no gamma or white point, and its Y is
  the luma the paper uses (YIQ's Y is the same weights); CIE Lab would separate
  lightness a little better perceptually but is non-linear, and a new L under fixed
  a, b leaves the RGB gamut far more often. In YCbCr, changing only Y adds the same
  amount to R, G and B, so the recombination is ``content + (Y(x) - Y(content))``.
* ``stats`` — before any feature is taken, each style image's colours are moved
  linearly onto the content's mean and covariance:
  ``x' = A (x - mu_s) + mu_c`` with ``A = Sigma_c^1/2 Sigma_s^-1/2`` (symmetric
  square roots; :func:`match_stats`).
* ``histogram`` — each channel of each style image is mapped monotonically onto the
  content's distribution of that channel (:func:`match_histograms`).

``stats`` and ``histogram`` change only the style images (the targets); the
optimised pixels are written as they are. Nothing here clips to 0–255 except
:func:`recombine` (its result is written): VGG accepts any values, and a clip would
undo an exact match.
"""

from __future__ import annotations

import numpy as np

from jaxcombine.options.config import PRESERVE_COLORS

MODES = PRESERVE_COLORS

# RGB → YCbCr (BT.601 full range, JPEG): rows Y, Cb, Cr; Cb and Cr are offset by 128.
RGB_TO_YCBCR = np.array(
    [[0.299, 0.587, 0.114], [-0.168736, -0.331264, 0.5], [0.5, -0.418688, -0.081312]]
)
YCBCR_TO_RGB = np.linalg.inv(RGB_TO_YCBCR)
CHROMA_OFFSET = np.array([0.0, 128.0, 128.0])


def _rgb(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, np.float64)
    if x.ndim < 3 or x.shape[-1] != 3:
        raise ValueError(f"expected RGB images shaped (..., H, W, 3), got {x.shape}")
    return x


def rgb_to_ycbcr(rgb: np.ndarray) -> np.ndarray:
    """(..., 3) RGB 0–255 → (..., 3) Y, Cb, Cr (0–255, chroma centred on 128), float64."""
    return _rgb(rgb) @ RGB_TO_YCBCR.T + CHROMA_OFFSET


def ycbcr_to_rgb(ycc: np.ndarray) -> np.ndarray:
    """Inverse of :func:`rgb_to_ycbcr` (not clipped), float64."""
    return (_rgb(ycc) - CHROMA_OFFSET) @ YCBCR_TO_RGB.T


def luminance(rgb: np.ndarray) -> np.ndarray:
    """(..., H, W, 3) → (..., H, W) luma Y = 0.299 R + 0.587 G + 0.114 B."""
    return _rgb(rgb) @ RGB_TO_YCBCR[0]


def grey(rgb: np.ndarray) -> np.ndarray:
    """The luminance in all three channels: what VGG sees in ``luminance`` mode (float32)."""
    return np.repeat(luminance(rgb)[..., None], 3, axis=-1).astype(np.float32)


def match_luminance(style: np.ndarray, content: np.ndarray) -> np.ndarray:
    """``style``'s luminance, shifted and scaled to the content's mean and standard
    deviation (Gatys et al. 2016, eq. 4), as a grey RGB image (float32, not clipped)."""
    ls, lc = luminance(style), luminance(content)
    sd = ls.std()
    scale = lc.std() / sd if sd > 0 else 1.0
    out = (ls - ls.mean()) * scale + lc.mean()
    return np.repeat(out[..., None], 3, axis=-1).astype(np.float32)


def recombine(pixels: np.ndarray, content: np.ndarray) -> np.ndarray:
    """The luminance of ``pixels`` with the chroma (Cb, Cr) of ``content``, clipped to 0–255.

    ``pixels`` is (..., H, W, 3) (several starts at once), ``content`` (H, W, 3).
    Where the new luminance and the content's chroma leave the RGB cube, the clip
    changes the chroma; elsewhere it is the content's to float precision.
    """
    content = _rgb(content)
    shift = luminance(pixels) - luminance(content)
    return np.clip(content + shift[..., None], 0.0, 255.0).astype(np.float32)


def _sym_power(cov: np.ndarray, power: float) -> np.ndarray:
    """``cov ** power`` for a symmetric positive semi-definite 3×3 matrix; eigenvalues are
    floored (a flat or grey image has a singular covariance)."""
    values, vectors = np.linalg.eigh(cov)
    floor = max(float(values.max()), 1.0) * 1e-8
    return (vectors * np.maximum(values, floor) ** power) @ vectors.T


def mean_cov(rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Colour mean (3,) and covariance (3, 3) over the pixels of one (H, W, 3) image."""
    flat = _rgb(rgb).reshape(-1, 3)
    mu = flat.mean(0)
    centred = flat - mu
    return mu, centred.T @ centred / len(flat)


def match_stats(style: np.ndarray, content: np.ndarray) -> np.ndarray:
    """``style`` (H, W, 3) with the colour mean and covariance of ``content`` (any size):
    ``A (x - mu_s) + mu_c``, ``A = Sigma_c^1/2 Sigma_s^-1/2``. float32, not clipped."""
    mu_s, cov_s = mean_cov(style)
    mu_c, cov_c = mean_cov(content)
    a = _sym_power(cov_c, 0.5) @ _sym_power(cov_s, -0.5)
    return ((_rgb(style) - mu_s) @ a.T + mu_c).astype(np.float32)


def match_histograms(style: np.ndarray, content: np.ndarray) -> np.ndarray:
    """Each channel of ``style`` mapped onto the content's values at the same quantile.

    A monotone map per channel (equal inputs stay equal): a style value whose
    cumulative frequency is ``q`` becomes the content's ``q``-quantile (midpoint
    rule, linear between content samples). With distinct style values and images
    of equal size the result holds exactly the content's values. float32.
    """
    style, content = _rgb(style), _rgb(content)
    out = np.empty_like(style)
    for c in range(3):
        values, inverse, counts = np.unique(
            style[..., c].ravel(), return_inverse=True, return_counts=True
        )
        q_style = (np.cumsum(counts) - counts / 2) / counts.sum()
        ref = np.sort(content[..., c].ravel())
        q_ref = (np.arange(ref.size) + 0.5) / ref.size
        out[..., c] = np.interp(q_style, q_ref, ref)[inverse].reshape(style.shape[:-1])
    return out.astype(np.float32)


def prepare_styles(styles: np.ndarray, content: np.ndarray, mode: str) -> np.ndarray:
    """The style images (S, H, W, 3) as VGG should see them under ``mode``, each alone."""
    if mode not in MODES:
        raise ValueError(f"unknown preserve_color {mode!r}; choose {', '.join(MODES)}")
    match = {
        "none": None,
        "luminance": match_luminance,
        "stats": match_stats,
        "histogram": match_histograms,
    }[mode]
    if match is None:
        return styles
    return np.stack([match(s, content) for s in styles])
