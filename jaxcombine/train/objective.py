"""What a transformation network learns, and the compiled training step.

For a batch of photos P and a style S, the loss of a network is the recipe's loss
(:mod:`jaxcombine.stats.losses`, through the statistic protocol) between the backbone's
features of net(P) and the targets made from P as the content and S as the style, averaged
over the batch. The style targets are computed once (:func:`style_targets`); each photo's
content targets are computed inside the step from the same forward that serves every
network.

Several networks train side by side in one program: every leaf of :class:`State` and of
the style targets leads with the networks' axis and the step is ``jax.vmap`` over it (the
photos and their features are shared). A conditional network is one network whose style
targets lead with the styles' axis, each photo taking the row of its style index.

Only :class:`Objective` (structure) and the shapes select a compiled program; the
learning rate lives in the optimiser's state (``optax.inject_hyperparams``) and the loss
weights and the PRNG key are arguments.
"""

from __future__ import annotations

import dataclasses
from functools import partial
from typing import Any, Mapping, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxcombine.engine import program
from jaxcombine.errors import JaxcombineError
from jaxcombine.options.recipe import Recipe
from jaxcombine.stats import base, losses
from jaxcombine.train import network


@dataclasses.dataclass(frozen=True)
class Objective:
    """The structure of a training: the loss's (``problem``: recipe structure, backbone,
    pooling, conv) and the network's. Hashable: it selects the compiled step."""

    problem: program.Problem
    net: network.TransformNet

    @property
    def recipe(self) -> Recipe:
        return self.problem.recipe


def check_recipe(recipe: Recipe) -> None:
    """One line for a recipe a network cannot learn: masks belong to one output image, a
    spatial style target is a feature map of the style image's own size and layout, and
    a training has no scales or final pass for a term's ``during`` to choose."""
    staged = [t for t in recipe.terms if t.during != "all"]
    if staged:
        raise JaxcombineError(
            f"recipe term {staged[0].label} has during = {staged[0].during!r}; a training has "
            "no scales or final pass: use a recipe whose terms count everywhere"
        )
    masked = [t.label for t in recipe.terms if t.mask is not None]
    if masked:
        raise JaxcombineError(
            f"recipe term {masked[0]} has a mask; a network trained on many photos "
            "cannot use masks of one image: use a recipe without masks"
        )
    spatial = [
        t.label for t in recipe.terms if t.source == "style" and base.get(t.statistic).spatial
    ]
    if spatial:
        raise JaxcombineError(
            f"recipe term {spatial[0]} matches the style's feature map position by position; "
            "a network trained on photos needs statistics over positions for its style terms"
        )


class State(NamedTuple):
    """The training's carry: each leaf of ``params`` and ``opt_state`` leads with the
    networks' axis; ``step`` (int32 scalar) counts the steps done."""

    params: Any
    opt_state: Any
    step: jax.Array


def optimizer(lr: float) -> optax.GradientTransformation:
    """Adam with its learning rate kept in the state (traced, so it compiles nothing)."""
    return optax.inject_hyperparams(optax.adam)(learning_rate=lr)


def init_state(net: network.TransformNet, seed: Any, nets: int, lr: Any) -> State:
    """``nets`` networks, network i initialised from ``fold_in(key(seed), i)``.

    Each network is drawn by one program compiled per network shape (not per count: a
    training of 1 or of 8 styles reuses it), then stacked with the optimiser states.
    The key is an ``rbg`` key (XLA's RngBitGenerator): compiling the default threefry
    draws of every initialiser takes 4x longer on XLA:CPU (measured: 14 s against 3.7 s
    for a width-8 network on the loaded 2-core machine). Its numbers may differ between
    backends; a resumed training restores its parameters and never draws them again."""
    params = _stack([_init_params(net, seed, i) for i in range(nets)])
    return State(params, _init_optimizer(params, lr), jnp.zeros((), jnp.int32))


@partial(jax.jit, static_argnames=("net",))
def _init_params(net: network.TransformNet, seed: Any, i: Any) -> Any:
    return network.init(net, jax.random.fold_in(jax.random.key(seed, impl="rbg"), i))


@jax.jit
def _stack(trees: list) -> Any:
    return jax.tree.map(lambda *leaves: jnp.stack(leaves), *trees)


@jax.jit
def _init_optimizer(params: Any, lr: Any) -> Any:
    return jax.vmap(optimizer(lr).init)(params)


