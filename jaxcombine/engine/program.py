"""The optimisation: an image's parameters updated by optax in compiled chunks of steps.

Shape of the computation:

* one step for one start (``_step``): the image from its parameters (the pixels, or a
  Laplacian pyramid: :mod:`jaxcombine.engine.parameterization`), VGG forward to the
  deepest tap, the recipe loss, its gradient w.r.t. the image pulled back to the
  parameters, an optax update, a projection back to 0–255, and a divergence guard;
* ``jax.vmap`` over starts (the leading axis of the pixels), so k starts run
  side by side in one program; over several devices that axis is sharded on a
  ``Mesh`` axis ``"inits"``;
* a *chunk* of ``n`` steps compiled as one program. Its loop form is a
  per-backend choice (:func:`default_loop`, measured in docs/benchmarks.md):
  ``"scan"`` (a rolled loop whose trip count is an argument, so one program
  serves every chunk length), ``"unroll"`` (fully unrolled ``lax.scan``) or
  ``"step"`` (one jitted step dispatched asynchronously n times). The state
  buffers are donated; the host sees only the chunk's loss components and,
  when asked, the parameters (and the image they stand for).

VGG weights and targets are passed as arguments (never closed over, never
donated). Only the static :class:`Problem` (structure) and the shapes select
a compiled program; learning rates, step counts and loss weights are arrays in
the :class:`State`, so a run that changes only those compiles nothing.
Running chunks until every start has its steps, over devices, with callbacks
between chunks (snapshots, interrupts), is :mod:`jaxcombine.engine.driver`'s job.
"""

from __future__ import annotations

import dataclasses
import time
from functools import partial
from typing import Any, Mapping, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxcombine.engine import optimizers, tiles
from jaxcombine.engine.parameterization import Parameterization, grey_projection  # noqa: F401
from jaxcombine.errors import JaxcombineError
from jaxcombine.networks import model
from jaxcombine.options import layers as layers_lib
from jaxcombine.options.recipe import Recipe
from jaxcombine.stats import base, losses
from jaxcombine.stats import hypercolumns as hypercolumns_lib

# Chosen by measurement (docs/benchmarks.md). Inside a rolled loop XLA:CPU runs the
# input-gradient convolutions that autodiff writes (conv="xla") ~8x slower, so that
# pairing dispatches one jitted step at a time; conv="winograd" brings explicit adjoint
# kernels and scans. Every other (backend, conv) pairing: "scan".
DEFAULT_LOOP = {("cpu", "xla"): "step"}


@dataclasses.dataclass(frozen=True)
class Problem:
    """The structure of an optimisation, and nothing else: it selects the compiled program.

    Only what fixes shapes and operations is here; the numbers a user sweeps
    (learning rate, step count, term and TV weights, style blend weights) are
    arrays in :class:`State` and the targets, so changing them compiles nothing.

    Attributes:
      recipe: the loss's structure (:meth:`Recipe.structure`: layers, sources,
        statistics; its weights are not used here).
      arch, pooling, dtype, remat, conv, padding: the network (see :class:`model.VGG`); with
        ``conv="winograd"`` the variables must come from ``model.variables(..., conv="winograd")``.
      optimizer: ``adam`` | ``sgd`` | ``lbfgs`` | ``rmsprop`` (:mod:`jaxcombine.engine.optimizers`), or
        any ``optax.GradientTransformation`` (from Python; learning rate and schedule are its own).
      schedule: ``constant`` or ``cosine`` (decays to 10% over each start's steps).
      grey: optimise grey images only (``preserve_color="luminance"``): the gradient
        and every updated image are projected onto R = G = B, so grey starts stay grey
        and the optimiser spends no steps on colour the output would throw away.
      tile: 0, or compute each step's loss and gradient exactly from tiles of this many
        px (:mod:`jaxcombine.engine.tiles`): memory set by the tile, not the image; the targets
        must then come from :func:`tiles.targets`.
      parameterization: what the optimiser updates (pixels, or a Laplacian pyramid and
        its levels: :mod:`jaxcombine.engine.parameterization`).
    """

    recipe: Recipe
    arch: str = "vgg19"
    pooling: str = "max"
    dtype: str = "float32"
    remat: bool = False
    conv: str = "xla"
    padding: str = "zeros"
    optimizer: str | optax.GradientTransformation = "adam"
    schedule: str = "constant"
    grey: bool = False
    tile: int = 0
    parameterization: Parameterization = Parameterization()

    def network(self) -> model.VGG:
        return model.VGG(
            arch=self.arch,
            taps=layers_lib.check_layers(self.recipe.layers, self.arch),
            pooling=self.pooling,
            dtype=jnp.dtype(self.dtype),
            remat=self.remat,
            conv=self.conv,
            padding=self.padding,
        )

    def transform(self) -> optax.GradientTransformation:
        """The optax optimiser: a built-in by name, or the transformation given."""
        if isinstance(self.optimizer, str):
            return optimizers.build(self.optimizer, self.schedule)
        return self.optimizer


