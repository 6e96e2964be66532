"""``jaxcombine stylize``: a trained network applied to photos of any size.

Photos of one size go through the network in batches; each output is written as
``<photo>-<style>.png`` with a JSON record beside it, atomically, as ``run`` writes.

An image whose forward would not fit in memory (or any image, with ``tile``) is computed
in tiles, and exactly: instance normalisation needs each layer's mean and variance over
the whole image, so they are gathered one normalisation after another (the tiles run up
to normalisation i with the statistics of the earlier ones fixed, and each tile's core
adds its moments), then every tile runs through with all of them. Each tile is a window
of the same size around its core with :func:`network.receptive_radius` of context on
every side that is not the image's border, so its core is what the whole image would
give, to float32 rounding. That costs about ``norm_count / 2`` extra forwards, paid only
by images too large for one pass.
"""

from __future__ import annotations

import dataclasses
import math
import time
from functools import partial
from pathlib import Path
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jaxcombine.errors import JaxcombineError
from jaxcombine.io import images, records
from jaxcombine.networks import model
from jaxcombine.options.config import AUTO, StylizeConfig, TrainConfig
from jaxcombine.run import memory, outputs, runner
from jaxcombine.train import network, objective
from jaxcombine.train.checkpoints import Checkpoints

FIXED_BYTES = 300_000_000  # runtime and compiled programs, beside the activations


@dataclasses.dataclass(frozen=True)
class Trained:
    """A trained network folder's parameters (leading axis: networks), network, labels,
    and what its checkpoint says (``meta``)."""

    net: network.TransformNet
    params: Any
    labels: tuple[str, ...]
    meta: dict
    folder: Path

    def outputs(self) -> list[tuple[int, int, str]]:
        """(network, style row, label) of every style the folder can apply."""
        if self.net.styles > 1:
            return [(0, s, lab) for s, lab in enumerate(self.labels)]
        return [(n, 0, lab) for n, lab in enumerate(self.labels)]


def load(folder: str | Path, conv: str = AUTO) -> Trained:
    """The latest checkpoint of the training folder ``folder``, its network set to run its
    3×3 convolutions by ``conv`` (auto: :func:`model.conv_for`, Winograd on CPUs)."""
    ckpt = Checkpoints(folder, read_only=True)
    try:
        step = ckpt.latest()
        if step is None:
            raise JaxcombineError(f"{folder} holds no finished checkpoint")
        meta = ckpt.meta(step)
        net = network.TransformNet(**meta["net"], conv=model.conv_for(conv))
        config = TrainConfig(**meta["config"])
        like = jax.eval_shape(lambda: objective.init_state(net, 0, meta["nets"], config.lr))
        state, meta = ckpt.restore(step, like)
    finally:
        ckpt.close()
    return Trained(net, state.params, tuple(meta["labels"]), meta, Path(folder))


@jax.jit
def _select(params, n):
    return jax.tree.map(lambda p: p[n], params)


def apply(trained: Trained, rgb: np.ndarray, net_index: int, style: int) -> np.ndarray:
    """One network of ``trained`` on (B, H, W, 3) photos of one size (any H, W: padded by
    reflection to multiples of 4 and cropped back)."""
    params = _select(trained.params, net_index)
    padded, (h, w) = _pad4(rgb)
    index = jnp.full((rgb.shape[0],), style, jnp.int32)
    return np.asarray(_forward(trained.net, params, padded, index))[:, :h, :w]


def _pad4(rgb: np.ndarray) -> tuple[np.ndarray, tuple[int, int]]:
    h, w = rgb.shape[-3:-1]
    ph, pw = (-h) % 4, (-w) % 4
    if ph or pw:
        mode = "reflect" if min(h, w) > 4 else "edge"
        rgb = np.pad(rgb, ((0, 0), (0, ph), (0, pw), (0, 0)), mode=mode)
    return rgb, (h, w)


@partial(jax.jit, static_argnames=("net", "upto"))
def _forward(net, params, rgb, style, norm_stats=(), upto=None):
    return network.forward(net, params, rgb, style, norm_stats, upto)


