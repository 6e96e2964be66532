"""jaxcombine: combine two images through the features of a pretrained VGG.

The public API in one place (implementations live in the submodules)::

    import jaxcombine
    result = jaxcombine.combine(init="content,style,noise", steps=200, out="out/")

Names are imported on first use, so ``import jaxcombine.options.config`` (options and their
validation) or ``jaxcombine --help`` does not load JAX.
"""

from __future__ import annotations

import importlib

# JAX's CPU LAPACK kernels (eigh for the w2 statistic, svd) run on scipy's OpenBLAS, whose
# worker threads fight XLA's own thread pool for the same cores: a 512x512 eigh measured
# 35 ms with one OpenBLAS thread and 200-600 ms with its default on a 2-core CPU
# (docs/benchmarks.md). Read when OpenBLAS loads, so set before JAX initialises; a value
# the user set wins.
import os as _os
from typing import TYPE_CHECKING, Any

from jaxcombine._version import __version__  # noqa: F401  (imports nothing)

_os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

# public name → the module that defines it
_EXPORTS = {
    "BatchReport": "batch.runner",
    "load_manifest": "batch.runner",
    "run_batch": "batch.runner",
    "ConfigError": "options.rules",
    "RunConfig": "options.config",
    "StudyOptions": "options.config",
    "Sweep": "options.config",
    "parse_inits": "options.config",
    "parse_sweep": "options.config",
    "Outcome": "engine.driver",
    "Problem": "engine.program",
    "State": "engine.program",
    "init_state": "engine.program",
    "optimise": "engine.driver",
    "JaxcombineError": "errors",
    "extract": "tools.features",
    "extract_features": "tools.features",
    "Evaluation": "tools.metrics",
    "evaluate": "tools.metrics",
    "Result": "run.job",
    "combine": "run.job",
    "prepare": "run.prepare",
    "Plan": "run.plan",
    "make_plan": "run.plan",
    "Recipe": "options.recipe",
    "Term": "options.recipe",
    "load_recipe": "options.recipe",
    "Study": "study.runner",
    "run_study": "study.runner",
    "load_weights": "networks.weights",
    "TrainConfig": "options.config",
    "StylizeConfig": "options.config",
    "train_networks": "train.trainer",  # not "train": that is the subpackage's name
    "stylize": "train.stylize",
}
_RENAMED = {
    "load_recipe": "load",
    "load_weights": "load",
    "make_plan": "make",
    "train_networks": "train",
}

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
    from jaxcombine.batch.runner import BatchReport, load_manifest, run_batch  # noqa: F401
    from jaxcombine.engine.driver import Outcome, optimise  # noqa: F401
    from jaxcombine.engine.program import Problem, State, init_state  # noqa: F401
    from jaxcombine.errors import JaxcombineError  # noqa: F401
    from jaxcombine.networks.weights import load as load_weights  # noqa: F401
    from jaxcombine.options.config import (  # noqa: F401  # noqa: F401
        RunConfig,
        StudyOptions,
        StylizeConfig,
        Sweep,
        TrainConfig,
        parse_inits,
        parse_sweep,
    )
    from jaxcombine.options.recipe import Recipe, Term  # noqa: F401
    from jaxcombine.options.recipe import load as load_recipe  # noqa: F401
    from jaxcombine.options.rules import ConfigError  # noqa: F401
    from jaxcombine.run.job import Result, combine  # noqa: F401
    from jaxcombine.run.plan import Plan  # noqa: F401
    from jaxcombine.run.plan import make as make_plan  # noqa: F401
    from jaxcombine.run.prepare import prepare  # noqa: F401
    from jaxcombine.study.runner import Study, run_study  # noqa: F401
    from jaxcombine.tools.features import extract, extract_features  # noqa: F401
    from jaxcombine.tools.metrics import Evaluation, evaluate  # noqa: F401
    from jaxcombine.train.stylize import stylize  # noqa: F401
    from jaxcombine.train.trainer import train as train_networks  # noqa: F401
