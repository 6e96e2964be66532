"""A study's pictures: contact sheet, loss and distance plots, and the self-contained HTML report.

Kept apart from :mod:`jaxcombine.study.runner` (which runs and records the study) so
each module has one job. Plots use matplotlib's object API (no pyplot global
state) and come back as PNG bytes, written atomically by the caller.
"""

from __future__ import annotations

import base64
import html
import io
import math
from itertools import combinations
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from jaxcombine.io import images
from jaxcombine.run import outputs

if TYPE_CHECKING:
    from jaxcombine.study.runner import Study

MAX_SHEET_COLUMNS = 12


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
    rows = [[images.read(outputs.snapshot_path(out, lab, s)) for s in steps] for lab in labels]
    # coarse to fine: earlier snapshots are smaller; shown at the last one's size
    h, w = rows[0][-1].shape[:2]
    rows = [[images.resize(img, (w, h)) for img in row] for row in rows]
    pad = 4
    sheet = images.contact_sheet(rows, pad=pad)
    h, w = rows[0][0].shape[:2]
    scale = max(1.0, 96 / max(h, w))  # tiny images get room for their labels
    fig, ax = _figure(1, 1, 2.2 + scale * sheet.shape[1] / 100, 0.8 + scale * sheet.shape[0] / 100)
    ax = ax[0, 0]
    ax.imshow(images.to_uint8(sheet), interpolation="nearest")
    ax.set_xticks(
        [pad + j * (w + pad) + w / 2 for j in range(len(steps))],
        [str(s) for s in steps],
        fontsize=8,
    )
    ax.set_yticks(
        [pad + i * (h + pad) + h / 2 for i in range(len(labels))], list(labels), fontsize=8
    )
    ax.tick_params(length=0)
    ax.set_xlabel("step")
    ax.set_title("snapshots: rows = starts, columns = steps")
    for spine in ax.spines.values():
        spine.set_visible(False)
    return _png(fig)


def loss_png(
    hist: np.ndarray,
    weights: np.ndarray,
    labels: Sequence[str],
    terms: Sequence[str],
    sizes: np.ndarray | None = None,
) -> bytes:
    """One subplot per component (unweighted) plus the weighted total (``weights``: (k, c),
    or (steps, k, c) each step's own); log y; a line per start; coarse to fine (``sizes``:
    each step's size), a dotted line where a scale begins."""
    names = ["total (weighted)", *terms]
    weights = np.broadcast_to(weights, hist.shape)
    series = np.concatenate([np.einsum("skc,skc->sk", hist, weights)[..., None], hist], -1)
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
        for b in scale_boundaries(sizes):
            ax.axvline(b + 0.5, color="0.4", ls=":", lw=1)
            if i == 0:
                ax.annotate(
                    f"{sizes[b]} px",
                    (b + 0.5, 1),
                    xycoords=("data", "axes fraction"),
                    fontsize=7,
                    ha="left",
                    va="top",
                    color="0.3",
                )
        ax.set_title(names[i], fontsize=9)
        ax.set_xlabel("step", fontsize=8)
        ax.grid(True, which="both", alpha=0.3)
    handles, leg = axes[0, 0].get_legend_handles_labels()
    fig.legend(handles, leg, loc="outside lower center", ncols=min(4, len(labels)), fontsize=8)
    fig.suptitle("loss per start (log scale)")
    return _png(fig)


def scale_boundaries(sizes: np.ndarray | None) -> list[int]:
    """The history rows (0-based) where a new scale begins."""
    if sizes is None or len(sizes) < 2:
        return []
    return (np.flatnonzero(np.diff(np.asarray(sizes)) != 0) + 1).tolist()


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
    grid = np.array(
        [
            [
                dist["value"][last & (dist["a"] == a) & (dist["b"] == b) & (dist["space"] == s)][0]
                for s in spaces
            ]
            for a, b in pairs
        ]
    )
    from matplotlib.colors import LogNorm

    positive = grid[grid > 0]
    norm = (
        LogNorm(positive.min(), positive.max())
        if positive.size and positive.min() < positive.max()
        else None
    )
    im = ax_hm.imshow(np.where(grid > 0, grid, np.nan), aspect="auto", cmap="viridis", norm=norm)
    ax_hm.set_xticks(range(len(spaces)), spaces, rotation=30, ha="right", fontsize=8)
    ax_hm.set_yticks(range(len(pairs)), [f"{a} – {b}" for a, b in pairs], fontsize=7)
    if len(pairs) * len(spaces) <= 60:
        for (i, j), v in np.ndenumerate(grid):
            light = v > 0 and im.norm(v) > 0.6  # viridis is light at the top
            ax_hm.text(
                j, i, f"{v:.2g}", ha="center", va="center", fontsize=7, color="k" if light else "w"
            )
    ax_hm.set_title(
        f"feature distance at step {int(dist['step'].max())} (relative MSE, log colour)"
    )
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
    rows = [
        (
            lab,
            (s["final_loss"][lab] or {}).get("total", ""),
            conv["step"][lab] or "—",
            s["diverged_at_step"][lab] or "—",
        )
        for lab in study.labels
    ]
    spaces = list(dict.fromkeys(d["space"] for d in s["final_distances"]))
    by_pair: dict[tuple[str, str], dict[str, float]] = {}
    for d in s["final_distances"]:
        by_pair.setdefault((d["a"], d["b"]), {})[d["space"]] = d["value"]
    dist_rows = [(f"{a} – {b}", *(v[sp] for sp in spaces)) for (a, b), v in by_pair.items()]
    sweep = study_rec.get("sweep")
    sweep_text = (
        f"{sweep['name']} = {', '.join(f'{v:g}' for v in sweep['values'])}" if sweep else "none"
    )
    finals = "".join(
        f'<figure><img src="{_data_uri((study.out / f"{lab}.png").read_bytes())}">'
        f"<figcaption>{html.escape(lab)}</figcaption></figure>"
        for lab in study.labels
    )
    config = {k: v for k, v in study_rec["config"].items() if v not in (None, (), [])}
    timing = (
        f"{s['steps_done']} of {s['steps']} steps; wall {s['wall_s']} s, compile {s['compile_s']} s, "
        f"{s['steps_per_s']} steps/s on {s['backend']} ({', '.join(s['devices'])})"
        + ("; interrupted" if s["interrupted"] else "")
    )
    img = lambda name: f'<p><img src="{_data_uri(plots[name])}" alt="{name}"></p>'  # noqa: E731
    scores = ""
    if s.get("eval"):
        cols = [c for c in next(iter(s["eval"].values())) if c not in ("width", "height")]
        scores = (
            "<h2>Scores (jaxcombine eval)</h2><p>Measures the run did not optimise, "
            "against the content and the first style: see docs/evaluation.md.</p>"
            + _table(
                ("start", *cols),
                [(lab, *(s["eval"][lab][c] for c in cols)) for lab in study.labels],
            )
        )
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
{scores}
</body></html>
"""
