"""What a run holds before its first step: weights on the device, images, targets, starts.

:func:`prepare` follows a :class:`~jaxcombine.run.plan.Plan` (the shapes, sizes and
checks are the plan's; nothing here decides them again) and returns a :class:`Prepared`.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxcombine.engine import program, scales, tiles
from jaxcombine.engine.parameterization import Parameterization
from jaxcombine.errors import JaxcombineError
from jaxcombine.io import color, images
from jaxcombine.io import masks as mask_files
from jaxcombine.networks import model
from jaxcombine.networks import store as weight_store
from jaxcombine.networks import weights as weights_lib
from jaxcombine.options import recipe as recipe_lib
from jaxcombine.options.config import Init, RunConfig
from jaxcombine.run import plan as plan_lib
from jaxcombine.run.plan import Plan, Scale
from jaxcombine.stats import losses


@dataclasses.dataclass
class Prepared:
    """Everything loaded and computed before the first step."""

    plan: Plan
    problem: program.Problem
    content: np.ndarray  # (H, W, 3) float32, as read (its colours, whatever preserve_color)
    styles: np.ndarray  # (S, H, W, 3) float32, fitted to the content's size, as VGG sees them
    # (the targets come from each style at its own style_scale: ``style_images``)
    variables: Any
    targets: dict[str, jax.Array]
    x0: np.ndarray  # (k, H, W, 3)
    weights: weight_store.Weights
    style_images: tuple[np.ndarray, ...] = ()  # each (H_s, W_s, 3): the styles the targets saw

    @property
    def config(self) -> RunConfig:
        return self.plan.config

    @property
    def recipe(self) -> recipe_lib.Recipe:
        """The recipe with its weights (the problem holds only its structure)."""
        return self.plan.recipe

    @property
    def inits(self) -> tuple[Init, ...]:
        return self.plan.inits

    @property
    def labels(self) -> tuple[str, ...]:
        return self.plan.labels

    @property
    def preserve_color(self) -> str:
        """The colour mode in force: the config's, else the recipe's."""
        return self.recipe.preserve_color

    @property
    def output_shape(self) -> tuple[int, int]:
        """(height, width) of the written images: the last scale's."""
        return self.plan.output_shape

    @property
    def loss_weights(self) -> np.ndarray:
        """(n_components,) the recipe's term weights, then the TV weight."""
        return np.asarray(losses.weights(self.recipe))

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

    def initial_state(self, x0: np.ndarray | None = None, **overrides: Any) -> program.State:
        """The engine state for ``x0`` (default: the starts) with this config's learning
        rate, steps (of the first scale), loss weights and seed; ``overrides`` replace any
        of them (per start)."""
        values = dict(
            lr=self.config.learning_rate(),
            steps=self.plan.scales[0].steps,
            loss_weights=self.loss_weights,
            seed=self.config.seed,
            average=self.config.multi_stage and self.config.scale_from == "average",
        )
        values.update({k: v for k, v in overrides.items() if v is not None})
        return program.init_state(self.problem, self.x0 if x0 is None else x0, **values)

    def at_scale(self, scale: Scale) -> "Prepared":
        """This run's content, styles and targets at ``scale`` (a coarse-to-fine scale);
        the starts (``x0``) stay those of the first scale."""
        if scale.shape == self.content.shape[:2]:
            return self
        content, styles, scaled, targets = _images_and_targets(self, scale)
        return dataclasses.replace(
            self, content=content, styles=styles, targets=targets, style_images=scaled
        )

    def stages(self, steps: Any = None) -> list[scales.Stage]:
        """The coarse-to-fine stages (one for a single-scale run). ``steps``: one list per
        stage of per-start steps (default: the plan's steps per scale)."""
        steps = steps or [s.steps for s in self.plan.scales]
        ladder = self.plan.scales
        factors = [self.plan.loss_factors(s) for s in ladder]
        problems = [self.plan.problem_at(s) for s in ladder]
        return [
            scales.Stage(
                s.height,
                s.width,
                n,
                functools.partial(_scale_targets, self, s),
                None if set(f) == {1.0} else np.asarray(f),
                functools.partial(self.content_detail, ladder[i - 1], s)
                if i and self.config.scale_detail == "content" and not s.final
                else None,
                s.lr_factor,
                None if p == self.problem else p,
            )
            for i, (s, n, f, p) in enumerate(zip(ladder, steps, factors, problems))
        ]

    def content_detail(self, coarse: Scale, fine: Scale) -> np.ndarray:
        """(1, H, W, 3) at ``fine``'s shape: the content as VGG sees it there, less its copy
        at ``coarse`` upsampled as a scale's images are (:func:`scales.resize_images`).
        Added to that upsampled copy it gives the content at ``fine`` again."""
        low, high = (self.seen(_content_at(self.plan, s))[None] for s in (coarse, fine))
        return high - np.asarray(scales.resize_images(low, fine.height, fine.width))

    def seen(self, rgb: np.ndarray) -> np.ndarray:
        """``rgb`` as the network sees it: its luminance under ``preserve_color =
        "luminance"``, else as it is."""
        return color.grey(rgb) if self.preserve_color == "luminance" else rgb


def _scale_targets(prep: Prepared, scale: Scale) -> Any:
    return prep.at_scale(scale).targets


