"""The run plan: every decision about a run, made once, before anything large is read.

:func:`make` builds a :class:`Plan` from the configuration, the recipe, the headers of
the input files (each read once) and the local devices. It holds the shape of every
scale, each style's size at each scale, the convolution algorithm, the loop form, the
device layout, the tile plan and the memory estimate, and it is where every rule that
combines options, recipe and devices lives; every refusal is a one-line
:class:`~jaxcombine.errors.JaxcombineError` raised here, before an image is decoded or a
program compiled::

    plan = make(RunConfig(size=512, scales=(256, 512)))
    [(s.height, s.width) for s in plan.scales]   # [(256, 256), (512, 512)]
    plan.layout.mode, plan.conv, plan.memory_bytes

The runner (:mod:`jaxcombine.run.runner`) and the commands on it (run, study, batch)
take their shapes, layout and checks from the plan and never recompute them.
"""

from __future__ import annotations

import dataclasses
import functools
from pathlib import Path
from typing import Sequence

import jax

from jaxcombine.engine import layout as layout_lib
from jaxcombine.engine import program, tiles
from jaxcombine.engine.parameterization import Parameterization, level_shapes
from jaxcombine.errors import JaxcombineError
from jaxcombine.io import images
from jaxcombine.networks import model
from jaxcombine.options import layers as layers_lib
from jaxcombine.options import recipe as recipe_lib
from jaxcombine.options.config import AUTO, Init, RunConfig
from jaxcombine.run import inputs, memory
from jaxcombine.stats import losses


@dataclasses.dataclass(frozen=True)
class Scale:
    """One scale of the coarse-to-fine ladder (the only one of a single-scale run)."""

    size: int  # the longest side, px (the value --scales lists)
    height: int
    width: int
    steps: int
    style_shapes: tuple[tuple[int, int], ...]  # (height, width) each style is fitted to
    levels: int = 1  # of the image's Laplacian pyramid (1: pixels)
    content_factor: float = 1.0  # multiplies the content terms' weights at this scale
    lr_factor: float = 1.0  # multiplies the learning rate at this scale
    final: bool = False  # the final pass (final_steps) at the last scale's size

    @property
    def shape(self) -> tuple[int, int]:
        return self.height, self.width


@dataclasses.dataclass(frozen=True)
class Plan:
    """A run decided: what :func:`make` worked out once (see the module docstring).

    ``config`` is settled (:meth:`RunConfig.settle`): the recipe's suggested run options
    applied under the user's, then the built-in defaults; ``from_recipe`` names the
    options whose values came from the recipe."""

    config: RunConfig
    recipe: recipe_lib.Recipe  # with the config's overrides (tv_weight, preserve_color)
    inits: tuple[Init, ...]
    content: str  # the content image's path
    scales: tuple[Scale, ...]
    conv: str  # ``auto`` resolved
    loop: str  # ``auto`` resolved
    layout: layout_lib.Layout
    starts: int  # side by side in one program (a study's sweep, a batch group: more)
    per_start_targets: bool  # each start its own targets (a batch group)
    memory_bytes: int  # the estimated peak (checked against the limit)
    input_pixels: tuple[tuple[str, int], ...]  # (path, decoded pixels) of every input file
    style_paths: tuple[str, ...]
    from_recipe: tuple[str, ...] = ()
    earlier_groups: int = 0  # groups a batch process ran before this one (what they leave)

    @property
    def output_shape(self) -> tuple[int, int]:
        """(height, width) of the written images: the last scale's."""
        return self.scales[-1].shape

    @property
    def labels(self) -> tuple[str, ...]:
        return tuple(i.label for i in self.inits)

    @property
    def problem(self) -> program.Problem:
        """The run's structure (what selects a compiled program): the terms no stage
        computes marked skipped; each stage's own is :meth:`problem_at`."""
        c = self.config
        return program.Problem(
            recipe=self.recipe.structure(tuple({s.final for s in self.scales})),
            arch=c.model,
            pooling=c.pooling,
            dtype=c.dtype,
            remat=c.remat,
            conv=self.conv,
            padding=c.padding,
            optimizer=c.optimizer,
            schedule=c.schedule,
            grey=self.recipe.preserve_color == "luminance",
            tile=c.tile,
            parameterization=self.parameterization,
        )

    def problem_at(self, scale: Scale) -> program.Problem:
        """The structure of ``scale``'s program: :attr:`problem` without the terms that do
        not count there (:attr:`Term.during`), which that program then does not compute."""
        return dataclasses.replace(self.problem, recipe=self.recipe.structure((scale.final,)))

    @property
    def parameterization(self) -> Parameterization:
        return Parameterization(self.config.parameterization, self.config.pyramid_levels)

    def loss_factors(self, scale: Scale) -> tuple[float, ...]:
        """(n_components,) what multiplies each loss weight at ``scale``: its content
        factor on the content terms, its inverse on terms that ask for it
        (:attr:`Term.inverse_content_weight`), 0 on a term that does not count there
        (:attr:`Term.during`: the final pass or the scales), 1 elsewhere (TV last)."""
        f = scale.content_factor
        return tuple(
            t.content_factor(f) if t.counts(scale.final) else 0.0 for t in self.recipe.terms
        ) + (1.0,)

    def describe(self, starts: int | None = None) -> str:
        """``1 start at 192x192, gatys to block5_conv1, conv winograd``, for messages."""
        h, w = self.output_shape
        return memory.describe(
            self.recipe.layers,
            h,
            w,
            self.starts if starts is None else starts,
            conv=self.conv,
            recipe=self.recipe.name,
            arch=self.config.model,
        )

    def remedies(self) -> tuple[str, ...]:
        accelerator = jax.default_backend() != "cpu"
        return memory.remedies(self.conv, self.starts, devices_help=accelerator)

    def out_of_memory_as_error(self):
        """:func:`memory.out_of_memory_as_error` for this run: an allocator's failure
        inside the block becomes one line naming the run and what lowers its memory."""
        return memory.out_of_memory_as_error(self.describe(), remedies=self.remedies())

    def with_starts(
        self, starts: int, *, per_start_targets: bool = False, earlier_groups: int = 0
    ) -> "Plan":
        """This plan for ``starts`` starts side by side (a study's sweep, a batch group,
        after ``earlier_groups`` others in its process): layout and memory decided again;
        a one-line error if it no longer fits."""
        return _decide(
            dataclasses.replace(
                self,
                starts=starts,
                per_start_targets=per_start_targets,
                earlier_groups=earlier_groups,
            )
        )


