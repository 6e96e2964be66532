"""One job end to end: images and weights in, optimised images and records out.

``combine(...)`` is the Python face of ``jaxcombine run``::

    import jaxcombine
    result = jaxcombine.combine(init="content,style,noise", steps=200, size=256)
    result.images["noise-s0"]          # uint8 (H, W, 3)
    result.history                     # per-step loss components, per start

With ``out=...`` every image, history and JSON record is written atomically.
"""

from __future__ import annotations

import csv
import dataclasses
import functools
import io
import math
import os
import sys
import time
from pathlib import Path
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jaxcombine import engine, images, losses, model, recipe as recipe_lib, records, weights as weights_lib
from jaxcombine.errors import JaxcombineError


@dataclasses.dataclass(frozen=True)
class RunConfig:
    """Every option of a run; frozen, hashable and written to each output's JSON record.

    ``content``/``style`` default to the bundled public-domain pair; ``init``
    (comma-separated ``content``, ``style``, ``noise``, ``noise:N`` or image
    paths) defaults to the recipe's suggestion.
    """

    content: str | None = None
    style: tuple[str, ...] = ()
    style_weights: tuple[float, ...] | None = None
    recipe: str = recipe_lib.DEFAULT
    init: str | None = None
    steps: int = 200
    size: int = 192
    optimizer: Any = "adam"  # a name in engine.OPTIMIZERS, or an optax transformation
    lr: float | None = None
    schedule: str = "constant"
    tv_weight: float | None = None
    seed: int = 0
    model: str = "vgg19"
    pooling: str = "max"
    dtype: str = "float32"
    remat: bool = False
    conv: str = "auto"
    chunk: int = 25
    loop: str = "auto"
    snapshot_every: int = 0
    weights: str | None = None
    max_pixels: int = images.DEFAULT_MAX_PIXELS

    def replace(self, **changes: Any) -> "RunConfig":
        return dataclasses.replace(self, **changes)


@dataclasses.dataclass(frozen=True)
class Init:
    """One start: ``content``, ``style``, ``noise`` (with its seed) or an image file."""

    kind: str
    seed: int = 0
    path: str | None = None

    @property
    def label(self) -> str:
        if self.kind == "noise":
            return f"noise-s{self.seed}"
        if self.kind == "file":
            return "init-" + Path(self.path or "image").stem
        return self.kind


def parse_inits(spec: str, seed: int = 0) -> tuple[Init, ...]:
    """``"content,style,noise:2"`` → (content, style, noise seed, noise seed+1)."""
    out: list[Init] = []
    noise = seed
    for part in (p.strip() for p in spec.split(",")):
        if not part:
            continue
        if part in ("content", "style"):
            out.append(Init(part))
        elif part == "noise" or part.startswith("noise:"):
            count = 1
            if ":" in part:
                try:
                    count = int(part.split(":", 1)[1])
                except ValueError:
                    count = 0
                if count < 1:
                    raise JaxcombineError(f"bad init {part!r}: use noise:N with N >= 1")
            for _ in range(count):
                out.append(Init("noise", seed=noise))
                noise += 1
        else:
            if not Path(part).exists():
                raise JaxcombineError(
                    f"bad init {part!r}: use content, style, noise, noise:N or an image path")
            out.append(Init("file", path=part))
    if not out:
        raise JaxcombineError("no init given")
    labels = [i.label for i in out]
    dup = {x for x in labels if labels.count(x) > 1}
    if dup:
        raise JaxcombineError(f"init {sorted(dup)[0]!r} given twice")
    return tuple(out)


@dataclasses.dataclass
class Prepared:
    """Everything loaded and computed before the first step."""

    config: RunConfig
    problem: engine.Problem
    inits: tuple[Init, ...]
    content: np.ndarray  # (H, W, 3) float32
    styles: np.ndarray  # (S, H, W, 3) float32, fitted to the content's size
    variables: Any
    targets: dict[str, jax.Array]
    x0: np.ndarray  # (k, H, W, 3)
    weights: weights_lib.Weights

    @property
    def labels(self) -> tuple[str, ...]:
        return tuple(i.label for i in self.inits)


