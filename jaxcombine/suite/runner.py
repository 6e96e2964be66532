"""``jaxcombine eval-suite``: every recipe over every pair and content weight, judged.

The quality protocol in one command. For each (pair, recipe, content weight) it writes a
recipe file whose content terms' weights are multiplied by the content weight
(``recipes/``), and one batch manifest of all of them (``manifest.toml``); the batch
machinery (:func:`~jaxcombine.batch.runner.run_batch`) runs it into ``runs/``, so the
suite is resumable as a batch is (finished jobs are skipped, a kill -9 loses at most the
jobs in flight) and jobs that differ only in their content weight share one compiled
program (a weight is a traced number). Every finished output is then scored once by the
judge (:mod:`jaxcombine.tools.judge`, into ``scores/<job>.json``), and the suite writes
``suite.csv`` (one tidy row per output), ``suite.json`` (settings, timings, fronts and
dominance, style gaps, shortfalls) and the pictures and page (:mod:`jaxcombine.suite.report`).

A recipe's front on a pair is the set of its outputs that no other of its outputs beats
on both the judge's content distance (LPIPS) and its style distance; recipe A's front
dominates B's when every point of B's is weakly dominated by one of A's, and one of A's
strictly dominates one of B's (:func:`dominates`). Where fronts cross and neither
dominates, the style gap says how much further from the style A's front runs than B's at
equal content distance, over the range both span (:func:`~jaxcombine.suite.fronts.style_gap`).
Per pair, the shortfalls say which of B's points A's outputs leave undominated, on sliced
W, Gram and W2 (:func:`~jaxcombine.suite.fronts.shortfalls`): the table a "dominates on
N pairs" is read from, and whether it holds on more than the front's one distance.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import time
import tomllib
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import tomli_w

from jaxcombine.batch.manifest import job_model, load_manifest
from jaxcombine.batch.runner import run_batch
from jaxcombine.errors import JaxcombineError
from jaxcombine.io import folders, images, records
from jaxcombine.options import config as config_lib
from jaxcombine.options import recipe as recipe_lib
from jaxcombine.options.config import SUITE_RECIPES
from jaxcombine.run import outputs
from jaxcombine.suite.fronts import (
    FRONT_STYLE,
    SHORTFALL_STYLES,
    dominance_counts,
    shortfalls,
    style_gaps,
)
from jaxcombine.suite.grid import grid
from jaxcombine.tools import judge as judge_lib

PAIR_KEYS = ("name", "content", "style")


@dataclasses.dataclass(frozen=True)
class Pair:
    name: str
    content: str
    style: str


def default_pairs() -> tuple[list[Pair], dict[str, Any]]:
    """Photos that ship with the package and its dependencies, each with the bundled
    painting (van Gogh's The Starry Night, 1889, public domain): the bundled astronaut
    (NASA, public domain) and matplotlib's sample ``grace_hopper.jpg`` (US Navy
    photograph, public domain)."""
    from matplotlib import cbook

    hopper = str(cbook.get_sample_data("grace_hopper.jpg", asfileobj=False))
    style = str(images.STYLE)
    return [
        Pair("astronaut-starry_night", str(images.CONTENT), style),
        Pair("grace_hopper-starry_night", hopper, style),
    ], {}


def load_pairs(path: str | os.PathLike) -> tuple[list[Pair], dict[str, Any]]:
    """``[[pairs]]`` tables (``content``, ``style``, optional ``name``; paths relative to
    the file) and an optional ``[defaults]`` table of run options for every job."""
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise JaxcombineError(f"pairs file not found: {path}") from None
    except (OSError, tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise JaxcombineError(f"bad pairs file {path}: {' '.join(str(e).split())}") from None
    extra = set(data) - {"pairs", "defaults"}
    if extra:
        raise JaxcombineError(f"{path.name}: unknown section {sorted(extra)[0]!r}")
    entries = data.get("pairs")
    if not isinstance(entries, list) or not entries:
        raise JaxcombineError(f"{path.name}: no pairs; add [[pairs]] tables with content, style")
    base = path.resolve().parent
    pairs = []
    for i, entry in enumerate(entries, start=1):
        if not isinstance(entry, dict) or not {"content", "style"} <= set(entry):
            raise JaxcombineError(f"{path.name}: [[pairs]] {i} needs content and style")
        if set(entry) - set(PAIR_KEYS):
            bad = sorted(set(entry) - set(PAIR_KEYS))[0]
            raise JaxcombineError(f"{path.name}: [[pairs]] {i}: unknown key {bad!r}")
        content, style = (str((base / str(entry[k])).resolve()) for k in ("content", "style"))
        for f in (content, style):
            images.header_size(f)  # exists and decodes: one line otherwise
        name = str(entry.get("name") or f"{Path(content).stem}-{Path(style).stem}")
        pairs.append(Pair(re.sub(r"[^A-Za-z0-9._+-]+", "_", name), content, style))
    names = [p.name for p in pairs]
    if len(set(names)) != len(names):
        raise JaxcombineError(f"{path.name}: two pairs are named {_first_repeat(names)!r}")
    defaults = data.get("defaults", {})
    if not isinstance(defaults, dict):
        raise JaxcombineError(f"{path.name}: [defaults] must be a table")
    return pairs, defaults


def _first_repeat(names: Sequence[str]) -> str:
    return next(n for i, n in enumerate(names) if n in names[:i])


def weighted_recipe(recipe: str, content_weight: float) -> recipe_lib.Recipe:
    """``recipe`` with every content term's weight multiplied by ``content_weight`` (and
    divided by it on a style term with ``inverse_content_weight``, STROTSS's palette)."""
    r = recipe_lib.load(recipe)
    if not any(t.source == "content" for t in r.terms):
        raise JaxcombineError(f"recipe {recipe} has no content term to weight")
    terms = tuple(
        dataclasses.replace(t, weight=t.weight * t.content_factor(content_weight)) for t in r.terms
    )
    return r.replace(terms=terms)