def make(
    config: RunConfig,
    *,
    recipe: recipe_lib.Recipe | None = None,
    starts: int | None = None,
    per_start_targets: bool = False,
) -> Plan:
    """The plan of ``config`` (already valid): one-line errors for every rule that
    combines options, recipe and devices, and for a run that will not fit in memory.

    ``recipe``: already loaded (:func:`inputs.load_recipe`); ``starts``: side by side (default:
    the config's starts); ``per_start_targets``: each start its own targets (a batch group).
    """
    got = inputs.read(config, recipe)
    rec, config, inits, content = got.recipe, got.config, got.inits, got.content
    height, width = got.size
    style_paths = tuple(str(p) for p in config.style or (images.STYLE,))
    style_scales = config.style_scales()
    scales = []
    parameterization = Parameterization(config.parameterization, config.pyramid_levels)
    for size, steps, factor, lr_factor in zip(
        config.sizes(), config.steps_per_scale(), config.content_factors(), config.lr_factors()
    ):
        w, h = images.target_size(width, height, size=size)
        scales.append(
            Scale(
                size,
                h,
                w,
                steps,
                _style_shapes(rec, style_scales, h, w, config.model),
                parameterization.levels_at(h, w),
                factor,
                lr_factor,
            )
        )
    try:
        layers_lib.check_size(*scales[0].shape, rec.layers, config.model)
    except JaxcombineError as e:
        if len(scales) == 1:
            raise
        raise JaxcombineError(
            f"the first of the scales {','.join(str(s.size) for s in scales)}: {e}; use a "
            "larger --size or fewer scales"
        ) from None
    _check_pyramid(config, scales)
    scales += _final_pass(config, rec, scales[-1])
    if rec.preserve_color != "none" and any(i.kind == "content-recoloured" for i in inits):
        raise JaxcombineError(
            f"init content-recoloured takes the style's colours and preserve_color "
            f"{rec.preserve_color} keeps the content's; use one of them"
        )
    if config.style_regions:  # only a hypercolumn term draws positions in a style
        unsampled = next((t for t in rec.terms if t.source == "style" and not t.hypercolumn), None)
        if unsampled is not None:
            raise JaxcombineError(
                f"style_regions restrict where hypercolumn terms sample the styles; term "
                f"{unsampled.label} takes the whole style image (drop it or the regions)"
            )
    if config.tile:  # the statistics, the tile, then what tiles do not take
        sampled = next((t for t in rec.terms if t.hypercolumn is not None), None)
        if sampled is not None:
            raise JaxcombineError(
                f"tile does not take hypercolumn terms ({sampled.label}): they compare "
                "positions sampled over the whole image, not sums over positions; use tile 0"
            )
        if config.padding != "zeros":
            raise JaxcombineError(
                f"tile does not take padding {config.padding!r} (a tile's window is padded "
                "as the image's edge would be only with zeros); use tile 0 or padding zeros"
            )
        tiles.check(rec)
        tiles.plan(*scales[-1].shape, config.tile, rec.layers, config.model)
        if rec.masks or config.style_masks or set(style_scales) != {1.0}:
            raise JaxcombineError(
                "tile does not take masks or style scales (tiles.targets tiles the "
                "images at the output's size, unmasked); use tile 0 or drop them"
            )
    conv = model.conv_for(config.conv, config.dtype)
    plan = Plan(
        config=config,
        recipe=rec,
        inits=inits,
        content=content,
        scales=tuple(scales),
        conv=conv,
        loop=program.default_loop(None, conv) if config.loop == AUTO else config.loop,
        layout=layout_lib.Layout(),
        starts=len(inits) if starts is None else starts,
        per_start_targets=per_start_targets,
        memory_bytes=0,
        input_pixels=got.pixels,
        style_paths=style_paths,
        from_recipe=got.from_recipe,
    )
    return _decide(plan)