def check_config(config: RunConfig) -> None:
    """One-line errors for impossible options, before any work."""
    if config.steps < 0:
        raise JaxcombineError(f"steps must be >= 0, got {config.steps}")
    if config.size < 1:
        raise JaxcombineError(f"size must be a positive number of pixels, got {config.size}")
    if isinstance(config.optimizer, str) and config.optimizer not in engine.OPTIMIZERS:
        raise JaxcombineError(
            f"unknown optimizer {config.optimizer!r}; choose {', '.join(engine.OPTIMIZERS)}")
    if config.lr is not None and not (config.lr > 0):
        raise JaxcombineError(f"learning rate must be > 0, got {config.lr}")
    if config.tv_weight is not None and not (config.tv_weight >= 0):
        raise JaxcombineError(f"tv weight must be >= 0, got {config.tv_weight}")
    if config.conv != "auto":
        model.check_conv(config.conv, config.dtype)
    if config.loop not in engine.LOOPS + ("auto",):
        raise JaxcombineError(f"unknown loop {config.loop!r}; choose auto, {', '.join(engine.LOOPS)}")
    if config.dtype not in ("float32", "bfloat16", "float16"):
        raise JaxcombineError(f"unknown dtype {config.dtype!r}; choose float32, bfloat16 or float16")
    if config.snapshot_every < 0:
        raise JaxcombineError(f"snapshot-every must be >= 0, got {config.snapshot_every}")
    if config.style_weights is not None:
        if len(config.style_weights) != max(1, len(config.style)):
            raise JaxcombineError("give one style weight per style image")
        if any(w < 0 for w in config.style_weights) or sum(config.style_weights) <= 0:
            raise JaxcombineError("style weights must be >= 0 and not all zero")


def prepare(config: RunConfig) -> Prepared:
    """Validate, load images and weights, compute targets and starts."""
    check_config(config)
    rec = recipe_lib.load(config.recipe, config.model)
    if config.tv_weight is not None:
        rec = rec.replace(tv_weight=config.tv_weight)
    inits = parse_inits(config.init or rec.init, config.seed)
    content = images.read(config.content or images.CONTENT, size=config.size,
                          max_pixels=config.max_pixels)
    h, w = content.shape[:2]
    model.check_size(h, w, rec.layers)
    style_paths = config.style or (str(images.STYLE),)
    styles = np.stack([images.fit(images.read(p, max_pixels=config.max_pixels), h, w)
                       for p in style_paths])
    problem = engine.Problem(recipe=rec, arch=config.model, pooling=config.pooling,
                             dtype=config.dtype, remat=config.remat, conv=conv_algorithm(config),
                             optimizer=config.optimizer,
                             lr=config.lr, schedule=config.schedule, steps=config.steps)
    problem.transform()  # validates optimizer and schedule
    w8 = weights_lib.load(config.model, config.weights)
    variables = _device_variables(w8, rec.layers, config.model, problem.conv)
    sw = None if config.style_weights is None else jnp.asarray(config.style_weights, jnp.float32)
    targets = _targets(problem, variables, jnp.asarray(content), jnp.asarray(styles), sw)
    x0 = np.stack([_start(i, content, styles, config) for i in inits])
    return Prepared(config, problem, inits, content, styles, variables, targets, x0, w8)


_targets = jax.jit(engine.compute_targets, static_argnames=("problem",))


@functools.lru_cache(maxsize=8)
def _device_variables(w8: weights_lib.Weights, layers: tuple[str, ...], arch: str,
                      conv: str) -> Any:
    """The weights a recipe's layers need, on the device once per weights, layer set and
    algorithm (not once per job: a batch window prepares many jobs before running them)."""
    return model.variables(model.trim(w8.arrays, layers, arch), conv)


def conv_algorithm(config: RunConfig) -> str:
    """``config.conv``, with ``auto`` resolved for the backend and dtype (``model.DEFAULT_CONV``)."""
    return model.default_conv(dtype=config.dtype) if config.conv == "auto" else config.conv


def _start(init: Init, content: np.ndarray, styles: np.ndarray, config: RunConfig) -> np.ndarray:
    h, w = content.shape[:2]
    if init.kind == "content":
        return content
    if init.kind == "style":
        return styles[0]
    if init.kind == "noise":
        key = jax.random.key(init.seed)
        return np.asarray(jax.random.uniform(key, (h, w, 3), jnp.float32, 0.0, 255.0))
    return images.fit(images.read(init.path, max_pixels=config.max_pixels), h, w)


@dataclasses.dataclass
class Result:
    """A finished (or interrupted) run: final images, histories, and where they were written."""

    config: RunConfig
    labels: tuple[str, ...]
    outcome: engine.Outcome
    weights_fingerprint: str
    wall_s: float
    out: Path | None = None

    @property
    def images(self) -> dict[str, np.ndarray]:
        return {lab: images.to_uint8(px) for lab, px in zip(self.labels, self.outcome.pixels)}

    @property
    def history(self) -> np.ndarray:
        return self.outcome.history

    def final_losses(self) -> dict[str, float]:
        totals = self.outcome.totals
        return {lab: float(totals[-1, j]) if len(totals) else math.nan
                for j, lab in enumerate(self.labels)}


