"""Pareto fronts of a suite's outputs: content distance against style distance, both on
the judge, both minimised; which recipe's front dominates which; and, where fronts cross
so that neither dominates, how far apart they run at equal content distance; and, per
pair, which points of one front another leaves undominated, on several style distances."""

from __future__ import annotations

import itertools
from typing import Sequence

import numpy as np

from jaxcombine.options.config import SUITE_FRONT_STATISTIC as FRONT_STYLE
from jaxcombine.options.config import SUITE_SHORTFALL_STATISTICS as SHORTFALL_STYLES


def front(points: np.ndarray) -> np.ndarray:
    """Indices of the points (N, 2) that no other point weakly dominates with one strict
    improvement (both coordinates minimised), sorted by the first coordinate."""
    keep = [
        i for i, p in enumerate(points) if not any(np.all(q <= p) and np.any(q < p) for q in points)
    ]
    return np.asarray(sorted(keep, key=lambda i: tuple(points[i])), int)


def dominates(a: np.ndarray, b: np.ndarray) -> bool:
    """Whether front ``a`` (N, 2) dominates front ``b`` (M, 2): each point of ``b`` is
    weakly dominated by a point of ``a``, and at least one strictly."""
    strict = any(np.any(np.all(a <= q, axis=1) & np.any(a < q, axis=1)) for q in b)
    return not left_undominated(a, b) and strict


def by_pair_and_recipe(rows: Sequence[dict]) -> dict[str, dict[str, list[dict]]]:
    """``{pair: {recipe: [rows]}}``, in the rows' order."""
    by: dict[str, dict[str, list[dict]]] = {}
    for r in rows:
        by.setdefault(r["pair"], {}).setdefault(r["recipe"], []).append(r)
    return by


def points(rows: Sequence[dict], y: str) -> np.ndarray:
    """(N, 2) float64: each row's judge content distance and its ``y``."""
    return np.asarray([(r["judge_content"], r[y]) for r in rows], np.float64)


def fronts(rows: Sequence[dict], y: str = f"judge_style_{FRONT_STYLE}") -> dict:
    """``{pair: {recipe: (N, 2) front points}}`` of (judge_content, ``y``)."""
    out = {}
    for pair, recipes in by_pair_and_recipe(rows).items():
        out[pair] = {}
        for recipe, rs in recipes.items():
            pts = points(rs, y)
            out[pair][recipe] = pts[front(pts)]
    return out


def dominance_counts(rows: Sequence[dict], recipes: Sequence[str]) -> dict[str, dict[str, int]]:
    """For each recipe A and other recipe B: on how many pairs A's front dominates B's."""
    counts = {a: {b: 0 for b in recipes if b != a} for a in recipes}
    for by_recipe in fronts(rows).values():
        for a, fa in by_recipe.items():
            for b, fb in by_recipe.items():
                if a != b and dominates(fa, fb):
                    counts[a][b] += 1
    return counts


def style_gap(a: np.ndarray, b: np.ndarray, samples: int = 64) -> float | None:
    """How much further from the style front ``a`` (N, 2) runs than front ``b`` (M, 2) at
    equal content distance: exp(mean log(y_a(x) / y_b(x))) − 1 over ``samples`` content
    distances x spread evenly across the range both fronts span, each front read as the
    polyline through its points (sorted by x). Negative: ``a`` is closer to the style.
    None when the ranges do not overlap (or one front is a single point).

    A Bjøntegaard-style average, as video coding compares rate–distortion curves: it
    says by how much two crossing fronts differ where both have points, which dominance
    (all or nothing) cannot, and nothing about the content distances only one reaches."""
    lo = max(a[:, 0].min(), b[:, 0].min())
    hi = min(a[:, 0].max(), b[:, 0].max())
    if not lo < hi:
        return None
    x = np.linspace(lo, hi, samples)
    ya = np.interp(x, a[:, 0], a[:, 1])
    yb = np.interp(x, b[:, 0], b[:, 1])
    return float(np.expm1(np.mean(np.log(ya / yb))))


def style_gaps(rows: Sequence[dict], recipes: Sequence[str]) -> dict[str, dict[str, dict]]:
    """For each recipe A and other recipe B: {pair: :func:`style_gap` of A's front over
    B's} for the pairs where both fronts overlap, and their median (``median``; None when
    no pair overlaps)."""
    out: dict[str, dict[str, dict]] = {a: {} for a in recipes}
    by_pair = fronts(rows)
    for a in recipes:
        for b in recipes:
            if a == b:
                continue
            gaps = {}
            for pair, f in by_pair.items():
                if a in f and b in f and (g := style_gap(f[a], f[b])) is not None:
                    gaps[pair] = round(g, 4)
            median = round(float(np.median(list(gaps.values()))), 4) if gaps else None
            out[a][b] = {"pairs": gaps, "median": median}
    return out


def left_undominated(a: np.ndarray, b: np.ndarray) -> list[int]:
    """Indices of the points of ``b`` (M, 2) that no point of ``a`` (N, 2) weakly dominates
    (both coordinates minimised): where ``a``'s front falls short of ``b``'s."""
    return [j for j, q in enumerate(b) if not np.any(np.all(a <= q, axis=1))]


def shortfalls(
    rows: Sequence[dict], recipes: Sequence[str], distances: Sequence[str] = SHORTFALL_STYLES
) -> dict[str, dict[str, dict[str, dict[str, list[float]]]]]:
    """For each recipe A, other recipe B and pair: per judge style distance, the content
    weights of B's outputs that none of A's outputs on that pair weakly dominates (judge
    content distance against ``judge_style_<distance>``). An empty list: A's front covers
    every point of B's there. Pairs where either recipe has no output are left out.

    The dominance count says on how many pairs; this says which of B's points are left,
    and whether the verdict holds on every distance or on the front's one."""
    out: dict = {a: {b: {} for b in recipes if b != a} for a in recipes}
    for pair, by_recipe in by_pair_and_recipe(rows).items():
        for a, b in itertools.permutations(recipes, 2):
            if a in by_recipe and b in by_recipe:
                ra = by_recipe[a]
                rb = sorted(by_recipe[b], key=lambda r: r["content_weight"])
                out[a][b][pair] = {
                    d: [
                        rb[j]["content_weight"]
                        for j in left_undominated(
                            points(ra, f"judge_style_{d}"), points(rb, f"judge_style_{d}")
                        )
                    ]
                    for d in distances
                }
    return out
