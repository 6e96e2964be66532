"""Fit :mod:`jaxcombine.run.memory`'s table to measured peaks, and check the estimate against them.

    python scripts/memory_fit.py docs/memory-measurements.csv          # fit: print the table
    python scripts/memory_fit.py docs/memory-measurements.csv --check  # estimate vs measured

The fit runs the shipped estimate itself with trial tables (``MARGIN`` 1) and
minimises the relative error (so small runs weigh as much as big ones), in
three stages: the float32 runs without ``--remat`` (scipy ``least_squares``: the
estimate takes a max over convolutions, so it is not linear in its table); then
one factor each for ``--remat`` and 16-bit dtypes on the per-start part, taken at
the largest any run needs; then ``jaxcombine features`` runs (a forward only; the weights' and program's costs
as fitted to the runs).
The CSV may hold a case measured more than once (another day, machine or commit): its
peaks differ by up to 12 % between them (docs/benchmarks.md), so the fit is to
each case's *largest* peak, and it prints the ``MARGIN`` that puts every row at or
below its estimate. ``--check`` prints every row's measured peak, the estimate (with
``MARGIN``) and their ratio, as a markdown table, and the range per date.
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

import numpy as np

from jaxcombine.options import layers as layers_lib
from jaxcombine.options import recipe as recipe_lib
from jaxcombine.run import memory

SCRIPTS = Path(__file__).resolve().parent

# The fitted constants of jaxcombine.run.memory, in the order of the parameter vector. The
# search starts at the shipped table: the estimate takes a max over convolutions, so the
# fit is not convex, and from a generic start (every copy count 1) a Winograd working set
# that starts no costlier than a direct one is never picked and never moves.
RUN_TABLE = (
    ("BASE", "xla"),
    ("BASE", "winograd"),
    ("PER_CONV_LAYER", None),
    ("WEIGHT_COPIES", None),
    ("IMAGE_BYTES_PER_PIXEL", None),
    ("TARGET_COPIES", None),
    ("STORED_COPIES", "xla"),
    ("STORED_COPIES", "winograd"),
    ("WORKING_COPIES", ("xla", "direct")),
    ("WORKING_COPIES", ("winograd", "direct")),
    ("WORKING_COPIES", ("winograd", "winograd")),
)
FEATURES_TABLE = (
    ("FEATURES_BASE", None),
    ("FEATURES_IMAGE_BYTES_PER_PIXEL", None),
    ("FORWARD_WORKING_COPIES", None),
    ("SAVED_TAP_COPIES", None),
)


def layers_of(name: str) -> tuple[tuple[str, ...], list[str]]:
    """(taps, layers matched by activation maps) of a recipe name, a recipe in scripts/, or
    layers joined by ``+``."""
    if name.startswith("block"):
        return tuple(name.split("+")), []
    local = SCRIPTS / f"{name}.toml"
    rec = recipe_lib.load(str(local) if local.exists() else name)
    return rec.layers, [t.layer for t in rec.terms if t.statistic == "activations"]


def shape_of(row: dict) -> dict:
    """The arguments of the estimate for one measured row."""
    layers, matched = layers_of(row["recipe"])
    shape = dict(layers=layers, height=int(row["height"]), width=int(row["width"]))
    if row["mode"] == "features":
        return shape
    return dict(
        shape,
        starts=int(row["starts"]),
        conv=row["conv"],
        dtype=row["dtype"],
        remat=row["remat"] == "1",
        activation_targets=matched,
    )


# What a row measured, whatever the day or machine: its command's shape.
CASE_FIELDS = ("mode", "height", "width", "conv", "dtype", "remat", "recipe", "starts")


def case_of(row: dict) -> tuple:
    """The case a row measured: rows with the same case differ only in day or machine."""
    return tuple(row[k] for k in CASE_FIELDS)


def largest_per_case(rows: list[dict]) -> list[dict]:
    """One row per case, the one with the largest peak: the table bounds the worst seen."""
    worst: dict[tuple, dict] = {}
    for r in rows:
        case = case_of(r)
        if case not in worst or peak(r) > peak(worst[case]):
            worst[case] = r
    return list(worst.values())


def read_rows(path) -> list[dict]:
    """The CSV's rows of processes that exited 0 (a killed one left no peak to fit)."""
    with open(path, newline="") as f:
        return [r for r in csv.DictReader(f) if r["exit_code"] == "0"]


def estimate(row: dict) -> int:
    est = memory.estimate_features_bytes if row["mode"] == "features" else memory.estimate_bytes
    return est(**shape_of(row))


def peak(row: dict) -> float:
    return float(row["peak_rss_bytes"])


def get_value(name: str, key) -> float:
    return float(getattr(memory, name) if key is None else getattr(memory, name)[key])


def set_value(name: str, key, value: float) -> None:
    if key is None:
        setattr(memory, name, float(value))
    else:
        getattr(memory, name)[key] = float(value)


