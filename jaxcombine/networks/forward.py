"""The one compiled feature forward: activations of chosen taps for a batch of RGB images.

``jaxcombine features``, ``jaxcombine eval`` and a study's distances between starts all
call :func:`forward`, so a network is compiled once per (architecture, taps, pooling,
algorithm, dtype, input shape) in a process, whichever of them asks first. The
optimisation's own forward is part of its compiled step (:mod:`jaxcombine.engine.program`)
and is not this one.
"""

from __future__ import annotations

from functools import partial
from typing import Mapping, Sequence

import jax
import jax.numpy as jnp

from jaxcombine.networks import model
from jaxcombine.options import layers as layers_lib


def forward(
    variables: Mapping,
    rgb: jax.Array,
    *,
    arch: str = "vgg19",
    taps: Sequence[str],
    pooling: str = "max",
    conv: str = "xla",
    dtype: str = "float32",
    padding: str = "zeros",
) -> dict[str, jax.Array]:
    """``{tap: activation}`` (N, h, w, C) for RGB 0–255 images shaped (N, H, W, 3).

    ``variables`` come from :func:`model.variables` (with ``conv``'s collection), ideally
    trimmed to the deepest tap (:func:`model.trim`). Every setting is passed on
    explicitly, so a caller that leaves one at its default and one that names it share
    the compiled program."""
    return _forward(
        variables,
        rgb,
        arch=arch,
        taps=layers_lib.check_layers(taps, arch),
        pooling=pooling,
        conv=conv,
        dtype=str(jnp.dtype(dtype)),
        padding=padding,
    )


@partial(jax.jit, static_argnames=("arch", "taps", "pooling", "conv", "dtype", "padding"))
def _forward(variables, rgb, *, arch, taps, pooling, conv, dtype, padding):
    net = model.Network(
        arch=arch, taps=taps, pooling=pooling, conv=conv, dtype=jnp.dtype(dtype), padding=padding
    )
    return net.apply(variables, rgb)
