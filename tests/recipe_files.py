"""Recipes for tests, in one place: the shallow test recipe (``shallow.toml``) and recipes
written from dicts, so that a test states the terms it needs instead of inlining TOML.

Importable from any test folder (``tests/`` is on ``sys.path``, as for ``float32``); the
``recipe_file`` fixture in ``conftest.py`` writes one into the test's own folder.
"""

import tomllib
from pathlib import Path

import tomli_w

SHALLOW = Path(__file__).with_name("shallow.toml")


def shallow(**changes) -> dict:
    """The shallow recipe as a dict, with top-level keys changed (``preserve_color=...``)."""
    recipe = tomllib.loads(SHALLOW.read_text())
    recipe.pop("description", None)
    return {**recipe, **changes}


def term(source: str, layers, statistic: str = "activations", **extra) -> dict:
    """One recipe term: a source, a layer (str) or layers (list), a statistic."""
    where = {"layer": layers} if isinstance(layers, str) else {"layers": list(layers)}
    return {**where, "source": source, "statistic": statistic, **extra}


# The layers of the tests' hypercolumns: RGB and the two shallowest VGG19 convolutions.
HYPERCOLUMN = ["rgb", "block1_conv1", "block2_conv1"]


def hypercolumn(statistic: str, source: str = "style", layers=HYPERCOLUMN, **extra) -> dict:
    """One hypercolumn recipe term: ``layers`` read as one hypercolumn, a statistic."""
    return {"hypercolumn": list(layers), "source": source, "statistic": statistic, **extra}


def with_terms(recipe: dict, **changes) -> dict:
    """``recipe`` with every term changed alike (``statistic="w2"``, ``weight=3e38``)."""
    return {**recipe, "terms": [{**t, **changes} for t in recipe["terms"]]}


def write(path: Path, recipe: dict) -> Path:
    """Write ``recipe`` as TOML at ``path``; returns the path."""
    path = Path(path)
    path.write_text(tomli_w.dumps(recipe))
    return path


def shallow_weighted(content: float, style: float, tv: float = 0.0) -> dict:
    """The shallow recipe with its content term, its style term and total variation weighted."""
    recipe = shallow(tv_weight=tv)
    recipe["terms"][0]["weight"], recipe["terms"][1]["weight"] = content, style
    return recipe


def shallow_w2() -> dict:
    """The shallow recipe with its Gram style terms made w2 (2-Wasserstein) terms."""
    recipe = shallow()
    recipe["terms"] = [
        {**t, "statistic": "w2"} if t["statistic"] == "gram" else t for t in recipe["terms"]
    ]
    return recipe
