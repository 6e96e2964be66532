"""The names of the registered statistics, without JAX: what a recipe may name.

The statistics themselves live in :mod:`jaxcombine.stats` (one module each, registered
by name in :mod:`jaxcombine.stats.base`); registering one there adds its name here, so
a recipe is checked (one line, before any work) without importing JAX.
"""

from __future__ import annotations

from jaxcombine.options.config import STATISTICS

_names: list[str] = list(STATISTICS)


def names() -> tuple[str, ...]:
    """Every statistic a recipe may name: the built-ins, then those registered since."""
    return tuple(_names)


def add(name: str) -> None:
    """Make ``name`` valid in recipes (called by :func:`jaxcombine.stats.register`)."""
    if name not in _names:
        _names.append(name)


def remove(name: str) -> None:
    """Forget a registered name (:func:`jaxcombine.stats.unregister`); built-ins stay."""
    if name in _names and name not in STATISTICS:
        _names.remove(name)
