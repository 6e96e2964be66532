"""jaxcombine: combine two images through the features of a pretrained VGG.

The public API in one place (implementations live in the submodules)::

    import jaxcombine
    result = jaxcombine.combine(init="content,style,noise", steps=200, out="out/")
"""

from jaxcombine._version import __version__
from jaxcombine.batch import BatchReport, load_manifest, run_batch
from jaxcombine.job import Result, RunConfig, combine, parse_inits, prepare
from jaxcombine.engine import Outcome, Problem, optimise
from jaxcombine.errors import JaxcombineError
from jaxcombine.features import extract, extract_features
from jaxcombine.recipe import Recipe, Term
from jaxcombine.recipe import load as load_recipe
from jaxcombine.study import Study, run_study
from jaxcombine.weights import load as load_weights

__all__ = [
    "BatchReport", "JaxcombineError", "Outcome", "Problem", "Recipe", "Result", "RunConfig",
    "Study", "Term", "combine", "extract", "extract_features", "load_manifest", "load_recipe",
    "load_weights", "optimise", "parse_inits", "prepare", "run_batch", "run_study",
]
