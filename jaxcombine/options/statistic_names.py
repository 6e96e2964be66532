"""The names of the registered statistics, without JAX: what a recipe may name.

The statistics themselves live in :mod:`jaxcombine.stats` (one module each, registered
by name in :mod:`jaxcombine.stats.base`); registering one there adds its name here, so
a recipe is checked (one line, before any work) without importing JAX. A statistic of
*hypercolumns* (:attr:`jaxcombine.stats.Statistic.hypercolumn`) is named by a recipe's
``hypercolumn`` terms only, and those terms name only such statistics.
"""

from __future__ import annotations

from jaxcombine.options.config import HYPERCOLUMN_STATISTICS, STATISTICS

BUILT_IN = STATISTICS + HYPERCOLUMN_STATISTICS
_names: list[str] = list(BUILT_IN)
_hypercolumn: set[str] = set(HYPERCOLUMN_STATISTICS)


def names() -> tuple[str, ...]:
    """Every statistic a recipe may name: the built-ins, then those registered since."""
    return tuple(_names)


def hypercolumn_names() -> tuple[str, ...]:
    """The statistics a ``hypercolumn`` term may name (:func:`names` of that kind)."""
    return tuple(n for n in _names if n in _hypercolumn)


def add(name: str, *, hypercolumn: bool = False) -> None:
    """Make ``name`` valid in recipes (called by :func:`jaxcombine.stats.register`)."""
    if name not in _names:
        _names.append(name)
    if hypercolumn:
        _hypercolumn.add(name)


def remove(name: str) -> None:
    """Forget a registered name (:func:`jaxcombine.stats.unregister`); built-ins stay."""
    if name in _names and name not in BUILT_IN:
        _names.remove(name)
        _hypercolumn.discard(name)
