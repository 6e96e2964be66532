"""Where a run's snapshots lie against the fronts of an ``eval-suite`` table: the path a
run takes through (content distance, style distance) on the judge, step by step.

    python scripts/snapshot_fronts.py SUITE_CSV RUN_DIR [RUN_DIR ...] --pair NAME ... \\
        [--recipe gatys=0.3,1,3,10] [--recipe strotss-from-64px] [--from-step 400] [--plot fronts.png]

Each RUN_DIR is a ``jaxcombine run --snapshot-every N`` output folder; its snapshots are
scored once with ``jaxcombine eval --judge alexnet`` (``RUN_DIR/snapshots.csv``, kept and
reused), against the content and style its run record names. ``--pair`` names each run's
pair as the suite table does (one per RUN_DIR, in order). For every point of the first
``--recipe`` (the one to beat) the script prints the first snapshot that weakly
dominates it (no larger LPIPS, no larger style distance: the suite's, sliced W) or
"never", then whether the whole path dominates those points as ``eval-suite`` counts a
front dominating (``jaxcombine.suite.fronts.dominates``); ``--plot`` draws each pair's
paths and the recipes' points.

Why: a suite row is where a run stopped. When a preset's far end "saturates" (lower
content weights give the same point), the snapshots say whether the run had converged
there or simply ran out of steps (docs/evaluation.md, "More steps at the finest scale").
"""

from __future__ import annotations

import argparse
import csv
import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np

from jaxcombine.options.config import SUITE_FRONT_STATISTIC
from jaxcombine.suite.fronts import dominates

STEP = re.compile(r"step(\d+)\.png$")
STYLE = f"judge_style_{SUITE_FRONT_STATISTIC}"  # the style distance the suite's fronts use


def scored_snapshots(run_dir: Path, from_step: int = 0) -> list[tuple[int, float, float]]:
    """(step, LPIPS, style distance) of each snapshot of ``run_dir`` from ``from_step`` on,
    scored on AlexNet once: ``snapshots.csv`` keeps the scores, and is scored anew only
    when it lacks one of the snapshots asked for (delete it to score anew regardless)."""
    table = run_dir / "snapshots.csv"
    shots = [
        p
        for p in sorted(run_dir.glob("snapshots/*.png"))
        if int(STEP.search(p.name).group(1)) >= from_step
    ]
    if not shots:
        sys.exit(f"snapshot_fronts: {run_dir} has no snapshots (run with --snapshot-every)")
    wanted = {p.name for p in shots}
    scored = (
        {Path(r["image"]).name: r for r in csv.DictReader(table.open())} if table.exists() else {}
    )
    if not wanted <= scored.keys():
        config = json.loads((run_dir / "run.json").read_text())["config"]
        cmd = [sys.executable, "-m", "jaxcombine", "eval", *map(str, shots), "--judge", "alexnet"]
        style = config["style"][0] if isinstance(config["style"], list) else config["style"]
        cmd += ["--content", config["content"], "--style", style, "--out", str(table)]
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
        scored = {Path(r["image"]).name: r for r in csv.DictReader(table.open())}
    return sorted(
        (int(STEP.search(name).group(1)), float(r["judge_content"]), float(r[STYLE]))
        for name, r in scored.items()
        if name in wanted
    )


def suite_points(
    table: Path, pair: str, recipe: str, weights: list[float] | None
) -> list[tuple[str, float, float]]:
    """(content weight, LPIPS, style distance) of ``recipe``'s rows for ``pair`` in the
    suite table."""
    out = []
    for r in csv.DictReader(table.open()):
        w = float(r["content_weight"])
        if (
            r["pair"] == pair
            and r["recipe"] == recipe
            and (not weights or any(abs(w - x) < 1e-6 for x in weights))
        ):
            out.append((r["content_weight"], float(r["judge_content"]), float(r[STYLE])))
    return sorted(out, key=lambda p: p[1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("suite_csv", type=Path)
    ap.add_argument("runs", nargs="+", type=Path)
    ap.add_argument("--pair", action="append", required=True, help="one per run, in order")
    ap.add_argument(
        "--recipe", action="append", default=[], help="RECIPE[=W,W,...]; the first is beaten"
    )
    ap.add_argument(
        "--from-step", type=int, default=0, help="drop earlier snapshots (coarser scales)"
    )
    ap.add_argument("--plot", type=Path)
    a = ap.parse_args()
    if len(a.pair) != len(a.runs):
        sys.exit("snapshot_fronts: give one --pair per run folder")
    recipes = []
    for spec in a.recipe or ["gatys=0.3,1,3,10"]:
        name, _, ws = spec.partition("=")
        recipes.append((name, [float(x) for x in ws.split(",")] if ws else None))
    paths = [
        (pair, run, scored_snapshots(run, a.from_step))
        for pair, run in zip(a.pair, a.runs, strict=True)
    ]
    name, weights = recipes[0]
    for pair, run, path in paths:
        beaten = suite_points(a.suite_csv, pair, name, weights)
        for w, lp, sw in beaten:
            first = next((s for s, x, y in path if x <= lp and y <= sw), None)
            print(
                f"{pair} {run.name}: {name} {w} ({lp:.3f}/{sw:.3f}) first dominated at step {first or 'never'}"
            )
        verdict = dominates(np.array([s[1:] for s in path]), np.array([b[1:] for b in beaten]))
        print(
            f"{pair} {run.name}: the path {'dominates' if verdict else 'does not dominate'} {name}'s points"
        )
    if a.plot:
        plot(a, recipes, paths)


def plot(a: argparse.Namespace, recipes, paths) -> None:
    """One panel per pair: the recipes' points and each run's path, steps labelled."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pairs = list(dict.fromkeys(a.pair))
    cols = min(3, len(pairs))
    rows = -(-len(pairs) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.8 * rows), squeeze=False)
    for ax, pair in zip(axes.flat, pairs, strict=False):
        for (name, weights), marker in zip(recipes, "os^Dv", strict=False):
            pts = suite_points(a.suite_csv, pair, name, weights)
            ax.plot([p[1] for p in pts], [p[2] for p in pts], marker=marker, ls=":", label=name)
            for w, x, y in pts:
                ax.annotate(
                    f"{float(w):.3g}", (x, y), fontsize=7, xytext=(3, 3), textcoords="offset points"
                )
        for p, run, path in paths:
            if p == pair:
                ax.plot([s[1] for s in path], [s[2] for s in path], ".-", label=run.name)
                for s, x, y in path[:: max(1, len(path) // 4)] + path[-1:]:
                    ax.annotate(str(s), (x, y), fontsize=6, color="grey")
        ax.set(
            title=pair,
            xlabel="LPIPS to the photo (AlexNet)",
            ylabel=f"style distance ({SUITE_FRONT_STATISTIC}) to the painting",
        )
        ax.legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(a.plot, dpi=110)


if __name__ == "__main__":
    main()