def relative_errors(rows: list[dict]) -> np.ndarray:
    return np.array([estimate(r) / peak(r) - 1 for r in rows])


def fit(rows: list[dict]) -> None:
    from scipy.optimize import least_squares  # the fit only: jaxcombine does not need scipy

    everything, rows = rows, largest_per_case(rows)
    print(f"# {len(everything)} rows, {len(rows)} cases: each fitted to its largest peak")
    memory.MARGIN = 1.0
    memory.REMAT.update(xla=1.0, winograd=1.0)
    memory.REDUCED_PRECISION = 1.0
    runs = [r for r in rows if r["mode"] == "run"]
    plain = [r for r in runs if r["dtype"] == "float32" and r["remat"] == "0"]
    start = np.array([get_value(*c) for c in RUN_TABLE])

    def errors(v):
        for (name, key), x in zip(RUN_TABLE, v * start):
            set_value(name, key, x)
        return relative_errors(plain)

    result = least_squares(errors, np.ones(len(start)), bounds=(0, np.inf))
    rel = errors(result.x)
    for (name, key), x in zip(RUN_TABLE, result.x * start):
        print(f"{name}[{key!r}] = {x:.4g}" if key else f"{name} = {x:.4g}")
    print(
        f"# float32 runs, no remat: {len(plain)}, relative error {rel.min():+.3f} .. {rel.max():+.3f}"
    )

    # One factor on the per-start part: the largest any measured run needs.
    def factor(r) -> float:
        s = dict(shape_of(r), remat=False, dtype="float32")
        one = memory.estimate_bytes(**dict(s, starts=1))
        per_start = memory.estimate_bytes(**dict(s, starts=2)) - one
        rest = one - per_start
        return (peak(r) - rest) / (s["starts"] * per_start)

    # Each factor is set as fitted, so that the margin below is the fitted table's.
    for conv in layers_lib.CONVS:
        needs = [factor(r) for r in runs if r["remat"] == "1" and r["conv"] == conv]
        set_value("REMAT", conv, max(needs, default=1.0))
        print(f"REMAT[{conv!r}] = {memory.REMAT[conv]:.3g}  # runs need {np.round(needs, 3)}")
    needs = [factor(r) for r in runs if r["dtype"] != "float32"]
    set_value("REDUCED_PRECISION", None, max(needs, default=1.0))
    print(f"REDUCED_PRECISION = {memory.REDUCED_PRECISION:.3g}  # runs need {np.round(needs, 3)}")

    # Features, with the weights' and program's costs as fitted above.
    feats = [r for r in rows if r["mode"] == "features"]
    start = np.array([get_value(*c) for c in FEATURES_TABLE])

    def feature_errors(v):
        for (name, key), x in zip(FEATURES_TABLE, v * start):
            set_value(name, key, x)
        return relative_errors(feats)

    result = least_squares(feature_errors, np.ones(len(start)), bounds=(0, np.inf))
    rel = feature_errors(result.x)
    for (name, key), x in zip(FEATURES_TABLE, result.x * start):
        print(f"{name} = {x:.4g}")
    print(f"# features runs: {len(feats)}, relative error {rel.min():+.3f} .. {rel.max():+.3f}")

    # The margin: the smallest that puts every row, every day, at or below its estimate.
    low = max(peak(r) / estimate(r) for r in everything)
    print(f"MARGIN >= {low:.4g}  # every row at or below its estimate")


def check(rows: list[dict]) -> None:
    print(
        "| date | command | size | conv | starts | recipe (deepest tap) | options | measured | "
        "estimate | estimate / measured |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    ratios, by_date = [], {}
    for r in rows:
        est = estimate(r)
        ratios.append(est / peak(r))
        by_date.setdefault(r["date"], []).append(ratios[-1])
        options = " ".join(
            o
            for o, on in (
                ("--remat", r["remat"] == "1"),
                (f"--dtype {r['dtype']}", r["dtype"] != "float32"),
            )
            if on
        )
        print(
            f"| {r['date']} | {r['mode']} | {r['width']}×{r['height']} | {r['conv']} | {r['starts']} | "
            f"{r['recipe']} ({r['deepest']}) | {options} | {peak(r) / 1e9:.2f} GB | "
            f"{est / 1e9:.2f} GB | {est / peak(r):.2f} |"
        )
    print(
        f"\n{len(rows)} processes: estimate / measured from {min(ratios):.3f} to {max(ratios):.3f}"
    )
    for date, rs in sorted(by_date.items()):
        print(
            f"- {date}: {len(rs)} processes, {min(rs):.3f} to {max(rs):.3f}, median {np.median(rs):.3f}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("csv")
    parser.add_argument("--check", action="store_true")
    args = parser.parse_args()
    (check if args.check else fit)(read_rows(args.csv))


if __name__ == "__main__":
    main()
