"""Every option of a run, its default, its choices and its validation: one home, no JAX.

:class:`RunConfig` is a frozen dataclass validated when it is built (types,
finite numbers, ranges, choices, init specs parsed once). The CLI takes its
options (names, defaults, help, choices) from :func:`options`; manifests,
study sweeps and the Python API build the same dataclass, so one bad value
gets the same one-line :class:`ConfigError` wherever it came from::

    >>> RunConfig(lr=float("nan"))
    Traceback (most recent call last):
    jaxcombine.options.rules.ConfigError: lr must be a finite number > 0, got nan

How one value is checked (types, finite numbers, ranges, choices) is
:mod:`jaxcombine.options.rules`; which options exist, with what rule and default, is here.
Neither imports anything heavier than the standard library, so tools can check a
configuration without loading JAX.
"""

from __future__ import annotations

import collections
import dataclasses
import functools
import math
from pathlib import Path
from typing import Any, Mapping, Sequence

from jaxcombine.options.layers import (  # noqa: F401  (choices, kept there)
    ARCHITECTURES,
    BACKBONES,
    CONVS,
    PADDINGS,
    POOLINGS,
)
from jaxcombine.options.rules import ConfigError, Rule, finite_number, option, positive_int

# --------------------------------------------------------------------------- choices

MODELS = ARCHITECTURES  # the backbones (options/layers.py)
DTYPES = ("float32", "bfloat16", "float16")
OPTIMIZERS = ("adam", "sgd", "lbfgs", "rmsprop")
SCHEDULES = ("constant", "cosine")
LOOPS = ("scan", "unroll", "step")
SHARDS = ("starts", "rows")  # how several local devices share a run (jaxcombine.engine.layout)
AUTO = "auto"  # conv and loop: the fastest measured for the backend
SOURCES = ("content", "style")
# The built-in statistics (jaxcombine.stats: one module each); more can be registered at
# run time (jaxcombine.stats.register), and recipes check names against
# jaxcombine.options.statistic_names, which loads no JAX.
STATISTICS = ("activations", "gram", "meanstd", "covariance", "w2", "swd", "histogram", "cmd")
# The built-in statistics of hypercolumns (several layers read at sampled positions, a
# recipe term's ``hypercolumn = [...]``; jaxcombine.stats.hypercolumns): STROTSS's relaxed
# EMD, moments, palette and self-similarity, NNST's nearest-neighbour targets and the
# matches its final pass finds every step.
HYPERCOLUMN_STATISTICS = (
    "emd",
    "moments",
    "palette",
    "self_similarity",
    "nearest",
    "nearest_each_step",
)
INIT_KINDS = ("content", "style", "noise")  # plus image paths
PRESERVE_COLORS = ("none", "luminance", "stats", "histogram")  # jaxcombine.io.color
DEFAULT_RECIPE = "gatys"
# train's: an early content layer, so that a network trained from scratch keeps the photo
DEFAULT_TRAIN_RECIPE = "johnson"
DEFAULT_SIZE = 192  # px, the output's longest side when neither --size nor --scales is given
# Learning rates in 0–255 pixel units, per optimiser (Adam's step is about lr pixels).
DEFAULT_LR = {"adam": 4.0, "sgd": 2e3, "lbfgs": 1.0, "rmsprop": 1.0}
DEFAULT_STEPS = 200
DEFAULT_OPTIMIZER = "adam"
# What the optimiser updates (jaxcombine.engine.parameterization): the pixels, or the
# coefficients of a Laplacian pyramid whose sum is the image.
PARAMETERIZATIONS = ("pixels", "laplacian")
DEFAULT_PARAMETERIZATION = "pixels"
MAX_PYRAMID_LEVELS = 16
# The options a recipe's [run] table may suggest (options/recipe.py). Left None here, an
# option takes the recipe's suggestion, else its built-in default (RunConfig.settle); a
# value given here always wins.
RECIPE_RUN_OPTIONS = (
    "model",
    "steps",
    "scale_count",
    "scales",
    "min_size",
    "scale_floor",
    "scale_steps",
    "scale_content_weights",
    "scale_lr_factors",
    "scale_detail",
    "final_steps",
    "final_lr_factor",
    "optimizer",
    "lr",
    "parameterization",
    "pyramid_levels",
    "padding",
)
# A suggestion is also dropped when the user gave one of these: a recipe's ladder
# (and the per-scale lists that belong to it) gives way to the user's, its step counts
# to the user's --steps, its learning rate to the user's optimiser, its pyramid levels
# to the user's parameterisation.
_LADDER = ("scales", "min_size", "scale_count")
SUGGESTION_YIELDS_TO = {
    "scale_count": _LADDER,
    "scales": _LADDER,
    "min_size": _LADDER,
    "scale_floor": _LADDER,
    "scale_steps": ("steps", *_LADDER),
    "scale_content_weights": _LADDER,
    "scale_lr_factors": ("optimizer", *_LADDER),
    "final_lr_factor": ("optimizer",),
    "lr": ("optimizer",),
    "pyramid_levels": ("parameterization",),
}
DEFAULT_MODEL = "vgg19"
BUILT_IN_DEFAULTS = {
    "model": DEFAULT_MODEL,
    "steps": DEFAULT_STEPS,
    "optimizer": DEFAULT_OPTIMIZER,
    "parameterization": DEFAULT_PARAMETERIZATION,
    "scale_detail": "none",
    "padding": "zeros",
}
SWEEPABLE = ("lr", "tv_weight")
SCALE_FROM = (
    "last",
    "average",
)  # coarse-to-fine: what a scale hands the next (jaxcombine.engine.scales)
# Coarse to fine: what is added to the upsampled image a scale starts from (nothing, or the
# content's detail at the new size, as STROTSS does).
SCALE_DETAILS = ("none", "content")
SCALE_OPTIMIZER = ("carry", "reset")

