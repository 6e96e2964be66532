"""``swd``: sliced Wasserstein distance (Heitz et al. 2021): project output and target
points on random unit directions, compare the sorted projections
(:func:`statistics.sliced_wasserstein`, over the target's mean squared value).

Random: a term draws its directions from the PRNG key it is given (``directions``
of them; default one per channel, as Heitz et al.). The target keeps every style's
points with its weight (:func:`statistics.swd_target`). Sorting over all positions is
no sum: not tileable.
"""

from __future__ import annotations

import dataclasses

from jaxcombine.stats import base, statistics


@dataclasses.dataclass(frozen=True)
class SlicedWasserstein(base.Family):
    name = "swd"
    random = True

    directions: int | None = None  # per term and step; None: one per channel

    def target(self, features, weights):
        return statistics.swd_target(features, weights)

    def term(self, features, target, *, key=None, mask=None):
        if key is None:
            raise ValueError("statistic 'swd' draws random directions: pass a PRNG key")
        return statistics.sliced_wasserstein(features, target, key, self.directions, mask)


SWD = base.register(SlicedWasserstein())