def _final_pass(config: RunConfig, rec: recipe_lib.Recipe, last: Scale) -> list[Scale]:
    """The final pass ``final_steps`` adds after the ladder (none, or one more
    :class:`Scale` of the last one's shape and factors, ``final``, its learning-rate
    factor ``final_lr_factor`` if given), and one-line errors for a recipe whose
    ``during`` keys would leave a stage nothing to match. Without a final
    pass, a term with ``during = "final"`` is never computed: a recipe may carry its final
    pass and leave it to ``final_steps`` to run it (the ``nnst`` preset)."""
    steps = config.final_steps or 0
    stages = [(False, "the scales")] + ([(True, "the final pass")] if steps else [])
    for final, where in stages:
        if not any(t.counts(final) and t.weight for t in rec.terms):
            raise JaxcombineError(
                f"recipe {rec.name}: no term of nonzero weight counts in {where} "
                "(see each term's during); nothing to optimise there"
            )
    if not steps:
        return []
    rate = last.lr_factor if config.final_lr_factor is None else config.final_lr_factor
    return [dataclasses.replace(last, steps=steps, final=True, lr_factor=rate)]


def _check_pyramid(config: RunConfig, scales: Sequence[Scale]) -> None:
    """One-line errors for a pyramid the scales cannot hold: more levels than the
    smallest scale can halve into, and an optimiser state carried between scales whose
    pyramids differ in levels (its buffers could not be resized onto the new ones)."""
    if config.parameterization != "laplacian":
        return
    for s in scales:
        h, w = level_shapes(s.height, s.width, s.levels)[-1]
        if s.levels > 1 and (h, w) == level_shapes(s.height, s.width, s.levels - 1)[-1]:
            raise JaxcombineError(
                f"pyramid_levels {s.levels} is too many for the {s.width}x{s.height} scale "
                "(its coarsest levels would be 1 px); use fewer levels"
            )
    if config.scale_optimizer == "carry" and len({s.levels for s in scales}) > 1:
        raise JaxcombineError(
            "scale_optimizer carry needs the same pyramid levels at every scale, but they are "
            f"{','.join(str(s.levels) for s in scales)}; give --pyramid-levels or use reset"
        )


def _style_shapes(
    rec: recipe_lib.Recipe, style_scales: Sequence[float], height: int, width: int, arch: str
) -> tuple[tuple[int, int], ...]:
    """(height, width) each style is fitted to for its targets: its ``style_scale`` times
    the output's, rounded. One-line errors for a scaled style too small for the recipe's
    layers and for a style term whose target is a feature map (it has the output's shape)."""
    sizes = []
    style_layers = list(dict.fromkeys(x for t in rec.terms if t.source == "style" for x in t.taps))
    for i, f in enumerate(style_scales, start=1):
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
                layers_lib.check_size(*size, style_layers, arch)
            except JaxcombineError as e:
                raise JaxcombineError(f"style {i} at style_scale {f:g}: {e}") from None
        sizes.append(size)
    return tuple(sizes)