class State(NamedTuple):
    """Carry of the loop, one slice per start (all leading with the starts axis k).

    Besides the image's parameters and optimiser state (which holds each start's
    learning rate),
    it carries the traced numbers that let one program serve a sweep: each
    start's loss weights, steps done and steps wanted, and its PRNG key.

    The key never changes: step t of a start draws from ``fold_in(key, t)``
    (:func:`step_key`), a split indexed by the step counter rather than a chain
    of splits, so a resumed run (which restarts from ``step``) draws what an
    uninterrupted one would, and a seed is a traced number like the others.
    """

    # what the optimiser updates: the image (k, H, W, 3) float32 RGB in 0–255, or a
    # pyramid's levels (Problem.parameterization; :func:`image` gives the image)
    params: Any
    opt_state: Any
    alive: jax.Array  # (k,) bool: False once the start diverged
    weights: jax.Array  # (k, n_components) float32, ``recipe.labels`` order
    step: jax.Array  # (k,) int32 steps done
    steps: jax.Array  # (k,) int32 steps wanted: a start stops (frozen) once step == steps
    key: jax.Array  # (k, 2) uint32 raw PRNG key data (jax.random.key_data), one per start
    # (k, H, W, 3) exponential moving average of the iterates, or None (not kept): what a
    # coarse-to-fine scale hands the next under scale_from="average" (:func:`iterate_average`)
    average: jax.Array | None = None


KEY_STREAM = 0x5EED  # folded into the seed, so the loss's draws differ from the noise starts'
AVERAGE_DECAY = 0.95  # of State.average: about the last 20 iterates


def average_state(average: Any, step: Any) -> jax.Array:
    """``State.average`` from bias-corrected averages (:func:`iterate_average`) after
    ``step`` (k,) steps: the inverse of the correction, to resume a saved average."""
    return jnp.asarray(average, jnp.float32) * _averaged_weight(step)


def _averaged_weight(step: Any) -> jax.Array:
    """(k, 1, 1, 1) 1 − decay^step: the weight the running average has gathered after
    ``step`` steps from 0 (its bias correction divides by it)."""
    return 1.0 - AVERAGE_DECAY ** jnp.asarray(step, jnp.float32)[:, None, None, None]


def iterate_average(problem: Problem, state: State) -> jax.Array:
    """(k, H, W, 3) the bias-corrected running average of each start's iterates (its
    image where it took no step yet): Adam's correction, as the average starts at 0."""
    if state.average is None:
        raise ValueError("this state keeps no iterate average (init_state(average=True))")
    done = _averaged_weight(state.step)
    return jnp.where(done > 0, state.average / jnp.maximum(done, 1e-12), image(problem, state))


@partial(jax.jit, static_argnames=("parameterization",))
def _decompose(pixels: jax.Array, *, parameterization: Parameterization) -> Any:
    return parameterization.decompose(pixels)


@partial(jax.jit, static_argnames=("parameterization",))
def _image(params: Any, *, parameterization: Parameterization) -> jax.Array:
    return parameterization.image(params)


def image(problem: Problem, state: State) -> jax.Array:
    """(k, H, W, 3) the images ``state``'s parameters stand for."""
    return _image(state.params, parameterization=problem.parameterization)


