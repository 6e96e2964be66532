"""Feed-forward networks that learn a recipe (``jaxcombine train``, ``jaxcombine stylize``).

:mod:`.network` (Johnson et al.'s transformation network, conditional instance
normalisation), :mod:`.photos` (training photos, augmentation, prefetch),
:mod:`.objective` (the recipe loss of a network, the compiled step, vmapped over
networks), :mod:`.checkpoints` (orbax), :mod:`.trainer` (the loop) and :mod:`.stylize`
(a trained network applied to photos of any size, tiled exactly when needed).
"""