@dataclasses.dataclass
class SuiteResult:
    """The tidy rows (one per judged output), the fronts' dominance and gaps, and the
    timings."""

    rows: list[dict[str, Any]]
    dominance: dict[str, dict[str, int]]  # recipe A → recipe B → pairs where A's front wins
    style_gaps: dict[str, dict[str, dict]]  # recipe A → recipe B → fronts.style_gaps' entry
    # recipe A → recipe B → pair → style distance → B's content weights A leaves undominated
    shortfalls: dict[str, dict[str, dict[str, dict[str, list[float]]]]]
    settings: dict[str, Any]
    out: Path


def run_suite(
    out: str | os.PathLike,
    *,
    pairs: str | os.PathLike | None = None,
    recipes: Sequence[str] = SUITE_RECIPES,
    content_weights: Sequence[float] = (0.3, 1.0, 3.0, 10.0),
    recipe_weights: Mapping[str, Sequence[float]] | None = None,
    size: int = 256,
    steps: int = 200,
    judge: str | None = None,
    progress: bool = True,
) -> SuiteResult:
    """Run, judge and report the suite into ``out`` (see the module's docstring); a rerun
    skips the jobs already run and the outputs already judged.

    ``recipe_weights`` gives a recipe (by its name or as given in ``recipes``) its own
    content weights instead of ``content_weights``: recipes whose content terms differ in
    scale need different ranges before their fronts overlap (``gatys`` at 128 px keeps
    the photo only from weight 30 up)."""
    pair_list, defaults = load_pairs(pairs) if pairs else default_pairs()
    out = folders.check_output_folder(out)
    names, by_recipe = grid(recipes, content_weights, recipe_weights)
    recipes = list(names)
    weights = sorted({w for ws in by_recipe.values() for w in ws})
    if judge is not None:
        judge_lib.check_judge(judge)  # before any work
    config_lib.positive_int(size, "size")
    config_lib.positive_int(steps, "steps")
    plan = _write_manifest(out, pair_list, defaults, names, by_recipe, size, steps)
    t0 = time.perf_counter()
    report = run_batch(out / "manifest.toml", out / "runs", progress=progress)
    run_s = time.perf_counter() - t0
    if report.interrupted:
        raise JaxcombineError(f"eval-suite interrupted; rerun the command to resume in {out}")
    jobs = {
        (j.config.content, j.config.style[0], j.config.recipe): j
        for j in load_manifest(out / "manifest.toml")
    }
    models = sorted({job_model(j.config) for j in jobs.values()})
    judge_name = judge or judge_lib.default_judge(models)
    t1 = time.perf_counter()
    rows = []
    for entry in plan:
        job = jobs[(entry["content"], entry["style"], entry["recipe_file"])]
        if not (out / "runs" / f"{job.id}.json").exists():
            continue  # failed: batch-report.json says why
        score = _judged(out, job, judge_name)
        rows.append({**{k: entry[k] for k in ("pair", "recipe", "content_weight")}, **score})
    judge_s = time.perf_counter() - t1
    if not rows:
        raise JaxcombineError(f"no job finished; see {out / 'runs' / 'batch-report.json'}")
    dominance = dominance_counts(rows, list(names.values()))
    gaps = style_gaps(rows, list(names.values()))
    short = shortfalls(rows, list(names.values()))
    settings = {
        "command": "eval-suite",
        "pairs": [dataclasses.asdict(p) for p in pair_list],
        "recipes": list(names.values()),
        "recipe_sources": recipes,
        "content_weights": weights,
        "recipe_weights": {names[r]: ws for r, ws in by_recipe.items()},
        "size": size,
        "steps": steps,
        "defaults": defaults,
        "judge": judge_name,
        "judge_is_run_network": judge_name in models,
        "run_models": models,
        "front": {"x": "judge_content", "y": f"judge_style_{FRONT_STYLE}"},
        "shortfall_distances": [f"judge_style_{d}" for d in SHORTFALL_STYLES],
        "jobs": {"done": len(report.done), "skipped": len(report.skipped), "failed": report.failed},
        "wall_s": {"runs": round(run_s, 2), "judging": round(judge_s, 2)},
    }
    result = SuiteResult(rows, dominance, gaps, short, settings, out)
    from jaxcombine.suite import report as report_lib  # matplotlib only when reporting

    t2 = time.perf_counter()
    report_lib.write(result)
    settings["wall_s"]["report"] = round(time.perf_counter() - t2, 2)
    records.atomic_write_all(
        {
            out / "suite.csv": outputs.csv_text(
                {k: np.asarray([r[k] for r in rows]) for k in rows[0]}
            ),
            out / "suite.json": records.json_text(
                records.record(
                    settings, rows=rows, dominance=dominance, style_gaps=gaps, shortfalls=short
                )
            ),
        }
    )
    return result