def seed_keys(seeds: Any, k: int) -> jax.Array:
    """(k, 2) uint32 key data for a seed (or one seed per start), for :class:`State`."""
    seeds = np.broadcast_to(np.asarray(seeds, np.int64), (k,))
    keys = [jax.random.fold_in(jax.random.key(int(s)), KEY_STREAM) for s in seeds]
    return jnp.stack([jax.random.key_data(key) for key in keys])


def step_key(key_data: jax.Array, step: jax.Array) -> jax.Array:
    """The PRNG key of one start at one step: ``fold_in(key, step)``."""
    return jax.random.fold_in(jax.random.wrap_key_data(key_data), step)


# --------------------------------------------------------------------------- targets & loss


def compute_targets(
    problem: Problem,
    variables: Mapping,
    content: jax.Array,
    styles: "jax.Array | Sequence[jax.Array]",
    style_weights: jax.Array | None = None,
    masks: jax.Array | None = None,
    style_masks: jax.Array | None = None,
    style_regions: "jax.Array | Sequence[jax.Array] | None" = None,
) -> dict[str, Any]:
    """Target statistics, once per (source, statistic, layer), and the masks.

    ``content`` is (H, W, 3); ``styles`` is (S, H, W, 3), already fitted to the
    output size, or a list of S images (H_s, W_s, 3) of their own sizes (each
    style at its ``style_scale``; each then goes through VGG alone). Several
    styles blend their statistics with ``style_weights`` (default: equal; how
    each statistic blends: its module's ``target``). A target is an array or a dict of
    arrays, whatever the statistic keeps (a Gaussian fit with its square root, computed
    here once; the style's feature points; sorted values …).

    ``masks`` (M, H, W): the recipe's term masks at the output's size, kept as
    ``targets["masks"]``. ``style_masks`` (S, H, W): one mask per style; style
    targets are then a tuple of S unblended targets, one per style, and the
    masks and normalised weights are kept as ``targets["style_masks"]`` and
    ``targets["style_weights"]`` (:func:`losses.terms` uses all three).
    ``style_regions`` (S, H, W), or a list of S (H_s, W_s) for styles of their own sizes:
    a mask over each style image, where hypercolumn terms draw that style's positions.
    A style term with ``rotations`` reads every style and its three turns
    (:func:`_turned_styles`), each turn a quarter of its style's weight, its region turned
    with it.
    """
    net = problem.network()
    feats = {"content": net.apply(variables, content[None])}
    if isinstance(styles, (list, tuple)) and len({s.shape for s in styles}) > 1:
        alone = [net.apply(variables, s[None]) for s in styles]
        feats["style"] = {layer: [f[layer][0] for f in alone] for layer in alone[0]}
        n_styles = len(styles)
        styles = list(styles)
    else:
        styles = jnp.stack(styles) if isinstance(styles, (list, tuple)) else styles
        feats["style"] = net.apply(variables, styles)
        n_styles = styles.shape[0]
    pixels = {"content": content[None], "style": styles}  # what each forward saw
    regions = {"content": None, "style": style_regions}
    if any(t.rotates for t in problem.recipe.terms):  # every style and its three turns
        feats["turned"], pixels["turned"], regions["turned"] = _turned_styles(
            net, variables, feats["style"], styles, style_regions
        )
    if style_weights is None:
        style_weights = jnp.full((n_styles,), 1.0 / n_styles)
    per_style = len(hypercolumns_lib.QUARTER_TURNS)
    blend = {
        "content": jnp.ones((1,), jnp.float32),
        "style": style_weights,
        "turned": jnp.repeat(jnp.asarray(style_weights), per_style),  # a turn: 1/4 of its style
    }
    out: dict[str, Any] = {}
    for term in problem.recipe.terms:
        key = losses.target_key(term)
        if key in out or term.skipped:  # a term no stage computes has no target
            continue
        images = "turned" if term.rotates else term.source
        source = losses.inputs(term, feats[images], pixels[images], regions[images])
        paired = None  # a paired statistic's target is built from the content's too
        if base.get(term.statistic).paired:
            paired = losses.inputs(term, feats["content"], pixels["content"])
        if term.source == "style" and style_masks is not None:  # each style (and its turns) alone
            count = per_style if images == "turned" else 1
            alone = [losses.one_image(source, i) for i in range(count * n_styles)]
            out[key] = tuple(
                losses.target(
                    term.statistic, alone[s * count : (s + 1) * count], jnp.ones((count,)), paired
                )
                for s in range(n_styles)
            )
        else:
            out[key] = losses.target(term.statistic, source, blend[images], paired)
    if masks is not None:
        out["masks"] = jnp.asarray(masks, jnp.float32)
    if style_masks is not None:
        if style_masks.shape[0] != n_styles:
            raise ValueError(f"{style_masks.shape[0]} style masks for {n_styles} styles")
        w = jnp.asarray(style_weights, jnp.float32)
        out["style_masks"] = jnp.asarray(style_masks, jnp.float32)
        out["style_weights"] = w / jnp.sum(w)
    return out