# ``jaxcombine eval`` (docs/evaluation.md): style layers and pooling the run did not
# optimise wherever possible (gatys and w2 tap block*_conv1 and block4_conv2 under max
# pooling; swd's twelve layers include block1..4_conv2), and a fixed set of many
# directions for the sliced distance.
EVAL_STYLE_LAYERS = ("block1_conv2", "block2_conv2", "block3_conv2", "block4_conv2", "block5_conv2")
EVAL_CONTENT_LAYER = "block4_conv2"
EVAL_POOLING = "avg"
EVAL_DIRECTIONS = 512
# Each style distance eval reports (a column style_<name>), and the statistic's options.
EVAL_STATISTICS = ("gram", "w2", "swd", "cmd", "histogram")
# eval-suite: the recipes it compares by default, and the judge's style distance its
# Pareto fronts are drawn on (sliced W: the distribution distance least tied to one layer's scale)
SUITE_RECIPES = ("gatys", "w2", "swd")
SUITE_FRONT_STATISTIC = "swd"
# ... and the judge's style distances it says, per pair, which points of each front are
# left undominated on (the front's own, then the two whose errors weigh layers differently)
SUITE_SHORTFALL_STATISTICS = ("swd", "gram", "w2")
EVAL_STATISTIC_OPTIONS = {"swd": {"directions": EVAL_DIRECTIONS}}
EVAL_CONTENT_STATISTIC = "activations"
# The sliced distance sorts every position along every direction: at 1024² block 1 alone
# is 1M positions × 512 directions (beyond 14 GB with the sorts). Above this many
# positions a layer is scored on a seeded random subset of them.
EVAL_MAX_POINTS = 65_536
EVAL_SEED = 0

SEED_LIMIT = 2**31  # noise seeds (seed … seed+N-1) stay below this
DEFAULT_MAX_PIXELS = 64_000_000  # refuse larger input files (decompression bombs)
MAX_STYLE_SCALE = 16.0  # a style at 16x the output's side: memory is checked before that anyway


# --------------------------------------------------------------------------- starts

# The starts an ``init`` names by a word; ``noise``/``noise:N`` draw seeds, any other word
# is an image path. Help texts and errors list them from here.
NAMED_STARTS = ("content", "style", "content-recoloured")
START_WORDS = ", ".join(NAMED_STARTS + ("noise", "noise:N"))


@dataclasses.dataclass(frozen=True)
class Init:
    """One start: ``content``, ``style``, ``content-recoloured`` (the content in the first
    style's colour mean and covariance), ``noise`` (with its seed) or an image ``file``."""

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

    @property
    def spec(self) -> str:
        """This start alone as an ``init`` value (a noise start also needs its seed)."""
        return self.path if self.kind == "file" else self.kind


def parse_inits(spec: str, seed: int = 0) -> tuple[Init, ...]:
    """``"content,style,noise:2"`` → (content, style, noise seed, noise seed+1).

    Words other than ``content``, ``style``, ``content-recoloured``, ``noise`` and
    ``noise:N`` are image paths; whether the file exists is checked where it is read.
    """
    if not isinstance(spec, str):
        raise ConfigError("init", f"init must be a comma-separated string, got {spec!r}")
    return _parse_inits(spec, seed)


# A configuration parses its inits wherever it is checked or replaced (a run does so about
# six times), and "noise:99999" builds 99999 starts each time: 0.5 s apiece, which was most
# of the time it took to refuse such a run for memory. The starts are frozen, so one parse
# per (spec, seed) serves every caller.
@functools.lru_cache(maxsize=32)
def _parse_inits(spec: str, seed: int) -> tuple[Init, ...]:
    out: list[Init] = []
    noise = seed
    for part in (p.strip() for p in spec.split(",")):
        if not part:
            continue
        if part in NAMED_STARTS:
            out.append(Init(part))
        elif part == "noise" or part.startswith("noise:"):
            count_text = part.partition(":")[2] if ":" in part else "1"
            count = int(count_text) if count_text.isdigit() else 0
            if count < 1:
                raise ConfigError("init", f"bad init {part!r}: use noise:N with N >= 1")
            if noise + count > SEED_LIMIT:
                raise ConfigError(
                    "init",
                    f"noise seeds {noise}..{noise + count - 1} exceed "
                    f"{SEED_LIMIT - 1}; use a smaller seed or fewer starts",
                )
            out += [Init("noise", seed=noise + i) for i in range(count)]
            noise += count
        else:
            out.append(Init("file", path=part))
    if not out:
        raise ConfigError("init", "no init given")
    counts = collections.Counter(i.label for i in out)
    dup = sorted(label for label, n in counts.items() if n > 1)
    if dup:
        raise ConfigError("init", f"init {dup[0]!r} given twice")
    return tuple(out)


# --------------------------------------------------------------------------- shared options


# The options every command that reads images or computes takes (run, train, stylize):
# one rule each, so a value is refused alike everywhere; only the help says what the limit
# is checked before.
def weights_option(help: str) -> Any:
    """``weights``: a weights folder or a converted .h5 file (default: the project's)."""
    return option(None, Rule("text", help, optional=True))


def max_pixels_option() -> Any:
    """``max_pixels``: the decompression-bomb guard of every image reader."""
    return option(
        DEFAULT_MAX_PIXELS,
        Rule("int", "Refuse input images larger than this (decompression bombs).", low=1),
    )


def max_memory_option(help: str) -> Any:
    """``max_memory``: GB for the memory check made before any work (None: what is there)."""
    return option(None, Rule("float", help, low=0.0, low_open=True, optional=True))


