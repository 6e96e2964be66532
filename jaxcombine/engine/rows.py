"""One image over several devices: its height axis sharded on a ``Mesh`` axis ``"rows"``.

Why: sharding the starts (:func:`jaxcombine.engine.driver.shard_starts`) lets more
starts run, never a larger image; a single start on n devices would even be
padded to n copies. Splitting the rows of the image instead divides every
activation, the largest part of a step's memory, by the number of devices, so
the largest size grows with them.

How: the pixels, and every optimiser-state leaf shaped like them, are placed
with ``PartitionSpec("inits", "rows")`` (axes k, H, W, 3) on a mesh
``(inits, rows)`` (:func:`grid`: with k starts, gcd(k, devices) devices along the
starts and the rest along the rows; one start: all along the rows), and the
content activation targets with ``PartitionSpec("rows")`` (axes H, W, C). Nothing in
the model is annotated: XLA's SPMD partitioner propagates the sharding through
the convolutions (exchanging the one-row halos each 3×3 convolution needs
with the neighbouring devices, as ``collective-permute``), the 2×2 pools and
ReLUs, and turns the sums over positions inside Gram, mean/std and covariance
statistics into per-device partial sums plus an ``all-reduce``, so every device
sees the global statistics. The VGG weights and other targets are replicated.

Limits: the image height must divide among the devices (:func:`resolve` says so
in one line). Results equal the one-device run to
float32 rounding (the partial sums are added in another order):
tests/test_rows.py; per-device memory: docs/benchmarks.md.
"""

from __future__ import annotations

import math
from typing import Any, Iterable, Mapping

import jax
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from jaxcombine.errors import JaxcombineError

AXIS = "rows"
STARTS_AXIS = "inits"  # with several starts: a 2-D mesh (inits, rows)
MODES = ("auto", "starts", "rows")  # config.SHARDS


def resolve(mode: str, *, starts: int, height: int, devices: int) -> str:
    """``starts`` or ``rows`` for a run of ``starts`` images ``height`` rows high.

    ``auto``: rows when there is one start, several devices, and the height
    divides among them; starts otherwise. An explicit ``rows`` whose height does
    not divide among the devices that split rows (:func:`grid`) is a one-line
    error (uneven shards are not supported).
    """
    if mode not in MODES:
        raise JaxcombineError(f"unknown shard {mode!r}; choose {', '.join(MODES)}")
    divides = height % grid(starts, devices)[1] == 0
    if mode == "auto":
        return "rows" if starts == 1 and devices > 1 and divides else "starts"
    if mode == "rows" and not divides:
        raise JaxcombineError(
            f"shard 'rows' needs the image height ({height}) to be a multiple "
            f"of the number of devices ({devices}); change --size or use "
            f"--shard starts"
        )
    return mode


def grid(starts: int, devices: int) -> tuple[int, int]:
    """(devices along starts, devices along rows): starts take gcd(starts, devices)."""
    along_starts = math.gcd(starts, devices)
    return along_starts, devices // along_starts


def mesh(starts: int = 1, devices: Iterable[jax.Device] | None = None) -> jax.sharding.Mesh:
    """The mesh ``(inits, rows)`` of :func:`grid` over ``devices`` (default: the local ones)."""
    devices = list(devices or jax.local_devices())
    return jax.make_mesh(
        grid(starts, len(devices)),
        (STARTS_AXIS, AXIS),
        axis_types=(jax.sharding.AxisType.Auto,) * 2,
        devices=devices,
    )


def shard_rows(
    state: Any,
    targets: Mapping[str, Any],
    activation_keys: Iterable[str] = (),
    devices: Iterable[jax.Device] | None = None,
) -> tuple[Any, dict[str, Any]]:
    """Place ``state`` (a :class:`~jaxcombine.engine.program.State`) and ``targets`` row-sharded.

    Every state leaf ending in the pixels' (H, W, 3) is split along its H axis;
    the targets named in ``activation_keys`` ((H', W', C) activation maps) along
    their first axis when it divides; everything else is replicated. With k > 1
    starts the mesh is 2-D (:func:`grid`): the starts axis (every state leaf's
    first) is split over gcd(k, devices) devices, the rows over the rest. One
    device: unchanged.
    """
    devices = list(devices or jax.local_devices())
    if len(devices) == 1:
        return state, dict(targets)
    k = state.pixels.shape[0]
    m = mesh(k, devices)
    n = grid(k, len(devices))[1]
    image = tuple(state.pixels.shape[1:])  # (H, W, 3)
    if image[0] % n:
        raise JaxcombineError(f"cannot split {image[0]} rows over {n} devices")

    def place_state(a):
        if a.ndim == 0:
            return jax.device_put(a, NamedSharding(m, P()))
        spec = [STARTS_AXIS] + [None] * (a.ndim - 1)
        if a.ndim >= 4 and tuple(a.shape[-3:]) == image:
            spec[a.ndim - 3] = AXIS
        return jax.device_put(a, NamedSharding(m, P(*spec)))

    def place_target(a, split):
        spec = P(AXIS) if split and a.ndim == 3 and a.shape[0] % n == 0 else P()
        return jax.device_put(a, NamedSharding(m, spec))

    keys = set(activation_keys)
    placed = {
        key: jax.tree.map(lambda a, s=key in keys: place_target(a, s), value)
        for key, value in targets.items()
    }
    return jax.tree.map(place_state, state), placed