def style_targets(
    objective: Objective, variables: Mapping, styles: Sequence[np.ndarray]
) -> dict[str, Any]:
    """Every style term's target per style image, stacked: each leaf (S, ...)."""
    per_style = []
    for rgb in styles:
        rgb = jnp.asarray(rgb, jnp.float32)
        t = _targets(objective.problem, variables, rgb, rgb[None])
        per_style.append({k: v for k, v in t.items() if k.startswith("style:")})
    return jax.tree.map(lambda *leaves: jnp.stack(leaves), *per_style)


_targets = jax.jit(program.compute_targets, static_argnames=("problem",))


def content_targets(recipe: Recipe, features: Mapping[str, jax.Array]) -> dict[str, Any]:
    """The content terms' targets from one photo's features ``{layer: (h, w, C)}``."""
    one = jnp.ones((1,), jnp.float32)
    out = {}
    for t in recipe.terms:
        if t.source == "content":
            out.setdefault(
                losses.target_key(t), losses.target(t.statistic, features[t.layer][None], one)
            )
    return out


def batch_loss(
    objective: Objective,
    params: Any,
    photos: jax.Array,
    photo_features: Mapping[str, jax.Array],
    targets: Mapping[str, Any],
    style_index: jax.Array,
    variables: Mapping,
    weights: jax.Array,
    key: jax.Array,
) -> tuple[jax.Array, jax.Array]:
    """(mean weighted loss, mean components (``recipe.labels`` order)) of one network over
    a batch. ``targets``: its style targets, each leaf (styles, ...); ``style_index`` (B,)
    picks each photo's row; ``photo_features``: the backbone's features of the photos."""
    out = network.forward(objective.net, params, photos, style_index)
    feats = objective.problem.network().apply(variables, out)
    recipe = objective.recipe

    def one(feats_b, photo_feats_b, rgb_b, index_b, b):
        tgt = {
            **jax.tree.map(lambda t: t[index_b], targets),
            **content_targets(recipe, photo_feats_b),
        }
        return losses.terms(feats_b, tgt, rgb_b, recipe, jax.random.fold_in(key, b))

    comps = jax.vmap(one)(feats, photo_features, out, style_index, jnp.arange(photos.shape[0]))
    comps = jnp.mean(comps, axis=0)
    return jnp.dot(weights, comps), comps


def random_terms(recipe: Recipe) -> bool:
    """Whether any term of ``recipe`` draws random numbers (a key per step is then used)."""
    return any(base.get(t.statistic).random for t in recipe.terms)


@partial(jax.jit, static_argnames=("objective",), donate_argnames=("state",))
def step(
    objective: Objective,
    state: State,
    variables: Mapping,
    targets: Mapping[str, Any],
    photos: jax.Array,
    style_index: jax.Array,
    weights: jax.Array,
    key_data: jax.Array,
) -> tuple[State, jax.Array, jax.Array]:
    """One Adam step of every network on one batch: ``(state, totals (nets,), components
    (nets, n))``. ``targets``' leaves lead with (nets, styles); ``key_data``: the step's
    raw PRNG key (:func:`step_key`), for the random statistics."""
    photo_features = jax.lax.stop_gradient(objective.problem.network().apply(variables, photos))
    key = jax.random.wrap_key_data(key_data)
    tx = optimizer(0.0)  # the learning rate used is the one in the state

    def one_net(params, opt_state, targets_n):
        grad_fn = jax.value_and_grad(batch_loss, argnums=1, has_aux=True)
        (total, comps), grads = grad_fn(
            objective,
            params,
            photos,
            photo_features,
            targets_n,
            style_index,
            variables,
            weights,
            key,
        )
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, total, comps

    params, opt_state, totals, comps = jax.vmap(one_net)(state.params, state.opt_state, targets)
    return State(params, opt_state, state.step + 1), totals, comps


def step_key(seed: int, step: int) -> np.ndarray:
    """Raw key data of step ``step``: ``fold_in(key(seed), step)``, so a resumed training
    draws what an uninterrupted one would."""
    return np.asarray(jax.random.key_data(jax.random.fold_in(jax.random.key(seed), step)))


@partial(jax.jit, static_argnames=("net",))
def stylize_all(net: network.TransformNet, params: Any, photos: jax.Array, style_index: jax.Array):
    """(nets, B, H, W, 3): every network applied to ``photos`` with ``style_index`` (B,)."""
    return jax.vmap(lambda p: network.forward(net, p, photos, style_index))(params)