# --------------------------------------------------------------------------- the run


@dataclasses.dataclass(frozen=True)
class RunConfig:
    """Every option of one run; validated when built, hashable, recorded in each output's JSON.

    ``content``/``style`` default to the bundled public-domain pair; ``init``
    (comma-separated ``content``, ``style``, ``content-recoloured``, ``noise``,
    ``noise:N`` or image paths) defaults to the recipe's suggestion. Numbers a user sweeps
    (``lr``, ``steps``, ``tv_weight``, ``style_weights``, the recipe's weights)
    are traced by the engine: changing them compiles nothing.

    Options left ``None`` that a recipe also sets (``init``, ``tv_weight``,
    ``preserve_color``) take the recipe's value; a value given here overrides it.
    ``preserve_color`` (:mod:`jaxcombine.io.color`) changes the images the targets
    are made from, the images written and (``luminance``) the program, so it is
    no study ``--sweep`` axis (sweeps vary traced numbers over one set of targets
    and one program); compare modes with a batch ``[grid]``.
    """

    content: str | None = option(
        None,
        Rule("text", "Content image (default: the bundled NASA astronaut photo).", optional=True),
    )
    style: tuple[str, ...] = option(
        (), Rule("paths", "Style image; repeat to blend several (default: bundled Starry Night).")
    )
    style_weights: tuple[float, ...] | None = option(
        None,
        Rule("floats", "Blend weights, one per style (comma-separated).", low=0.0, optional=True),
    )
    style_masks: tuple[str, ...] | None = option(
        None,
        Rule(
            "paths",
            "Mask image per style (repeat, one per --style): each style governs the "
            "output region where its mask is white (greyscale weights 0-1), matched "
            "against its own statistics.",
            optional=True,
        ),
    )
    style_regions: tuple[str, ...] | None = option(
        None,
        Rule(
            "paths",
            "Region of each style image (repeat, one per --style): hypercolumn style terms "
            "draw that style's positions only where this mask, over the style image, is "
            "white. With --style-mask: region-to-region guidance (STROTSS's guided mode).",
            optional=True,
        ),
    )
    style_scale: tuple[float, ...] | None = option(
        None,
        Rule(
            "floats",
            "Size of each style image relative to the output (comma-separated, one per "
            "style or one for all; default 1): larger makes its strokes larger.",
            low=0.0,
            low_open=True,
            high=MAX_STYLE_SCALE,
            optional=True,
        ),
    )
    preserve_color: str | None = option(
        None,
        Rule(
            "choice",
            "Keep the content's colours: luminance (style on luminance only, content's "
            "chroma on output), stats (style recoloured to the content's colour mean and "
            "covariance), histogram (style's channel histograms matched to the content's) "
            "or none (default: the recipe's preserve_color, else none).",
            PRESERVE_COLORS,
            optional=True,
        ),
    )
    recipe: Any = option(
        DEFAULT_RECIPE,
        Rule("text", "Preset name (see 'jaxcombine recipes') or a recipe .toml file."),
    )
    init: str | None = option(
        None,
        Rule(
            "text",
            f"Starts, comma-separated: {START_WORDS} or image paths (default: the "
            "recipe's; content-recoloured is the content in the style's colours). Several "
            "run side by side in one program.",
            optional=True,
        ),
    )
    steps: int | None = option(
        None,
        Rule(
            "int",
            f"Optimisation steps (at each scale; default: the recipe's, else {DEFAULT_STEPS}).",
            low=0,
            high=10_000_000,
            optional=True,
        ),
    )
    size: int | None = option(
        None,
        Rule(
            "int",
            f"Longest side of the output, px (default: the last of --scales, else {DEFAULT_SIZE}).",
            low=1,
            high=1_000_000,
            optional=True,
        ),
    )
    scales: tuple[int, ...] | None = option(
        None,
        Rule(
            "ints",
            "Coarse to fine: optimise at these sizes (longest side, px) in turn, ascending, "
            "e.g. 128,256,512; the last is the output's size (a larger --size is added "
            "after it). Each scale starts "
            "from the previous one's result, upsampled.",
            low=1,
            high=1_000_000,
            optional=True,
        ),
    )
    min_size: int | None = option(
        None,
        Rule(
            "int",
            "Coarse to fine from this size up to --size, in steps of sqrt(2) (instead of "
            "--scales).",
            low=1,
            high=1_000_000,
            optional=True,
        ),
    )
    scale_count: int | None = option(
        None,
        Rule(
            "int",
            "Coarse to fine over this many scales, each twice the size of the one before, "
            "ending at --size (instead of --scales or --min-size).",
            low=1,
            high=16,
            optional=True,
        ),
    )
    scale_floor: int | None = option(
        None,
        Rule(
            "int",
            "No scale smaller than this (longest side, px): the ladder's coarser scales "
            "are dropped, each with its entry in --scale-steps and "
            "--scale-content-weights; the output's size always stays.",
            low=1,
            high=1_000_000,
            optional=True,
        ),
    )
    scale_steps: tuple[int, ...] | None = option(
        None,
        Rule(
            "ints",
            "Steps at each scale, one per scale (default: --steps at every scale).",
            low=0,
            high=10_000_000,
            optional=True,
        ),
    )
    scale_content_weights: tuple[float, ...] | None = option(
        None,
        Rule(
            "floats",
            "Multiply the content terms' weights by these factors, one per scale, coarse to "
            "fine (e.g. 1,0.5,0.25,0.125: less content as the scales grow; default 1).",
            low=0.0,
            optional=True,
        ),
    )
    scale_lr_factors: tuple[float, ...] | None = option(
        None,
        Rule(
            "floats",
            "Multiply the learning rate by these factors, one per scale, coarse to fine "
            "(e.g. 1,1,1,0.5: STROTSS halves it at the last scale; default 1). Built-in "
            "optimizers only.",
            low=0.0,
            optional=True,
        ),
    )
    final_steps: int | None = option(
        None,
        Rule(
            "int",
            "After the last scale, a final pass of this many steps at the output's size, "
            'with a fresh optimiser, in which the recipe\'s terms with during = "final" '
            'take the place of those with during = "scales" (NNST\'s final pass; '
            "default: the recipe's, else 0, none).",
            low=0,
            high=10_000_000,
            optional=True,
        ),
    )
    final_lr_factor: float | None = option(
        None,
        Rule(
            "float",
            "Multiply the learning rate by this factor in the final pass (default: the last "
            "scale's factor). Built-in optimizers only.",
            low=0.0,
            optional=True,
        ),
    )
    scale_from: str = option(
        "last",
        Rule(
            "choice",
            "What a scale hands the next: its last image, or the running average of its "
            "iterates (smoother).",
            SCALE_FROM,
        ),
    )
    scale_detail: str | None = option(
        None,
        Rule(
            "choice",
            "What a scale adds to the upsampled image it starts from: nothing, or the "
            "content's detail at the new size (the content less its previous scale's copy, "
            "upsampled), so the photo's edges come back sharp at each scale instead of being "
            "redrawn by the optimiser, as STROTSS does (default: the recipe's, else "
            "none).",
            SCALE_DETAILS,
            optional=True,
        ),
    )
    scale_optimizer: str = option(
        "reset",
        Rule(
            "choice",
            "Across scales, start the optimiser afresh (reset: lower final loss, measured "
            "in docs/benchmarks.md) or carry its state (Adam's moments resized to the new "
            "size).",
            SCALE_OPTIMIZER,
        ),
    )
    optimizer: Any = option(
        None,
        Rule(
            "choice",
            f"Optimiser (default: the recipe's, else {DEFAULT_OPTIMIZER}).",
            OPTIMIZERS,
            optional=True,
        ),
    )
    lr: float | None = option(
        None,
        Rule(
            "float",
            "Learning rate in 0-255 pixel units (default per optimizer: "
            + ", ".join(f"{k} {v:g}" for k, v in DEFAULT_LR.items())
            + ").",
            low=0.0,
            low_open=True,
            optional=True,
        ),
    )
    schedule: str = option(
        "constant",
        Rule("choice", "Learning-rate schedule (cosine decays to 10% over the steps).", SCHEDULES),
    )
    parameterization: str | None = option(
        None,
        Rule(
            "choice",
            "What the optimiser updates: the pixels, or a Laplacian pyramid whose levels, "
            "upsampled and added, are the image (low frequencies move as fast as high ones; "
            f"default: the recipe's, else {DEFAULT_PARAMETERIZATION}).",
            PARAMETERIZATIONS,
            optional=True,
        ),
    )
    pyramid_levels: int | None = option(
        None,
        Rule(
            "int",
            "Levels of the Laplacian pyramid at every scale (default: the recipe's, else "
            "halvings while the coarsest level keeps 16 px on its shorter side).",
            low=1,
            high=MAX_PYRAMID_LEVELS,
            optional=True,
        ),
    )
    tv_weight: float | None = option(
        None,
        Rule("float", "Total-variation weight (overrides the recipe's).", low=0.0, optional=True),
    )
    seed: int = option(0, Rule("int", "Seed of the first noise start.", low=0, high=SEED_LIMIT - 1))
    model: str | None = option(
        None,
        Rule(
            "choice",
            f"Network (default: the recipe's, else {DEFAULT_MODEL}).",
            MODELS,
            optional=True,
        ),
    )
    pooling: str = option("max", Rule("choice", "Pooling between VGG blocks.", POOLINGS))
    padding: str | None = option(
        None,
        Rule(
            "choice",
            "What the network's convolutions read beyond the image's edge: zeros, as it was "
            "trained; the image mirrored (reflect); or its opposite edge (circular: no "
            "feature knows where it sits; default: the recipe's, else zeros).",
            PADDINGS,
            optional=True,
        ),
    )
    dtype: str = option(
        "float32", Rule("choice", "Dtype of the VGG activations (losses stay float32).", DTYPES)
    )
    remat: bool = option(
        False, Rule("bool", "Recompute VGG blocks in the backward pass (less memory).")
    )
    conv: str = option(
        AUTO,
        Rule(
            "choice",
            "Convolution algorithm (auto: fastest measured for the backend; "
            "winograd: float32 only, about 0.5 GB more memory).",
            (AUTO, *CONVS),
        ),
    )
    chunk: int = option(25, Rule("int", "Steps per compiled chunk / report.", low=1, high=100_000))
    loop: str = option(
        AUTO,
        Rule(
            "choice",
            "Loop form inside a chunk (auto: fastest measured for the backend).",
            (AUTO, *LOOPS),
        ),
    )
    tile: int = option(
        0,
        Rule(
            "int",
            "Compute each step's exact loss and gradient from tiles of this many px "
            "(a multiple of 16 for layers of block 5; 0: the whole image at once). Memory "
            "is then set by the tile plus 80 px halos, not the image; time grows (the "
            "forward runs twice, over the halos too). Not with the swd statistic.",
            low=0,
            high=1_000_000,
        ),
    )
    shard: str = option(
        AUTO,
        Rule(
            "choice",
            "With several devices, split the starts over them (starts) or each "
            "image's rows, so one image larger than a device holds fits (rows; the "
            "height of every layer must divide among them). auto: rows when there is one "
            "start and every height divides, else starts. A batch always splits starts.",
            (AUTO, *SHARDS),
        ),
    )
    snapshot_every: int = option(
        0, Rule("int", "Also save images every N steps (0: never).", low=0)
    )
    weights: str | None = weights_option(
        "Weights folder (or a converted .h5 file). Default: the project's weights/ folder."
    )
    max_pixels: int = max_pixels_option()
    max_memory: float | None = max_memory_option(
        "Memory limit in GB for the check made before a run starts (default: the "
        "accelerator's memory, or the host's available memory on CPU)."
    )

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.name == "optimizer" and not isinstance(value, (str, type(None))):
                if not (
                    callable(getattr(value, "init", None))
                    and callable(getattr(value, "update", None))
                ):
                    raise ConfigError(
                        "optimizer",
                        f"optimizer must be one of {', '.join(OPTIMIZERS)} "
                        f"or an optax transformation, got {value!r}",
                    )
                continue
            if f.name == "recipe" and hasattr(value, "terms"):  # a Recipe object (Python API)
                continue
            object.__setattr__(self, f.name, f.metadata["rule"].check(f.name, value))
        self._check_together()

    def _check_together(self) -> None:
        """Rules between options."""
        if self.conv == "winograd" and self.dtype != "float32":
            raise ConfigError(
                "conv",
                "conv 'winograd' needs float32 (its transforms lose too "
                "much precision in 16 bits); use conv 'xla'",
            )
        if self.style_weights is not None:
            if len(self.style_weights) != max(1, len(self.style)):
                raise ConfigError(
                    "style_weights",
                    f"give one style weight per style image: "
                    f"{len(self.style_weights)} for {max(1, len(self.style))}",
                )
            if sum(self.style_weights) <= 0:
                raise ConfigError("style_weights", "style weights must not all be zero")
        n_styles = max(1, len(self.style))
        if self.style_masks == ():  # no --style-mask given
            object.__setattr__(self, "style_masks", None)
        if self.style_masks is not None and len(self.style_masks) != n_styles:
            raise ConfigError(
                "style_masks",
                f"give one style mask per style image: {len(self.style_masks)} for {n_styles}",
            )
        if self.style_regions == ():  # no --style-region given
            object.__setattr__(self, "style_regions", None)
        if self.style_regions is not None and len(self.style_regions) != n_styles:
            raise ConfigError(
                "style_regions",
                f"give one style region per style image: {len(self.style_regions)} for {n_styles}",
            )
        backbone = BACKBONES.get(self.model)
        if self.style_masks is not None and backbone is not None and not backbone.uniform:
            raise ConfigError("style_masks", f"masks need a VGG backbone, not {self.model}")
        if self.style_scale is not None and len(self.style_scale) not in (1, n_styles):
            raise ConfigError(
                "style_scale",
                f"give one style scale, or one per style image: "
                f"{len(self.style_scale)} for {n_styles}",
            )
        if self.lr is not None and not self.builtin_optimizer:
            raise ConfigError(
                "lr",
                "lr applies to the built-in optimizers; give an optax "
                "transformation its own learning rate",
            )
        if self.schedule != "constant" and not self.builtin_optimizer:
            raise ConfigError("schedule", "schedule applies to the built-in optimizers")
        for factors in ("scale_lr_factors", "final_lr_factor"):  # they scale the built-in lr
            if getattr(self, factors) is not None and not self.builtin_optimizer:
                raise ConfigError(factors, f"{factors} applies to the built-in optimizers")
        if self.init is not None:
            parse_inits(self.init, self.seed)
        if self.pyramid_levels is not None and self.parameterization == "pixels":
            raise ConfigError(
                "pyramid_levels",
                "pyramid_levels applies to parameterization laplacian, not pixels",
            )
        self._check_scales()

    def _check_scales(self) -> None:
        ladders = [n for n in _LADDER if getattr(self, n) is not None]
        if len(ladders) > 1:
            raise ConfigError(
                ladders[0],
                f"give one of scales, min_size or scale_count, not {' and '.join(ladders)}",
            )
        if self.scales is not None:
            if any(b <= a for a, b in zip(self.scales, self.scales[1:])):
                raise ConfigError("scales", f"scales must be ascending, got {_ints(self.scales)}")
            if self.size is not None and self.scales[-1] > self.size:
                raise ConfigError(
                    "size",
                    f"size {self.size} is smaller than the last scale {self.scales[-1]} "
                    "(the last scale is the output's size); drop size or that scale",
                )
        if self.min_size is not None and self.min_size > self.end_size:
            raise ConfigError(
                "min_size",
                f"min_size {self.min_size} is larger than the output size {self.end_size}",
            )
        if any(getattr(self, n) is not None for n in _LADDER):
            self.check_per_scale()

    def check_per_scale(self) -> None:
        """One value per scale of the :meth:`ladder` (the floor drops entries, it does not
        change how many are given) in every per-scale list. Where no ladder is given the
        check waits for :meth:`settle`: the recipe may suggest the ladder the lists are for."""
        ladder = self.ladder()
        floored = "" if self.sizes() == ladder else f" (before scale_floor {self.scale_floor})"
        for name, what in (
            ("scale_steps", "step count"),
            ("scale_content_weights", "content weight factor"),
            ("scale_lr_factors", "learning rate factor"),
        ):
            values = getattr(self, name)
            if values is not None and len(values) != len(ladder):
                raise ConfigError(
                    name,
                    f"give one {what} per scale: {len(values)} for the {len(ladder)} "
                    f"scales {_ints(ladder)}{floored}",
                )

    def replace(self, **changes: Any) -> "RunConfig":
        """A copy with ``changes``, validated like a new config."""
        return dataclasses.replace(self, **changes)

    def settle(self, suggested: Mapping[str, Any] = ()) -> tuple["RunConfig", tuple[str, ...]]:
        """(this config with the recipe's ``suggested`` run options applied under the ones
        given here, then the built-in defaults; the names taken from the recipe).

        A suggestion applies only where this config leaves the option None and none of
        the options it yields to (:data:`SUGGESTION_YIELDS_TO`) is given: explicit always
        wins. The result is validated as any config is (a suggestion that no longer fits
        the user's options is a one-line error naming it)."""
        suggested = dict(suggested)
        taken = {
            name: value
            for name, value in suggested.items()
            if getattr(self, name) is None
            and not any(getattr(self, o) is not None for o in SUGGESTION_YIELDS_TO.get(name, ()))
        }
        defaults = {n: v for n, v in BUILT_IN_DEFAULTS.items() if getattr(self, n) is None}
        settled = self.replace(**{**defaults, **taken})
        settled.check_per_scale()
        return settled, tuple(sorted(taken))

    @property
    def builtin_optimizer(self) -> bool:
        """Whether the optimiser is one of :data:`OPTIMIZERS` (or not chosen yet)."""
        return self.optimizer is None or isinstance(self.optimizer, str)

    @property
    def end_size(self) -> int:
        """The output's longest side, px: ``size``, else the last of ``scales``, else
        :data:`DEFAULT_SIZE`."""
        if self.size is not None:
            return self.size
        return self.scales[-1] if self.scales else DEFAULT_SIZE

    def ladder(self) -> tuple[int, ...]:
        """The sizes the ladder options give, coarse to fine, before ``scale_floor``; the
        per-scale lists (``scale_steps``, ``scale_content_weights``, ``scale_lr_factors``)
        have one entry each.

        ``scales`` as given (a larger ``size`` appended); from ``scale_count``, sizes
        each twice the last, ending at :attr:`end_size`; from ``min_size``, the sizes
        ``end_size / √2^i`` (rounded) down to ``min_size``, as
        crowsonkb/style-transfer-pytorch does; none: ``(end_size,)``, a single scale.
        """
        end = self.end_size
        if self.scales is not None:
            return self.scales if self.scales[-1] == end else (*self.scales, end)
        if self.scale_count is not None:
            return tuple(sorted({max(1, round(end / 2**i)) for i in range(self.scale_count)}))
        if self.min_size is None:
            return (end,)
        out, i = [], 0
        while (s := round(end / math.sqrt(2) ** i)) >= self.min_size or not out:
            out.append(s)
            i += 1
        return tuple(sorted(set(out)))

    def sizes(self) -> tuple[int, ...]:
        """The sizes optimised in turn, coarse to fine, ending with :attr:`end_size`: the
        :meth:`ladder` without its scales smaller than ``scale_floor``.

        The floor is how a preset keeps its paper's smallest scale at any output size:
        STROTSS's four scales end at 512 px and begin at 64; at ``--size 256`` the same
        four would begin at 32 px, where a network's features still say where in the
        image they are (zero padding, receptive fields as wide as the image), and the
        output keeps the painting's own arrangement (docs/evaluation.md, "Whose
        arrangement")."""
        ladder = self.ladder()
        if self.scale_floor is None:
            return ladder
        return tuple(s for s in ladder if s >= self.scale_floor) or ladder[-1:]

    def _floored(self, per_scale: tuple) -> tuple:
        """A per-scale list of the :meth:`ladder` without the entries of floored scales."""
        return per_scale[len(per_scale) - len(self.sizes()) :]

    def steps_per_scale(self) -> tuple[int, ...]:
        """Steps at each of :meth:`sizes`: ``scale_steps``, else ``steps`` at every scale."""
        if self.scale_steps is not None:
            return self._floored(self.scale_steps)
        return (DEFAULT_STEPS if self.steps is None else self.steps,) * len(self.sizes())

    def content_factors(self) -> tuple[float, ...]:
        """The content terms' weight factor at each of :meth:`sizes` (default 1)."""
        if self.scale_content_weights is not None:
            return self._floored(self.scale_content_weights)
        return (1.0,) * len(self.sizes())

    def lr_factors(self) -> tuple[float, ...]:
        """What multiplies the learning rate at each of :meth:`sizes` (default 1)."""
        if self.scale_lr_factors is not None:
            return self._floored(self.scale_lr_factors)
        return (1.0,) * len(self.sizes())

    @property
    def multi_scale(self) -> bool:
        return len(self.sizes()) > 1

    @property
    def multi_stage(self) -> bool:
        """Whether the run optimises in more than one stage: several scales, or a final pass."""
        return self.multi_scale or bool(self.final_steps)

    def inits(self, default: str = "content") -> tuple[Init, ...]:
        """The parsed starts (``default``, usually the recipe's suggestion, when ``init`` is None)."""
        return parse_inits(self.init or default, self.seed)

    def style_scales(self) -> tuple[float, ...]:
        """One scale per style image (``style_scale`` spread over them; default 1.0)."""
        n = max(1, len(self.style))
        scales = self.style_scale or (1.0,)
        return scales * n if len(scales) == 1 else scales

    def learning_rate(self) -> float | None:
        """``lr``, or the optimiser's default; None for an optax transformation."""
        if not self.builtin_optimizer:
            return None
        return DEFAULT_LR[self.optimizer or DEFAULT_OPTIMIZER] if self.lr is None else self.lr


