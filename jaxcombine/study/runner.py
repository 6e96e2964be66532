"""Convergence studies: do different starts reach the same image, and where do they differ?

``run_study`` runs every start (``content,style,noise:8``…), optionally crossed
with a sweep over a second axis (``tv_weight=0,1e-3`` or ``lr=1,4,8``), as ONE
compiled vmapped program (:func:`driver.optimise`), and writes into one folder:

* ``history.csv``   tidy ``step,start,term,value,weighted``: every step × start ×
  loss component (unweighted ``value``, ``weighted`` = value × weight) plus
  ``total`` (both columns hold the weighted total). As in the engine, step t's
  loss is that of the image step t updated (the image after t−1 updates);
* ``distances.csv`` tidy ``step,a,b,space,value`` at every snapshot (the images
  after ``step`` updates; step 0 holds the starts themselves): ``pixel`` is
  the mean absolute pixel difference (0–255 units) of starts a and b; a layer
  name is the recipe statistic's term at that layer with b as the target
  (``<layer>:<statistic>`` when a layer has several): ``relative_mse(S_a, S_b)``,
  normalised by b's, for the matched statistics, the normalised W2 or sliced
  distance (fixed directions) for ``w2`` and ``swd``. Both are of the optimised
  pixels (under ``preserve_color=luminance`` the grey images VGG sees; the
  written images carry the content's chroma);
* ``<start>.png``, ``snapshots/<start>-stepNNNNNN.png`` (step 0, every
  ``snapshot_every`` steps and the last step), ``contact_sheet.png``,
  ``loss.png``, ``distances.png``, ``report.html`` (self-contained),
  ``summary.json``, ``study.json`` and the resumable ``state.npz``.

History, distances and ``state.npz`` are rewritten atomically at every
snapshot (:mod:`jaxcombine.study.record`), so an interrupted study keeps what it
did and ``resume=True`` continues it to the same total steps.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jaxcombine.engine import driver, optimizers, program, scales
from jaxcombine.errors import JaxcombineError
from jaxcombine.io import images, records
from jaxcombine.options.config import RunConfig, StudyOptions, Sweep, parse_sweep
from jaxcombine.run import outputs, runner
from jaxcombine.run.prepare import Prepared
from jaxcombine.study.plots import contact_sheet_png, distances_png, loss_png, report_html
from jaxcombine.study.record import Recorder
from jaxcombine.tools import metrics

# --------------------------------------------------------------------------- sweep


def _cross(prep: Prepared, sweep: Sweep | None):
    """(labels, x0, lrs, loss_weights) of the starts × sweep values, starts outermost."""
    if sweep is None:
        return prep.labels, prep.x0, None, None
    n = len(sweep.values)
    labels = tuple(lab + sweep.suffix(v) for lab in prep.labels for v in sweep.values)
    x0 = np.repeat(prep.x0, n, axis=0)
    values = np.tile(np.asarray(sweep.values, np.float32), len(prep.labels))
    if sweep.name == "lr":
        return labels, x0, values, None
    w = np.tile(prep.loss_weights, (len(labels), 1))
    w[:, -1] = values  # tv is the last component
    return labels, x0, None, w


# --------------------------------------------------------------------------- convergence


def convergence_step(totals: np.ndarray, window: int, tolerance: float) -> int | None:
    """First step s after which the total loss has settled, or None.

    With L(t) the weighted total after step t and r(t) = |L(t) − L(t−window)| /
    |L(t−window)|, s is the smallest step > window such that r(t) < tolerance
    for every step t ≥ s up to the last. None when r of the last step is not
    below tolerance (or not finite), or the run has ≤ window steps.
    ``totals`` holds L(1..T).
    """
    if window < 1 or len(totals) <= window:
        return None
    prev, now = totals[:-window], totals[window:]
    with np.errstate(divide="ignore", invalid="ignore"):
        ok = np.abs(now - prev) / np.abs(prev) < tolerance  # r(t) for t = window+1 .. T
    if not ok[-1]:
        return None
    bad = np.flatnonzero(~ok)
    first = bad[-1] + 1 if bad.size else 0
    return int(first + window + 1)


# --------------------------------------------------------------------------- the study


@dataclasses.dataclass
class Study:
    """A finished (or interrupted) study: tidy tables, summary, and where it was written."""

    labels: tuple[str, ...]
    history: dict[str, np.ndarray]  # tidy columns, see HISTORY_COLUMNS
    distances: dict[str, np.ndarray]  # tidy columns, see DISTANCE_COLUMNS
    summary: dict[str, Any]
    out: Path
    interrupted: bool = False

    def rows(self, table: str = "history") -> list[dict[str, Any]]:
        """``history`` or ``distances`` as a list of records (one dict per row)."""
        cols = getattr(self, table)
        return [dict(zip(cols, row)) for row in zip(*cols.values())]

    def to_pandas(self):
        """(history, distances) as pandas DataFrames; needs pandas installed."""
        try:
            import pandas as pd
        except ImportError:
            raise JaxcombineError("to_pandas needs pandas: pip install pandas")
        return pd.DataFrame(self.history), pd.DataFrame(self.distances)


class _Study(runner.Hooks):
    """``jaxcombine study``'s hooks: every start (× sweep) in one program, a recorder of
    history and distances at each snapshot, a resumable state, then tables, plots, report."""

    def __init__(self, config: RunConfig, options: StudyOptions, resume: bool, t0: float):
        self.config, self.options, self.resume, self.t0 = config, options, resume, t0

    def make_plan(self):
        plan = super().make_plan()
        starts = len(plan.inits) * (len(self.options.sweep.values) if self.options.sweep else 1)
        plan = plan.with_starts(starts) if starts != plan.starts else plan
        if self.options.evaluate:  # the scores must fit too: known now, not after the steps
            metrics.check_memory(
                [plan.output_shape],
                max_memory=self.config.max_memory,
                remedy="a smaller --size, or no --eval and then 'jaxcombine eval --size {size}'",
            )
        return plan

    def new_state(self, pixels, steps, start_step=0):
        return self.prep.initial_state(
            pixels, lr=self.lrs, loss_weights=self.loss_weights, steps=steps, start_step=start_step
        )

    def begin(self, stages):
        self.labels, x0, self.lrs, self.loss_weights = _cross(self.prep, self.options.sweep)
        self.rec = rec = Recorder(self.out, self.prep, self.labels, self.lrs, self.loss_weights)
        self.stage_list, self.offsets = stages, scales.offsets(stages)
        self.total_steps = sum(s.longest for s in stages)
        if not self.resume:
            rec.snapshot(x0)
            return self.new_state(x0, stages[0].steps), 0
        x0, params, opt_state, average = rec.load()
        fresh = self.new_state(x0, stages[rec.stage].steps, rec.step - self.offsets[rec.stage])
        state = fresh._replace(
            params=jax.tree.map(jnp.asarray, params),
            opt_state=optimizers.learning_rate_of(opt_state, fresh.opt_state),
        )
        if state.average is not None and average is not None:
            state = state._replace(average=program.average_state(average, state.step))
        return state, rec.stage

    def on_chunk(self, step, comps, fetch):
        rec, offsets = self.rec, self.offsets
        rec.stage = max(i for i, o in enumerate(offsets) if o < step)
        rec.add_steps(comps, self.stage_list[rec.stage].size, rec.stage)
        every = self.options.snapshot_every
        if step % every == 0 or step == self.total_steps or step in offsets:
            rec.snapshot(fetch(), fetch.params(), fetch.opt_state(), fetch.average())

    def end(self, outcome: driver.Outcome, stopped) -> "Study":
        rec, out, labels, options = self.rec, self.out, self.labels, self.options
        rec.snapshot(  # an interrupted run's
            outcome.pixels, outcome.params, outcome.opt_state, outcome.average
        )
        for lab, px in zip(labels, self.prep.finish(outcome.pixels)):
            images.write(out / f"{lab}.png", px)
        summary = _summary(
            rec,
            outcome,
            self.config,
            options.snapshot_every,
            options.tolerance,
            outcome.start_step,
            time.perf_counter() - self.t0,
        )
        if options.evaluate:
            summary["eval"] = evaluate_outputs(self.config, out, labels)
        study = Study(
            labels, rec.history_table(), rec.distance_table(), summary, out, outcome.interrupted
        )
        _write_outputs(study, rec, self.config, options.sweep)
        study.interrupted |= stopped()
        return study


def run_study(
    config: RunConfig,
    out: str | Path,
    *,
    snapshot_every: int | None = None,
    tolerance: float = 0.01,
    sweep: str | Sweep | None = None,
    resume: bool = False,
    progress: bool = True,
    evaluate: bool = False,
) -> Study:
    """Run every start of ``config.init`` (× ``sweep``) in one program and write the study.

    ``snapshot_every`` (default: ``config.snapshot_every``, else 25) sets how often
    images, distances and the resumable state are saved, and the convergence window (see
    :func:`convergence_step`). ``resume`` continues the study in ``out`` from its last
    snapshot. Ctrl-C or SIGTERM stops after the current chunk and writes everything so
    far. ``evaluate`` scores every final image (:func:`metrics.evaluate`, against the
    content and the first style) into ``eval.csv``/``eval.json``, the summary and the report.
    """
    t0 = time.perf_counter()
    if snapshot_every is None:
        snapshot_every = config.snapshot_every or StudyOptions.snapshot_every
    options = StudyOptions(
        snapshot_every=snapshot_every,
        tolerance=tolerance,
        sweep=parse_sweep(sweep, config) if isinstance(sweep, str) else sweep,
        evaluate=evaluate,
    )
    return runner.execute(
        _Study(config, options, resume, t0),
        out=out,
        snapshot_every=options.snapshot_every,
        progress=progress,
    )


def _summary(
    rec: Recorder, oc: driver.Outcome, config, window, tolerance, start_step, wall_s
) -> dict[str, Any]:
    totals = np.einsum("skc,skc->sk", rec.hist, rec.weights())
    terms = rec.prep.problem.recipe.labels
    final = rec.distance_table()
    last = final["step"] == (rec.snap_steps[-1] if rec.snap_steps else -1)
    env = records.environment()
    return {
        "starts": list(rec.labels),
        "steps": sum(s.steps for s in rec.prep.plan.scales),  # the final pass's included
        "steps_done": rec.step,
        "scales": outputs.scales_record(config, oc, rec.prep.plan),
        "from_recipe": outputs.from_recipe_record(rec.prep.plan),
        "resumed_from_step": start_step or None,
        "interrupted": oc.interrupted,
        "final_loss": {
            lab: {
                "total": float(totals[-1, j]) if len(totals) else None,
                **{t: float(rec.hist[-1, j, i]) for i, t in enumerate(terms)},
            }
            if len(totals)
            else None
            for j, lab in enumerate(rec.labels)
        },
        "final_distances": [
            {"a": a, "b": b, "space": s, "value": float(v)}
            for a, b, s, v in zip(
                final["a"][last], final["b"][last], final["space"][last], final["value"][last]
            )
        ],
        "convergence": {
            "definition": "first step s > window with |L(t)-L(t-window)|/|L(t-window)| < tolerance "
            "for every step t >= s (L: weighted total loss); null if never",
            "window": window,
            "tolerance": tolerance,
            "step": {
                lab: convergence_step(totals[:, j], window, tolerance)
                for j, lab in enumerate(rec.labels)
            },
        },
        "diverged_at_step": dict(zip(rec.labels, oc.diverged_at)),
        "wall_s": round(wall_s, 3),
        "compile_s": round(oc.compile_s, 3),
        "run_s": round(oc.run_s, 3),
        "steps_per_s": round(oc.steps_done / oc.run_s, 4) if oc.run_s else None,
        "loop": oc.loop,
        "shard": oc.shard,
        "backend": env["backend"],
        "devices": env["devices"],
    }


# --------------------------------------------------------------------------- outputs


def evaluate_outputs(config: RunConfig, out: Path, labels: Sequence[str]) -> dict[str, Any]:
    """``jaxcombine eval`` of ``<out>/<label>.png`` for every label, against the run's
    content and first style, written to ``<out>/eval.csv`` and ``eval.json``; returns
    label → scores."""
    ev = metrics.evaluate(
        [out / f"{lab}.png" for lab in labels],
        content=config.content,
        style=config.style[0] if config.style else None,
        out=out / "eval.csv",
        weights=config.weights,
        max_pixels=config.max_pixels,
        max_memory=config.max_memory,
    )
    return {
        lab: {k: v for k, v in row.items() if k != "image"} for lab, row in zip(labels, ev.rows)
    }


def _write_outputs(study: Study, rec: Recorder, config, sweep: Sweep | None) -> None:
    out = study.out
    plots = {
        "contact_sheet.png": contact_sheet_png(out, rec.labels, rec.snap_steps),
        "loss.png": loss_png(
            rec.hist, rec.weights(), rec.labels, rec.prep.problem.recipe.labels, rec.sizes
        ),
        "distances.png": distances_png(study.distances, rec.labels),
    }
    for name, data in plots.items():
        records.atomic_write_bytes(out / name, data)
    records.write_json(out / "summary.json", study.summary)
    study_rec = records.record(
        config,
        weights=rec.prep.weights,
        problem=rec.prep.problem,
        recipe=rec.prep.recipe.to_dict(),
        sweep=sweep,
        starts=list(rec.labels),
        summary="summary.json",
        history="history.csv",
        distances="distances.csv",
    )
    records.write_json(out / "study.json", study_rec)
    records.atomic_write_text(out / "report.html", report_html(study, study_rec, plots))