def _turned_styles(
    net: Any, variables: Mapping, style_features: Mapping, styles: Any, regions: Any
) -> tuple[dict[str, list], list, list | None]:
    """(features, pixels, regions) of every style followed by its turns by 90°, 180° and
    270° (:func:`hypercolumns.turns`), as lists of single images (an odd turn of a
    non-square style has its own shape): the unturned style's features are the ones
    already taken, each turn goes through the network alone."""
    n = len(styles)
    features: dict[str, list] = {layer: [] for layer in style_features}
    pixels, turned_regions = [], None if regions is None else []
    for s in range(n):
        for k, image in enumerate(hypercolumns_lib.turns(styles[s])):
            seen = (
                {layer: f[s] for layer, f in style_features.items()}
                if k == 0
                else {layer: f[0] for layer, f in net.apply(variables, image[None]).items()}
            )
            for layer, f in seen.items():
                features[layer].append(f)
            pixels.append(image)
        if regions is not None:
            turned_regions += hypercolumns_lib.turns(regions[s])
    return features, pixels, turned_regions


def loss_components(
    problem: Problem,
    variables: Mapping,
    targets: Mapping,
    pixels: jax.Array,
    key: jax.Array | None = None,
) -> jax.Array:
    """Unweighted components (``recipe.labels`` order) for one image (H, W, 3);
    ``key`` (a PRNG key) feeds the random statistics."""
    feats = problem.network().apply(variables, pixels[None])
    feats = {k: v[0] for k, v in feats.items()}
    return losses.terms(feats, targets, pixels, problem.recipe, key)


def loss(
    problem: Problem,
    variables: Mapping,
    targets: Mapping,
    pixels: jax.Array,
    weights: jax.Array | None = None,
    key: jax.Array | None = None,
) -> tuple[jax.Array, jax.Array]:
    """(weighted total, components) for one image; ``weights`` default to the recipe's."""
    comps = loss_components(problem, variables, targets, pixels, key)
    weights = losses.weights(problem.recipe) if weights is None else weights
    return jnp.dot(weights, comps), comps


# --------------------------------------------------------------------------- one step


