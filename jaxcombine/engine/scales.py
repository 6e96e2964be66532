"""Coarse to fine: one optimisation over a ladder of sizes (``--scales``, ``--min-size``).

At a fixed VGG scale a large image collects small repeated patterns; the
answer of crowsonkb/style-transfer-pytorch, followed here, is to optimise at
a small size first and hand each result up to the next size:

* every scale has its own targets (the content and style images read at that
  size; :class:`Stage` computes them when the scale begins, so only one
  scale's targets exist at a time) and its own compiled program (one per
  shape, cached by ``jax.jit`` like any other);
* a scale starts from the previous scale's result, bilinearly upsampled: its
  last image, or (``scale_from="average"``) the running average of its
  iterates (:func:`program.iterate_average`); with ``scale_detail="content"``
  (``Stage.detail``) the content's detail at the new size is added, as STROTSS
  does: the upsampled image is blurred, and an optimiser at a small learning rate
  does not draw the photo's edges back in a scale's steps. A start that is still the
  content at the end of a scale begins the next as the content at the new size;
* the optimiser state is built afresh (``scale_optimizer="reset"``, the
  default, and always for L-BFGS, whose curvature pairs belong to the old
  size) or carried (``"carry"``: every image-shaped buffer, Adam's moments,
  resized to the new size; its step count kept; the learning-rate schedule
  restarted for the new scale's steps). Reset reached the lower final loss on
  both image pairs measured (docs/benchmarks.md): an upsampled image has new
  detail to fit, its gradients are an order of magnitude larger than those of
  the nearly converged coarse scale, and Adam's carried second moments do not
  describe them;
* the image's parameters (pixels or a Laplacian pyramid,
  :mod:`jaxcombine.engine.parameterization`) are made afresh from the upsampled image at
  each scale: a pyramid is decomposed again at the new size, with that size's levels;
* a scale may weight the loss's terms by its own factors (``Stage.loss_factors``: the
  content weight lowered as the scales grow, as STROTSS does) and scale the learning
  rate by its own factor (``Stage.lr_factor``: STROTSS halves it at the last scale); they
  multiply the state's weights and learning rates, traced numbers, so they compile
  nothing;
* all starts stay vmapped through every scale, and a start that diverged stays
  stopped.

The driver is :func:`optimise_scales`; its one caller is the runner
(:func:`jaxcombine.run.runner.optimise`), on which run, study and batch are hooks. A
single-scale run is the one-stage case.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jaxcombine.engine import driver, optimizers, program


@dataclasses.dataclass(frozen=True)
class Stage:
    """One scale: its output shape, steps (an int, or one per start) and its targets,
    computed by ``targets()`` when the scale begins; ``loss_factors`` ((n_components,),
    or None: all 1) multiply the loss weights of the state the scale begins with, and
    ``lr_factor`` its learning rates; ``detail()`` ((1 or k, H, W, 3), or None: nothing)
    is added to the previous scale's upsampled images when this scale begins
    (:func:`next_state`); ``problem`` (None: the run's) is this stage's structure, which
    may leave out terms that do not count here (a final pass's, the scales')."""

    height: int
    width: int
    steps: Any
    targets: Callable[[], Mapping]
    loss_factors: Any = None
    detail: Callable[[], Any] | None = None
    lr_factor: float = 1.0
    problem: program.Problem | None = None

    @property
    def size(self) -> int:
        """The longest side, px (the value ``--scales`` lists)."""
        return max(self.height, self.width)

    @property
    def longest(self) -> int:
        """The most steps any start takes here."""
        return int(np.max(self.steps))


def offsets(stages: Sequence[Stage]) -> list[int]:
    """The global step at which each stage begins."""
    return [0, *np.cumsum([s.longest for s in stages[:-1]]).tolist()]


def resize_images(x: Any, height: int, width: int) -> jax.Array:
    """(k, H, W, C) → (k, height, width, C), bilinear (antialiased when shrinking)."""
    x = jnp.asarray(x, jnp.float32)
    return jax.image.resize(x, (x.shape[0], height, width, x.shape[-1]), "linear")


def carry_optimizer_state(old: Any, fresh: Any) -> Any:
    """The optimiser state ``old`` carried onto ``fresh``'s shapes (``fresh`` is a new
    state at the next scale): image-shaped buffers (Adam's first and second moments,
    SGD's trace) resized, counts kept, every learning-rate schedule taken from ``fresh``
    (it restarts for the new scale's steps). Bilinear weights are non-negative, so
    second moments stay non-negative."""

    def carry(o, f):
        if isinstance(f, optimizers.LearningRate):
            return f
        o = jnp.asarray(o)
        if o.shape == f.shape:
            return o.astype(f.dtype)
        if o.ndim == 4 and f.ndim == 4:  # (k, H, W, 3) buffers
            return resize_images(o, f.shape[1], f.shape[2]).astype(f.dtype)
        raise ValueError(f"cannot carry an optimiser buffer shaped {o.shape} to {f.shape}")

    return jax.tree.map(carry, old, fresh, is_leaf=lambda n: isinstance(n, optimizers.LearningRate))


def handed_on(outcome: driver.Outcome, from_average: bool) -> np.ndarray:
    """What a finished scale hands the next: its last images or its iterate averages."""
    if from_average and outcome.average is not None:
        return outcome.average
    return outcome.pixels


def next_state(
    problem: program.Problem,
    outcome: driver.Outcome,
    stage: Stage,
    new_state: Callable[[Any, Any], program.State],
    *,
    carry_optimizer: bool,
    from_average: bool,
) -> program.State:
    """The state that begins ``stage`` after ``outcome`` (the previous scale's)."""
    pixels = resize_images(handed_on(outcome, from_average), stage.height, stage.width)
    if stage.detail is not None:
        pixels = pixels + jnp.asarray(stage.detail(), jnp.float32)
    pixels = jnp.clip(pixels, 0.0, 255.0)
    if problem.grey:
        pixels = program.grey_projection(pixels)
    fresh = new_state(pixels, stage.steps)
    if carry_optimizer and problem.optimizer != "lbfgs":
        fresh = fresh._replace(opt_state=carry_optimizer_state(outcome.opt_state, fresh.opt_state))
    return fresh._replace(alive=jnp.asarray(outcome.alive))


def optimise_scales(
    problem: program.Problem,
    variables: Mapping,
    stages: Sequence[Stage],
    state: program.State,
    new_state: Callable[[Any, Any], program.State],
    *,
    first_stage: int = 0,
    carry_optimizer: bool = True,
    from_average: bool = False,
    on_chunk: driver.ChunkCallback | None = None,
    on_stage: Callable[[int, driver.Outcome], None] | None = None,
    **optimise_options: Any,
) -> driver.Outcome:
    """Run ``stages[first_stage:]`` in turn, ``state`` being the state at ``first_stage``
    (possibly part-done: a resumed run). Returns one :class:`driver.Outcome` for the
    whole ladder: history rows of every stage in order, each row's stage in ``row_stage``.

    ``new_state(pixels, steps)`` builds a fresh state at a stage's size (the caller's
    learning rates, loss weights and seeds); its weights and learning rates, like
    ``state``'s, are the run's own, which each stage multiplies by its ``loss_factors`` and
    ``lr_factor`` (a resumed state too: :func:`optimizers.learning_rate_of`). ``on_chunk``
    gets global steps; ``on_stage(i, outcome)`` is called when stage i ends (not when
    interrupted), before the next begins. ``optimise_options`` go to
    :func:`driver.optimise` (chunk, loop, stop, per_start_targets, layout).
    """
    starts = offsets(stages)
    parts: list[tuple[int, driver.Outcome]] = []
    for i in range(first_stage, len(stages)):
        stage = stages[i]
        if i > first_stage:
            state = next_state(
                problem,
                parts[-1][1],
                stage,
                new_state,
                carry_optimizer=carry_optimizer,
                from_average=from_average,
            )
        if stage.loss_factors is not None:
            state = state._replace(
                weights=state.weights * jnp.asarray(stage.loss_factors, jnp.float32)[None]
            )
        if stage.lr_factor != 1.0:
            state = state._replace(
                opt_state=optimizers.scale_learning_rate(state.opt_state, stage.lr_factor)
            )

        def shifted(step, comps, fetch, offset=starts[i]):
            if on_chunk is not None:
                on_chunk(offset + step, comps, fetch)

        outcome = driver.optimise(
            stage.problem or problem,
            variables,
            stage.targets(),
            state,
            on_chunk=shifted,
            **optimise_options,
        )
        parts.append((i, outcome))
        if outcome.interrupted:
            break
        if on_stage is not None:
            on_stage(i, outcome)
    return merge(parts, starts, stages)


def merge(
    parts: list[tuple[int, driver.Outcome]], starts: list[int], stages: Sequence[Stage]
) -> driver.Outcome:
    """One :class:`driver.Outcome` from the stages' outcomes, steps counted globally."""
    first_i, first = parts[0]
    last_i, last = parts[-1]
    if len(parts) == 1 and len(stages) == 1:
        return first
    diverged: list[int | None] = [None] * len(first.alive)
    for i, oc in parts:
        for j, at in enumerate(oc.diverged_at):
            if at is not None and diverged[j] is None:
                diverged[j] = at + starts[i]
    stage_weights = np.zeros((len(stages), *last.weights.shape), np.float32)
    for i, oc in parts:
        stage_weights[i] = oc.weights
    return dataclasses.replace(
        last,
        history=np.concatenate([oc.history for _, oc in parts]),
        row_stage=np.concatenate([np.full(len(oc.history), i) for i, oc in parts]),
        stage_weights=stage_weights,
        stage_sizes=tuple((s.height, s.width) for s in stages),
        diverged_at=diverged,
        steps_done=sum(oc.steps_done for _, oc in parts),
        compile_s=sum(oc.compile_s for _, oc in parts),
        run_s=sum(oc.run_s for _, oc in parts),
        start_step=starts[first_i] + first.start_step,
        step=starts[last_i] + np.asarray(last.step),
    )
