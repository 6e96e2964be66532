"""Pareto fronts of a suite's outputs: content distance against style distance, both on
the judge, both minimised; and which recipe's front dominates which."""

from __future__ import annotations

from typing import Sequence

import numpy as np

from jaxcombine.options.config import SUITE_FRONT_STATISTIC as FRONT_STYLE


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
    weak = [np.any(np.all(a <= q, axis=1)) for q in b]
    strict = any(np.any(np.all(a <= q, axis=1) & np.any(a < q, axis=1)) for q in b)
    return all(weak) and strict


def fronts(rows: Sequence[dict], y: str = f"judge_style_{FRONT_STYLE}") -> dict:
    """``{pair: {recipe: (N, 2) front points}}`` of (judge_content, ``y``)."""
    by: dict[str, dict[str, list]] = {}
    for r in rows:
        by.setdefault(r["pair"], {}).setdefault(r["recipe"], []).append((r["judge_content"], r[y]))
    out = {}
    for pair, recipes in by.items():
        out[pair] = {}
        for recipe, pts in recipes.items():
            pts = np.asarray(pts, np.float64)
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
