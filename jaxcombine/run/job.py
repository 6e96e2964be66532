"""One job end to end: images and weights in, optimised images and records out.

``combine(...)`` is the Python face of ``jaxcombine run``::

    import jaxcombine
    result = jaxcombine.combine(init="content,style,noise", steps=200, size=256)
    result.images["noise-s0"]          # uint8 (H, W, 3)
    result.history                     # per-step loss components, per start

With ``out=...`` every image, history and JSON record is written atomically.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import time
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxcombine.engine import driver, program, rows, scales, tiles
from jaxcombine.errors import JaxcombineError
from jaxcombine.io import color, folders, images, records
from jaxcombine.io import masks as mask_files
from jaxcombine.networks import model
from jaxcombine.networks import store as weight_store
from jaxcombine.networks import weights as weights_lib
from jaxcombine.options import recipe as recipe_lib
from jaxcombine.options.config import Init, RunConfig, parse_inits  # noqa: F401  (re-exported)
from jaxcombine.run import interrupts, memory, outputs
from jaxcombine.stats import losses


@dataclasses.dataclass
class Prepared:
    """Everything loaded and computed before the first step."""

    config: RunConfig
    recipe: recipe_lib.Recipe  # with its weights (the problem holds only its structure)
    problem: program.Problem
    inits: tuple[Init, ...]
    content: np.ndarray  # (H, W, 3) float32, as read (its colours, whatever preserve_color)
    styles: np.ndarray  # (S, H, W, 3) float32, fitted to the content's size, as VGG sees them
    # (the targets come from each style at its own style_scale: ``style_images``)
    variables: Any
    targets: dict[str, jax.Array]
    x0: np.ndarray  # (k, H, W, 3)
    weights: weight_store.Weights
    style_images: tuple[np.ndarray, ...] = ()  # each (H_s, W_s, 3): the styles the targets saw

    @property
    def labels(self) -> tuple[str, ...]:
        return tuple(i.label for i in self.inits)

    @property
    def preserve_color(self) -> str:
        """The colour mode in force: the config's, else the recipe's."""
        return self.recipe.preserve_color

    def finish(self, pixels: np.ndarray) -> np.ndarray:
        """Optimised pixels (..., H, W, 3) → the images to write and return: as they are,
        or under ``luminance`` their luminance with the content's chroma (the content
        resized to the pixels' size: coarse-to-fine snapshots are smaller)."""
        if self.preserve_color == "luminance":
            h, w = np.shape(pixels)[-3:-1]
            content = (
                self.content
                if self.content.shape[:2] == (h, w)
                else images.resize(self.content, (w, h))
            )
            return color.recombine(pixels, content)
        return np.asarray(pixels)

    @property
    def output_shape(self) -> tuple[int, int]:
        """(height, width) of the written images: the last scale's."""
        return images.output_size(
            self.config.content or images.CONTENT,
            size=self.config.size,
            max_pixels=self.config.max_pixels,
        )

    @property
    def loss_weights(self) -> np.ndarray:
        """(n_components,) the recipe's term weights, then the TV weight."""
        return np.asarray(losses.weights(self.recipe))

    def initial_state(self, x0: np.ndarray | None = None, **overrides: Any) -> program.State:
        """The engine state for ``x0`` (default: the starts) with this config's learning
        rate, steps (of the first scale), loss weights and seed; ``overrides`` replace any
        of them (per start)."""
        values = dict(
            lr=self.config.learning_rate(),
            steps=self.config.steps_per_scale()[0],
            loss_weights=self.loss_weights,
            seed=self.config.seed,
            average=self.config.multi_scale and self.config.scale_from == "average",
        )
        values.update({k: v for k, v in overrides.items() if v is not None})
        return program.init_state(self.problem, self.x0 if x0 is None else x0, **values)

    def at_size(self, size: int) -> "Prepared":
        """This run's content, styles and targets for an output of longest side ``size``
        (a coarse-to-fine scale); the starts (``x0``) stay those of the first scale."""
        if size == max(self.content.shape[:2]):
            return self
        content, styles, scaled, targets = _images_and_targets(
            self.config, self.recipe, self.problem, self.variables, size
        )
        return dataclasses.replace(
            self, content=content, styles=styles, targets=targets, style_images=scaled
        )

    def stages(self, steps: Any = None) -> list[scales.Stage]:
        """The coarse-to-fine stages (one for a single-scale run). ``steps``: one list per
        stage of per-start steps (default: the config's steps per scale)."""
        sizes, steps = self.config.sizes(), steps or self.config.steps_per_scale()
        out = []
        for size, n in zip(sizes, steps):
            h, w = images.output_size(
                self.config.content or images.CONTENT, size=size, max_pixels=self.config.max_pixels
            )
            out.append(scales.Stage(h, w, n, functools.partial(_stage_targets, self, size)))
        return out


