"""``jaxcombine train``: the training loop around :func:`jaxcombine.train.objective.step`.

The story, top to bottom (:func:`train`):

1. the output folder is checked and locked (:func:`jaxcombine.run.runner.output_folder`);
   the photos are read (bad ones skipped in one line each), the recipe and the backbone's
   weights loaded, the memory a step needs checked against what is available;
2. a checkpoint in the folder is resumed (its configuration must be this one's but for
   the steps and intervals, else a one-line refusal), or the networks start afresh;
3. Ctrl-C and SIGTERM become a stop request: the loop stops after the current step and
   saves a checkpoint;
4. each step's batch is made on a host thread (:class:`~jaxcombine.train.photos.Prefetch`)
   while the device runs the step before; the losses come to the host every
   :data:`LOG_EVERY` steps (for the progress bar and the history);
5. every ``sample_every`` steps a grid of the held-out photos and their stylised versions,
   every ``checkpoint_every`` steps (and at the end) the history CSV, a checkpoint and
   ``train.json``, each written atomically.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import io
import json
import math
import time
from pathlib import Path
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from jaxcombine.engine import layout, program
from jaxcombine.errors import JaxcombineError
from jaxcombine.io import images, records
from jaxcombine.networks import model
from jaxcombine.networks import weights as weights_lib
from jaxcombine.options import recipe as recipe_lib
from jaxcombine.options.config import TrainConfig
from jaxcombine.run import interrupts, memory, outputs, runner
from jaxcombine.stats import losses
from jaxcombine.train import network, objective, photos
from jaxcombine.train.checkpoints import Checkpoints

LOG_EVERY = 10  # steps between the host's reads of the losses
SAMPLE_SIDE = 256  # px, each held-out photo in the sample grid (the crop, if larger)
HISTORY = "history.csv"
RECORD = "train.json"


@dataclasses.dataclass(frozen=True)
class Training:
    """A training ready to run: its structure, the backbone's variables and weights, the
    style targets (each leaf (nets, styles per net, ...)), the photos and the style labels."""

    config: TrainConfig
    objective: objective.Objective
    recipe: recipe_lib.Recipe
    variables: Any
    weights: Any
    targets: Any
    photos: photos.Photos
    labels: tuple[str, ...]
    inputs: dict[str, str]  # input_digests: the styles' and the photos' bytes

    @property
    def nets(self) -> int:
        return 1 if self.config.conditional else self.config.styles

    def meta(self) -> dict:
        """What a checkpoint says of the training (checked on resume, read by stylize)."""
        c = self.config
        return records.to_json(
            {
                "config": c,
                "inputs": self.inputs,
                "recipe": self.recipe.to_dict(),
                "net": {"width": c.width, "res_blocks": c.res_blocks, "styles": self.net_styles},
                "nets": self.nets,
                "labels": self.labels,
            }
        )

    @property
    def net_styles(self) -> int:
        return self.config.styles if self.config.conditional else 1


def style_paths(config: TrainConfig) -> tuple[Path, ...]:
    return tuple(Path(s) for s in config.style) or (images.STYLE,)


def load_recipe(config: TrainConfig) -> recipe_lib.Recipe:
    rec = recipe_lib.load(config.recipe, config.model)
    if config.tv_weight is not None:
        rec = rec.replace(tv_weight=config.tv_weight)
    objective.check_recipe(rec)
    return rec


def net_of(config: TrainConfig) -> network.TransformNet:
    """The network ``config`` trains; its 3×3 convolutions by the backbone's algorithm
    (Winograd on CPUs: a 128² step of batch 4 took 1.45 s against 1.80 s)."""
    styles = config.styles if config.conditional else 1
    return network.TransformNet(
        width=config.width,
        res_blocks=config.res_blocks,
        styles=styles,
        conv=model.conv_for(config.conv),
    )


def prepare(
    config: TrainConfig,
    *,
    warn: Callable[[str], None] = print,
    inputs: dict[str, str] | None = None,
) -> Training:
    """Read the photos and styles, load the backbone, compute the style targets.
    ``inputs``: :func:`input_digests` of ``config`` where the caller has them already."""
    rec = load_recipe(config)
    labels = tuple(p.stem for p in style_paths(config))
    if len(set(labels)) < len(labels):
        raise JaxcombineError(
            f"style images need distinct names (their outputs are named after them): "
            f"{', '.join(labels)}"
        )
    conv = model.conv_for(config.conv)
    problem = program.Problem(
        recipe=rec.structure(), arch=config.model, pooling=config.pooling, conv=conv
    )
    obj = objective.Objective(problem, net_of(config))
    styles = [
        images.read(p, size=config.style_size, max_pixels=config.max_pixels)
        for p in style_paths(config)
    ]
    found = photos.load(
        config.photos,
        crop=config.crop,
        zoom=config.zoom,
        holdout=config.holdout,
        max_pixels=config.max_pixels,
        warn=warn,
    )
    check_memory(config, rec, conv)
    w8 = weights_lib.load(config.model, config.weights)
    variables = model.variables(model.trim(w8.arrays, rec.layers, config.model), conv)
    targets = objective.style_targets(obj, variables, styles)  # each leaf (S, ...)
    if config.conditional:
        targets = jax.tree.map(lambda t: t[None], targets)  # one net, S styles
    else:
        targets = jax.tree.map(lambda t: t[:, None], targets)  # S nets, one style each
    inputs = inputs if inputs is not None else input_digests(config)
    return Training(config, obj, rec, variables, w8, targets, found, labels, inputs)


# Options that name files: a resume compares their bytes (input_digests), not their paths.
PATH_OPTIONS = ("photos", "style")


def _input_names(config: TrainConfig) -> dict[str, str]:
    """Where each of :func:`input_digests`' roles lies now, for an error to name it."""
    names = {f"style {i + 1}": str(p) for i, p in enumerate(style_paths(config))}
    return {**names, "photos": str(config.photos or "the default set")}


