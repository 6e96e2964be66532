"""Layer 3: statistics of feature maps and the loss terms built from them.

One module per statistic (activations, gram, meanstd, covariance, w2, swd, histogram,
cmd; of hypercolumns, :mod:`.hypercolumns`: emd, moments, palette, self_similarity,
nearest, nearest_each_step), each a value of the :class:`~jaxcombine.stats.base.Statistic` protocol registered
by name; :func:`get` finds one, :func:`register` adds one (see :mod:`.base`).
"""

from jaxcombine.stats import (  # noqa: F401  (each module registers its statistic)
    activations,
    cmd,
    covariance,
    emd,
    gram,
    histogram,
    meanstd,
    moments,
    nearest,
    nearest_each_step,
    palette,
    self_similarity,
    swd,
    w2,
)
from jaxcombine.stats.base import Family, Statistic, get, names, register, unregister

__all__ = ["Family", "Statistic", "get", "names", "register", "unregister"]
