"""The built-in optimisers, with learning rate and schedule length kept in the optimiser state.

A learning rate or step count baked into a compiled program would make every
value a user sweeps a new compile. Here, as optax's ``inject_hyperparams``
does, they are arrays in the optimiser state (:class:`LearningRate`), so one
compiled program serves every learning rate and step count, and each vmapped
start can have its own::

    opt = optimizers.build("adam", "cosine")
    state = optimizers.set_learning_rate(opt.init(pixels), 4.0, total_steps=200)
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from jaxcombine.options.config import OPTIMIZERS, SCHEDULES

COSINE_FLOOR = 0.1  # cosine decays to 10% of the learning rate over the run
SGD_MOMENTUM = 0.9
# RMSprop as PyTorch's defaults (which STROTSS ran with): the squared gradients' average
# decays by 0.99 per step and starts at 0, with no bias correction (so the first steps
# are larger than lr: the first is 10 lr)
RMSPROP_DECAY = 0.99
RMSPROP_EPS = 1e-8
LBFGS_LINESEARCH_STEPS = 20  # optax.lbfgs's default zoom line search


class LearningRate(NamedTuple):
    """State of :func:`scale_by_learning_rate`: steps taken, base rate, schedule length."""

    count: jax.Array  # int32
    value: jax.Array  # float32, the base learning rate
    total_steps: jax.Array  # int32, the schedule's length


def scale_by_learning_rate(schedule: str = "constant") -> optax.GradientTransformation:
    """Multiply updates by −lr(t), with lr and the run length read from the state.

    ``constant``: lr(t) = lr. ``cosine``: lr(t) = lr · (f + (1−f)·½(1+cos(π·min(t, T)/T)))
    with f = :data:`COSINE_FLOOR` and T the total steps (as ``optax.cosine_decay_schedule``).
    """
    if schedule not in SCHEDULES:
        raise ValueError(f"unknown schedule {schedule!r}")

    def init(params: Any) -> LearningRate:
        del params
        return LearningRate(
            jnp.zeros([], jnp.int32), jnp.ones([], jnp.float32), jnp.ones([], jnp.int32)
        )

    def update(updates, state: LearningRate, params=None):
        del params
        lr = state.value
        if schedule == "cosine":
            total = jnp.maximum(state.total_steps, 1).astype(jnp.float32)
            frac = jnp.minimum(state.count.astype(jnp.float32), total) / total
            lr = lr * (COSINE_FLOOR + (1 - COSINE_FLOOR) * 0.5 * (1 + jnp.cos(math.pi * frac)))
        updates = jax.tree.map(lambda u: (-lr * u).astype(u.dtype), updates)
        return updates, state._replace(count=optax.safe_increment(state.count))

    return optax.GradientTransformation(init, update)


def build(name: str, schedule: str = "constant") -> optax.GradientTransformation:
    """``adam`` | ``sgd`` (momentum 0.9) | ``lbfgs`` (optax's, zoom line search) |
    ``rmsprop`` (decay 0.99, PyTorch's defaults)."""
    lr = scale_by_learning_rate(schedule)
    if name == "adam":
        return optax.chain(optax.scale_by_adam(), lr)
    if name == "rmsprop":
        return optax.chain(
            optax.scale_by_rms(decay=RMSPROP_DECAY, eps=RMSPROP_EPS, eps_in_sqrt=False), lr
        )
    if name == "sgd":
        return optax.chain(optax.trace(decay=SGD_MOMENTUM), lr)
    if name == "lbfgs":
        return optax.chain(
            optax.scale_by_lbfgs(),
            lr,
            optax.scale_by_zoom_linesearch(
                max_linesearch_steps=LBFGS_LINESEARCH_STEPS, initial_guess_strategy="one"
            ),
        )
    raise ValueError(f"unknown optimizer {name!r}; choose {', '.join(OPTIMIZERS)}")


def _map_rates(fn: Any, opt_state: Any, *others: Any) -> Any:
    """``opt_state`` with ``fn(node, *matching nodes of others)`` in place of every
    :class:`LearningRate`; every other node as it is. A state without one (a user's own
    optax transformation) is returned unchanged."""

    def each(node, *rest):
        return fn(node, *rest) if isinstance(node, LearningRate) else node

    return jax.tree.map(each, opt_state, *others, is_leaf=lambda n: isinstance(n, LearningRate))


def set_learning_rate(opt_state: Any, value: Any, total_steps: Any) -> Any:
    """``opt_state`` with every :class:`LearningRate` set to ``value`` and ``total_steps``
    (scalars, or arrays shaped like the state's leading starts axis). A state without
    one (a user's own optax transformation) is returned unchanged."""

    def set_one(node):
        shape = node.value.shape
        return node._replace(
            value=jnp.broadcast_to(jnp.asarray(value, jnp.float32), shape),
            total_steps=jnp.broadcast_to(jnp.asarray(total_steps, jnp.int32), shape),
        )

    return _map_rates(set_one, opt_state)


def scale_learning_rate(opt_state: Any, factor: float) -> Any:
    """``opt_state`` with every :class:`LearningRate`'s base rate multiplied by ``factor``
    (a coarse-to-fine scale's own rate, :attr:`jaxcombine.engine.scales.Stage.lr_factor`);
    steps taken and schedule length kept."""
    return _map_rates(
        lambda n: n._replace(value=n.value * jnp.asarray(factor, n.value.dtype)), opt_state
    )


def learning_rate_of(opt_state: Any, fresh: Any) -> Any:
    """``opt_state`` (a saved one, resumed) with the base rates of ``fresh`` (a new state
    of the same run): its steps taken kept. A saved state holds the rate its scale had
    scaled; the run's own rate goes back in, and the scale scales it again as it begins."""
    return _map_rates(lambda saved, new: saved._replace(value=new.value), opt_state, fresh)