# --------------------------------------------------------------------------- exact tiles


def windows(length: int, tile: int, halo: int) -> list[tuple[int, int, int]]:
    """(window start, core start, core end) along one axis of ``length`` px: cores of
    ``tile`` px cover it; every window is ``min(length, tile + 2 halo)`` long and has
    ``halo`` px of context beside its core wherever it does not meet the border."""
    size = min(length, tile + 2 * halo)
    out = []
    for core in range(0, length, tile):
        end = min(core + tile, length)
        start = min(max(core - halo, 0), length - size)
        out.append((start, core, end))
    return out


def apply_tiled(
    trained: Trained, rgb: np.ndarray, net_index: int, style: int, tile: int, batch: int = 4
) -> np.ndarray:
    """One (H, W, 3) photo through one network in ``tile``-px tiles (a multiple of 4),
    equal to :func:`apply` on the whole to float32 rounding (see the module's docstring)."""
    if tile % 4 or tile <= 0:
        raise JaxcombineError(f"tile must be a positive multiple of 4, got {tile}")
    params = _select(trained.params, net_index)
    padded, (h0, w0) = _pad4(rgb[None])
    padded = padded[0]
    h, w = padded.shape[:2]
    halo = 4 * math.ceil(network.receptive_radius(trained.net.res_blocks) / 4)
    grid = [(r, c) for r in windows(h, tile, halo) for c in windows(w, tile, halo)]
    wins = np.stack(
        [
            padded[r[0] : r[0] + _len(h, tile, halo), c[0] : c[0] + _len(w, tile, halo)]
            for r, c in grid
        ]
    )
    strides = _norm_strides(trained.net.res_blocks)
    stats: list[tuple[jax.Array, jax.Array]] = []
    for i, s in enumerate(strides):
        count, mean, m2 = 0, 0.0, 0.0
        for lo in range(0, len(grid), batch):
            acts = _run(trained.net, params, wins[lo : lo + batch], style, stats, i)
            for a, (r, c) in zip(acts, grid[lo : lo + batch]):
                core = a[
                    (r[1] - r[0]) // s : (r[2] - r[0]) // s, (c[1] - c[0]) // s : (c[2] - c[0]) // s
                ]
                core = core.reshape(-1, core.shape[-1]).astype(np.float64)
                count, mean, m2 = _merge(count, mean, m2, core)
        stats.append((jnp.asarray(mean, jnp.float32), jnp.asarray(m2 / count, jnp.float32)))
    out = np.empty((h, w, 3), np.float32)
    for lo in range(0, len(grid), batch):
        ys = _run(trained.net, params, wins[lo : lo + batch], style, stats, None)
        for y, (r, c) in zip(ys, grid[lo : lo + batch]):
            out[r[1] : r[2], c[1] : c[2]] = y[r[1] - r[0] : r[2] - r[0], c[1] - c[0] : c[2] - c[0]]
    return out[:h0, :w0]


def _len(length: int, tile: int, halo: int) -> int:
    return min(length, tile + 2 * halo)


def _run(net, params, wins, style, stats, upto):
    b = wins.shape[0]
    given = tuple(
        (jnp.broadcast_to(m, (b, m.shape[-1])), jnp.broadcast_to(v, (b, v.shape[-1])))
        for m, v in stats
    )
    index = jnp.full((b,), style, jnp.int32)
    return np.asarray(_forward(net, params, jnp.asarray(wins), index, given, upto))


def _norm_strides(res_blocks: int) -> list[int]:
    """Each normalisation's resolution, as the input's stride: 1, 2, 4, 4 per block, 2, 1."""
    return [1, 2, 4] + [4] * (2 * res_blocks) + [2, 1]


def _merge(count: int, mean: Any, m2: Any, values: np.ndarray):
    """Chan et al.'s pairwise update of (count, mean, sum of squared deviations)."""
    n = values.shape[0]
    m = values.mean(axis=0)
    q = ((values - m) ** 2).sum(axis=0)
    total = count + n
    delta = m - mean
    return total, mean + delta * n / total, m2 + q + delta**2 * count * n / total