def prepare(config: RunConfig) -> Prepared:
    """Load images and weights, compute targets and starts (``config`` is already valid).

    ``preserve_color`` (the config's, else the recipe's) recolours the style images
    before their features are taken (:func:`color.prepare_styles`); under
    ``luminance`` the content and every start are grey (their luminance) too, the
    pixels stay grey while optimised (``Problem.grey``), and :meth:`Prepared.finish`
    puts the content's chroma back on output. A coarse-to-fine run is prepared at its
    first (smallest) scale; :meth:`Prepared.at_size` gives the others.

    Each style's targets come from it fitted to its ``style_scale`` times the output's
    size (at every scale); the recipe's term masks and the ``style_masks`` are fitted to
    the output's size (:mod:`jaxcombine.stats.masks`) and travel with the targets.
    """
    rec = recipe_lib.load(config.recipe, config.model)
    if config.tv_weight is not None:
        rec = rec.replace(tv_weight=config.tv_weight)
    if config.preserve_color is not None:
        rec = rec.replace(preserve_color=config.preserve_color)
    inits = config.inits(rec.init)
    content_path = config.content or images.CONTENT
    h, w = images.output_size(content_path, size=config.size, max_pixels=config.max_pixels)
    first = images.output_size(content_path, size=config.sizes()[0], max_pixels=config.max_pixels)
    model.check_size(*first, rec.layers, config.model)
    style_sizes(config, rec, *first)  # a style scaled down at the smallest scale, too small
    if config.tile:  # one-line errors before anything is read: the statistics, the tile
        tiles.check(rec)
        tiles.plan(h, w, config.tile, rec.layers, config.model)
        if rec.masks or config.style_masks or set(config.style_scales()) != {1.0}:
            raise JaxcombineError(
                "tile does not take masks or style scales (tiles.targets "
                "tiles the images at the output's size, unmasked); use "
                "tile 0 or drop them"
            )
    check_memory(config, rec, h, w, starts=len(inits))  # before anything is read at size
    problem = program.Problem(
        recipe=rec.structure(),
        arch=config.model,
        pooling=config.pooling,
        dtype=config.dtype,
        remat=config.remat,
        conv=conv_algorithm(config),
        optimizer=config.optimizer,
        schedule=config.schedule,
        grey=rec.preserve_color == "luminance",
        tile=config.tile,
    )
    w8 = weights_lib.load(config.model, config.weights)
    variables = _device_variables(w8, rec.layers, config.model, problem.conv)
    content, styles, scaled, targets = _images_and_targets(
        config, rec, problem, variables, config.sizes()[0]
    )
    seen = color.grey(content) if rec.preserve_color == "luminance" else content  # by VGG
    x0 = np.stack([_start(i, seen, styles, config) for i in inits])
    if rec.preserve_color == "luminance":  # noise and image starts too
        x0 = color.grey(x0)
    return Prepared(
        config, rec, problem, inits, content, styles, variables, targets, x0, w8, scaled
    )


