"""Batch manifests: a TOML file of jobs in, a sorted list of :class:`Job` out.

A manifest has ``[defaults]`` (any :class:`~jaxcombine.options.config.RunConfig` field),
an optional ``[grid]`` whose list values are crossed, and any number of
``[[jobs]]`` tables. Every value goes through the configuration's checks; an
error names the table it came from and the option. Every job has exactly one
init and a deterministic id, ``<content>-<style>-<init>-<hash>``, the hash
covering what the job computes from, not where its files lie: the resolved config with
each file it names (images, masks, recipe file, init images) replaced by its bytes'
sha256, and the weights' fingerprint as their record (the JSON beside the .h5) gives
it. No weights are loaded (nor fetched) to name a job, and a folder moved or copied
elsewhere, its images with it, names its jobs as before, so a rerun there skips them.
Running them is :mod:`jaxcombine.batch.runner`'s job.
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import os
import re
import tomllib
from pathlib import Path
from typing import Any, Sequence

from jaxcombine.errors import JaxcombineError
from jaxcombine.io import images, records
from jaxcombine.networks import store
from jaxcombine.options import config as config_lib
from jaxcombine.options import recipe as recipe_lib
from jaxcombine.options.config import DEFAULT_MODEL, RunConfig
from jaxcombine.options.rules import ConfigError
from jaxcombine.run import inputs

FIELDS = config_lib.run_fields()
SECTIONS = ("defaults", "grid", "jobs")


@dataclasses.dataclass(frozen=True)
class Job:
    """One output: a resolved config with a single init, and its stable id."""

    id: str
    config: RunConfig
    recipe: recipe_lib.Recipe | None = dataclasses.field(default=None, compare=False)
    # (loaded once with the config's overrides; None: it did not load, and the job fails
    # with the recipe's error when it is planned)


def load_manifest(path: str | os.PathLike) -> list[Job]:
    """Read a manifest and expand it into jobs, sorted by id, duplicates dropped.

    Every value goes through :class:`~jaxcombine.options.config.RunConfig`'s checks; an
    error names the table it came from and the option.
    """
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise JaxcombineError(f"manifest not found: {path}")
    except IsADirectoryError:
        raise JaxcombineError(f"manifest is a folder, not a file: {path}")
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise JaxcombineError(f"bad manifest {path}: {' '.join(str(e).split())}")
    _check_keys(data, SECTIONS, "manifest section")
    defaults = _table(data.get("defaults", {}), "[defaults]")
    grid = _table(data.get("grid", {}), "[grid]")
    for key, values in grid.items():
        if not isinstance(values, list) or not values:
            raise JaxcombineError(f"{path.name}: [grid] {key} must be a non-empty list")
    entries = data.get("jobs", [])
    if not isinstance(entries, list):
        raise JaxcombineError(f"{path.name}: jobs must be [[jobs]] tables")
    tables = (
        [
            (f"[grid] combination {i}", dict(zip(grid, combo)))
            for i, combo in enumerate(itertools.product(*grid.values()), start=1)
        ]
        if grid
        else []
    )
    tables += [(f"[[jobs]] {i}", _table(e, "[[jobs]]")) for i, e in enumerate(entries, start=1)]
    if not tables:
        raise JaxcombineError(f"{path.name}: no jobs; add a [grid] or [[jobs]] tables")
    base = path.resolve().parent
    jobs: dict[str, Job] = {}
    for where, table in tables:
        options = {**defaults, **table}
        try:
            config = _resolve_paths(config_lib.from_options(options), base)
            if config.shard == "rows":
                raise ConfigError(
                    "shard",
                    "shard 'rows' is for one image at a time "
                    "(jaxcombine run or study); a batch spreads its jobs' "
                    "starts over the devices",
                )
        except ConfigError as e:
            origin = where if e.field in table else "[defaults]"
            raise JaxcombineError(f"{path.name}: {origin}, {e.field}: {e}") from None
        jobs.update((j.id, j) for j in _expand(config))
    return [jobs[k] for k in sorted(jobs)]


def _check_keys(table: dict, valid: Sequence[str], what: str) -> None:
    for key in table:
        if key not in valid:
            raise JaxcombineError(f"unknown {what} {key!r}; valid: {', '.join(valid)}")


def _table(table: Any, where: str) -> dict:
    if not isinstance(table, dict):
        raise JaxcombineError(f"{where} must be a table")
    _check_keys(table, FIELDS, f"key in {where}")
    return table


def _expand(config: RunConfig) -> list[Job]:
    """One validated config → one job per start (``noise:N`` gives N seeds)."""
    try:
        recipe = inputs.load_recipe(config)
    except JaxcombineError:
        recipe = None  # the job fails later, when planned, with the recipe's error
    out = []
    for start in config.inits(recipe.init if recipe else "content"):
        # a noise start's seed is its own; other starts keep the job's (it seeds swd's draws)
        single = config.replace(
            init=start.spec, seed=start.seed if start.kind == "noise" else config.seed
        )
        out.append(Job(job_id(single, recipe), single, recipe))
    return out


def _resolve_paths(config: RunConfig, base: Path) -> RunConfig:
    """Image, weights and recipe-file paths relative to the manifest's folder → absolute."""
    absolute = lambda p: str((base / os.path.expanduser(str(p))).resolve())  # noqa: E731
    changes: dict[str, Any] = {
        "content": absolute(config.content) if config.content else str(images.CONTENT),
        "style": tuple(absolute(s) for s in config.style) or (str(images.STYLE),),
    }
    if config.style_masks:
        changes["style_masks"] = tuple(absolute(m) for m in config.style_masks)
    if config.style_regions:
        changes["style_regions"] = tuple(absolute(m) for m in config.style_regions)
    if config.weights:
        changes["weights"] = absolute(config.weights)
    recipe = config.recipe
    if (
        isinstance(recipe, str)
        and recipe not in recipe_lib.preset_names()
        and (base / recipe).exists()
    ):
        changes["recipe"] = absolute(recipe)
    if config.init:
        parts = [p.strip() for p in config.init.split(",")]
        changes["init"] = ",".join(
            p if p.split(":")[0] in config_lib.INIT_KINDS else absolute(p) for p in parts
        )
    return config.replace(**changes)


