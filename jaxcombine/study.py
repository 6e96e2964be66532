"""Convergence studies: do different starts reach the same image, and where do they differ?

``run_study`` runs every start (``content,style,noise:8``…), optionally crossed
with a sweep over a second axis (``tv_weight=0,1e-3`` or ``lr=1,4,8``), as ONE
compiled vmapped program (:func:`engine.optimise`), and writes into one folder:

* ``history.csv``   tidy ``step,start,term,value,weighted``: every step × start ×
  loss component (unweighted ``value``, ``weighted`` = value × weight) plus
  ``total`` (both columns hold the weighted total). As in the engine, step t's
  loss is that of the image step t updated (the image after t−1 updates);
* ``distances.csv`` tidy ``step,a,b,space,value`` at every snapshot (the images
  after ``step`` updates; step 0 holds the starts themselves): ``pixel`` is
  the mean absolute pixel difference (0–255 units) of starts a and b; a layer
  name is ``relative_mse(S_a, S_b)`` of the recipe statistic S at that layer
  (``<layer>:<statistic>`` when a layer has several), i.e. normalised by b's;
* ``<start>.png``, ``snapshots/<start>-stepNNNNNN.png`` (step 0, every
  ``snapshot_every`` steps and the last step), ``contact_sheet.png``,
  ``loss.png``, ``distances.png``, ``report.html`` (self-contained),
  ``summary.json``, ``study.json`` and the resumable ``state.npz``.

History, distances and ``state.npz`` are rewritten atomically at every
snapshot, so an interrupted study keeps what it did and ``resume=True``
continues it to the same total steps.
"""

from __future__ import annotations

import base64
import csv
import dataclasses
import html
import io
import math
import time
from functools import partial
from itertools import combinations
from pathlib import Path
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jaxcombine import engine, images, interrupts, job, losses, model, outputs, records
from jaxcombine.config import RunConfig, StudyOptions, Sweep, parse_sweep
from jaxcombine.errors import JaxcombineError

HISTORY_COLUMNS = ("step", "start", "term", "value", "weighted")
DISTANCE_COLUMNS = ("step", "a", "b", "space", "value")
MAX_SHEET_COLUMNS = 12


# --------------------------------------------------------------------------- sweep


def _cross(prep: job.Prepared, sweep: Sweep | None):
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


# --------------------------------------------------------------------------- distances


def feature_spaces(recipe) -> tuple[tuple[str, str, str], ...]:
    """(name, statistic, layer) of every distinct recipe statistic; name is the layer
    unless that layer carries several statistics (then ``layer:statistic``)."""
    pairs = list(dict.fromkeys((t.statistic, t.layer) for t in recipe.terms))
    layers = [layer for _, layer in pairs]
    return tuple((layer if layers.count(layer) == 1 else f"{layer}:{stat}", stat, layer)
                 for stat, layer in pairs)


@partial(jax.jit, static_argnames=("problem", "pairs"))
def _pair_distances(problem: engine.Problem, variables, pixels, *, pairs):
    """(1 + n_spaces, n_pairs): pixel distance, then each feature space's, for every pair."""
    ia = np.asarray([a for a, _ in pairs], np.int32)
    ib = np.asarray([b for _, b in pairs], np.int32)
    out = [jnp.mean(jnp.abs(pixels[ia] - pixels[ib]), axis=(1, 2, 3))]
    feats = problem.network().apply(variables, model.preprocess(pixels))
    for _, stat, layer in feature_spaces(problem.recipe):
        s = losses.statistic(feats[layer], stat)
        out.append(jax.vmap(losses.relative_mse)(s[ia], s[ib]))
    return jnp.stack(out)


def pair_distances(problem, variables, pixels: np.ndarray) -> np.ndarray:
    """Distances between every pair of the k images ``pixels``: (1 + n_spaces, k(k-1)/2)."""
    pairs = tuple(combinations(range(len(pixels)), 2))
    if not pairs:
        return np.zeros((1 + len(feature_spaces(problem.recipe)), 0), np.float32)
    return np.asarray(_pair_distances(problem, variables, jnp.asarray(pixels), pairs=pairs))


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


# --------------------------------------------------------------------------- tidy tables