def _ints(values: tuple[int, ...]) -> str:
    return ",".join(map(str, values))


def run_fields() -> tuple[str, ...]:
    """Names of every :class:`RunConfig` option, in order."""
    return tuple(f.name for f in dataclasses.fields(RunConfig))


def rule(name: str, of: type = None) -> Rule:
    """The :class:`Rule` of option ``name`` of the configuration class ``of`` (default
    :class:`RunConfig`; also :class:`TrainConfig`, :class:`StylizeConfig`)."""
    of = RunConfig if of is None else of
    for f in dataclasses.fields(of):
        if f.name == name:
            return f.metadata["rule"]
    valid = ", ".join(f.name for f in dataclasses.fields(of))
    raise ConfigError(name, f"unknown option {name!r}; valid: {valid}")


def default(name: str, of: type = None) -> Any:
    """The default value of option ``name`` of ``of`` (default :class:`RunConfig`)."""
    of = RunConfig if of is None else of
    rule(name, of)
    return next(f.default for f in dataclasses.fields(of) if f.name == name)


def from_options(options: dict[str, Any]) -> RunConfig:
    """A config from a mapping (manifest tables, JSON records): unknown keys are errors."""
    unknown = [k for k in options if k not in run_fields()]
    if unknown:
        raise ConfigError(
            unknown[0], f"unknown option {unknown[0]!r}; valid: {', '.join(run_fields())}"
        )
    return RunConfig(**options)