def input_digests(config: TrainConfig) -> dict[str, str]:
    """sha256 of each style image's bytes (``style 1`` …) and one of the photo set (each
    file's name and bytes' sha256, in the order read): what a resume must find again for
    its targets and batches to be the ones the training had, wherever the files now lie."""
    styles = style_paths(config)
    for path in styles:
        if not path.is_file():  # as prepare says it, for a resume that hashes them first
            raise JaxcombineError(f"image not found: {path}")
    out = {f"style {i + 1}": records.file_sha256(p) for i, p in enumerate(styles)}
    listing = [[p.name, records.file_sha256(p)] for p in photos.listed(config.photos)]
    out["photos"] = hashlib.sha256(json.dumps(listing).encode()).hexdigest()
    return out


def check_memory(config: TrainConfig, rec: recipe_lib.Recipe, conv: str) -> None:
    """Refuse in one line a step that would not fit: the backbone's forward and backward
    for every network's outputs (pixel optimisation's estimate, one start per image) plus
    the photos' forward, and the networks' own activations."""
    nets = 1 if config.conditional else config.styles
    images_ = nets * config.batch
    need = memory.estimate_bytes(
        rec.layers, config.crop, config.crop, images_ + config.batch, arch=config.model, conv=conv
    )
    need += (
        images_
        * config.crop**2
        * network.activation_bytes_per_pixel(config.width, config.res_blocks, backward=True)
    )
    limit = int(config.max_memory * 1e9) if config.max_memory else memory.available_bytes()
    what = f"{nets} network(s), batch {config.batch} at {config.crop}x{config.crop}, conv {conv}"
    memory.check_fits(need, limit, what, remedies=("a smaller --crop", "a smaller --batch"))


# --------------------------------------------------------------------------- the loop


@dataclasses.dataclass
class Result:
    """What :func:`train` did: steps done (in all), whether it was stopped, the last
    losses per network, timings (compile: the first step's wall time)."""

    steps_done: int
    started_at: int
    interrupted: bool
    final_loss: dict[str, float]
    compile_s: float
    run_s: float
    out: Path


def train(
    config: TrainConfig,
    out: str | Path,
    *,
    progress: bool = True,
    warn: Callable[[str], None] = print,
    stop_after: int | None = None,
) -> Result:
    """Train (or resume) the networks of ``config`` into the folder ``out``.

    ``stop_after``: stop as a Ctrl-C would once this many steps are done in all (for
    tests and scripts). The photos' and styles' paths are recorded resolved, so that a
    resume from another directory compares the same folders."""
    config = config.resolved()
    with runner.output_folder(out) as folder, interrupts.stop_requests() as stop:
        return _train(config, folder, stop, progress=progress, warn=warn, stop_after=stop_after)