def tidy_history(hist: np.ndarray, weights: np.ndarray, starts: Sequence[str],
                 terms: Sequence[str]) -> dict[str, np.ndarray]:
    """(T, k, c) unweighted components → tidy columns, ``total`` last for each step × start."""
    t, k, c = hist.shape
    weighted = hist * weights[None]
    total = weighted.sum(-1, keepdims=True)
    return {
        "step": np.repeat(np.arange(1, t + 1), k * (c + 1)),
        "start": np.tile(np.repeat(np.asarray(starts, object), c + 1), t),
        "term": np.tile(np.asarray([*terms, "total"], object), t * k),
        "value": np.concatenate([hist, total], -1).ravel(),
        "weighted": np.concatenate([weighted, total], -1).ravel(),
    }


def tidy_distances(steps: Sequence[int], dists: np.ndarray, starts: Sequence[str],
                   spaces: Sequence[str]) -> dict[str, np.ndarray]:
    """(n_snaps, n_spaces, n_pairs) → tidy columns ordered step, pair, space."""
    pairs = list(combinations(starts, 2))
    n, s, p = len(steps), len(spaces), len(pairs)
    a = np.asarray([x for x, _ in pairs] or [""], object)[:p]
    b = np.asarray([y for _, y in pairs] or [""], object)[:p]
    return {
        "step": np.repeat(np.asarray(steps, int), p * s),
        "a": np.tile(np.repeat(a, s), n),
        "b": np.tile(np.repeat(b, s), n),
        "space": np.tile(np.asarray(spaces, object), n * p),
        "value": np.asarray(dists, np.float64).transpose(0, 2, 1).ravel(),
    }


def csv_text(columns: dict[str, np.ndarray]) -> str:
    buf = io.StringIO()
    wr = csv.writer(buf, lineterminator="\n")
    wr.writerow(columns)
    fmt = [(lambda v: f"{v:.6g}") if np.asarray(col).dtype.kind == "f" else str
           for col in columns.values()]
    for row in zip(*columns.values()):
        wr.writerow([f(v) for f, v in zip(fmt, row)])
    return buf.getvalue()


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


