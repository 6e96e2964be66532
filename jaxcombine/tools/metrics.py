"""``jaxcombine eval``: how close output images are to their style and to their content.

Per image, against the content and style images it was made from (docs/evaluation.md
says what each number measures and where it misleads):

* ``style_<statistic>`` for each of :data:`~jaxcombine.options.config.EVAL_STATISTICS`
  (gram, w2, swd, cmd, histogram): the mean over
  :data:`~jaxcombine.options.config.EVAL_STYLE_LAYERS` of that statistic's distance
  (:meth:`jaxcombine.stats.Statistic.distance`, with
  :data:`~jaxcombine.options.config.EVAL_STATISTIC_OPTIONS`: swd's
  :data:`~jaxcombine.options.config.EVAL_DIRECTIONS` fixed directions per layer, from
  :data:`~jaxcombine.options.config.EVAL_SEED`; a statistic that sorts positions is scored
  on a seeded random subset of :data:`~jaxcombine.options.config.EVAL_MAX_POINTS` positions
  where a layer has more) of VGG19
  features, through :data:`~jaxcombine.options.config.EVAL_POOLING` pooling: layers and
  pooling the presets do not optimise, so the score is not the loss. The style
  image is fitted (scaled to cover, centre-cropped) to each image's size, as a run does;
* ``content``: relative squared error of the ``block4_conv2`` activations
  (:data:`~jaxcombine.options.config.EVAL_CONTENT_LAYER`) against the content image
  resized to the image's size;
* ``ssim``: mean SSIM (Wang et al. 2004: Gaussian window 11, σ 1.5, K1 0.01,
  K2 0.03, valid region) of the luma Y = 0.299 R + 0.587 G + 0.114 B, against the content;
* ``lab_emd_style``, ``lab_emd_content``: colour-distribution distance in CIE Lab
  (sRGB, D65): for L, a and b, the earth mover's (Wasserstein-1) distance between
  the two images' 1-unit histograms, Σ|CDF₁ − CDF₂|·1, averaged over the three
  channels; in Lab units (a uniform shift of every pixel by 5 in L scores 5/3).
"""

from __future__ import annotations

import csv
import dataclasses
import io
import os
from functools import partial
from pathlib import Path
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jaxcombine import stats
from jaxcombine.errors import JaxcombineError
from jaxcombine.io import folders, images, records
from jaxcombine.networks import model
from jaxcombine.networks import store as weight_store
from jaxcombine.networks import weights as weights_lib
from jaxcombine.networks.forward import forward
from jaxcombine.options import config
from jaxcombine.options import layers as layers_lib
from jaxcombine.run import memory
from jaxcombine.stats import losses, statistics

COLUMNS = (
    "image",
    "width",
    "height",
    *(f"style_{name}" for name in config.EVAL_STATISTICS),
    "content",
    "ssim",
    "lab_emd_style",
    "lab_emd_content",
)

# --------------------------------------------------------------------------- SSIM


def gaussian_window(size: int = 11, sigma: float = 1.5) -> np.ndarray:
    """The 1-D Gaussian (size,), summing to 1."""
    x = np.arange(size, dtype=np.float64) - (size - 1) / 2
    w = np.exp(-0.5 * (x / sigma) ** 2)
    return w / w.sum()