def _train(config, folder, stop, *, progress, warn, stop_after) -> Result:
    ckpt = Checkpoints(folder)
    try:
        start = ckpt.latest()
        inputs = input_digests(config)  # hashed once: the resume's check and the meta
        if start is not None:
            refuse_mismatch(config, ckpt.meta(start), folder, inputs)
        tr = prepare(config, warn=warn, inputs=inputs)
        fresh = objective.init_state(tr.objective.net, config.seed, tr.nets, config.lr)
        if start is None:
            state, start = fresh, 0
        else:
            state, meta = ckpt.restore(start, fresh)
            if meta.get("recipe") != tr.recipe.to_dict():
                raise JaxcombineError(
                    f"{folder} holds a training with another recipe; resume with the same "
                    "recipe or use another --out"
                )
        history = History.read(folder / HISTORY, tr, upto=start)
        tr, state = place(tr, state)
        return _loop(tr, state, start, ckpt, history, folder, stop, progress, stop_after)
    finally:
        ckpt.close()


def place(tr: Training, state: objective.State) -> tuple[Training, objective.State]:
    """With several local devices, the networks (their parameters, optimiser states and
    style targets) split over them along the networks' axis (:mod:`jaxcombine.engine.layout`,
    the starts layout), over as many devices as divide their number; the photos, the
    backbone and the step count replicated. One device: the state committed to it, as a
    restored checkpoint's is, so a fresh and a resumed state select the same compiled step."""
    devices = math.gcd(tr.nets, len(jax.local_devices()))
    if devices == 1:
        return tr, jax.device_put(state, jax.local_devices()[0])
    lay = layout.Layout("starts", devices, tr.nets)
    (params, opt_state), targets, _ = lay.place(
        (state.params, state.opt_state), tr.targets, per_start_targets=True
    )
    return dataclasses.replace(tr, targets=targets), objective.State(params, opt_state, state.step)


def refuse_mismatch(config: TrainConfig, meta: dict, folder: Path, inputs: dict[str, str]) -> None:
    """One line when the checkpoint in ``folder`` was made with other options or other
    files: the styles and photos by their bytes (``inputs``: :func:`input_digests` of
    ``config``), so the same files at other paths resume (the styles under the same
    names: they name its outputs). A checkpoint from before the digests (jaxcombine
    0.1.0) is compared by the files' paths, as it was then."""
    try:
        theirs = TrainConfig(**meta["config"])
    except (JaxcombineError, TypeError, KeyError) as e:
        raise JaxcombineError(f"{folder}: unreadable checkpoint configuration ({e})") from None
    saved = meta.get("inputs")
    diffs = config.differences(theirs, ignore=PATH_OPTIONS if saved else ())
    if saved:
        mine, where = inputs, _input_names(config)
        changed = [
            f"{role} {where[role]}" if role in where else role
            for role in sorted(set(saved) | set(mine))
            if saved.get(role) != mine.get(role)
        ]
        if changed:
            diffs.append(f"other files: {', '.join(changed)}")
        names = [p.stem for p in style_paths(config)]  # they name its styles' outputs
        if meta.get("labels") is not None and list(meta["labels"]) != names:
            diffs.append(f"style names {list(meta['labels'])} there, {names} here")
    if diffs:
        raise JaxcombineError(
            f"{folder} holds a training with other options ({'; '.join(diffs)}); "
            "resume with the same options or use another --out"
        )


def _loop(tr, state, start, ckpt, history, folder, stop, progress, stop_after) -> Result:
    c = tr.config
    weights = losses.weights(tr.recipe)
    wnp = np.broadcast_to(np.asarray(weights), (tr.nets, weights.shape[0]))
    bar = outputs.ProgressBar(c.steps, desc="train", weights=wnp, enabled=progress)
    bar.update(start)
    end = c.steps if stop_after is None else min(c.steps, stop_after)
    if start >= end:  # already trained this far: nothing to run
        bar.close()
        return Result(start, start, False, history.final(), 0.0, 0.0, folder)

    def make(step):
        batch = photos.batch(tr.photos.train, c.seed, step, size=c.batch, crop=c.crop, zoom=c.zoom)
        if c.conditional:
            index = photos.style_indices(c.seed, step, size=c.batch, styles=c.styles)
        else:
            index = np.zeros((c.batch,), np.int32)
        return batch, index, objective.step_key(c.seed, step)

    pending: list = []
    done, compile_s, t0 = start, 0.0, time.perf_counter()
    feed = photos.Prefetch(make, start, end)
    interrupted = False
    try:
        for step, (batch, index, key) in feed:
            if step >= end:
                break
            t = time.perf_counter()
            state, totals, comps = objective.step(
                tr.objective, state, tr.variables, tr.targets, batch, index, weights, key
            )
            if step == start:
                jax.block_until_ready(totals)
                compile_s, t0 = time.perf_counter() - t, time.perf_counter()
            pending.append((step + 1, totals, comps))
            done = step + 1
            interrupted = stop.is_set() and done < end
            last = done == end or interrupted
            if done % LOG_EVERY == 0 or last or done % c.checkpoint_every == 0:
                history.add(jax.device_get(pending))
                pending = []
                bar.to_step(done, history.last_components()[None])
                history.check_finite(done)
            if (c.sample_every and done % c.sample_every == 0) or last:
                write_samples(tr, state, folder, done)
            if done % c.checkpoint_every == 0 or last:
                save(tr, state, ckpt, history, folder, done, interrupted)
            if last:
                break
    finally:
        feed.close()
        bar.close()
    run_s = time.perf_counter() - t0
    return Result(done, start, interrupted, history.final(), compile_s, run_s, folder)


