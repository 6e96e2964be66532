"""Recipes: which image each layer's target comes from, what is matched, how much.

A recipe is data — a frozen, hashable :class:`Recipe` of :class:`Term`s — so
it can be written to TOML/JSON, compared, and passed to ``jax.jit`` as a
static argument. The loss is built from it by :mod:`jaxcombine.stats.losses`.

TOML form (``jaxcombine recipes show gatys`` prints a full example)::

    description = "..."
    tv_weight = 0.0
    init = "content"          # suggested start when --init is not given
    preserve_color = "none"   # none | luminance | stats | histogram (--preserve-color overrides)

    [[terms]]
    layers = ["block1_conv1", "block2_conv1"]   # or layer = "..."
    source = "style"          # content | style
    statistic = "gram"        # activations | gram | meanstd | covariance | w2 | swd |
                              # histogram | cmd (or a registered one: jaxcombine.stats)
    weight = 1.0              # per layer
    mask = "sky.png"          # optional: only this region of the output (jaxcombine.stats.masks);
                              # a path relative to the recipe file
    inverse_content_weight = false   # optional, style terms: weight / content weight factor
                              # (per scale and eval-suite's), as STROTSS weighs its palette
    during = "all"            # optional: all | scales (not in the final pass) | final (only
                              # in it; the run's final_steps), as NNST's last pass

    [run]                     # optional: run options this recipe suggests (a schedule)
    scale_count = 4           # any of options.config.RECIPE_RUN_OPTIONS, checked by the
    scale_steps = [200, 200, 200, 200]   # option's own rule; an option given to the run
    optimizer = "rmsprop"     # always wins (RunConfig.settle), and run.json lists the
    parameterization = "laplacian"       # values that came from here (from_recipe)

A *hypercolumn* term reads several layers at the same sampled positions as one vector
(:mod:`jaxcombine.stats.hypercolumns`; STROTSS, NNST)::

    [[terms]]
    hypercolumn = ["rgb", "block1_conv1", "block2_conv1", "block3_conv1"]  # "rgb": the colours
    layer_scales = [1.0, 1.0, 0.5, 0.5]  # optional, one per entry, or "channels" (each 1/C)
    samples = 1024            # optional: positions drawn per step (all, if the grid has fewer)
    stride = 1                # optional: positions on a grid of this many pixels
    jitter = false            # optional: read each position anywhere in its grid cell
    rotations = false         # optional, style terms: the style turned by 90, 180 and 270
                              # degrees offers its points too (NNST's augmentation)
    split = false             # optional: one term per entry, each its own hypercolumn
                              # (NNST's final pass matches each layer apart)
    source = "style"
    statistic = "emd"         # emd | moments | palette | self_similarity | nearest |
                              # nearest_each_step
    weight = 1.0
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
from importlib import resources
from pathlib import Path
from typing import Any, Mapping

import tomli_w

from jaxcombine.errors import JaxcombineError
from jaxcombine.options import statistic_names
from jaxcombine.options.config import (  # noqa: F401 (SOURCES, STATISTICS: the built-ins)
    DEFAULT_MODEL,
    RECIPE_RUN_OPTIONS,
    SOURCES,
    STATISTICS,
    RunConfig,
)
from jaxcombine.options.config import INIT_KINDS as INITS
from jaxcombine.options.config import rule as option_rule
from jaxcombine.options.layers import check_layers, check_uniform
from jaxcombine.options.rules import ConfigError, finite_number

RGB = "rgb"  # a hypercolumn's entry for the image's own colours
# When a term counts (Term.during): in every stage, in the coarse-to-fine scales only, or
# only in the final pass at the output's size that the run's final_steps adds.
DURING = ("all", "scales", "final")
# A run's or a stage's structure (Recipe.structure(stages)) marks a term that counts in
# none of its stages this way: no program computes it (it reads 0) and it has no target.
SKIPPED = "skipped"
HYPERCOLUMN_KEYS = (
    "hypercolumn",
    "layer_scales",
    "samples",
    "stride",
    "jitter",
    "rotations",
    "split",
)


@dataclasses.dataclass(frozen=True)
class Hypercolumn:
    """Several layers read at one position as one vector (Hariharan et al.'s hypercolumns).

    ``layers``: tap names, and :data:`RGB` for the image's colours, in the vector's order;
    ``scales``: a multiplier per entry, or ``"channels"`` (each entry divided by its
    channel count, as NNST weighs its layers); ``samples``: positions drawn per step;
    ``stride``: the positions lie on a grid of ``stride`` pixels (the centres of its
    cells); ``jitter``: each step moves every drawn position to a random point of its
    cell (:func:`jaxcombine.stats.hypercolumns.draw`), so a grid coarser than the pixels
    leaves none of them unread. ``rotations`` (style terms): the style image turned by
    90°, 180° and 270° is read as three more styles of a quarter of its weight each, so
    its strokes are offered in four orientations (NNST's augmentation of the style's
    features; :func:`jaxcombine.stats.hypercolumns.turns`). All of it is structure: it
    fixes shapes and the program.
    """

    layers: tuple[str, ...]
    scales: tuple[float, ...] | str = ()
    samples: int = 1024
    stride: int = 1
    jitter: bool = False
    rotations: bool = False

    @property
    def taps(self) -> tuple[str, ...]:
        """The network layers it reads (``layers`` without :data:`RGB`)."""
        return tuple(name for name in self.layers if name != RGB)

    @property
    def name(self) -> str:
        """Short and readable, for labels: ``rgb..block4_conv1`` (first and last entry)."""
        if len(self.layers) <= 2:
            return "+".join(self.layers)
        return f"{self.layers[0]}..{self.layers[-1]}"

    @property
    def key(self) -> str:
        """Everything that changes what its maps hold: entries, scales, grid and turns."""
        scales = self.scales if isinstance(self.scales, str) else ",".join(map(str, self.scales))
        turns = "/rotations" if self.rotations else ""
        return f"{'+'.join(self.layers)}/{scales or 1}/{self.stride}{turns}"

    def scale_of(self, i: int, channels: int) -> float:
        """The multiplier of entry ``i``, which has ``channels`` channels."""
        if self.scales == "channels":
            return 1.0 / channels
        return float(self.scales[i]) if self.scales else 1.0


@dataclasses.dataclass(frozen=True)
class Term:
    """One loss term: match ``statistic`` of ``layer`` to that of the ``source`` image.

    ``mask``: None, or the index of this term's mask in :attr:`Recipe.masks`: the
    output's statistic is then taken over that region only (:mod:`jaxcombine.stats.masks`).
    ``hypercolumn``: a term reading several layers at sampled positions; its ``layer`` is
    then the hypercolumn's :attr:`~Hypercolumn.name` (a label, not a tap).
    ``inverse_content_weight``: a style term whose weight is *divided* by the content
    weight's factors wherever the content terms' weights are multiplied by them (each
    scale's ``scale_content_weights``, ``eval-suite --content-weights``): STROTSS's
    loss weighs its palette term by 1/α where the content term has α, so a lower
    content weight asks for the style's colours harder.
    ``during``: the stages in which the term counts (:data:`DURING`): ``"scales"``, the
    coarse-to-fine scales only; ``"final"``, only the final pass that the run's
    ``final_steps`` adds (NNST ends with a pass that matches each layer apart). Elsewhere
    its weight is 0 and the stage's program does not compute it (:meth:`Recipe.structure`).
    """

    layer: str
    source: str
    statistic: str = "activations"
    weight: float = 1.0
    mask: int | None = None
    hypercolumn: Hypercolumn | None = None
    inverse_content_weight: bool = False
    during: str = "all"

    def counts(self, final: bool) -> bool:
        """Whether the term counts in the final pass (``final``) or in a scale."""
        return self.during == "all" or self.during == ("final" if final else "scales")

    @property
    def rotates(self) -> bool:
        """Whether the term reads every style with its three turns (a hypercolumn style
        term's ``rotations``; the recipe refuses it on a content term)."""
        return self.hypercolumn is not None and self.hypercolumn.rotations

    @property
    def skipped(self) -> bool:
        """Whether a stage's structure leaves the term out (:data:`SKIPPED`)."""
        return self.during == SKIPPED

    def content_factor(self, factor: float) -> float:
        """What multiplies this term's weight when the content weight is multiplied by
        ``factor``: ``factor`` for a content term, its inverse for a term with
        :attr:`inverse_content_weight`, else 1."""
        if self.source == "content":
            return factor
        return 1.0 / factor if self.inverse_content_weight else 1.0

    @property
    def taps(self) -> tuple[str, ...]:
        """The network layers the term reads."""
        return (self.layer,) if self.hypercolumn is None else self.hypercolumn.taps

    @property
    def label(self) -> str:
        """Stable, readable name used in histories: ``style:gram:block1_conv1``, and for
        a masked term ``style:gram:block1_conv1@mask1`` (its mask's number, from 1)."""
        base = f"{self.source}:{self.statistic}:{self.layer}"
        return base if self.mask is None else f"{base}@mask{self.mask + 1}"


@dataclasses.dataclass(frozen=True)
class Recipe:
    """A validated list of terms plus total-variation weight, suggested init and colour
    preservation (``preserve_color``, :mod:`jaxcombine.io.color`; a run's option overrides it),
    and the run options it suggests (``run``: (name, value) pairs of
    :data:`~jaxcombine.options.config.RECIPE_RUN_OPTIONS`, applied by
    :meth:`RunConfig.settle <jaxcombine.options.config.RunConfig.settle>` under the run's own)."""

    name: str
    terms: tuple[Term, ...]
    tv_weight: float = 0.0
    init: str = "content"
    description: str = ""
    preserve_color: str = "none"
    masks: tuple[str, ...] = ()  # mask image paths; terms refer to them by index
    run: tuple[tuple[str, Any], ...] = ()  # suggested run options, checked by their rules

    @property
    def layers(self) -> tuple[str, ...]:
        """Every network layer the terms read (a hypercolumn term's taps included)."""
        return tuple(dict.fromkeys(tap for t in self.terms for tap in t.taps))

    @property
    def labels(self) -> tuple[str, ...]:
        """Names of every reported loss component, terms first, then ``tv``."""
        return tuple(t.label for t in self.terms) + ("tv",)

    def validate(self, arch: str = "vgg19") -> "Recipe":
        """Check layer names against ``arch`` and mask indices against :attr:`masks`;
        raise a one-line error if any is unknown."""
        if not self.layers:  # hypercolumns of "rgb" alone
            raise JaxcombineError(
                f"recipe {self.name}: no term reads a layer of the network (a hypercolumn of "
                f"{RGB!r} alone reads none); add one that does"
            )
        check_layers(self.layers, arch)
        if self.masks:
            check_uniform(arch, "masks")
        if any(t.hypercolumn is not None for t in self.terms):
            check_uniform(arch, "hypercolumn terms")
        for t in self.terms:
            if t.mask is not None and not (
                isinstance(t.mask, int) and 0 <= t.mask < len(self.masks)
            ):
                raise JaxcombineError(
                    f"recipe {self.name}: term {t.label} refers to mask "
                    f"{t.mask!r} but the recipe has {len(self.masks)} masks"
                )
        return self

    def replace(self, **changes: Any) -> "Recipe":
        return dataclasses.replace(self, **changes)

    def suggested(self, option: str, default: Any = None) -> Any:
        """The value this recipe's ``[run]`` table suggests for ``option``, else ``default``."""
        return dict(self.run).get(option, default)

    def structure(self, stages: tuple[bool, ...] | None = None) -> "Recipe":
        """Only what shapes the compiled program: each term's layer, source and statistic.

        Weights (and how they follow the content weight or the stage: ``during``), TV
        weight, name, description, colour preservation and the masks' files are dropped
        (the engine takes the weights as traced arrays, the masks in the targets; colour
        changes only the images the targets come from), so recipes that differ only in
        those share a program. Which terms have masks (and which terms share one) is
        kept: it changes the program. ``stages`` (each True for the final pass, False for a
        scale) marks the terms that count in none of them :data:`SKIPPED`, so a stage's
        program leaves out the terms that do not count there, and a run without a final
        pass the final pass's terms; a recipe whose terms all count everywhere has one
        structure.
        """

        def during(t: Term) -> str:
            return "all" if stages is None or any(map(t.counts, stages)) else SKIPPED

        return Recipe(
            name="",
            terms=tuple(
                dataclasses.replace(t, weight=1.0, inverse_content_weight=False, during=during(t))
                for t in self.terms
            ),
        )

    def to_dict(self) -> dict[str, Any]:
        terms = []
        for t in self.terms:
            entry = {
                "layer": t.layer,
                "source": t.source,
                "statistic": t.statistic,
                "weight": t.weight,
            }
            if t.hypercolumn is not None:
                hc = t.hypercolumn
                del entry["layer"]
                entry = {"hypercolumn": list(hc.layers), **entry}
                entry.update(samples=hc.samples, stride=hc.stride)
                if hc.jitter:
                    entry["jitter"] = True
                if hc.rotations:
                    entry["rotations"] = True
                if hc.scales:
                    entry["layer_scales"] = (
                        hc.scales if isinstance(hc.scales, str) else list(hc.scales)
                    )
            if t.mask is not None:
                entry["mask"] = self.masks[t.mask]
            if t.inverse_content_weight:
                entry["inverse_content_weight"] = True
            if t.during != "all":
                entry["during"] = t.during
            terms.append(entry)
        return {
            "description": self.description,
            "init": self.init,
            "tv_weight": self.tv_weight,
            "preserve_color": self.preserve_color,
            "terms": terms,
            **(
                {"run": {k: list(v) if isinstance(v, tuple) else v for k, v in self.run}}
                if self.run
                else {}
            ),
        }

    def to_toml(self) -> str:
        return tomli_w.dumps(self.to_dict())


def from_dict(
    data: Mapping[str, Any], name: str = "custom", base: str | os.PathLike | None = None
) -> Recipe:
    """Build and check a recipe from parsed TOML/JSON; one-line errors on bad data.

    A term's relative ``mask`` path is resolved against ``base`` (the recipe file's
    folder; default the working directory)."""
    known = {"description", "init", "tv_weight", "terms", "name", "preserve_color", "run"}
    extra = set(data) - known
    if extra:
        raise JaxcombineError(
            f"recipe {name}: unknown key {sorted(extra)[0]!r} (expected {', '.join(sorted(known))})"
        )
    raw_terms = data.get("terms")
    if not raw_terms:
        raise JaxcombineError(f"recipe {name}: no terms; add at least one [[terms]] table")
    terms: list[Term] = []
    masks: list[str] = []
    for i, raw in enumerate(raw_terms, start=1):
        terms += _expand_term(raw, f"recipe {name}, term {i}", masks, base)
    tv = _number(data.get("tv_weight", 0.0), f"recipe {name}: tv_weight")
    if all(t.weight == 0 for t in terms):
        raise JaxcombineError(f"recipe {name}: every term has weight 0, nothing to optimise")
    init = data.get("init", "content")
    if init not in INITS:
        raise JaxcombineError(
            f"recipe {name}: init must be one of {', '.join(INITS)}, got {init!r}"
        )
    try:  # the option's own rule and message
        color = option_rule("preserve_color").check(
            "preserve_color", data.get("preserve_color", "none")
        )
    except ConfigError as e:
        raise JaxcombineError(f"recipe {name}: {e}") from None
    return Recipe(
        name=str(data.get("name", name)),
        terms=tuple(terms),
        tv_weight=tv,
        init=init,
        description=str(data.get("description", "")),
        preserve_color=color,
        masks=tuple(masks),
        run=_run_table(data.get("run", {}), name),
    )


def _run_table(raw: Any, name: str) -> tuple[tuple[str, Any], ...]:
    """A recipe's ``[run]`` table checked by the options' own rules (each value, then
    the rules between them, as a run with only these options): (name, value) pairs."""
    where = f"recipe {name}: [run]"
    if not isinstance(raw, Mapping):
        raise JaxcombineError(f"{where} must be a table of run options")
    unknown = sorted(set(raw) - set(RECIPE_RUN_OPTIONS))
    if unknown:
        raise JaxcombineError(
            f"{where}: {unknown[0]!r} is not an option a recipe may suggest; "
            f"use {', '.join(RECIPE_RUN_OPTIONS)}"
        )
    try:
        config = RunConfig(**raw)
        config.check_per_scale()  # its per-scale lists are for its own ladder
    except ConfigError as e:
        raise JaxcombineError(f"{where}: {e}") from None
    return tuple((key, getattr(config, key)) for key in RECIPE_RUN_OPTIONS if key in raw)


def _expand_term(
    raw: Any, where: str, masks: list[str], base: str | os.PathLike | None
) -> list[Term]:
    if not isinstance(raw, Mapping):
        raise JaxcombineError(f"{where}: expected a table with layer, source, statistic, weight")
    allowed = {"layer", "layers", "source", "statistic", "weight", "mask"}
    allowed |= {"inverse_content_weight", "during"}
    allowed |= set(HYPERCOLUMN_KEYS)
    if set(raw) - allowed:
        raise JaxcombineError(f"{where}: unknown key {sorted(set(raw) - allowed)[0]!r}")
    hypercolumn = _hypercolumn(raw, where) if "hypercolumn" in raw else None
    if hypercolumn is not None:
        layers = [hypercolumn.name]
    elif ("layer" in raw) == ("layers" in raw):
        raise JaxcombineError(f"{where}: give exactly one of 'layer', 'layers' or 'hypercolumn'")
    else:
        extra = [k for k in HYPERCOLUMN_KEYS if k in raw]
        if extra:
            raise JaxcombineError(f"{where}: {extra[0]!r} belongs to a 'hypercolumn' term")
        layers = [raw["layer"]] if "layer" in raw else raw["layers"]
    if not isinstance(layers, list) or not layers or not all(isinstance(x, str) for x in layers):
        raise JaxcombineError(f"{where}: layers must be a non-empty list of layer names")
    source = raw.get("source")
    if source not in SOURCES:
        raise JaxcombineError(f"{where}: source must be content or style, got {source!r}")
    statistic = raw.get("statistic", "activations")
    if statistic not in statistic_names.names():
        raise JaxcombineError(
            f"{where}: statistic must be one of {', '.join(statistic_names.names())}, "
            f"got {statistic!r}"
        )
    kinds = statistic_names.hypercolumn_names()
    if (hypercolumn is not None) != (statistic in kinds):
        raise JaxcombineError(
            f"{where}: statistic {statistic!r} needs "
            + (
                "'layer' or 'layers', not 'hypercolumn'"
                if hypercolumn is not None
                else "'hypercolumn' (a list of layers), not 'layer' or 'layers'"
            )
            + f"; hypercolumn statistics: {', '.join(kinds)}"
        )
    weight = _number(raw.get("weight", 1.0), f"{where}: weight")
    inverse = _flag(raw.get("inverse_content_weight", False), f"{where}: inverse_content_weight")
    if inverse and source != "style":
        raise JaxcombineError(
            f"{where}: inverse_content_weight belongs to a style term (a content term's "
            "weight follows the content weight itself)"
        )
    if hypercolumn is not None and hypercolumn.rotations and source != "style":
        raise JaxcombineError(
            f"{where}: rotations belongs to a style term (it turns the style image)"
        )
    during = raw.get("during", "all")
    if during not in DURING:
        raise JaxcombineError(f"{where}: during must be one of {', '.join(DURING)}, got {during!r}")
    mask = None
    if "mask" in raw:
        path = raw["mask"]
        if not isinstance(path, str) or not path.strip():
            raise JaxcombineError(f"{where}: mask must be an image path, got {path!r}")
        path = os.path.expanduser(path)
        if base is not None and not os.path.isabs(path):
            path = os.path.join(base, path)
        if path not in masks:
            masks.append(path)
        mask = masks.index(path)
    if hypercolumn is not None:
        return [
            Term(column.name, source, statistic, weight, mask, column, inverse, during)
            for column in _split(hypercolumn, raw, where)
        ]
    return [Term(layer, source, statistic, weight, mask, None, inverse, during) for layer in layers]


def _split(hypercolumn: Hypercolumn, raw: Mapping[str, Any], where: str) -> list[Hypercolumn]:
    """The hypercolumn of a term table, or with ``split = true`` one hypercolumn of each of
    its entries (its scale kept), so that one table writes NNST's per-layer terms as
    ``layers`` does for plain ones."""
    if not _flag(raw.get("split", False), f"{where}: split"):
        return [hypercolumn]
    return [
        dataclasses.replace(
            hypercolumn,
            layers=(name,),
            scales=hypercolumn.scales
            if isinstance(hypercolumn.scales, str)
            else hypercolumn.scales[i : i + 1],
        )
        for i, name in enumerate(hypercolumn.layers)
    ]


def _hypercolumn(raw: Mapping[str, Any], where: str) -> Hypercolumn:
    """The :class:`Hypercolumn` of a term table; one-line errors on bad values (the layer
    names are checked against the backbone with the rest, in :meth:`Recipe.validate`)."""
    if "layer" in raw or "layers" in raw:
        raise JaxcombineError(f"{where}: give 'hypercolumn' or 'layer'/'layers', not both")
    layers = raw["hypercolumn"]
    if not isinstance(layers, list) or not layers or not all(isinstance(x, str) for x in layers):
        raise JaxcombineError(
            f"{where}: hypercolumn must be a non-empty list of layer names (and {RGB!r})"
        )
    if len(set(layers)) != len(layers):
        raise JaxcombineError(f"{where}: hypercolumn names {_first_repeat(layers)!r} twice")
    scales: tuple[float, ...] | str = ()
    if "layer_scales" in raw:
        given = raw["layer_scales"]
        if given == "channels":
            scales = "channels"
        elif isinstance(given, list) and len(given) == len(layers):
            scales = tuple(_number(v, f"{where}: layer_scales") for v in given)
        else:
            raise JaxcombineError(
                f"{where}: layer_scales must be 'channels' or a list of {len(layers)} "
                f"numbers (one per hypercolumn entry), got {given!r}"
            )
    return Hypercolumn(
        tuple(layers),
        scales,
        _count(raw.get("samples", 1024), f"{where}: samples"),
        _count(raw.get("stride", 1), f"{where}: stride"),
        _flag(raw.get("jitter", False), f"{where}: jitter"),
        _flag(raw.get("rotations", False), f"{where}: rotations"),
    )


def _count(value: Any, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise JaxcombineError(f"{where} must be an integer >= 1, got {value!r}")
    return value


def _flag(value: Any, where: str) -> bool:
    if not isinstance(value, bool):
        raise JaxcombineError(f"{where} must be true or false, got {value!r}")
    return value


def _first_repeat(names: list[str]) -> str:
    return next(n for i, n in enumerate(names) if n in names[:i])


def _number(value: Any, where: str) -> float:
    return finite_number(value, where, low=0.0)


# --------------------------------------------------------------------------- presets


def preset_names() -> tuple[str, ...]:
    return tuple(sorted(p.name[:-5] for p in _preset_dir().iterdir() if p.name.endswith(".toml")))


def _preset_dir():
    return resources.files("jaxcombine") / "presets"


def preset_text(name: str) -> str:
    path = _preset_dir() / f"{name}.toml"
    if not path.is_file():
        raise JaxcombineError(
            f"unknown recipe {name!r}; presets: {', '.join(preset_names())} (or give a .toml file)"
        )
    return path.read_text()


def load(spec: "str | os.PathLike | Recipe", arch: str | None = None) -> Recipe:
    """A preset name, a path to a TOML file, or a Recipe → a Recipe validated against the
    network ``arch`` (default: the one the recipe suggests, else vgg19)."""
    if isinstance(spec, Recipe):
        return spec.validate(arch or spec.suggested("model", DEFAULT_MODEL))
    spec_str = os.fspath(spec)
    if spec_str.endswith(".toml") or os.sep in spec_str:
        path = Path(spec_str)
        if not path.is_file():
            raise JaxcombineError(f"recipe file not found: {path}")
        try:
            text, name = path.read_text(encoding="utf-8"), path.stem
        except UnicodeDecodeError:
            raise JaxcombineError(f"recipe {path}: not a UTF-8 text file") from None
        base = str(path.resolve().parent)  # a term's mask is relative to its recipe file
    else:
        text, name, base = preset_text(spec_str), spec_str, None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise JaxcombineError(f"recipe {name}: invalid TOML ({e})") from None
    rec = from_dict(data, name, base)
    return rec.validate(arch or rec.suggested("model", DEFAULT_MODEL))