class _Recorder:
    """Accumulates history and snapshot distances; writes them (atomically) at each snapshot."""

    def __init__(self, out: Path, prep: job.Prepared, labels, lrs, loss_weights):
        self.out, self.prep, self.labels = out, prep, labels
        self.lrs, self.loss_weights = lrs, loss_weights
        self.spaces = ("pixel",) + tuple(name for name, _, _ in feature_spaces(prep.problem.recipe))
        self.hist = np.zeros((0, len(labels), len(prep.problem.recipe.labels)), np.float32)
        self.snap_steps: list[int] = []
        self.dists: list[np.ndarray] = []
        self.step = 0

    # -- state -------------------------------------------------------------------------

    def load(self) -> tuple[np.ndarray, Any]:
        """Restore from ``state.npz``; returns (pixels, opt_state)."""
        path = self.out / "state.npz"
        if not path.exists():
            raise JaxcombineError(f"nothing to resume: {path} does not exist")
        with np.load(path, allow_pickle=False) as z:
            data = dict(z)
        if tuple(data["labels"].tolist()) != self.labels:
            raise JaxcombineError(f"cannot resume {self.out}: it has starts "
                                  f"{', '.join(data['labels'].tolist())}, not {', '.join(self.labels)}")
        if data["pixels"].shape[1:] != self.prep.x0.shape[1:]:
            raise JaxcombineError(f"cannot resume {self.out}: it was run at another size")
        self.step = int(data["step"])
        self.hist = data["history"]
        self.snap_steps = data["snap_steps"].tolist()
        self.dists = list(data["distances"])
        template = self.prep.initial_state(data["pixels"], lr=self.lrs,
                                           loss_weights=self.loss_weights).opt_state
        leaves, treedef = jax.tree.flatten(template)
        n = len(leaves)
        opt_state = jax.tree.unflatten(treedef, [data[f"opt_{i}"] for i in range(n)])
        return data["pixels"], opt_state

    def save_state(self, pixels: np.ndarray, opt_state: Any) -> None:
        leaves = {f"opt_{i}": np.asarray(a) for i, a in enumerate(jax.tree.leaves(opt_state))}
        buf = io.BytesIO()
        np.savez(buf, step=self.step, pixels=np.asarray(pixels, np.float32),
                 labels=np.asarray(self.labels), history=self.hist,
                 snap_steps=np.asarray(self.snap_steps, int),
                 distances=np.asarray(self.dists, np.float32).reshape(
                     len(self.snap_steps), len(self.spaces), -1), **leaves)
        records.atomic_write_bytes(self.out / "state.npz", buf.getvalue())

    # -- recording ---------------------------------------------------------------------

    def add_steps(self, comps: np.ndarray) -> None:
        self.hist = np.concatenate([self.hist, comps.astype(np.float32)])
        self.step += len(comps)

    def snapshot(self, pixels: np.ndarray, opt_state: Any = None) -> None:
        """Distances, snapshot images, tables and (with ``opt_state``) the resumable state."""
        if self.snap_steps and self.snap_steps[-1] == self.step:
            return
        self.snap_steps.append(self.step)
        self.dists.append(pair_distances(self.prep.problem, self.prep.variables, pixels))
        for lab, px in zip(self.labels, pixels):
            images.write(outputs.snapshot_path(self.out, lab, self.step), px)
        self.write_tables()
        if opt_state is not None:
            self.save_state(pixels, opt_state)

    def weights(self) -> np.ndarray:
        if self.loss_weights is not None:
            return np.asarray(self.loss_weights, np.float32)
        return np.tile(self.prep.loss_weights, (len(self.labels), 1))

    def history_table(self) -> dict[str, np.ndarray]:
        return tidy_history(self.hist, self.weights(), self.labels, self.prep.problem.recipe.labels)

    def distance_table(self) -> dict[str, np.ndarray]:
        d = np.asarray(self.dists, np.float32).reshape(len(self.snap_steps), len(self.spaces), -1)
        return tidy_distances(self.snap_steps, d, self.labels, self.spaces)

    def write_tables(self) -> None:
        records.atomic_write_text(self.out / "history.csv", csv_text(self.history_table()))
        records.atomic_write_text(self.out / "distances.csv", csv_text(self.distance_table()))


def run_study(config: RunConfig, out: str | Path, *, snapshot_every: int = 25,
              tolerance: float = 0.01, sweep: str | Sweep | None = None,
              resume: bool = False, progress: bool = True) -> Study:
    """Run every start of ``config.init`` (× ``sweep``) in one program and write the study.

    ``snapshot_every`` sets how often images, distances and the resumable state
    are saved, and the convergence window (see :func:`convergence_step`).
    ``resume`` continues the study in ``out`` from its last snapshot. Ctrl-C or
    SIGTERM stops after the current chunk and writes everything so far.
    """
    t0 = time.perf_counter()
    options = StudyOptions(snapshot_every=snapshot_every, tolerance=tolerance,
                           sweep=parse_sweep(sweep, config) if isinstance(sweep, str) else sweep)
    snapshot_every, sweep = options.snapshot_every, options.sweep
    prep = job.prepare(config)
    out = Path(out)
    labels, x0, lrs, loss_weights = _cross(prep, sweep)
    rec = _Recorder(out, prep, labels, lrs, loss_weights)
    opt_state = None
    if resume:
        x0, opt_state = rec.load()
    else:
        rec.snapshot(x0)
    state = prep.initial_state(x0, lr=lrs, loss_weights=loss_weights, start_step=rec.step)
    if opt_state is not None:
        state = state._replace(opt_state=opt_state)
    bar = outputs.ProgressBar(config.steps, labels, state.weights) if progress else None

    def on_chunk(step, comps, fetch):
        rec.add_steps(comps)
        if bar is not None:
            bar(step, comps)
        if step % snapshot_every == 0 or step == config.steps:
            rec.snapshot(fetch(), fetch.opt_state())

    with interrupts.stop_requests() as stop:
        outcome = engine.optimise(prep.problem, prep.variables, prep.targets, state,
                                  chunk=outputs.chunk_size(config.chunk, snapshot_every),
                                  loop=config.loop, on_chunk=on_chunk, stop=stop.is_set)
    if bar is not None:
        bar.close()
    rec.snapshot(outcome.pixels, outcome.opt_state)  # an interrupted run's last step
    for lab, px in zip(labels, outcome.pixels):
        images.write(out / f"{lab}.png", px)
    summary = _summary(rec, outcome, config, snapshot_every, options.tolerance, outcome.start_step,
                       time.perf_counter() - t0)
    study = Study(labels, rec.history_table(), rec.distance_table(), summary, out,
                  outcome.interrupted)
    _write_outputs(study, rec, config, sweep)
    return study