def save(tr: Training, state, ckpt: Checkpoints, history, folder: Path, step: int, stopped: bool):
    """The history, then the checkpoint, then ``train.json`` (each atomically): a kill
    between them leaves a history ahead of the checkpoint, cut back on resume."""
    records.atomic_write_text(folder / HISTORY, history.csv())
    ckpt.save(step, state, tr.meta())
    records.write_json(
        folder / RECORD,
        records.record(
            tr.config,
            weights=tr.weights,
            steps_done=step,
            interrupted=stopped,
            checkpoint=f"{ckpt.folder.name}/{step}",
            fingerprint=network.fingerprint(state.params),
            recipe=tr.recipe.to_dict(),
            styles=list(tr.labels),
            photos=list(tr.photos.names),
            held_out=[n for n, _ in tr.photos.held_out],
            final_loss=history.final(),
            history=HISTORY,
        ),
    )


def write_samples(tr: Training, state, folder: Path, step: int) -> Path:
    """``samples/step-<step>.png``: a row per held-out photo: the photo, then its
    stylisation by every style (each network, or each style of a conditional one)."""
    side = max(SAMPLE_SIDE, tr.config.crop)
    held = np.stack([images.fit(rgb, side, side) for _, rgb in tr.photos.held_out])
    columns = []
    for s in range(tr.net_styles):
        index = jnp.full((held.shape[0],), s, jnp.int32)
        out = np.asarray(objective.stylize_all(tr.objective.net, state.params, held, index))
        columns += list(out)  # (B, H, W, 3) per network
    rows = [[held[i]] + [col[i] for col in columns] for i in range(held.shape[0])]
    path = folder / "samples" / f"step-{step:07d}.png"
    images.write(path, images.contact_sheet(rows))
    return path


class History:
    """The loss history, one row per (step, network): total and each component."""

    def __init__(self, tr: Training, rows: list[list[float]]):
        self.labels = tr.labels if not tr.config.conditional else ("all",)
        self.components = tr.recipe.labels
        self.weights = np.asarray(losses.weights(tr.recipe))
        self.rows = rows  # [step, net, total, *components]

    @classmethod
    def read(cls, path: Path, tr: Training, *, upto: int) -> "History":
        """The history written so far, cut back to the steps ``<= upto``."""
        rows: list[list[float]] = []
        if upto and path.is_file():
            for parts in list(csv.reader(io.StringIO(path.read_text())))[1:]:
                if int(parts[0]) <= upto:
                    rows.append([int(parts[0]), int(parts[1])] + [float(v) for v in parts[3:]])
        return cls(tr, rows)

    def add(self, pending) -> None:
        for step, totals, comps in pending:
            for n in range(len(totals)):
                self.rows.append([step, n, float(totals[n]), *map(float, comps[n])])

    def last_components(self) -> np.ndarray:
        """(nets, components) of the last step recorded."""
        last = [r for r in self.rows[-len(self.labels) :]]
        return np.asarray([r[3:] for r in last], np.float64)

    def check_finite(self, step: int) -> None:
        last = self.rows[-len(self.labels) :]
        if not all(np.isfinite(r[2]) for r in last):
            raise JaxcombineError(
                f"training diverged by step {step} (loss not finite); try a lower --lr"
            )

    def final(self) -> dict[str, float]:
        last = self.rows[-len(self.labels) :] if self.rows else []
        return {self.labels[int(r[1])]: float(r[2]) for r in last}

    def csv(self) -> str:
        rows = np.asarray(self.rows, np.float64).reshape(-1, 3 + len(self.components))
        columns = {
            "step": rows[:, 0].astype(np.int64),
            "net": rows[:, 1].astype(np.int64),
            "style": np.asarray([self.labels[int(n)] for n in rows[:, 1]], object),
            "loss": rows[:, 2],
        }
        for j, lab in enumerate(self.components):
            columns[lab] = rows[:, 3 + j]
        return outputs.csv_text(columns)
