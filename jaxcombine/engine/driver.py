"""The loop around the compiled chunks: run every start to its own step count.

:func:`optimise` places the state on the devices as its :class:`~jaxcombine.engine.layout.Layout`
says (the starts axis over a ``Mesh`` axis ``"inits"``, or each image's rows over ``"rows"``),
compiles each chunk program once (timed apart from the steps), runs chunk after
chunk, and between chunks hands the loss components to an ``on_chunk`` callback
and asks a ``stop`` callback whether to end early (the callers connect it to
Ctrl-C and SIGTERM). The host sees one transfer per chunk (the components) unless
a callback fetches pixels. What it returns, :class:`Outcome`, is host numpy.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from typing import Any, Callable, Mapping

import jax
import numpy as np

from jaxcombine.engine.layout import Layout
from jaxcombine.engine.program import (
    Problem,
    State,
    compile_chunk,
    default_loop,
    image,
    iterate_average,
    run_chunk,
)
from jaxcombine.stats import losses

# --------------------------------------------------------------------------- driver


def when_ready(array: jax.Array) -> np.ndarray:
    """``np.asarray(array)``, fetched by a helper thread while the main thread waits.

    Python runs signal handlers only in the main thread and only between bytecodes,
    so a main thread blocked in the transfer of a long chunk's result would hold back
    every Ctrl-C until the chunk ends. Waiting on an event instead is interruptible
    (POSIX lock waits are), so a second Ctrl-C aborts at once
    (:mod:`jaxcombine.run.interrupts`), and the wake-up as the result lands costs
    no polling delay.
    """
    result: list[Any] = []
    done = threading.Event()

    def fetch() -> None:
        try:
            result.append(np.asarray(array))
        except BaseException as error:  # noqa: BLE001  re-raised in the caller's thread
            result.append(error)
        finally:
            done.set()

    threading.Thread(target=fetch, name="jaxcombine-fetch", daemon=True).start()
    done.wait()
    if isinstance(result[0], BaseException):
        raise result[0]
    return result[0]


@dataclasses.dataclass
class Outcome:
    """What an optimisation produced (host numpy arrays).

    ``history`` row i holds the components of step ``start_step + i + 1``; rows
    past a start's own step count (or after it diverged) are NaN.
    """

    pixels: np.ndarray  # (k, H, W, 3) float32, the last good image of each start
    history: np.ndarray  # (steps_done, k, n_components) unweighted components
    labels: tuple[str, ...]  # component names, ``recipe.labels``
    weights: np.ndarray  # (k, n_components)
    alive: np.ndarray  # (k,) bool: False where the start diverged
    diverged_at: list[int | None]  # step at which each start diverged
    steps_done: int  # steps run in this call (the longest start's)
    compile_s: float
    run_s: float
    interrupted: bool = False
    opt_state: Any = None  # the final optimiser state (numpy leaves leading with k), to resume
    params: Any = None  # what the optimiser updated (numpy leaves leading with k), to resume
    loop: str = ""  # the loop form that ran (``auto`` resolved)
    shard: str = "starts"  # how the devices shared the run: "starts" or "rows" (resolved)
    start_step: int = 0
    step: np.ndarray | None = None  # (k,) steps each start has done
    average: np.ndarray | None = None  # (k, H, W, 3) iterate averages, when the state kept them
    # coarse to fine (jaxcombine.engine.scales): the stage of each history row, each stage's shape
    row_stage: np.ndarray | None = None
    stage_sizes: tuple[tuple[int, int], ...] = ()
    # (stages, k, components) each stage's loss weights (a per-scale content factor)
    stage_weights: np.ndarray | None = None

    @property
    def totals(self) -> np.ndarray:
        """(steps_done, k) weighted total loss, each row with the weights of its scale."""
        if self.row_stage is not None and self.stage_weights is not None:
            return np.einsum("skc,skc->sk", self.history, self.stage_weights[self.row_stage])
        return np.einsum("skc,kc->sk", self.history, self.weights)

    def final_totals(self) -> np.ndarray:
        """(k,) weighted total at each start's own last step (NaN where it took none)."""
        rows = np.asarray(self.step) - self.start_step - 1
        totals = self.totals
        return np.asarray(
            [totals[r, j] if 0 <= r < len(totals) else np.nan for j, r in enumerate(rows)]
        )


ChunkCallback = Callable[[int, np.ndarray, Callable[[], np.ndarray]], None]