def _summary(rec: _Recorder, oc: engine.Outcome, config, window, tolerance, start_step,
             wall_s) -> dict[str, Any]:
    totals = np.einsum("skc,kc->sk", rec.hist, rec.weights())
    terms = rec.prep.problem.recipe.labels
    final = rec.distance_table()
    last = final["step"] == (rec.snap_steps[-1] if rec.snap_steps else -1)
    env = records.environment()
    return {
        "starts": list(rec.labels),
        "steps": config.steps,
        "steps_done": rec.step,
        "resumed_from_step": start_step or None,
        "interrupted": oc.interrupted,
        "final_loss": {lab: {"total": float(totals[-1, j]) if len(totals) else None,
                             **{t: float(rec.hist[-1, j, i]) for i, t in enumerate(terms)}}
                       if len(totals) else None for j, lab in enumerate(rec.labels)},
        "final_distances": [{"a": a, "b": b, "space": s, "value": float(v)} for a, b, s, v in zip(
            final["a"][last], final["b"][last], final["space"][last], final["value"][last])],
        "convergence": {
            "definition": "first step s > window with |L(t)-L(t-window)|/|L(t-window)| < tolerance "
                          "for every step t >= s (L: weighted total loss); null if never",
            "window": window, "tolerance": tolerance,
            "step": {lab: convergence_step(totals[:, j], window, tolerance)
                     for j, lab in enumerate(rec.labels)},
        },
        "diverged_at_step": dict(zip(rec.labels, oc.diverged_at)),
        "wall_s": round(wall_s, 3),
        "compile_s": round(oc.compile_s, 3),
        "run_s": round(oc.run_s, 3),
        "steps_per_s": round(oc.steps_done / oc.run_s, 4) if oc.run_s else None,
        "backend": env["backend"],
        "devices": env["devices"],
    }


# --------------------------------------------------------------------------- outputs


def _write_outputs(study: Study, rec: _Recorder, config, sweep: Sweep | None) -> None:
    out = study.out
    plots = {
        "contact_sheet.png": contact_sheet_png(out, rec.labels, rec.snap_steps),
        "loss.png": loss_png(rec.hist, rec.weights(), rec.labels, rec.prep.problem.recipe.labels),
        "distances.png": distances_png(study.distances, rec.labels),
    }
    for name, data in plots.items():
        records.atomic_write_bytes(out / name, data)
    records.write_json(out / "summary.json", study.summary)
    w8 = rec.prep.weights
    study_rec = records.record(config, weights={"fingerprint": w8.fingerprint, **w8.info},
                               problem=rec.prep.problem, recipe=rec.prep.recipe.to_dict(),
                               sweep=sweep, starts=list(rec.labels), summary="summary.json",
                               history="history.csv", distances="distances.csv")
    records.write_json(out / "study.json", study_rec)
    records.atomic_write_text(out / "report.html", report_html(study, study_rec, plots))


def _figure(rows: int, cols: int, width: float, height: float):
    from matplotlib.figure import Figure  # Agg canvas, no pyplot global state

    fig = Figure(figsize=(width, height), layout="constrained")
    return fig, fig.subplots(rows, cols, squeeze=False)


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    return buf.getvalue()