# --------------------------------------------------------------------------- the command


def forward_bytes(trained: Trained, height: int, width: int, batch: int = 1) -> int:
    """Upper bound on a forward's memory for ``batch`` images of ``height`` × ``width``."""
    per_px = network.activation_bytes_per_pixel(
        trained.net.width, trained.net.res_blocks, backward=False
    )
    return FIXED_BYTES + batch * height * width * (per_px + 24)


def tile_for(trained: Trained, limit: int) -> int:
    """The largest tile (a multiple of 4) whose window's forward fits in ``limit`` bytes."""
    halo = 4 * math.ceil(network.receptive_radius(trained.net.res_blocks) / 4)
    per_px = forward_bytes(trained, 1, 1) - FIXED_BYTES
    side = math.isqrt(max(0, limit - FIXED_BYTES) // per_px)
    tile = (side - 2 * halo) // 4 * 4
    if tile < 4:
        raise JaxcombineError(
            f"not even one {4 + 2 * halo}-px tile fits in {memory.format_bytes(limit)}; "
            "raise --max-memory"
        )
    return tile


def stylize(
    paths: Sequence[str | Path],
    net_folder: str | Path,
    out: str | Path,
    config: StylizeConfig = StylizeConfig(),
    *,
    progress: bool = True,
) -> list[Path]:
    """Apply the network in ``net_folder`` to every photo of ``paths``; returns the images
    written to ``out``. Every photo is checked (a one-line error) before any is processed."""
    if not paths:
        raise JaxcombineError("give one or more photos to stylize")
    sizes = [images.output_size(p, size=config.size, max_pixels=config.max_pixels) for p in paths]
    with runner.output_folder(out) as folder:
        trained = load(net_folder, config.conv)
        chosen = trained.outputs()
        if config.style is not None:
            if config.style >= len(chosen):
                raise JaxcombineError(
                    f"style {config.style} asked, but {net_folder} has {len(chosen)} "
                    f"({', '.join(lab for _, _, lab in chosen)}); styles count from 0"
                )
            chosen = [chosen[config.style]]
        limit = int(config.max_memory * 1e9) if config.max_memory else memory.available_bytes()
        groups: dict[tuple[int, int], list[int]] = {}
        for i, hw in enumerate(sizes):
            groups.setdefault(hw, []).append(i)
        bar = outputs.ProgressBar(len(paths) * len(chosen), unit="image", enabled=progress)
        written = []
        try:
            for (h, w), members in groups.items():
                tile = config.tile
                if not tile and forward_bytes(trained, h, w) > limit:
                    tile = tile_for(trained, limit)
                per_batch = max(1, min(config.batch, limit // forward_bytes(trained, h, w)))
                step = 1 if tile else per_batch
                for lo in range(0, len(members), step):
                    idx = members[lo : lo + step]
                    rgb = np.stack(
                        [
                            images.read(paths[i], size=config.size, max_pixels=config.max_pixels)
                            for i in idx
                        ]
                    )
                    for n, s, label in chosen:
                        t = time.perf_counter()
                        if tile:
                            result = apply_tiled(trained, rgb[0], n, s, tile, config.batch)[None]
                        else:
                            result = apply(trained, rgb, n, s)
                        seconds = (time.perf_counter() - t) / len(idx)
                        for i, y in zip(idx, result):
                            written.append(
                                _write(folder, paths[i], label, y, trained, config, tile, seconds)
                            )
                        bar.update(len(idx))
        finally:
            bar.close()
    return written


def _write(folder, path, label, rgb, trained, config, tile, seconds) -> Path:
    name = f"{Path(path).stem}-{label}"
    image = images.write(folder / f"{name}.png", rgb)
    records.write_json(
        folder / f"{name}.json",
        records.record(
            config,
            photo=str(path),
            style=label,
            net=str(trained.folder),
            net_step=trained.meta.get("step"),
            net_fingerprint=trained.meta.get("fingerprint"),
            conv=trained.net.conv,
            training=trained.meta.get("config"),
            tile=tile,
            seconds=round(seconds, 4),
            image=image.name,
        ),
    )
    return image
