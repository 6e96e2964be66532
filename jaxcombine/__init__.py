"""jaxcombine: combine two images through the features of a pretrained VGG.

The public API in one place (implementations live in the submodules)::

    import jaxcombine
    result = jaxcombine.combine(init="content,style,noise", steps=200, out="out/")

Names are imported on first use, so ``import jaxcombine.config`` (options and their
validation) or ``jaxcombine --help`` does not load JAX.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from jaxcombine._version import __version__  # noqa: F401  (imports nothing)

# JAX's CPU LAPACK kernels (eigh for the w2 statistic, svd) run on scipy's OpenBLAS, whose
# worker threads fight XLA's own thread pool for the same cores: a 512x512 eigh measured
# 35 ms with one OpenBLAS thread and 200-600 ms with its default on a 2-core CPU
# (docs/benchmarks.md). Read when OpenBLAS loads, so set before JAX initialises; a value
# the user set wins.
import os as _os

_os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

# public name → the module that defines it
_EXPORTS = {
    "BatchReport": "batch", "load_manifest": "batch", "run_batch": "batch",
    "ConfigError": "rules", "RunConfig": "config", "StudyOptions": "config", "Sweep": "config",
    "parse_inits": "config", "parse_sweep": "config",
    "Outcome": "driver", "Problem": "engine", "State": "engine", "init_state": "engine",
    "optimise": "driver",
    "JaxcombineError": "errors",
    "extract": "features", "extract_features": "features",
    "Evaluation": "metrics", "evaluate": "metrics",
    "Result": "job", "combine": "job", "prepare": "job",
    "Recipe": "recipe", "Term": "recipe", "load_recipe": "recipe",
    "Study": "study", "run_study": "study",
    "load_weights": "weights",
}
_RENAMED = {"load_recipe": "load", "load_weights": "load"}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'jaxcombine' has no attribute {name!r}")
    module = importlib.import_module(f"jaxcombine.{_EXPORTS[name]}")
    value = getattr(module, _RENAMED.get(name, name))
    globals()[name] = value  # later lookups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])


if TYPE_CHECKING:  # for type checkers and IDEs: the same names, imported eagerly
    from jaxcombine.batch import BatchReport, load_manifest, run_batch  # noqa: F401
    from jaxcombine.config import (RunConfig, StudyOptions, Sweep,  # noqa: F401
                                   parse_inits, parse_sweep)
    from jaxcombine.driver import Outcome, optimise  # noqa: F401
    from jaxcombine.engine import Problem, State, init_state  # noqa: F401
    from jaxcombine.errors import JaxcombineError  # noqa: F401
    from jaxcombine.rules import ConfigError  # noqa: F401
    from jaxcombine.features import extract, extract_features  # noqa: F401
    from jaxcombine.job import Result, combine, prepare  # noqa: F401
    from jaxcombine.metrics import Evaluation, evaluate  # noqa: F401
    from jaxcombine.recipe import Recipe, Term  # noqa: F401
    from jaxcombine.recipe import load as load_recipe  # noqa: F401
    from jaxcombine.study import Study, run_study  # noqa: F401
    from jaxcombine.weights import load as load_weights  # noqa: F401