def combine(config: RunConfig | None = None, *, out: str | os.PathLike | None = None,
            progress: bool = False, **options: Any) -> Result:
    """Run one job. Options are :class:`RunConfig` fields; ``out`` writes files there."""
    if isinstance(options.get("style"), str):
        options["style"] = (options["style"],)
    config = (config or RunConfig()).replace(**options)
    t0 = time.perf_counter()
    prep = prepare(config)
    out_dir = Path(out) if out is not None else None
    writer = SnapshotWriter(out_dir, prep.labels, config.snapshot_every)
    bar = ProgressBar(config.steps, prep.labels, prep.problem) if progress else None

    def on_chunk(step, comps, get_pixels):
        if bar is not None:
            bar(step, comps)
        writer(step, get_pixels)

    chunk = chunk_size(config.chunk, config.snapshot_every)
    outcome = engine.optimise(prep.problem, prep.variables, prep.targets, prep.x0, chunk=chunk,
                              loop=config.loop, on_chunk=on_chunk)
    if bar is not None:
        bar.close()
    result = Result(config, prep.labels, outcome, prep.weights.fingerprint,
                    time.perf_counter() - t0, out_dir)
    if out_dir is not None:
        write_outputs(result, prep)
    return result


# --------------------------------------------------------------------------- outputs


def history_csv(outcome: engine.Outcome, j: int, start_step: int = 0) -> str:
    """One start's history: step, weighted total, then each unweighted component."""
    buf = io.StringIO()
    wr = csv.writer(buf)
    wr.writerow(["step", "total", *outcome.labels])
    totals = outcome.totals
    for i in range(outcome.history.shape[0]):
        wr.writerow([start_step + i + 1, f"{totals[i, j]:.6g}",
                     *(f"{v:.6g}" for v in outcome.history[i, j])])
    return buf.getvalue()


def write_outputs(result: Result, prep: Prepared) -> None:
    """Per start: image, history CSV and JSON record; plus ``run.json`` for the whole run."""
    out = result.out
    assert out is not None
    oc = result.outcome
    weights_rec = {"fingerprint": prep.weights.fingerprint, **prep.weights.info}
    common = dict(problem=prep.problem, recipe=prep.problem.recipe.to_dict(),
                  steps_done=oc.steps_done, interrupted=oc.interrupted, loop=oc.loop,
                  compile_s=round(oc.compile_s, 3), run_s=round(oc.run_s, 3),
                  wall_s=round(result.wall_s, 3),
                  steps_per_s=round(oc.steps_done / oc.run_s, 4) if oc.run_s else None)
    finals = result.final_losses()
    for j, init in enumerate(prep.inits):
        lab = init.label
        images.write(out / f"{lab}.png", oc.pixels[j])
        records.atomic_write_text(out / f"{lab}.history.csv", history_csv(oc, j))
        records.write_json(out / f"{lab}.json", records.record(
            result.config, weights=weights_rec, init=dataclasses.asdict(init),
            final_loss=finals[lab], diverged_at_step=oc.diverged_at[j],
            image=f"{lab}.png", history=f"{lab}.history.csv", **common))
    records.write_json(out / "run.json", records.record(
        result.config, weights=weights_rec, inits=list(prep.labels), final_loss=finals,
        diverged_at_step=dict(zip(prep.labels, oc.diverged_at)), **common))


def chunk_size(chunk: int, snapshot_every: int) -> int:
    """Steps per compiled chunk: the largest divisor of ``snapshot_every`` not above
    ``chunk``, so every snapshot ends a chunk (``chunk`` itself when there are none)."""
    if not snapshot_every:
        return chunk
    return max(d for d in range(1, min(chunk, snapshot_every) + 1) if snapshot_every % d == 0)


def snapshot_path(out: Path, label: str, step: int) -> Path:
    """Where the image of start ``label`` after ``step`` steps is kept."""
    return out / "snapshots" / f"{label}-step{step:06d}.png"


class SnapshotWriter:
    """Writes ``snapshots/<label>-stepNNNNNN.png`` every ``every`` steps (0: never)."""

    def __init__(self, out: Path | None, labels: Sequence[str], every: int):
        self.out, self.labels, self.every = out, labels, every

    def __call__(self, step: int, get_pixels) -> None:
        if self.out is None or not self.every or step % self.every:
            return
        for lab, px in zip(self.labels, get_pixels()):
            images.write(snapshot_path(self.out, lab, step), px)


class ProgressBar:
    """A tqdm bar over steps: one refresh per chunk with the mean loss and steps/s."""

    def __init__(self, steps: int, labels: Sequence[str], problem: engine.Problem):
        from tqdm import tqdm

        self.weights = np.asarray(losses.weights(problem.recipe))  # the recipe's, for all starts
        self.bar = tqdm(total=steps, unit="step", file=sys.stderr, dynamic_ncols=True,
                        desc=f"{len(labels)} start{'s' if len(labels) > 1 else ''}")
        self.done = 0

    def __call__(self, step: int, comps: np.ndarray) -> None:
        total = comps[-1] @ self.weights
        self.bar.set_postfix_str(f"loss {np.nanmean(total):.4g}", refresh=False)
        self.bar.update(step - self.done)
        self.done = step

    def close(self) -> None:
        self.bar.close()