# --------------------------------------------------------------------------- study and batch


@dataclasses.dataclass(frozen=True)
class Sweep:
    """A second axis crossed with the starts: ``name`` in :data:`SWEEPABLE`, its values."""

    name: str
    values: tuple[float, ...]

    def suffix(self, value: float) -> str:
        return f"@{self.name}={value:g}"


def parse_sweep(spec: str | None, base: RunConfig | None = None) -> Sweep | None:
    """``"tv_weight=0,1e-3,1e-2"`` → :class:`Sweep`; each value is checked as that option is."""
    if spec is None or spec == "":
        return None
    if not isinstance(spec, str):
        raise ConfigError("sweep", f"sweep must be NAME=V1,V2,..., got {spec!r}")
    name, sep, raw = spec.partition("=")
    name = name.strip().replace("-", "_")
    if not sep or name not in SWEEPABLE:
        raise ConfigError(
            "sweep",
            f"bad sweep {spec!r}: use NAME=V1,V2,... with NAME one of {', '.join(SWEEPABLE)}",
        )
    values = tuple(rule(name).parse(name, v) for v in raw.split(",") if v.strip())
    if not values:
        raise ConfigError("sweep", f"bad sweep {spec!r}: give at least one value")
    base = base or RunConfig()
    for v in values:
        base.replace(**{name: v})  # the option's own rules
    if len(set(values)) != len(values):
        raise ConfigError("sweep", f"bad sweep {spec!r}: give distinct values")
    return Sweep(name, values)


