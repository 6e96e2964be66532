"""The suite's grid, checked before any work: its recipes by name, and each one's content
weights.

Apart from :mod:`jaxcombine.suite.runner`, which imports the batch machinery (and so JAX),
so that ``jaxcombine eval-suite`` refuses a bad grid in one line before JAX starts; the
runner checks it again through the same function.
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

from jaxcombine.errors import JaxcombineError
from jaxcombine.options import config as config_lib
from jaxcombine.options import recipe as recipe_lib


def recipe_names(recipes: Sequence[str]) -> dict[str, str]:
    """``{recipe as given: its name}`` (a preset's own name, a file's stem), repeats dropped;
    refuses an empty list and two recipes of one name."""
    recipes = list(dict.fromkeys(recipes))
    if not recipes:
        raise JaxcombineError("give at least one recipe")
    presets = recipe_lib.preset_names()
    names = {r: r if r in presets else Path(r).stem for r in recipes}
    if len(set(names.values())) != len(names):
        raise JaxcombineError(f"two recipes are named alike: {', '.join(recipes)}")
    return names


def weights_by_recipe(
    names: Mapping[str, str],
    content_weights: Sequence[float],
    recipe_weights: Mapping[str, Sequence[float]],
) -> dict[str, list[float]]:
    """``{recipe as given: its content weights}``: ``recipe_weights``' (keyed by a recipe's
    name or as given) where it has them, else ``content_weights``; each list without
    repeats, every weight checked by the project's one number rule (finite, >= 0)."""
    known = {key: recipe for recipe, name in names.items() for key in (recipe, name)}
    unknown = sorted(set(recipe_weights) - set(known))
    if unknown:
        raise JaxcombineError(
            f"weights given for {unknown[0]!r}, which is not among the recipes "
            f"({', '.join(names.values())})"
        )
    chosen = {}
    for key, ws in recipe_weights.items():
        if known[key] in chosen:  # its name and its file, say: one would silently win
            raise JaxcombineError(f"weights given twice for {names[known[key]]} (as {key!r})")
        chosen[known[key]] = ws
    out = {}
    for recipe, name in names.items():
        given = chosen.get(recipe, content_weights)
        ws = list(
            dict.fromkeys(config_lib.finite_number(w, "content weight", low=0.0) for w in given)
        )
        if not ws:
            raise JaxcombineError(f"give {name} at least one content weight")
        out[recipe] = ws
    return out


def grid(
    recipes: Sequence[str],
    content_weights: Sequence[float],
    recipe_weights: Mapping[str, Sequence[float]] | None = None,
) -> tuple[dict[str, str], dict[str, list[float]]]:
    """The recipes' names and each one's content weights (:func:`recipe_names`,
    :func:`weights_by_recipe`)."""
    names = recipe_names(recipes)
    return names, weights_by_recipe(names, content_weights, recipe_weights or {})