def _images_and_targets(
    config: RunConfig, rec: recipe_lib.Recipe, problem: program.Problem, variables: Any, size: int
) -> tuple[np.ndarray, np.ndarray, tuple[np.ndarray, ...], Any]:
    """(content, styles fitted to the output, styles at their style_scale, targets) for an
    output whose longest side is ``size``; the targets carry the masks at that size."""
    content = images.read(config.content or images.CONTENT, size=size, max_pixels=config.max_pixels)
    h, w = content.shape[:2]
    sizes = style_sizes(config, rec, h, w)
    style_paths = config.style or (str(images.STYLE),)
    read = [images.read(p, max_pixels=config.max_pixels) for p in style_paths]
    styles = color.prepare_styles(
        np.stack([images.fit(r, h, w) for r in read]), content, rec.preserve_color
    )
    scaled = tuple(
        s
        if shape == (h, w)
        else color.prepare_styles(images.fit(r, *shape)[None], content, rec.preserve_color)[0]
        for r, s, shape in zip(read, styles, sizes)
    )
    term_masks = mask_files.read_all(rec.masks, h, w, max_pixels=config.max_pixels)
    style_masks = mask_files.read_all(
        config.style_masks or (), h, w, max_pixels=config.max_pixels, what="style mask"
    )
    mask_files.check_coverage(rec, term_masks, style_masks, arch=config.model)
    seen = color.grey(content) if rec.preserve_color == "luminance" else content  # by VGG
    sw = None if config.style_weights is None else jnp.asarray(config.style_weights, jnp.float32)
    as_array = lambda a: None if a is None else jnp.asarray(a)  # noqa: E731
    # targets depend on the network and the recipe only: one program whatever the optimiser
    target_problem = dataclasses.replace(problem, optimizer="adam", schedule="constant")
    if config.tile:  # tile by tile too: a large image's targets need no more memory
        targets = _tiled_targets(
            target_problem, variables, jnp.asarray(seen), jnp.asarray(styles), sw, tile=config.tile
        )
    else:
        targets = _targets(
            target_problem,
            variables,
            jnp.asarray(seen),
            jnp.asarray(styles)
            if all(shape == (h, w) for shape in sizes)
            else [jnp.asarray(s) for s in scaled],
            sw,
            as_array(term_masks),
            as_array(style_masks),
        )
    return content, styles, scaled, targets


def style_sizes(
    config: RunConfig, rec: recipe_lib.Recipe, height: int, width: int
) -> list[tuple[int, int]]:
    """(height, width) each style is fitted to for its targets: its ``style_scale`` times
    the output's, rounded. One-line errors for a scaled style too small for the recipe's
    layers and for a style term whose target is a feature map (it has the output's shape)."""
    sizes = []
    style_layers = [t.layer for t in rec.terms if t.source == "style"]
    for i, f in enumerate(config.style_scales(), start=1):
        size = (max(1, round(f * height)), max(1, round(f * width)))
        if f != 1.0 and style_layers:
            maps = losses.spatial_target_keys(rec)
            spatial = [t for t in rec.terms if t.source == "style" and losses.target_key(t) in maps]
            if spatial:
                raise JaxcombineError(
                    f"style_scale {f:g} cannot apply to the recipe's style "
                    f"{spatial[0].statistic!r} terms (their target is a feature map of the "
                    "output's shape); use style_scale 1 or another statistic"
                )
            try:
                model.check_size(*size, style_layers, config.model)
            except JaxcombineError as e:
                raise JaxcombineError(f"style {i} at style_scale {f:g}: {e}") from None
        sizes.append(size)
    return sizes


def shard_mode(config: RunConfig, starts: int, *heights: int) -> str:
    """``starts`` or ``rows``: ``config.shard`` resolved (:func:`rows.resolve`) for a run
    whose scales have these ``heights``; ``auto`` gives rows only if they all divide."""
    modes = {
        rows.resolve(config.shard, starts=starts, height=h, devices=len(jax.local_devices()))
        for h in heights
    }
    return "rows" if modes == {"rows"} else "starts"