def _filter_valid(img: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Separable 'valid' filtering of (H, W) by the outer product of ``w`` with itself."""
    k = len(w)
    rows = np.lib.stride_tricks.sliding_window_view(img, k, axis=0) @ w
    return np.lib.stride_tricks.sliding_window_view(rows, k, axis=1) @ w


def luma(rgb: np.ndarray) -> np.ndarray:
    """Rec. 601 luma of (H, W, 3) RGB 0–255, float64."""
    return np.asarray(rgb, np.float64) @ np.asarray([0.299, 0.587, 0.114])


def ssim(
    a: np.ndarray,
    b: np.ndarray,
    *,
    size: int = 11,
    sigma: float = 1.5,
    k1: float = 0.01,
    k2: float = 0.03,
    data_range: float = 255.0,
) -> float:
    """Mean SSIM of two (H, W) grey images (Wang et al. 2004), over the valid region."""
    if a.shape != b.shape or a.ndim != 2:
        raise ValueError(f"ssim needs two equal (H, W) images, got {a.shape} and {b.shape}")
    if min(a.shape) < size:
        raise JaxcombineError(
            f"image of {a.shape[1]}x{a.shape[0]} is smaller than the {size}-pixel SSIM window"
        )
    w = gaussian_window(size, sigma)
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    mu_a, mu_b = _filter_valid(a, w), _filter_valid(b, w)
    var_a = _filter_valid(a * a, w) - mu_a**2
    var_b = _filter_valid(b * b, w) - mu_b**2
    cov = _filter_valid(a * b, w) - mu_a * mu_b
    c1, c2 = (k1 * data_range) ** 2, (k2 * data_range) ** 2
    s = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / (
        (mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2)
    )
    return float(np.mean(s))


# --------------------------------------------------------------------------- colour

_SRGB_TO_XYZ = np.asarray(
    [
        [0.4124564, 0.3575761, 0.1804375],
        [0.2126729, 0.7151522, 0.0721750],
        [0.0193339, 0.1191920, 0.9503041],
    ]
)
_WHITE_D65 = np.asarray([0.95047, 1.0, 1.08883])
LAB_RANGES = ((0.0, 100.0), (-128.0, 128.0), (-128.0, 128.0))  # histogram range of L, a, b


def srgb_to_lab(rgb: np.ndarray) -> np.ndarray:
    """(…, 3) sRGB 0–255 → CIE L*a*b* (D65 white), float64."""
    c = np.asarray(rgb, np.float64) / 255.0
    linear = np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)
    t = (linear @ _SRGB_TO_XYZ.T) / _WHITE_D65
    delta = 6.0 / 29.0
    f = np.where(t > delta**3, np.cbrt(t), t / (3 * delta**2) + 4.0 / 29.0)
    return np.stack(
        [
            116.0 * f[..., 1] - 16.0,
            500.0 * (f[..., 0] - f[..., 1]),
            200.0 * (f[..., 1] - f[..., 2]),
        ],
        axis=-1,
    )


def lab_histogram_emd(a: np.ndarray, b: np.ndarray) -> tuple[float, float, float]:
    """Earth mover's distance between the L, a and b histograms (1-unit bins) of two
    RGB images (any sizes): Σ|CDF_a − CDF_b| per channel, in Lab units."""
    la, lb = srgb_to_lab(a).reshape(-1, 3), srgb_to_lab(b).reshape(-1, 3)
    out = []
    for ch, (lo, hi) in enumerate(LAB_RANGES):
        bins = np.arange(lo, hi + 1.0, 1.0)
        ha = np.histogram(np.clip(la[:, ch], lo, hi), bins)[0] / len(la)
        hb = np.histogram(np.clip(lb[:, ch], lo, hi), bins)[0] / len(lb)
        out.append(float(np.sum(np.abs(np.cumsum(ha) - np.cumsum(hb)))))
    return out[0], out[1], out[2]


# --------------------------------------------------------------------------- VGG distances


@partial(jax.jit, static_argnames=("layers",))
def _style_distances(feats, style_feats, *, layers):
    """(n_statistics, n_layers): the distance of every :data:`~jaxcombine.options.config.
    EVAL_STATISTICS` per layer, each statistic's own (:meth:`stats.Statistic.distance`).
    A statistic that is no sum over positions (it sorts them) is scored on seeded random
    subsets of the positions (:func:`_subsample`), so its memory is bounded."""
    key = jax.random.key(config.EVAL_SEED)
    out = []
    for i, layer in enumerate(layers):
        x, s = feats[layer], style_feats[layer]
        k = jax.random.fold_in(key, i)
        row = []
        for name in config.EVAL_STATISTICS:
            stat = stats.get(name, **config.EVAL_STATISTIC_OPTIONS.get(name, {}))
            if stat.tileable:
                row.append(stat.distance(x, s, k))
            else:
                xs, ss = (_subsample(f, jax.random.fold_in(k, j)) for j, f in ((1, x), (2, s)))
                row.append(stat.distance(xs, ss, k))
        out.append(jnp.stack(row))
    return jnp.stack(out, axis=1)


def _subsample(features: jax.Array, key: jax.Array) -> jax.Array:
    """(H, W, C) features as at most :data:`~jaxcombine.options.config.EVAL_MAX_POINTS` positions
    (a seeded random subset, shaped (M, 1, C)), so the sliced distance's memory is bounded."""
    pts = statistics.points(features)
    if pts.shape[0] <= config.EVAL_MAX_POINTS:
        return features
    idx = jax.random.choice(key, pts.shape[0], (config.EVAL_MAX_POINTS,), replace=False)
    return pts[idx][:, None, :]


# The style distances by statistic name, for callers scoring other layers (the judge).
STYLE_STATISTICS = tuple(c[len("style_") :] for c in COLUMNS if c.startswith("style_"))
style_distances = _style_distances  # (len(STYLE_STATISTICS), n_layers)

_content_distance = jax.jit(partial(losses.distance, config.EVAL_CONTENT_STATISTIC))


# --------------------------------------------------------------------------- memory

# Peak bytes of scoring one image, fitted to peaks measured with /usr/bin/time (max RSS,
# KiB x 1024) of `jaxcombine eval` with the five style distances (gram, w2, swd, cmd,
# histogram) at 256x192, 512x384, 768x576, 1024x768 and 1600x1200 (2-core AMD EPYC,
# 24 GiB, Linux CPU, 2026-12-02: 2.26, 3.02, 4.56, 6.16 and 11.64 GB; the least-squares fit
# is within 5 % of each, and times memory.MARGIN above all). With the three distances of
# before (gram, w2, swd) the peaks were 1.85, 2.63, 3.73, 4.70 and 8.54 GB: cmd's power
# sums over every position cost most of the difference. Three VGG19 forwards to
# block5_conv2 and their taps, the distances, the SSIM and Lab arrays grow with the
# pixels; the sorting distances' arrays with the positions they keep per layer (at most
# EVAL_MAX_POINTS).
EVAL_BASE = 1.753e9  # bytes: runtime, libraries, weights, the compiled programs
EVAL_BYTES_PER_PIXEL = 4713.0  # per pixel scored
EVAL_BYTES_PER_POINT = 3637.0  # per position the sorting distances keep, summed over layers


def estimate_bytes(height: int, width: int, *, read_pixels: int = 0) -> int:
    """Peak bytes of scoring one ``height`` × ``width`` image; ``read_pixels``: the
    pixels of the files decoded at their own size (the image, the content and the style),
    at :data:`~jaxcombine.run.memory.FEATURES_IMAGE_BYTES_PER_PIXEL`."""
    pixels = height * width
    kept = sum(
        min((height >> (b - 1)) * (width >> (b - 1)), config.EVAL_MAX_POINTS)
        for b in (int(layer[len("block")]) for layer in config.EVAL_STYLE_LAYERS)
    )
    total = (
        EVAL_BASE
        + EVAL_BYTES_PER_PIXEL * pixels
        + EVAL_BYTES_PER_POINT * kept
        + memory.FEATURES_IMAGE_BYTES_PER_PIXEL * read_pixels
    )
    return int(memory.MARGIN * total)


# A peak of another program the same command runs after eval's own, at the size scored
# (the judge's: jaxcombine.tools.judge.estimate_bytes): (height, width) → bytes.
OtherPeak = Callable[[int, int], int]


def command_bytes(
    height: int, width: int, *, read_pixels: int = 0, other: OtherPeak | None = None
) -> int:
    """The estimated peak of scoring one ``height`` × ``width`` image: eval's own
    (:func:`estimate_bytes`), or ``other``'s where it runs after it and needs more."""
    own = estimate_bytes(height, width, read_pixels=read_pixels)
    return max(own, other(height, width)) if other else own


def largest_size(
    height: int,
    width: int,
    limit: int,
    *,
    read_pixels: int = 0,
    other: OtherPeak | None = None,
) -> int | None:
    """The largest longest side (px) at which a ``height`` × ``width`` image, downscaled,
    is estimated to fit in ``limit`` bytes; None if not even the smallest scorable one does."""
    low, high = 0, max(height, width)
    while low < high:  # the estimate grows with the size: bisect
        mid = (low + high + 1) // 2
        w, h = images.target_size(width, height, size=mid)
        if command_bytes(h, w, read_pixels=read_pixels, other=other) <= limit:
            low = mid
        else:
            high = mid - 1
    return low if low >= layers_lib.min_side(config.EVAL_STYLE_LAYERS) else None


def check_memory(
    sizes: Sequence[tuple[int, int]],
    *,
    max_memory: float | None = None,
    read_pixels: int = 0,
    remedy: str = "--size {size} (scores a downscaled copy)",
    other: OtherPeak | None = None,
) -> None:
    """Refuse, in one line and before any work, scoring images of ``sizes`` ((height,
    width), scored one at a time) whose estimated peak (:func:`command_bytes`, with
    ``other``: the judge's) exceeds ``max_memory`` GB (default: the memory available);
    ``remedy`` names what to change, ``{size}`` the largest longest side that fits."""
    limit = int(max_memory * 1e9) if max_memory else memory.available_bytes()
    h, w = max(sizes, key=lambda hw: hw[0] * hw[1])
    need = command_bytes(h, w, read_pixels=read_pixels, other=other)
    if need <= limit:
        return
    size = largest_size(h, w, limit, read_pixels=read_pixels, other=other)
    fix = remedy.format(size=size) if size else "a machine with more memory"
    raise JaxcombineError(
        f"eval needs about {memory.format_bytes(need)} (scoring {w}x{h}) but "
        f"{memory.format_bytes(limit)} is available; refused before any work: use {fix}, "
        "or --max-memory to override"
    )


# --------------------------------------------------------------------------- evaluate


@dataclasses.dataclass
class Evaluation:
    """One row per image (:data:`COLUMNS`), with per-layer style distances beside."""

    rows: list[dict[str, Any]]
    layers: dict[str, dict[str, list[float]]]  # image → {statistic: per style layer, …}
    settings: dict[str, Any]

    def to_csv(self) -> str:
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=COLUMNS, lineterminator="\n")
        writer.writeheader()
        for row in self.rows:
            writer.writerow(
                {k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()}
            )
        return buf.getvalue()

    def to_dict(self) -> dict[str, Any]:
        return {"settings": self.settings, "rows": self.rows, "per_layer": self.layers}


