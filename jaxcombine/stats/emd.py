"""``emd``: relaxed earth mover's distance between sampled hypercolumns (STROTSS's ℓr).

Kolkin, Salavon & Shakhnarovich, "Style Transfer by Relaxed Optimal Transport and
Self-Similarity", CVPR 2019: the output's hypercolumns at this step's positions and the
style's at positions drawn in the style (:mod:`.hypercolumns`), compared through their
cosine distances Cᵢⱼ = 1 − cos(xᵢ, yⱼ); the term is the larger of the mean row minimum
and the mean column minimum (:func:`hypercolumns.relaxed_emd`). In [0, 2]: 0 when every
output point has a style point in its direction and the reverse. Several styles are
one weighted point set. Not a sum over positions: not tileable.
"""

from __future__ import annotations

import dataclasses

from jaxcombine.stats import base
from jaxcombine.stats import hypercolumns as hc


@dataclasses.dataclass(frozen=True)
class RelaxedEMD(hc.StyleSampled):
    name = "emd"

    def compare(self, x, y, weights):
        return hc.relaxed_emd(hc.cosine_distances(x, y), weights)


EMD = base.register(RelaxedEMD())