NOT_IN_ID = ("max_memory",)  # options that cannot change a job's result
MAX_READABLE_ID = 80  # + "-" + 10 hex digits: ids (and file names) stay far below 255 bytes


def job_id(config: RunConfig, recipe: recipe_lib.Recipe | None = None) -> str:
    """``<content>-<style>-<init>-<hash>``: readable, and new whenever the config, an image
    (masks named in a recipe file included), the recipe file or the weights' fingerprint
    (read from their record, :func:`weights_fingerprint`) change, but not when the files
    move: each path is hashed as its bytes' sha256. ``recipe``: ``config.recipe`` already
    loaded. The readable part is cut to :data:`MAX_READABLE_ID` characters; the hash keeps
    ids distinct."""
    digest = lambda p: {"sha256": records.file_sha256(p)} if _is_file(p) else p  # noqa: E731
    settings = {k: v for k, v in dataclasses.asdict(config).items() if k not in NOT_IN_ID}
    settings["content"] = digest(settings["content"])
    if config.recipe not in recipe_lib.preset_names():  # a preset's name is no file's
        settings["recipe"] = digest(settings["recipe"])
    for key in ("style", "style_masks", "style_regions"):
        settings[key] = settings[key] and [digest(p) for p in settings[key]]
    if config.init:
        settings["init"] = [
            p if p.split(":")[0] in config_lib.INIT_KINDS else digest(p)
            for p in config.init.split(",")
        ]
    fingerprint = weights_fingerprint(config)
    if fingerprint is not None:  # the weights' bytes, named once whatever their path
        settings["weights"] = None
    masks = [digest(m) for m in _recipe_masks(config, recipe)]
    return _named(config, {"config": settings, "recipe_masks": masks, "weights": fingerprint})


def legacy_job_id(config: RunConfig, recipe: recipe_lib.Recipe | None = None) -> str:
    """The id jaxcombine 0.1.0 gave a job: its hash covered the files' paths as well as
    their bytes, so a moved folder ran its jobs again. Kept only so that a rerun adopts
    the results of a folder written then (:mod:`jaxcombine.batch.legacy`)."""
    files = [
        config.content,
        *config.style,
        *(config.style_masks or ()),
        *(config.style_regions or ()),
        config.recipe,
        config.init,
        *_recipe_masks(config, recipe),
    ]
    settings = {k: v for k, v in dataclasses.asdict(config).items() if k not in NOT_IN_ID}
    return _named(
        config,
        {
            "config": settings,
            "files": {f: records.file_sha256(f) for f in files if f and Path(f).is_file()},
            "weights": weights_fingerprint(config),
        },
    )


def _is_file(path: Any) -> bool:
    return isinstance(path, str) and bool(path) and Path(path).is_file()


def _named(config: RunConfig, identity: dict[str, Any]) -> str:
    """``<content>-<style>-<init>-`` and 10 hex digits of ``identity``'s canonical JSON."""
    canonical = json.dumps(identity, sort_keys=True, default=str)
    digest = hashlib.sha256(canonical.encode()).hexdigest()[:10]
    init = Path(config.init).stem if config.init and os.sep in config.init else config.init
    if init == "noise":
        init = f"noise{config.seed}"
    style = "+".join(Path(s).stem for s in config.style)
    content = Path(config.content or images.CONTENT).stem
    readable = re.sub(r"[^A-Za-z0-9._+-]+", "_", f"{content}-{style}-{init}")
    return f"{readable[:MAX_READABLE_ID]}-{digest}"


def _recipe_masks(config: RunConfig, recipe: recipe_lib.Recipe | None) -> tuple[str, ...]:
    """The mask files a recipe file's terms name (presets name none). A recipe that does
    not load names none here: its job fails, reported, when it is run."""
    if recipe is not None:
        return recipe.masks
    if config.recipe in recipe_lib.preset_names():
        return ()
    try:
        return recipe_lib.load(config.recipe).masks
    except JaxcombineError:
        return ()


def job_model(config: RunConfig) -> str:
    """The network a job runs: its ``model``, else its recipe's suggestion, else the
    default (a recipe that does not load: the default; the job fails when it is run)."""
    if config.model is not None:
        return config.model
    try:
        return recipe_lib.load(config.recipe).suggested("model", DEFAULT_MODEL)
    except JaxcombineError:
        return DEFAULT_MODEL


def weights_fingerprint(config: RunConfig) -> str | None:
    """The fingerprint the weights' record (the JSON beside ``<arch>.h5``) gives, without
    loading (or fetching) the weights. Where there is no record yet, the weights are
    fetched when the first job runs: the fingerprint that fetch will give, so that a batch
    started before the fetch names its jobs as its rerun after the fetch does (and skips
    them)."""
    model = job_model(config)
    record = store.read_record(store.h5_path(model, config.weights))
    if record is not None:
        return record.get("fingerprint")
    return None if store.is_file_target(config.weights) else store.fetched_fingerprint(model)


def process_share(jobs: Sequence[Job], index: int, count: int) -> list[Job]:
    """Process ``index`` of ``count`` takes every count-th job of the id-sorted list."""
    return sorted(jobs, key=lambda j: j.id)[index::count]