def contact_sheet_png(out: Path, labels: Sequence[str], steps: Sequence[int]) -> bytes:
    """Rows = starts, columns = snapshot steps (at most :data:`MAX_SHEET_COLUMNS`), labelled."""
    if len(steps) > MAX_SHEET_COLUMNS:
        idx = np.unique(np.linspace(0, len(steps) - 1, MAX_SHEET_COLUMNS).round().astype(int))
        steps = [steps[i] for i in idx]
    rows = [[images.read(outputs.snapshot_path(out, lab, s)) for s in steps]
            for lab in labels]
    pad = 4
    sheet = images.contact_sheet(rows, pad=pad)
    h, w = rows[0][0].shape[:2]
    scale = max(1.0, 96 / max(h, w))  # tiny images get room for their labels
    fig, ax = _figure(1, 1, 2.2 + scale * sheet.shape[1] / 100, 0.8 + scale * sheet.shape[0] / 100)
    ax = ax[0, 0]
    ax.imshow(images.to_uint8(sheet), interpolation="nearest")
    ax.set_xticks([pad + j * (w + pad) + w / 2 for j in range(len(steps))],
                  [str(s) for s in steps], fontsize=8)
    ax.set_yticks([pad + i * (h + pad) + h / 2 for i in range(len(labels))], list(labels), fontsize=8)
    ax.tick_params(length=0)
    ax.set_xlabel("step")
    ax.set_title("snapshots: rows = starts, columns = steps")
    for spine in ax.spines.values():
        spine.set_visible(False)
    return _png(fig)


def loss_png(hist: np.ndarray, weights: np.ndarray, labels: Sequence[str],
             terms: Sequence[str]) -> bytes:
    """One subplot per component (unweighted) plus the weighted total; log y; a line per start."""
    names = ["total (weighted)", *terms]
    series = np.concatenate([np.einsum("skc,kc->sk", hist, weights)[..., None], hist], -1)
    cols = min(3, len(names))
    rows = math.ceil(len(names) / cols)
    fig, axes = _figure(rows, cols, 4.2 * cols, 3.0 * rows + 0.6)
    steps = np.arange(1, len(hist) + 1)
    for i, ax in enumerate(axes.ravel()):
        if i >= len(names):
            ax.set_visible(False)
            continue
        for j, lab in enumerate(labels):
            y = series[:, j, i]
            ax.plot(steps, np.where(y > 0, y, np.nan), label=lab, lw=1.2)
        ax.set_yscale("log")
        ax.set_title(names[i], fontsize=9)
        ax.set_xlabel("step", fontsize=8)
        ax.grid(True, which="both", alpha=0.3)
    handles, leg = axes[0, 0].get_legend_handles_labels()
    fig.legend(handles, leg, loc="outside lower center", ncols=min(4, len(labels)), fontsize=8)
    fig.suptitle("loss per start (log scale)")
    return _png(fig)


def distances_png(dist: dict[str, np.ndarray], labels: Sequence[str]) -> bytes:
    """Left: pairwise pixel distance over steps; right: final per-layer feature distance."""
    pairs = list(combinations(labels, 2))
    fig, axes = _figure(1, 2, 13, max(4.8, 1.5 + 0.22 * len(pairs)))
    ax_px, ax_hm = axes[0]
    if not pairs:
        for ax in (ax_px, ax_hm):
            ax.text(0.5, 0.5, "one start: no pairs", ha="center", va="center")
            ax.set_axis_off()
        return _png(fig)
    px = dist["space"] == "pixel"
    for a, b in pairs:
        m = px & (dist["a"] == a) & (dist["b"] == b)
        ax_px.plot(dist["step"][m], dist["value"][m], marker="o", ms=3, label=f"{a} – {b}")
    ax_px.set_xlabel("step")
    ax_px.set_ylabel("mean |Δ pixel| (0–255)")
    ax_px.set_title("pairwise pixel distance")
    ax_px.grid(True, alpha=0.3)
    if len(pairs) <= 15:
        ax_px.legend(fontsize=7)
    last = dist["step"] == dist["step"].max()
    spaces = [s for s in dict.fromkeys(dist["space"][last]) if s != "pixel"]
    grid = np.array([[dist["value"][last & (dist["a"] == a) & (dist["b"] == b)
                                    & (dist["space"] == s)][0] for s in spaces] for a, b in pairs])
    from matplotlib.colors import LogNorm

    positive = grid[grid > 0]
    norm = LogNorm(positive.min(), positive.max()) if positive.size and positive.min() < positive.max() \
        else None
    im = ax_hm.imshow(np.where(grid > 0, grid, np.nan), aspect="auto", cmap="viridis", norm=norm)
    ax_hm.set_xticks(range(len(spaces)), spaces, rotation=30, ha="right", fontsize=8)
    ax_hm.set_yticks(range(len(pairs)), [f"{a} – {b}" for a, b in pairs], fontsize=7)
    if len(pairs) * len(spaces) <= 60:
        for (i, j), v in np.ndenumerate(grid):
            light = v > 0 and im.norm(v) > 0.6  # viridis is light at the top
            ax_hm.text(j, i, f"{v:.2g}", ha="center", va="center", fontsize=7,
                       color="k" if light else "w")
    ax_hm.set_title(f"feature distance at step {int(dist['step'].max())} (relative MSE, log colour)")
    fig.colorbar(im, ax=ax_hm)
    return _png(fig)