def prepare(plan: Plan | RunConfig) -> Prepared:
    """Load weights and images, compute targets and starts, as ``plan`` says (a
    configuration is planned first: :func:`jaxcombine.run.plan.make`).

    ``preserve_color`` (the config's, else the recipe's) recolours the style images
    before their features are taken (:func:`color.prepare_styles`); under
    ``luminance`` the content and every start are grey (their luminance) too, the
    pixels stay grey while optimised (``Problem.grey``), and :meth:`Prepared.finish`
    puts the content's chroma back on output. A coarse-to-fine run is prepared at its
    first (smallest) scale; :meth:`Prepared.at_scale` gives the others.

    Each style's targets come from it fitted to its ``style_scale`` times the output's
    size (at every scale); the recipe's term masks and the ``style_masks`` are fitted to
    the output's size (:mod:`jaxcombine.stats.masks`) and travel with the targets.
    """
    if isinstance(plan, RunConfig):
        plan = plan_lib.make(plan)
    config, rec = plan.config, plan.recipe
    problem = plan.problem
    w8 = weights_lib.load(config.model, config.weights)
    variables = _device_variables(w8, rec.layers, config.model, problem.conv)
    bare = Prepared(plan, problem, np.zeros((0, 0, 3)), np.zeros((0,)), variables, {}, None, w8)
    content, styles, scaled, targets = _images_and_targets(bare, plan.scales[0])
    x0 = np.stack([_start(i, bare.seen(content), styles, config) for i in plan.inits])
    if rec.preserve_color == "luminance":  # noise and image starts too
        x0 = color.grey(x0)
    return dataclasses.replace(
        bare, content=content, styles=styles, targets=targets, x0=x0, style_images=scaled
    )


def _images_and_targets(
    prep: Prepared, scale: Scale
) -> tuple[np.ndarray, np.ndarray, tuple[np.ndarray, ...], Any]:
    """(content, styles fitted to the output, styles at their style_scale, targets) at
    ``scale``; the targets carry the masks at that size."""
    plan, problem = prep.plan, prep.problem
    config, rec = plan.config, plan.recipe
    h, w = scale.shape
    content = _content_at(plan, scale)
    read = [images.read(p, max_pixels=config.max_pixels) for p in plan.style_paths]
    styles = color.prepare_styles(
        np.stack([images.fit(r, h, w) for r in read]), content, rec.preserve_color
    )
    scaled = tuple(
        s
        if shape == (h, w)
        else color.prepare_styles(images.fit(r, *shape)[None], content, rec.preserve_color)[0]
        for r, s, shape in zip(read, styles, scale.style_shapes)
    )
    del read  # the full-size decodes
    term_masks = mask_files.read_all(rec.masks, h, w, max_pixels=config.max_pixels)
    style_masks = mask_files.read_all(
        config.style_masks or (), h, w, max_pixels=config.max_pixels, what="style mask"
    )
    mask_files.check_coverage(rec, term_masks, style_masks, arch=config.model)
    regions = [  # over each style, at the size its targets see it
        mask_files.read(p, *shape, max_pixels=config.max_pixels, what="style region")
        for p, shape in zip(config.style_regions or (), scale.style_shapes)
    ]
    seen = prep.seen(content)  # by VGG
    sw = None if config.style_weights is None else jnp.asarray(config.style_weights, jnp.float32)
    as_array = lambda a: None if a is None else jnp.asarray(a)  # noqa: E731
    # targets depend on the network and the recipe only: one program whatever the optimiser
    target_problem = dataclasses.replace(
        problem, optimizer="adam", schedule="constant", parameterization=Parameterization()
    )
    if config.tile:  # tile by tile too: a large image's targets need no more memory
        targets = _tiled_targets(
            target_problem,
            prep.variables,
            jnp.asarray(seen),
            jnp.asarray(styles),
            sw,
            tile=config.tile,
        )
    else:
        stacked = all(shape == (h, w) for shape in scale.style_shapes)
        targets = _targets(
            target_problem,
            prep.variables,
            jnp.asarray(seen),
            jnp.asarray(styles) if stacked else [jnp.asarray(s) for s in scaled],
            sw,
            as_array(term_masks),
            as_array(style_masks),
            (jnp.asarray(np.stack(regions)) if stacked else [jnp.asarray(r) for r in regions])
            if regions
            else None,
        )
    return content, styles, scaled, targets


def _content_at(plan: Plan, scale: Scale) -> np.ndarray:
    """The content image read at ``scale``'s size."""
    content = images.read(plan.content, size=scale.size, max_pixels=plan.config.max_pixels)
    if content.shape[:2] != scale.shape:  # the file changed since it was planned
        raise JaxcombineError(f"{plan.content} changed while the run was being prepared")
    return content


_targets = jax.jit(program.compute_targets, static_argnames=("problem",))
_tiled_targets = jax.jit(tiles.targets, static_argnames=("problem", "tile"))


@functools.lru_cache(maxsize=8)
def _device_variables(
    w8: weight_store.Weights, layers: tuple[str, ...], arch: str, conv: str
) -> Any:
    """The weights a recipe's layers need, on the device once per weights, layer set and
    algorithm (not once per job: a batch window prepares many jobs before running them)."""
    return model.variables(model.trim(w8.arrays, layers, arch), conv)


def _start(init: Init, content: np.ndarray, styles: np.ndarray, config: RunConfig) -> np.ndarray:
    h, w = content.shape[:2]
    if init.kind == "content":
        return content
    if init.kind == "style":  # a recoloured style may leave 0-255 (stats); a start may not
        return np.clip(styles[0], 0.0, 255.0)
    if init.kind == "content-recoloured":  # the photo's layout in the painting's palette
        return np.clip(color.match_stats(content, styles[0]), 0.0, 255.0)
    if init.kind == "noise":  # on the host: jax.random compiled a program (~0.7 s) per size
        return np.random.default_rng(init.seed).uniform(0.0, 255.0, (h, w, 3)).astype(np.float32)
    return images.fit(images.read(init.path, max_pixels=config.max_pixels), h, w)