def _write_manifest(out, pairs, defaults, recipes, weights, size, steps) -> list[dict]:
    """Recipe files and ``manifest.toml``; returns one entry per job (pair, recipe, weight).
    ``recipes``: {recipe as given: name}; ``weights``: {recipe as given: its weights}."""
    (out / "recipes").mkdir(exist_ok=True)
    plan, jobs = [], []
    for recipe, name in recipes.items():
        for w in weights[recipe]:
            path = out / "recipes" / f"{name}-cw{w:g}.toml"
            text = weighted_recipe(recipe, w).to_toml()
            if not path.exists() or path.read_text(encoding="utf-8") != text:
                records.atomic_write_text(path, text)
            for pair in pairs:
                jobs.append({"content": pair.content, "style": pair.style, "recipe": str(path)})
                plan.append(
                    {
                        "pair": pair.name,
                        "recipe": name,
                        "content_weight": w,
                        "content": pair.content,
                        "style": pair.style,
                        "recipe_file": str(path),
                    }
                )
    manifest = {"defaults": {**defaults, "size": size, "steps": steps}, "jobs": jobs}
    text = tomli_w.dumps(manifest)
    path = out / "manifest.toml"
    if not path.exists() or path.read_text(encoding="utf-8") != text:
        records.atomic_write_text(path, text)
    return plan


def _judged(out: Path, job, judge_name: str) -> dict[str, Any]:
    """The judge's scores of one finished job, from ``scores/<id>.<judge>.json`` if there
    with every column the judge now scores, else computed and written there (atomically):
    a score from before a column existed is judged again, so every row has every column."""
    path = out / "scores" / f"{job.id}.{judge_name}.json"
    if path.exists():
        row = json.loads(path.read_text(encoding="utf-8"))["row"]
        if set(judge_lib.COLUMNS) <= set(row):
            return row
    path.parent.mkdir(exist_ok=True)
    rec = json.loads((out / "runs" / f"{job.id}.json").read_text(encoding="utf-8"))
    image = out / "runs" / str(rec.get("image") or f"{job.id}.png")
    j = judge_lib.judge_images(
        [image],
        content=job.config.content,
        style=job.config.style[0],
        judge=judge_name,
        weights=job.config.weights,
        run_models=[job_model(job.config)],
    )
    row = {"job": job.id, **j.rows[0], "image": str(image.relative_to(out))}
    records.write_json(path, records.record(j.settings, row=row, per_layer=j.per_layer))
    return row