def init_state(
    problem: Problem,
    pixels: Any,
    *,
    lr: Any = None,
    steps: Any = 0,
    loss_weights: Any = None,
    start_step: Any = 0,
    seed: Any = 0,
    average: bool = False,
) -> State:
    """Fresh state for starts ``pixels`` (k, H, W, 3), held as the problem's
    parameterisation says (:meth:`Parameterization.decompose`).

    ``lr`` (built-in optimisers; a scalar or one per start), ``steps`` (a
    scalar or one per start), ``loss_weights`` ((n_components,) or (k,
    n_components); default the recipe's) and ``seed`` (of the loss's random
    draws; a scalar or one per start) are traced: each start may have its
    own, and one program serves them all. ``start_step`` resumes a run.
    ``average``: also keep the running average of the iterates (:func:`iterate_average`).
    """
    pixels = jnp.asarray(pixels, jnp.float32)
    k = pixels.shape[0]
    n = len(problem.recipe.labels)
    steps = np.broadcast_to(np.asarray(steps, np.int64), (k,))
    params = _decompose(pixels, parameterization=problem.parameterization)
    # Strong types throughout: some optimisers (L-BFGS's line search) start with weakly
    # typed scalars that their first update makes strong, which would compile the chunk twice.
    opt_state = jax.tree.map(
        lambda a: jnp.asarray(a, dtype=a.dtype), jax.vmap(problem.transform().init)(params)
    )
    if isinstance(problem.optimizer, str):
        lr = np.broadcast_to(np.asarray(lr if lr is not None else 1.0, np.float32), (k,))
        opt_state = optimizers.set_learning_rate(opt_state, lr, steps)
    elif lr is not None:
        raise JaxcombineError("a learning rate applies to the built-in optimizers only")
    if loss_weights is None:
        loss_weights = losses.weights(problem.recipe)
    loss_weights = jnp.asarray(loss_weights, jnp.float32)
    if loss_weights.shape not in ((n,), (k, n)):
        raise JaxcombineError(
            f"loss weights must be shaped ({n},) or ({k}, {n}), got {loss_weights.shape}"
        )
    return State(
        params,
        opt_state,
        jnp.ones(k, bool),
        jnp.broadcast_to(loss_weights, (k, n)),
        jnp.broadcast_to(jnp.asarray(start_step, jnp.int32), (k,)),
        jnp.asarray(steps, jnp.int32),
        seed_keys(seed, k),
        jnp.zeros_like(pixels) if average else None,
    )


def _step(
    problem: Problem, variables: Mapping, targets: Mapping, state: State
) -> tuple[State, jax.Array]:
    """One update of one start. A start past its own step count, or whose loss or image
    turned non-finite, keeps its last good image; its components are NaN.

    The loss and its gradient are taken w.r.t. the image; the gradient is pulled back to
    the parameters (for pixels: unchanged) through the parameterisation's VJP."""
    x, opt_state, alive, weights, step, steps, key_data, average = state
    opt = problem.transform()
    param = problem.parameterization
    key = step_key(key_data, step)
    img, pull_back = jax.vjp(param.image, x)
    if problem.tile:  # exact, tile by tile (only statistics that are sums: tiles.check)

        def value_fn(p):
            return tiles.value(
                problem, variables, targets, param.image(p), weights, tile=problem.tile
            )[0]

        (value, comps), grad = tiles.value_and_grad(
            problem, variables, targets, img, weights, tile=problem.tile
        )
    else:

        def value_fn(p):
            return loss(problem, variables, targets, param.image(p), weights, key)[0]

        (value, comps), grad = jax.value_and_grad(
            lambda im: loss(problem, variables, targets, im, weights, key), has_aux=True
        )(img)
    if problem.grey:  # the gradient within grey images
        grad = grey_projection(grad)
    (grad,) = pull_back(grad)
    updates, new_opt_state = opt.update(
        grad, opt_state, x, value=value, grad=grad, value_fn=value_fn
    )
    # Projected step: the image stays in the valid 0–255 range (and grey, if asked).
    new_x = param.project(optax.apply_updates(x, updates), grey=problem.grey)
    running = alive & (step < steps)
    finite = jnp.isfinite(value)
    for leaf in jax.tree.leaves(new_x):
        finite = finite & jnp.all(jnp.isfinite(leaf))
    ok = running & finite
    keep = lambda new, old: jax.tree.map(lambda n, o: jnp.where(ok, n, o), new, old)  # noqa: E731
    if average is not None:
        new_img = param.image(new_x)
        average = keep(AVERAGE_DECAY * average + (1.0 - AVERAGE_DECAY) * new_img, average)
    new_state = State(
        keep(new_x, x),
        keep(new_opt_state, opt_state),
        alive & (finite | ~running),
        weights,
        step + running.astype(step.dtype),
        steps,
        key_data,
        average,
    )
    return new_state, jnp.where(ok, comps, jnp.nan)