def _decide(plan: Plan) -> Plan:
    """``plan`` with its device layout chosen and its memory estimated and checked."""
    config, rec = plan.config, plan.recipe
    heights = [
        [("the image", s.height)]
        + [(name, shape[0]) for name, shape in _layer_shapes(rec.layers, s.shape, config.model)]
        for s in plan.scales
    ]
    layout = layout_lib.choose(
        config.shard,
        starts=plan.starts,
        heights=heights,
        per_start_targets=plan.per_start_targets,
    )
    plan = dataclasses.replace(plan, layout=layout)
    need, what, remedies = _estimate(plan)
    limit = int(config.max_memory * 1e9) if config.max_memory else memory.available_bytes()
    memory.check_fits(need, limit, what, remedies=remedies)
    return dataclasses.replace(plan, memory_bytes=need)


@functools.lru_cache(maxsize=64)
def _layer_shapes(layers: tuple[str, ...], shape: tuple[int, int], arch: str):
    return tuple(layers_lib.layer_shapes(layers, *shape, arch).items())


def _estimate(plan: Plan) -> tuple[int, str, tuple[str, ...]]:
    """(peak bytes, what was estimated, remedies): the costliest scale's step (per device),
    its targets' forward passes, decoding the input files, and what the programs of the
    stages before it (and of a batch process's earlier groups) leave behind."""
    config, rec, starts = plan.config, plan.recipe, plan.starts
    height, width = plan.output_shape
    what = plan.describe()
    inputs = memory.estimate_inputs_bytes(
        [n for _, n in plan.input_pixels],
        [n for path, n in plan.input_pixels if path in plan.style_paths],
    )
    # the programs of the stages before, and what a batch's earlier groups left
    earlier = memory.stages_bytes(len(plan.scales)) + memory.groups_bytes(plan.earlier_groups)
    if config.tile:  # the steps hold one window's activations, plus image-sized arrays
        need = memory.tiled_estimate_bytes(
            rec,
            height,
            width,
            starts,
            config.tile,
            arch=config.model,
            conv=plan.conv,
            dtype=config.dtype,
            remat=config.remat,
        )
        return (
            need + inputs + earlier,
            f"{what}, tile {config.tile}",
            ("a smaller --size", "a smaller --tile"),
        )
    accelerator = jax.default_backend() != "cpu"  # separate memories: per device
    along_starts, along_rows = plan.layout.grid
    per_device = -(-starts // along_starts) if accelerator else starts
    rows = height // along_rows if accelerator else height
    need = memory.estimate_bytes(
        rec.layers,
        rows,
        width,
        per_device,
        arch=config.model,
        conv=plan.conv,
        dtype=config.dtype,
        remat=config.remat,
        per_start_targets=plan.per_start_targets,
        activation_targets=losses.spatial_layers(rec),
        padding=config.padding,
    )
    # hypercolumn terms: their sampled matrices per start, their maps and neighbour targets
    style_shapes = plan.scales[-1].style_shapes
    stepped = rec.replace(  # the terms some stage computes (a final pass's only if it runs)
        terms=tuple(t for t, s in zip(rec.terms, plan.problem.recipe.terms) if not s.skipped)
    )
    need += memory.hypercolumn_bytes(
        stepped, height, width, per_device, style_shapes=style_shapes, arch=config.model
    )
    # the targets' forward passes: a style larger than the output (style_scale) may cost
    # more, and a rotations term sends each style's turns through the network too
    turned = any(t.rotates for t in stepped.terms)
    forwards = memory.turned_styles(style_shapes) if turned else style_shapes
    targets = memory.estimate_targets_bytes(
        rec.layers, [(height, width), *forwards], arch=config.model, conv=plan.conv
    )
    remedies = plan.remedies()
    if targets > need:
        h, w = max(style_shapes, key=lambda s: s[0] * s[1])
        what += f"; its targets' forward passes, a style at {w}x{h}"
        remedies = ("a smaller --style-scale", *remedies)
    if inputs > max(need, targets) / 2:
        path, _ = max(plan.input_pixels, key=lambda p: p[1], default=(plan.content, 0))
        what += f"; decoding {Path(path).name}"
        remedies = (*remedies, "smaller input files")
    return max(need, targets) + inputs + earlier, what, remedies