def check_memory(
    config: RunConfig,
    rec: recipe_lib.Recipe,
    height: int,
    width: int,
    *,
    starts: int,
    per_start_targets: bool = False,
) -> None:
    """Refuse, in one line, a run whose estimated peak exceeds ``config.max_memory`` (GB) or
    else the memory available (:mod:`jaxcombine.run.memory`), before anything large exists."""
    conv = conv_algorithm(config)
    accelerator = jax.default_backend() != "cpu"  # starts spread over separate memories
    per_device = -(-starts // len(jax.local_devices())) if accelerator else starts
    if config.tile:  # the steps hold one window's activations, plus image-sized arrays
        need = memory.tiled_estimate_bytes(
            rec,
            height,
            width,
            starts,
            config.tile,
            arch=config.model,
            conv=conv,
            dtype=config.dtype,
            remat=config.remat,
        )
        limit = int(config.max_memory * 1e9) if config.max_memory else memory.available_bytes()
        memory.check_fits(
            need,
            limit,
            memory.describe(
                rec.layers, height, width, starts, conv=conv, recipe=rec.name, arch=config.model
            )
            + f", tile {config.tile}",
            remedies=("a smaller --size", "a smaller --tile"),
        )
        return
    rows_per_device = height  # a rows-sharded run (checked here, before anything is read)
    heights = [
        images.output_size(
            config.content or images.CONTENT, size=size, max_pixels=config.max_pixels
        )[0]
        for size in config.sizes()
    ]
    if not per_start_targets and shard_mode(config, starts, *heights) == "rows":
        per_device = starts
        rows_per_device = height // len(jax.local_devices()) if accelerator else height
    need = memory.estimate_bytes(
        rec.layers,
        rows_per_device,
        width,
        per_device,
        arch=config.model,
        conv=conv,
        dtype=config.dtype,
        remat=config.remat,
        per_start_targets=per_start_targets,
        activation_targets=losses.spatial_layers(rec),
    )
    # the targets' forward passes: a style larger than the output (style_scale) may cost more
    sizes = style_sizes(config, rec, height, width)
    targets = memory.estimate_targets_bytes(
        rec.layers, [(height, width), *sizes], arch=config.model
    )
    what = memory.describe(
        rec.layers, height, width, starts, conv=conv, recipe=rec.name, arch=config.model
    )
    remedies = memory.remedies(conv, starts, devices_help=accelerator)
    if targets > need:
        h, w = max(sizes, key=lambda s: s[0] * s[1])
        what += f"; its targets' forward passes, a style at {w}x{h}"
        remedies = ("a smaller --style-scale", *remedies)
    limit = int(config.max_memory * 1e9) if config.max_memory else memory.available_bytes()
    memory.check_fits(max(need, targets), limit, what, remedies=remedies)


def out_of_memory_as_error(prep: Prepared, starts: int):
    """:func:`memory.out_of_memory_as_error` for ``starts`` starts of ``prep``'s run."""
    h, w = prep.output_shape
    return memory.out_of_memory_as_error(
        memory.describe(
            prep.recipe.layers,
            h,
            w,
            starts,
            conv=prep.problem.conv,
            recipe=prep.recipe.name,
            arch=prep.problem.arch,
        ),
        remedies=memory.remedies(prep.problem.conv, starts),
    )


_targets = jax.jit(program.compute_targets, static_argnames=("problem",))
_tiled_targets = jax.jit(tiles.targets, static_argnames=("problem", "tile"))


def _stage_targets(prep: Prepared, size: int) -> Any:
    return prep.at_size(size).targets


@functools.lru_cache(maxsize=8)
def _device_variables(
    w8: weight_store.Weights, layers: tuple[str, ...], arch: str, conv: str
) -> Any:
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
    if init.kind == "style":  # a recoloured style may leave 0-255 (stats); a start may not
        return np.clip(styles[0], 0.0, 255.0)
    if init.kind == "noise":
        key = jax.random.key(init.seed)
        return np.asarray(jax.random.uniform(key, (h, w, 3), jnp.float32, 0.0, 255.0))
    if not Path(init.path).exists():
        raise JaxcombineError(
            f"bad init {init.path!r}: no such file; use content, style, "
            "noise, noise:N or an image path"
        )
    return images.fit(images.read(init.path, max_pixels=config.max_pixels), h, w)


@dataclasses.dataclass
class Result:
    """A finished (or interrupted) run: final images, histories, and where they were written."""

    config: RunConfig
    labels: tuple[str, ...]
    outcome: driver.Outcome
    weights_fingerprint: str
    wall_s: float
    out: Path | None = None
    stop_requested: bool = False  # Ctrl-C or SIGTERM came, perhaps after the last step
    finish: Any = None  # optimised pixels → written images (Prepared.finish); None: as they are

    @property
    def interrupted(self) -> bool:
        return self.outcome.interrupted or self.stop_requested

    @property
    def diverged(self) -> list[str]:
        """Labels of the starts whose loss became non-finite (their last good image is kept)."""
        return [lab for lab, ok in zip(self.labels, self.outcome.alive) if not ok]

    @property
    def images(self) -> dict[str, np.ndarray]:
        """The final images, as written (``outcome.pixels`` holds the optimised pixels)."""
        pixels = self.outcome.pixels if self.finish is None else self.finish(self.outcome.pixels)
        return {lab: images.to_uint8(px) for lab, px in zip(self.labels, pixels)}

    @property
    def history(self) -> np.ndarray:
        return self.outcome.history

    def final_losses(self) -> dict[str, float]:
        finals = self.outcome.final_totals()
        return {lab: float(finals[j]) for j, lab in enumerate(self.labels)}


def combine(
    config: RunConfig | None = None,
    *,
    out: str | os.PathLike | None = None,
    progress: bool = False,
    **options: Any,
) -> Result:
    """Run one job. Options are :class:`RunConfig` fields; ``out`` writes files there.

    Ctrl-C or SIGTERM stops after the current chunk; the result then has
    ``outcome.interrupted`` and is written like a finished one.
    """
    config = (config or RunConfig()).replace(**options)
    t0 = time.perf_counter()
    out_dir = None
    if out is not None:  # before any image is read or program compiled
        out_dir = folders.check_output_folder(out)
        folders.remove_stale_temps(out_dir)
    prep = prepare(config)
    writer = outputs.SnapshotWriter(out_dir, prep.labels, config.snapshot_every, prep.finish)
    state = prep.initial_state()
    bar = (
        outputs.ProgressBar(sum(config.steps_per_scale()), prep.labels, state.weights)
        if progress
        else None
    )

    def on_chunk(step, comps, get_pixels):
        if bar is not None:
            bar(step, comps)
        writer(step, get_pixels)

    chunk = outputs.chunk_size(config.chunk, config.snapshot_every)
    stages = prep.stages()
    with interrupts.stop_requests() as stop:  # held over the writes too: none is cut short
        with out_of_memory_as_error(prep, len(prep.labels)):
            outcome = scales.optimise_scales(
                prep.problem,
                prep.variables,
                stages,
                state,
                lambda x0, steps: prep.initial_state(x0, steps=steps),
                carry_optimizer=config.scale_optimizer == "carry",
                from_average=config.scale_from == "average",
                chunk=chunk,
                loop=config.loop,
                on_chunk=on_chunk,
                stop=stop.is_set,
                shard=shard_mode(config, len(prep.labels), *(s.height for s in stages)),
            )
        if bar is not None:
            bar.close()
        result = Result(
            config,
            prep.labels,
            outcome,
            prep.weights.fingerprint,
            time.perf_counter() - t0,
            out_dir,
            finish=prep.finish,
        )
        if out_dir is not None:
            write_outputs(result, prep)
        result.stop_requested = stop.is_set()
    return result


# --------------------------------------------------------------------------- outputs


def write_outputs(result: Result, prep: Prepared) -> None:
    """Per start: image, history CSV and JSON record; plus ``run.json`` for the whole run."""
    out = result.out
    assert out is not None
    oc = result.outcome
    weights_rec = {"fingerprint": prep.weights.fingerprint, **prep.weights.info}
    common = dict(
        problem=prep.problem,
        recipe=prep.recipe.to_dict(),
        steps_done=oc.steps_done,
        interrupted=oc.interrupted,
        loop=oc.loop,
        shard=oc.shard,
        scales=outputs.scales_record(result.config, oc),
        compile_s=round(oc.compile_s, 3),
        run_s=round(oc.run_s, 3),
        wall_s=round(result.wall_s, 3),
        steps_per_s=round(oc.steps_done / oc.run_s, 4) if oc.run_s else None,
    )
    finals = result.final_losses()
    finished = prep.finish(oc.pixels)
    for j, init in enumerate(prep.inits):
        lab = init.label
        images.write(out / f"{lab}.png", finished[j])
        records.atomic_write_text(out / f"{lab}.history.csv", outputs.history_csv(oc, j))
        records.write_json(
            out / f"{lab}.json",
            records.record(
                result.config,
                weights=weights_rec,
                init=dataclasses.asdict(init),
                final_loss=finals[lab],
                diverged_at_step=oc.diverged_at[j],
                image=f"{lab}.png",
                history=f"{lab}.history.csv",
                **common,
            ),
        )
    records.write_json(
        out / "run.json",
        records.record(
            result.config,
            weights=weights_rec,
            inits=list(prep.labels),
            final_loss=finals,
            diverged_at_step=dict(zip(prep.labels, oc.diverged_at)),
            **common,
        ),
    )
