"""How a run's arrays lie on the local devices: the one home of the device layout.

Two layouts, both through ``jax.sharding`` (nothing else in the package builds a
``NamedSharding``):

* ``starts``: the starts axis (every state leaf's first, and with per-start targets
  every target's) is split over a 1-D mesh ``("inits",)``, padded to a multiple of the
  devices. More starts fit; never a larger image (one start on n devices would be padded
  to n copies). ``jaxcombine train`` lays its networks out the same way (each network's
  parameters, optimiser state and style targets along that axis).
* ``rows``: each image's height is split over the devices, so every activation, the
  largest part of a step's memory, is divided by their number and the largest size grows
  with them. The mesh is 2-D, ``("inits", "rows")``: with k starts, gcd(k, devices)
  devices along the starts and the rest along the rows (:meth:`Layout.grid`). The pixels
  (a pyramid's finest level; its coarser levels are replicated) and every optimiser-state
  leaf shaped like them are placed with
  ``PartitionSpec("inits", "rows")`` (axes k, H, W, 3), the content activation targets
  with ``PartitionSpec("rows")`` (axes H, W, C); the weights and other targets are
  replicated. Nothing in the model is annotated: XLA's SPMD partitioner propagates the
  sharding through the convolutions (exchanging the one-row halos each 3x3 convolution
  needs as ``collective-permute``), the pools and ReLUs, and turns the sums over
  positions inside the statistics into per-device partial sums plus an ``all-reduce``.

:func:`choose` decides the layout from the shapes alone (the run plan calls it once):
``rows`` needs the height of every activation the forward computes, at every scale, to
divide among the devices along the rows (XLA's partitioner fails on uneven convolution
shards, Winograd's among them), and only serves runs whose starts share their targets.
Results equal the one-device run to float32 rounding (partial sums in another order):
tests/test_rows.py; per-device memory: docs/benchmarks.md.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Iterable, Mapping, Sequence

import jax
import jax.numpy as jnp
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from jaxcombine.errors import JaxcombineError
from jaxcombine.options.config import AUTO, SHARDS

STARTS_AXIS = "inits"
ROWS_AXIS = "rows"


def grid(starts: int, devices: int) -> tuple[int, int]:
    """(devices along starts, devices along rows) of a rows layout: starts take
    gcd(starts, devices)."""
    along_starts = math.gcd(starts, devices)
    return along_starts, devices // along_starts


@dataclasses.dataclass(frozen=True)
class Layout:
    """``mode`` (``starts`` or ``rows``) over ``devices`` local devices, for ``starts`` starts."""

    mode: str = "starts"
    devices: int = 1
    starts: int = 1

    @property
    def grid(self) -> tuple[int, int]:
        """(devices along starts, devices along rows); ``starts``: (devices, 1)."""
        if self.mode == "rows":
            return grid(self.starts, self.devices)
        return self.devices, 1

    def place(
        self,
        state: Any,
        targets: Mapping[str, Any],
        *,
        activation_keys: Iterable[str] = (),
        per_start_targets: bool = False,
    ) -> tuple[Any, dict[str, Any], int]:
        """``(state, targets, k)``: the engine state and targets placed on the devices, and
        the number of real starts (the starts axis may be padded). One device: unchanged."""
        devices = jax.local_devices()[: self.devices]
        k = jax.tree.leaves(state)[0].shape[0]
        if len(devices) == 1:
            return state, dict(targets), k
        if self.mode == "rows":
            state, targets = _place_rows(state, targets, set(activation_keys), devices)
            return state, targets, k
        if per_start_targets:
            state, targets = _place_starts((state, dict(targets)), devices)
            return state, targets, k
        return _place_starts(state, devices), dict(targets), k


def choose(
    mode: str,
    *,
    starts: int,
    heights: Sequence[Sequence[tuple[str, int]]],
    devices: int | None = None,
    per_start_targets: bool = False,
    size_hint: str = "--size",
) -> Layout:
    """The layout for ``mode`` (``auto``, ``starts`` or ``rows``).

    ``heights``: per scale, (name, height) of the image and of every activation its
    forward computes. ``auto`` gives ``rows`` when there is one start, several devices,
    shared targets, and every height at every scale divides among them; else ``starts``.
    An explicit ``rows`` that cannot be is a one-line error naming what does not divide.
    """
    if mode not in (AUTO, *SHARDS):
        raise JaxcombineError(f"unknown shard {mode!r}; choose {', '.join((AUTO, *SHARDS))}")
    devices = len(jax.local_devices()) if devices is None else devices
    starts_layout = Layout("starts", devices, starts)
    if mode == "starts" or devices == 1 or (mode == AUTO and starts != 1):
        return starts_layout
    if per_start_targets:
        if mode == "rows":
            raise JaxcombineError(
                "shard 'rows' is for starts that share their targets (one image at a "
                "time); jobs with their own images spread their starts over the devices"
            )
        return starts_layout
    along_rows = grid(starts, devices)[1]
    uneven = next(
        ((name, h) for scale in heights for name, h in scale if h % along_rows),
        None,
    )
    if uneven is None:
        return Layout("rows", devices, starts)
    if mode == AUTO:
        return starts_layout
    name, h = uneven
    raise JaxcombineError(
        f"shard 'rows' needs every layer's height to be a multiple of the {along_rows} "
        f"devices along the rows, but {name} is {h} rows high; change {size_hint} "
        "or use --shard starts"
    )


# --------------------------------------------------------------------------- placement


def _place_starts(tree: Any, devices: list) -> Any:
    """Every leaf of ``tree`` (all lead with the starts axis) split over ``devices`` along
    that axis, padded by repeating the last start. The axis is ``Auto``: the compiler
    propagates the sharding through the step with no annotations in the model."""
    n = len(devices)
    pad = (-jax.tree.leaves(tree)[0].shape[0]) % n
    if pad:
        tree = jax.tree.map(lambda a: jnp.concatenate([a, jnp.repeat(a[-1:], pad, 0)]), tree)
    mesh = jax.make_mesh(
        (n,), (STARTS_AXIS,), axis_types=(jax.sharding.AxisType.Auto,), devices=devices
    )
    return jax.device_put(tree, NamedSharding(mesh, P(STARTS_AXIS)))


def _place_rows(
    state: Any, targets: Mapping[str, Any], activation_keys: set[str], devices: list
) -> tuple[Any, dict[str, Any]]:
    """``state`` (a :class:`~jaxcombine.engine.program.State`) and ``targets`` row-sharded:
    every state leaf ending in the pixels' (H, W, 3) split along H (and along the starts
    over the mesh's other axis), the targets named in ``activation_keys`` ((H', W', C)
    maps) along their first axis when it divides; everything else replicated."""
    finest = jax.tree.leaves(state.params)[0]  # the pixels, or a pyramid's finest level
    k = finest.shape[0]
    along = grid(k, len(devices))
    mesh = jax.make_mesh(
        along,
        (STARTS_AXIS, ROWS_AXIS),
        axis_types=(jax.sharding.AxisType.Auto,) * 2,
        devices=devices,
    )
    n = along[1]
    image = tuple(finest.shape[1:])  # (H, W, 3)
    if image[0] % n:
        raise JaxcombineError(f"cannot split {image[0]} rows over {n} devices")

    def place_state(a):
        if a.ndim == 0:
            return jax.device_put(a, NamedSharding(mesh, P()))
        spec = [STARTS_AXIS] + [None] * (a.ndim - 1)
        if a.ndim >= 4 and tuple(a.shape[-3:]) == image:
            spec[a.ndim - 3] = ROWS_AXIS
        return jax.device_put(a, NamedSharding(mesh, P(*spec)))

    def place_target(a, split):
        spec = P(ROWS_AXIS) if split and a.ndim == 3 and a.shape[0] % n == 0 else P()
        return jax.device_put(a, NamedSharding(mesh, spec))

    placed = {
        key: jax.tree.map(lambda a, s=key in activation_keys: place_target(a, s), value)
        for key, value in targets.items()
    }
    return jax.tree.map(place_state, state), placed