@dataclasses.dataclass(frozen=True)
class StudyOptions:
    """What a study adds to a run: snapshot interval (= convergence window), tolerance, sweep,
    and whether to score the final images with ``jaxcombine eval`` (``evaluate``)."""

    snapshot_every: int = 25
    tolerance: float = 0.01
    sweep: Sweep | None = None
    evaluate: bool = False

    def __post_init__(self) -> None:
        positive_int(self.snapshot_every, "snapshot_every")
        Rule("bool").check("evaluate", self.evaluate)
        finite_number(self.tolerance, "tolerance", low=0.0, low_open=True)
        if self.sweep is not None and not isinstance(self.sweep, Sweep):
            object.__setattr__(self, "sweep", parse_sweep(self.sweep))


# --------------------------------------------------------------------------- train and stylize

TRAIN_DEFAULT_STEPS = 2000
# What a resumed training must share with the one that wrote the checkpoint: everything
# that fixes the networks, the loss or the data stream (a different photo folder or seed
# would change the batches a resumed run sees). Steps, intervals and the progress of the
# run may differ: a training is resumed to run it longer.
TRAIN_RESUMABLE = ("steps", "checkpoint_every", "sample_every", "max_memory", "weights")


def _check_rules(obj: Any) -> None:
    """Each field of dataclass ``obj`` normalised by its :class:`Rule` (one-line errors)."""
    for f in dataclasses.fields(obj):
        object.__setattr__(obj, f.name, f.metadata["rule"].check(f.name, getattr(obj, f.name)))


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Every option of ``jaxcombine train``: feed-forward networks that learn a recipe.

    One network per ``style`` image (trained side by side in one program), or with
    ``conditional`` one network for all of them (conditional instance normalisation, a
    style index at inference). The loss is the recipe's, between the backbone's features
    of net(P) and the targets of each training photo P as content and the style as style.
    Numbers that only scale the loss or the optimiser (``lr``, ``tv_weight``, the
    recipe's weights) are traced: changing them compiles nothing.
    """

    style: tuple[str, ...] = option(
        (), Rule("paths", "Style image; repeat for several (default: bundled Starry Night).")
    )
    photos: str | None = option(
        None,
        Rule(
            "text",
            "Folder of training photos (default: photos shipped with installed packages; "
            "see docs/training.md).",
            optional=True,
        ),
    )
    holdout: tuple[str, ...] = option(
        (),
        Rule(
            "paths",
            "Names (file stems) of photos kept out of training and shown in the sample "
            "grids; repeat for several. The bundled astronaut is always held out.",
        ),
    )
    recipe: Any = option(
        DEFAULT_TRAIN_RECIPE,
        Rule("text", "Preset name (see 'jaxcombine recipes') or a recipe .toml."),
    )
    tv_weight: float | None = option(
        None,
        Rule("float", "Total-variation weight (overrides the recipe's).", low=0.0, optional=True),
    )
    conditional: bool = option(
        False,
        Rule(
            "bool",
            "One network for all styles (conditional instance normalisation, Dumoulin et "
            "al. 2017) instead of one network per style.",
        ),
    )
    steps: int = option(
        TRAIN_DEFAULT_STEPS, Rule("int", "Training steps (in all, resumed runs included).", low=1)
    )
    batch: int = option(4, Rule("int", "Photos per step.", low=1, high=4096))
    crop: int = option(256, Rule("int", "Training crop side, px.", low=16, high=8192))
    zoom: float = option(
        1.5,
        Rule(
            "float",
            "Random scale: each photo's shorter side is resized to crop x a factor drawn "
            "from [1, zoom] before the random crop and flip.",
            low=1.0,
            high=16.0,
        ),
    )
    style_size: int = option(
        256, Rule("int", "Longest side of each style image, px.", low=16, high=8192)
    )
    lr: float = option(1e-3, Rule("float", "Adam learning rate.", low=0.0, low_open=True))
    width: int = option(
        32, Rule("int", "Channels of the network's first layer (Johnson et al.: 32).", low=1)
    )
    res_blocks: int = option(
        5, Rule("int", "Residual blocks at a quarter resolution (Johnson et al.: 5).", low=0)
    )
    seed: int = option(0, Rule("int", "Seed of the networks and the data.", low=0))
    checkpoint_every: int = option(
        200, Rule("int", "Save a checkpoint every N steps (and at the end).", low=1)
    )
    sample_every: int = option(
        200,
        Rule("int", "Write the held-out sample grid every N steps (0: at the end only).", low=0),
    )
    model: str = option("vgg19", Rule("choice", "Backbone of the loss.", MODELS))
    pooling: str = option("max", Rule("choice", "Pooling between the backbone's blocks.", POOLINGS))
    conv: str = option(
        AUTO,
        Rule(
            "choice",
            "Convolution algorithm of the backbone and of the network's 3x3 convolutions "
            "(auto: fastest measured; winograd on CPUs).",
            (AUTO, *CONVS),
        ),
    )
    weights: str | None = weights_option("Backbone weights folder (or .h5 file).")
    max_pixels: int = max_pixels_option()
    max_memory: float | None = max_memory_option(
        "Memory limit in GB for the check before training (default: what is available)."
    )

    def __post_init__(self) -> None:
        if isinstance(self.recipe, str) or not hasattr(self.recipe, "terms"):
            _check_rules(self)
        else:  # a Recipe object (Python API)
            recipe, _ = self.recipe, object.__setattr__(self, "recipe", DEFAULT_TRAIN_RECIPE)
            _check_rules(self)
            object.__setattr__(self, "recipe", recipe)
        if self.conditional and len(self.style) < 2:
            raise ConfigError("conditional", "conditional needs two or more --style images")
        if len(set(self.style)) != len(self.style):
            raise ConfigError("style", "give each style image once")
        if self.crop % 4:
            raise ConfigError(
                "crop", f"crop must be a multiple of 4 (two stride-2 layers), got {self.crop}"
            )

    @property
    def styles(self) -> int:
        """How many styles are learnt (the bundled painting when none is given)."""
        return max(1, len(self.style))

    def replace(self, **changes: Any) -> "TrainConfig":
        return dataclasses.replace(self, **changes)

    def resolved(self) -> "TrainConfig":
        """This configuration with ``photos`` and ``style`` as absolute, normalised paths
        (``dir``, ``dir/`` and ``./dir`` are one folder), as a training records them."""

        def absolute(path: str) -> str:
            return str(Path(path).expanduser().resolve())

        photos = None if self.photos is None else absolute(self.photos)
        return self.replace(photos=photos, style=tuple(absolute(s) for s in self.style))

    def differences(self, other: "TrainConfig", ignore: Sequence[str] = ()) -> list[str]:
        """``name: mine vs other's`` for each option that a resume must keep but differs
        (paths compared resolved: :meth:`resolved`), but those named in ``ignore``."""
        out = []
        mine, theirs = self.resolved(), other.resolved()
        for f in dataclasses.fields(self):
            a, b = getattr(mine, f.name), getattr(theirs, f.name)
            if f.name not in (*TRAIN_RESUMABLE, *ignore) and a != b:
                out.append(f"{f.name} {b!r} there, {a!r} here")
        return out


@dataclasses.dataclass(frozen=True)
class StylizeConfig:
    """Every option of ``jaxcombine stylize``: a trained network applied to photos."""

    size: int | None = option(
        None,
        Rule(
            "int",
            "Resize each photo so its longest side is this many px (default: as it is).",
            low=4,
            high=1_000_000,
            optional=True,
        ),
    )
    style: int | None = option(
        None,
        Rule(
            "int",
            "Which style (0-based) of a network folder with several (default: every one).",
            low=0,
            optional=True,
        ),
    )
    batch: int = option(4, Rule("int", "Photos of one size per forward pass.", low=1, high=4096))
    conv: str = option(
        AUTO,
        Rule(
            "choice",
            "Algorithm of the network's 3x3 convolutions (auto: winograd on CPUs, where it "
            "ran 2x faster at 512 px, xla elsewhere); the output is the same to float32 "
            "rounding.",
            (AUTO, *CONVS),
        ),
    )
    tile: int = option(
        0,
        Rule(
            "int",
            "Process each image in tiles of this many px (a multiple of 4) with overlap, "
            "exactly (0: tiles only when the whole image would not fit in memory).",
            low=0,
        ),
    )
    max_pixels: int = max_pixels_option()
    max_memory: float | None = max_memory_option(
        "Memory limit in GB (default: what is available); larger images are tiled."
    )

    def __post_init__(self) -> None:
        _check_rules(self)
        if self.tile % 4:
            raise ConfigError("tile", f"tile must be a multiple of 4, got {self.tile}")