class _Fetch:
    """``on_chunk``'s third argument: calling it fetches the current images (k, H, W, 3);
    ``.params()`` and ``.opt_state()`` fetch what the optimiser updates and its state
    (numpy leaves leading with k). All are transfers, valid only during the callback (the
    buffers are donated to the next chunk)."""

    def __init__(self, problem: Problem, state: State, k: int):
        self._problem, self._state, self._k = problem, state, k

    def __call__(self) -> np.ndarray:
        return np.asarray(image(self._problem, self._state))[: self._k]

    def params(self) -> Any:
        return jax.tree.map(lambda a: np.asarray(a)[: self._k], self._state.params)

    def opt_state(self) -> Any:
        return jax.tree.map(lambda a: np.asarray(a)[: self._k], self._state.opt_state)

    def average(self) -> np.ndarray | None:
        """The iterate averages (:func:`iterate_average`), or None where not kept."""
        if self._state.average is None:
            return None
        return np.asarray(iterate_average(self._problem, self._state))[: self._k]


def optimise(
    problem: Problem,
    variables: Mapping,
    targets: Mapping,
    state: State,
    *,
    chunk: int = 25,
    loop: str = "auto",
    on_chunk: ChunkCallback | None = None,
    stop: Callable[[], bool] | None = None,
    per_start_targets: bool = False,
    layout: Layout | None = None,
) -> Outcome:
    """Advance every start of ``state`` (:func:`init_state`) to its own step count, in chunks.

    After each chunk ``on_chunk(step, components, get_pixels)`` is called with
    the chunk's components (n, k, c) as numpy and a function that fetches the
    current images (only call it when a snapshot is due: it is a transfer; its
    ``.params()`` and ``.opt_state()`` fetch the parameters and optimiser state, to save a
    resumable state). ``stop()`` is asked between chunks; when it says yes the
    outcome has ``interrupted=True`` and everything done so far (the drivers
    connect it to Ctrl-C and SIGTERM). ``per_start_targets``: every leaf of
    ``targets`` leads with the starts axis k, so each start matches its own
    targets (jobs with different images in one program). ``layout``: how the
    devices share the work (:func:`jaxcombine.engine.layout.choose`; default: the starts
    spread over every local device).
    """
    loop = default_loop(None, problem.conv) if loop == "auto" else loop
    axis = 0 if per_start_targets else None
    start_step = int(np.min(np.asarray(state.step)))
    end_step = int(np.max(np.asarray(state.steps)))
    if layout is None:
        layout = Layout("starts", len(jax.local_devices()), int(state.step.shape[0]))
    state, targets, k = layout.place(
        state,
        targets,
        activation_keys=losses.spatial_target_keys(problem.recipe),
        per_start_targets=per_start_targets,
    )
    history: list[np.ndarray] = []
    step, compile_s, run_s = start_step, 0.0, 0.0
    compiled: set[int] = set()
    interrupted = False
    while step < end_step:
        if stop is not None and stop():
            interrupted = True
            break
        n = min(chunk, end_step - step)
        t0 = time.perf_counter()
        if _program(loop, n, chunk) not in compiled:  # time the compile apart
            compile_s += compile_chunk(problem, variables, targets, state, n, loop, axis, chunk)
            compiled.add(_program(loop, n, chunk))
            t0 = time.perf_counter()
        state, comps = run_chunk(problem, variables, targets, state, n, loop, axis, chunk)
        # the only host round trip of the chunk; sliced here, on the host: slicing the
        # device array by a length would compile a program per length
        comps = when_ready(comps)[:n, :k]
        run_s += time.perf_counter() - t0
        history.append(comps)
        step += n
        if on_chunk is not None:
            on_chunk(step, comps, _Fetch(problem, state, k))
    hist = np.concatenate(history) if history else np.zeros((0, k, len(problem.recipe.labels)))
    alive = np.asarray(state.alive)[:k]
    fetch = _Fetch(problem, state, k)
    return Outcome(
        pixels=fetch(),
        history=hist,
        labels=problem.recipe.labels,
        weights=np.asarray(state.weights)[:k],
        alive=alive,
        diverged_at=_divergence_steps(hist, alive, start_step),
        steps_done=step - start_step,
        compile_s=compile_s,
        run_s=run_s,
        interrupted=interrupted,
        opt_state=fetch.opt_state(),
        params=fetch.params(),
        loop=loop,
        start_step=start_step,
        shard=layout.mode,
        step=np.asarray(state.step)[:k],
        average=fetch.average(),
    )


def _program(loop: str, n: int, capacity: int) -> int:
    """Which compiled program a chunk of ``n`` runs: one per length only when unrolled."""
    return n if loop == "unroll" else capacity


def _divergence_steps(history: np.ndarray, alive: np.ndarray, start_step: int) -> list[int | None]:
    """The step at which each diverged start first gave a non-finite loss (None if alive)."""
    out: list[int | None] = []
    for j in range(history.shape[1]):
        bad = np.flatnonzero(~np.isfinite(history[:, j]).all(axis=-1))
        out.append(int(bad[0]) + start_step + 1 if not alive[j] and bad.size else None)
    return out