def evaluate(
    image_paths: Sequence[str | os.PathLike],
    *,
    content: str | os.PathLike | None = None,
    style: str | os.PathLike | None = None,
    out: str | os.PathLike | None = None,
    pooling: str = config.EVAL_POOLING,
    weights: str | os.PathLike | None = None,
    max_pixels: int = config.DEFAULT_MAX_PIXELS,
    size: int | None = None,
    max_memory: float | None = None,
    other_peak: OtherPeak | None = None,
) -> Evaluation:
    """Score each image against ``content`` and ``style`` (default: the bundled pair).

    Images are scored at their own size, or downscaled so their longest side is at most
    ``size`` (recorded in the settings: scores depend on the size). Before any work,
    ``out`` is checked and the peak memory estimated (:func:`check_memory`); an image
    that would not fit in ``max_memory`` GB (default: the memory available) is refused
    in one line naming the ``size`` that fits (``other_peak``: what the caller runs after
    this at the same size needs, the judge's forward, counted too). With ``out``
    (``table.csv``) the table and, with the settings, weights fingerprint and per-layer
    values, ``table.json`` beside it are written together or not at all. Example::

        >>> ev = jaxcombine.evaluate(["out/content.png"])
        >>> ev.rows[0]["ssim"], ev.rows[0]["style_w2"]
    """
    if not image_paths:
        raise JaxcombineError("give at least one image to evaluate")
    if pooling not in config.POOLINGS:
        raise JaxcombineError(f"unknown pooling {pooling!r}; choose {', '.join(config.POOLINGS)}")
    if out is not None:
        folders.check_table_path(out)
    if size is not None and size < 1:
        raise JaxcombineError(f"size must be a positive number of pixels, got {size}")
    content_path = Path(content or images.CONTENT)
    style_path = Path(style or images.STYLE)
    header = partial(images.header_size, max_pixels=max_pixels)
    found = [header(p) for p in image_paths]  # every file checked before any work
    scored = [_scored_size(h, w, size) for h, w in found]
    read_pixels = sum(h * w for h, w in (header(content_path), header(style_path)))
    check_memory(
        scored,
        max_memory=max_memory,
        read_pixels=read_pixels + max(h * w for h, w in found),
        other=other_peak,
    )
    style_layers = config.EVAL_STYLE_LAYERS
    taps = layers_lib.check_layers([*style_layers, config.EVAL_CONTENT_LAYER], "vgg19")
    for h, w in scored:
        layers_lib.check_size(h, w, taps)
    read = partial(images.read, max_pixels=max_pixels)
    content_rgb, style_rgb = read(content_path), read(style_path)
    w8 = weights_lib.load("vgg19", weights)
    variables = model.variables(model.trim(w8.arrays, taps, "vgg19"))

    def feats(rgb):
        acts = forward(variables, jnp.asarray(rgb)[None], taps=taps, pooling=pooling)
        return {k: v[0] for k, v in acts.items()}

    rows, per_layer = [], {}
    for path, (h, w) in zip(image_paths, scored):
        with memory.out_of_memory_as_error(
            f"eval of {w}x{h}", remedies=("a smaller --size (scores a downscaled copy)",)
        ):
            rgb = images.resize(read(path), (w, h))
            c = images.resize(content_rgb, (w, h))
            s = images.fit(style_rgb, h, w)
            fx, fc, fs = feats(rgb), feats(c), feats(s)
            dist = np.asarray(_style_distances(fx, fs, layers=style_layers), np.float64)
            content_distance = float(
                _content_distance(fx[config.EVAL_CONTENT_LAYER], fc[config.EVAL_CONTENT_LAYER])
            )
            lab_s, lab_c = lab_histogram_emd(rgb, s), lab_histogram_emd(rgb, c)
            structural = ssim(luma(rgb), luma(c))
        name = str(path)
        rows.append(
            {
                "image": name,
                "width": w,
                "height": h,
                **{
                    f"style_{stat}": float(dist[j].mean())
                    for j, stat in enumerate(config.EVAL_STATISTICS)
                },
                "content": content_distance,
                "ssim": structural,
                "lab_emd_style": float(np.mean(lab_s)),
                "lab_emd_content": float(np.mean(lab_c)),
            }
        )
        per_layer[name] = {
            "layers": list(style_layers),
            **{stat: dist[j].tolist() for j, stat in enumerate(config.EVAL_STATISTICS)},
            "lab_emd_style_Lab": list(lab_s),
            "lab_emd_content_Lab": list(lab_c),
        }
    settings = {
        "command": "eval",
        "content": str(content_path.resolve()),
        "style": str(style_path.resolve()),
        "model": "vgg19",
        "pooling": pooling,
        "size": size,
        "scored_at": "own size" if size is None else f"longest side at most {size} px",
        "style_layers": list(style_layers),
        "content_layer": config.EVAL_CONTENT_LAYER,
        "statistics": list(config.EVAL_STATISTICS),
        "statistic_options": config.EVAL_STATISTIC_OPTIONS,
        "seed": config.EVAL_SEED,
        "ssim": {"window": 11, "sigma": 1.5, "k1": 0.01, "k2": 0.03, "on": "Rec.601 luma"},
        "lab_histogram": "earth mover's distance of 1-unit L, a, b histograms, mean of 3",
    }
    result = Evaluation(rows, per_layer, settings)
    if out is not None:
        write(result, out, w8)
    return result


def _scored_size(height: int, width: int, size: int | None) -> tuple[int, int]:
    """(height, width) an image is scored at: its own, or downscaled to longest side ``size``."""
    if size is None or max(height, width) <= size:
        return height, width
    w, h = images.target_size(width, height, size=size)
    return h, w


def write(result: Evaluation, out: str | os.PathLike, w8: weight_store.Weights) -> Path:
    """``out`` (CSV) and the same name with ``.json`` (settings, rows, per-layer values),
    both or neither (:func:`records.atomic_write_all`)."""
    out = Path(out)
    record = records.record(
        result.settings,
        weights=w8,
        rows=result.rows,
        per_layer=result.layers,
    )
    records.atomic_write_all(
        {out: result.to_csv(), out.with_suffix(".json"): records.json_text(record)}
    )
    return out