def _vstep(problem, variables, targets, state, targets_axis=None):
    """``_step`` vmapped over starts. ``targets_axis=0``: each start has its own targets
    (leading axis k, for batches of different jobs); ``None``: all starts share them."""
    return jax.vmap(partial(_step, problem), in_axes=(None, targets_axis, 0))(
        variables, targets, state
    )


@partial(
    jax.jit, static_argnames=("problem", "n_steps", "targets_axis"), donate_argnames=("state",)
)
def _unrolled_chunk(problem, variables, targets, state, *, n_steps, targets_axis=None):
    def body(s, _):
        return _vstep(problem, variables, targets, s, targets_axis)

    return jax.lax.scan(body, state, None, length=n_steps, unroll=n_steps)


@partial(
    jax.jit, static_argnames=("problem", "capacity", "targets_axis"), donate_argnames=("state",)
)
def _rolled_chunk(problem, variables, targets, state, n_steps, *, capacity, targets_axis=None):
    """``n_steps`` (traced, at most ``capacity``) steps in a rolled loop; the history is
    (capacity, k, components) with NaN past ``n_steps``. The trip count being an
    argument, a run's last, shorter chunk reuses the program."""
    k, n_components = state.weights.shape
    history = jnp.full((capacity, k, n_components), jnp.nan, jnp.float32)

    def body(i, carry):
        s, hist = carry
        s, comps = _vstep(problem, variables, targets, s, targets_axis)
        return s, hist.at[i].set(comps)

    return jax.lax.fori_loop(0, n_steps, body, (state, history))


_jit_step = jax.jit(_vstep, static_argnames=("problem", "targets_axis"), donate_argnames=("state",))


def run_chunk(
    problem: Problem,
    variables: Mapping,
    targets: Mapping,
    state: State,
    n_steps: int,
    loop: str,
    targets_axis: int | None = None,
    capacity: int | None = None,
) -> tuple[State, jax.Array]:
    """Advance ``n_steps``; returns the new state and components shaped (n_steps, k, n_terms+1)
    (the ``scan`` form: (capacity, k, n_terms+1), NaN past ``n_steps``; the caller slices
    on the host, as slicing a device array by a length would compile a program per length).

    Nothing here waits for the device: the result is still being computed
    when this returns. ``targets_axis``: see :func:`_vstep`. ``capacity``: the
    longest chunk of the run (default ``n_steps``); the ``scan`` form compiles
    one program for it and runs every shorter chunk with that program.
    """
    if loop == "step":
        history = []
        for _ in range(n_steps):
            state, comps = _jit_step(problem, variables, targets, state, targets_axis)
            history.append(comps)
        return state, jnp.stack(history)
    if loop == "unroll":
        return _unrolled_chunk(
            problem, variables, targets, state, n_steps=n_steps, targets_axis=targets_axis
        )
    capacity = max(capacity or n_steps, n_steps)
    state, history = _rolled_chunk(
        problem,
        variables,
        targets,
        state,
        jnp.int32(n_steps),
        capacity=capacity,
        targets_axis=targets_axis,
    )
    return state, history


def default_loop(backend: str | None = None, conv: str = "xla") -> str:
    """The fastest measured loop form for ``backend`` (default: JAX's) and algorithm ``conv``."""
    return DEFAULT_LOOP.get((backend or jax.default_backend(), conv), "scan")


def compile_chunk(
    problem, variables, targets, state, n, loop, targets_axis=None, capacity=None
) -> float:
    """Compile (ahead of time) the program for a chunk of ``n`` (see :func:`run_chunk`);
    returns seconds. Benchmarks use it to keep compile time apart from steady-state time."""
    t0 = time.perf_counter()
    if loop == "step":
        _jit_step.lower(problem, variables, targets, state, targets_axis).compile()
    elif loop == "unroll":
        _unrolled_chunk.lower(
            problem, variables, targets, state, n_steps=n, targets_axis=targets_axis
        ).compile()
    else:
        _rolled_chunk.lower(
            problem,
            variables,
            targets,
            state,
            jnp.int32(n),
            capacity=max(capacity or n, n),
            targets_axis=targets_axis,
        ).compile()
    return time.perf_counter() - t0
