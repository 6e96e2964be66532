"""The statistic protocol and its registry: one value of :class:`Statistic` per statistic.

As optax's ``GradientTransformation`` is one protocol whose values are the optimisers,
a statistic here (``gram``, ``w2``, ``histogram`` …) is one value of :class:`Statistic`,
registered by name (:func:`register`, :func:`get`; big_vision's ``pp/registry``). Its
module says everything about it; the rest of the package (the recipe loss, tiles,
masks, blended styles, ``eval`` and study distances) reads only this protocol:

* :meth:`~Statistic.target`: the target from source features, several styles blended
  with weights (one (S, H, W, C) stack, or a list of maps of different sizes);
* :meth:`~Statistic.term`: the unweighted term of one output map against its target,
  optionally over a mask (weights over the output's positions), with a PRNG key when
  the statistic is :attr:`~Statistic.random`;
* for a :attr:`~Statistic.tileable` statistic, its *moments over positions*:
  :meth:`~Statistic.sums` (Σ over positions, each weighted by ``where``) and how a
  term (:meth:`~Statistic.from_sums`) and a target (:meth:`~Statistic.target_sums`,
  :meth:`~Statistic.target_from_sums`) are finished from those sums, so
  :mod:`jaxcombine.engine.tiles` adds them up window by window with no statistic named;
* :attr:`~Statistic.spatial`: the target is a feature map of the output's own shape
  (``activations``): tiles and row shards slice it, memory counts it, a style scale
  cannot apply to it;
* :attr:`~Statistic.hypercolumn`: the statistic reads a recipe's ``hypercolumn`` term:
  its features (and its target's) are :class:`~jaxcombine.stats.hypercolumns.Maps`
  (several layers and the image, read at sampled positions) rather than one layer's
  map; its mask is at the image's resolution; and its key is the step's positions key,
  the same for every hypercolumn term (terms that sample alike see the same positions);
* :attr:`~Statistic.paired`: the target is built from the content's features *and* the
  style's (NNST's nearest neighbours): :meth:`~Statistic.target` then gets the
  content's as ``content``.

Terms are normalised so that a weight means the same at every layer and size: 1.0 for
an all-zero output, 0 at the target (the shared :func:`relative_mse`).

Adding a statistic: one module defining a :class:`Family` subclass and calling
:func:`register` (tests/test_statistic_protocol.py registers a toy one in the test).
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar, Protocol, Sequence, runtime_checkable

import jax
import jax.numpy as jnp

from jaxcombine.errors import JaxcombineError
from jaxcombine.options import statistic_names
from jaxcombine.stats import statistics

EPS = 1e-8


@runtime_checkable
class Statistic(Protocol):
    """What the package knows of a statistic (see the module docstring)."""

    name: str
    random: bool  # the term draws random numbers: it needs a PRNG key
    tileable: bool  # the term is a function of sums over positions (sums/from_sums)
    spatial: bool  # the target is a feature map with the output's shape
    hypercolumn: bool  # reads hypercolumn terms: features are hypercolumns.Maps
    paired: bool  # the target is built from the style's features and the content's

    def target(self, features: Any, weights: jax.Array, *, content: Any = None) -> Any: ...

    def term(
        self,
        features: jax.Array,
        target: Any,
        *,
        key: jax.Array | None = None,
        mask: jax.Array | None = None,
    ) -> jax.Array: ...

    def distance(
        self, features: jax.Array, reference: jax.Array, key: jax.Array | None = None
    ) -> jax.Array: ...

    def sums(self, features: jax.Array, where: jax.Array, target: Any) -> Any: ...

    def from_sums(self, sums: Any, count: int, target: Any) -> jax.Array: ...

    def target_sums(self, features: jax.Array, where: jax.Array) -> Any: ...

    def target_from_sums(
        self, sums: Sequence[Any], counts: Sequence[int], weights: jax.Array
    ) -> Any: ...


@dataclasses.dataclass(frozen=True)
class Family:
    """Defaults for a :class:`Statistic`: not random, not tileable, not spatial, of one
    layer's map, its target from its own source; the distance is the term against one
    reference image; a target's sums are the term's.

    ``features`` are float32 (H, W, C) maps (S, H, W, C for targets); ``where`` (H, W)
    weights the positions (a tile's interior: 1 inside, 0 in its halo); ``weights`` (S,)
    of a target sum to 1. Subclasses set ``name`` and the flags as class variables.
    """

    name: ClassVar[str] = ""
    random: ClassVar[bool] = False
    tileable: ClassVar[bool] = False
    spatial: ClassVar[bool] = False
    hypercolumn: ClassVar[bool] = False
    paired: ClassVar[bool] = False

    def target(self, features: Any, weights: jax.Array, *, content: Any = None) -> Any:
        raise NotImplementedError

    def term(self, features, target, *, key=None, mask=None) -> jax.Array:
        raise NotImplementedError

    def distance(
        self, features: jax.Array, reference: jax.Array, key: jax.Array | None = None
    ) -> jax.Array:
        """The term of ``features`` with ``reference`` (both (H, W, C)) as the one source."""
        return self.term(
            features, self.target(reference[None], jnp.ones((1,), jnp.float32)), key=key
        )

    def sums(self, features: jax.Array, where: jax.Array, target: Any) -> Any:
        raise NotImplementedError(f"statistic {self.name!r} is not a sum over positions")

    def from_sums(self, sums: Any, count: int, target: Any) -> jax.Array:
        raise NotImplementedError(f"statistic {self.name!r} is not a sum over positions")

    def target_sums(self, features: jax.Array, where: jax.Array) -> Any:
        return self.sums(features, where, None)

    def target_from_sums(self, sums, counts, weights) -> Any:
        raise NotImplementedError(f"statistic {self.name!r} is not a sum over positions")


class Matched(Family):
    """A statistic compared by :func:`relative_mse` of one value per map (``value``: e.g.
    the Gram matrix); several styles blend their values with the weights."""

    def value(self, features: jax.Array, mask: jax.Array | None = None) -> jax.Array:
        raise NotImplementedError

    def target(self, features, weights):
        stack = stacked(features)
        values = self.value(stack) if stack is not None else [self.value(f) for f in features]
        return jnp.tensordot(weights, jnp.stack(values) if stack is None else values, axes=1)

    def term(self, features, target, *, key=None, mask=None):
        return relative_mse(self.value(features, mask), target)


# --------------------------------------------------------------------------- shared maths


def relative_mse(x: jax.Array, target: jax.Array) -> jax.Array:
    """mean((x - target)²) / mean(target²): scale-free squared error."""
    if x.shape != target.shape:
        raise ValueError(f"shape mismatch: {x.shape} vs target {target.shape}")
    return jnp.mean(jnp.square(x - target)) / (jnp.mean(jnp.square(target)) + EPS)


def masked_relative_mse(x: jax.Array, target: jax.Array, mask: jax.Array) -> jax.Array:
    """:func:`relative_mse` of (H, W, C) maps over an (H, W) ``mask``: the squared error and
    the target's square, each a mask-weighted mean over the region (divided by Σm·C)."""
    if x.shape != target.shape:
        raise ValueError(f"shape mismatch: {x.shape} vs target {target.shape}")
    w = statistics.point_weights(mask, x)
    err = jnp.einsum("p,pc->", w, jnp.square(statistics.points(x - target)))
    ref = jnp.einsum("p,pc->", w, jnp.square(statistics.points(target)))
    return err / (ref + EPS)


def blend(weights: jax.Array, values: Sequence[Any]) -> Any:
    """Σᵢ wᵢ·valuesᵢ (arrays of one shape): several images' statistics blended."""
    return sum(weights[i] * v for i, v in enumerate(values))


def stacked(features: Any) -> jax.Array | None:
    """(S, H, W, C) float32 when ``features`` is one stack, None for a list of maps of
    different sizes (the two forms a target is given: see :meth:`Statistic.target`)."""
    if isinstance(features, (list, tuple)):
        return None
    return features.astype(jnp.float32)


# --------------------------------------------------------------------------- registry

_REGISTRY: dict[str, Statistic] = {}


def register(statistic: Statistic) -> Statistic:
    """Make ``statistic`` available by its name, to recipes too; returns it."""
    name = statistic.name
    if not isinstance(name, str) or not name.isidentifier():
        raise ValueError(f"a statistic's name must be an identifier, got {name!r}")
    if not isinstance(statistic, Statistic):
        raise TypeError(f"{statistic!r} does not implement the Statistic protocol")
    if name in _REGISTRY and _REGISTRY[name] is not statistic:
        raise ValueError(f"statistic {name!r} is already registered")
    _REGISTRY[name] = statistic
    statistic_names.add(name, hypercolumn=bool(statistic.hypercolumn))
    return statistic


def unregister(name: str) -> None:
    """Remove a statistic registered at run time (tests); the built-ins cannot go."""
    if name in statistic_names.BUILT_IN:
        raise ValueError(f"{name!r} is a built-in statistic")
    _REGISTRY.pop(name, None)
    statistic_names.remove(name)


def names() -> tuple[str, ...]:
    """Every registered statistic's name."""
    return tuple(_REGISTRY)


def get(name: str, **options: Any) -> Statistic:
    """The statistic ``name``, with ``options`` (its fields, e.g. ``directions``) replaced.

    One-line :class:`JaxcombineError` naming the registered ones for an unknown name."""
    if name not in _REGISTRY:
        raise JaxcombineError(
            f"unknown statistic {name!r}; registered: {', '.join(sorted(_REGISTRY))}"
        )
    statistic = _REGISTRY[name]
    return dataclasses.replace(statistic, **options) if options else statistic