def _data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    cell = lambda v: f"{v:.4g}" if isinstance(v, float) else html.escape(str(v))  # noqa: E731
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{cell(v)}</td>" for v in r) + "</tr>" for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def report_html(study: Study, study_rec: dict, plots: dict[str, bytes]) -> str:
    """One self-contained page: config, summary table, plots, contact sheet, final images."""
    s = study.summary
    conv = s["convergence"]
    rows = [(lab, (s["final_loss"][lab] or {}).get("total", ""), conv["step"][lab] or "—",
             s["diverged_at_step"][lab] or "—") for lab in study.labels]
    spaces = list(dict.fromkeys(d["space"] for d in s["final_distances"]))
    by_pair: dict[tuple[str, str], dict[str, float]] = {}
    for d in s["final_distances"]:
        by_pair.setdefault((d["a"], d["b"]), {})[d["space"]] = d["value"]
    dist_rows = [(f"{a} – {b}", *(v[sp] for sp in spaces)) for (a, b), v in by_pair.items()]
    sweep = study_rec.get("sweep")
    sweep_text = f"{sweep['name']} = {', '.join(f'{v:g}' for v in sweep['values'])}" if sweep else "none"
    finals = "".join(
        f'<figure><img src="{_data_uri((study.out / f"{lab}.png").read_bytes())}">'
        f"<figcaption>{html.escape(lab)}</figcaption></figure>" for lab in study.labels)
    config = {k: v for k, v in study_rec["config"].items() if v not in (None, (), [])}
    timing = (f"{s['steps_done']} of {s['steps']} steps; wall {s['wall_s']} s, compile {s['compile_s']} s, "
              f"{s['steps_per_s']} steps/s on {s['backend']} ({', '.join(s['devices'])})"
              + ("; interrupted" if s["interrupted"] else ""))
    img = lambda name: f'<p><img src="{_data_uri(plots[name])}" alt="{name}"></p>'  # noqa: E731
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>jaxcombine study</title>
<style>body{{font-family:sans-serif;max-width:1400px;margin:1em auto}}
table{{border-collapse:collapse;margin:.5em 0}}td,th{{border:1px solid #ccc;padding:2px 8px;text-align:left}}
img{{max-width:100%}}figure{{display:inline-block;margin:4px}}figure img{{width:160px;image-rendering:pixelated}}
</style></head><body>
<h1>jaxcombine convergence study</h1>
<p>{html.escape(timing)}</p>
<h2>Config</h2>{_table(("option", "value"), sorted(config.items()))}
<p>sweep (crossed with the starts): {html.escape(sweep_text)}</p>
<h2>Summary</h2>
<p>Convergence: {html.escape(conv["definition"])} (window {conv["window"]}, tolerance {conv["tolerance"]}).</p>
{_table(("start", "final total loss", "converged at step", "diverged at step"), rows)}
<h2>Loss</h2>{img("loss.png")}
<h2>Distances between starts</h2>{img("distances.png")}
<p>Final distances: pixel = mean |Δ| in 0–255; layers = relative MSE of the recipe statistic.</p>
{_table(("pair", *spaces), dist_rows)}
<h2>Snapshots</h2>{img("contact_sheet.png")}
<h2>Final images</h2>{finals}
</body></html>
"""
