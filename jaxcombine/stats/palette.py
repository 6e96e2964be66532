"""``palette``: relaxed EMD between the colours at sampled positions (STROTSS's ℓp).

The term of :mod:`.emd` on the image's RGB (0–1) at the same positions as the term's
hypercolumn (whatever its layers: write ``hypercolumn = ["rgb"]``), with the Euclidean
distance between colours as the cost, as Kolkin et al. match the style's palette. In
[0, √3]. Not tileable.
"""

from __future__ import annotations

import dataclasses

from jaxcombine.stats import base
from jaxcombine.stats import hypercolumns as hc


@dataclasses.dataclass(frozen=True)
class Palette(hc.StyleSampled):
    name = "palette"
    read = staticmethod(hc.sample_colours)

    def compare(self, x, y, weights):
        return hc.relaxed_emd(hc.euclidean_distances(x, y), weights)


PALETTE = base.register(Palette())
