"""The one skeleton every command runs on: plan, prepare, optimise the scales, write.

``run``, ``study`` and ``batch`` differ only in their hooks (a :class:`Hooks`): what
state they begin from, what they do after each chunk, and what they write at the end.
The method itself reads top to bottom in :func:`execute`, as
crowsonkb/style-transfer-pytorch's ``StyleTransfer.stylize`` does:

1. the output folder is checked and locked (a second run on it refuses in one line),
   then the run is planned (:mod:`jaxcombine.run.plan`: shapes, layout, memory check);
2. Ctrl-C and SIGTERM become stop requests, held until the outputs are written;
3. the hooks prepare the run (weights, images, targets at the first scale) and give the
   state it begins from (a study may resume one);
4. :func:`optimise` runs the coarse-to-fine ladder (:mod:`jaxcombine.engine.scales`) with
   the plan's loop, layout and chunk size, each scale's targets computed as it begins;
   an allocator's failure becomes one line;
5. the hooks write the images, histories and records.
"""

from __future__ import annotations

import contextlib
import os
import threading
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import filelock
import jax
import numpy as np

from jaxcombine.engine import driver, program, scales
from jaxcombine.errors import JaxcombineError
from jaxcombine.io import folders
from jaxcombine.options.config import RunConfig
from jaxcombine.run import interrupts, memory, outputs
from jaxcombine.run import plan as plan_lib
from jaxcombine.run.plan import Plan
from jaxcombine.run.prepare import Prepared, prepare

FOLDER_LOCK = "folder.lock"  # in folders.LOCKS: held by the run or study writing the folder


@contextlib.contextmanager
def output_folder(
    out: str | os.PathLike | None, *, exclusive: bool = True
) -> Iterator[Path | None]:
    """``out`` checked (created, writable), its dead writers' temporary files removed, and
    (``exclusive``) locked for this process until the block ends: a second run or study
    on the same folder is refused in one line instead of overwriting this one's files.
    A batch shares its folder (its jobs have their own locks). ``None``: nothing."""
    if out is None:
        yield None
        return
    folder = folders.check_output_folder(out)
    lock = None
    if exclusive:
        (folder / folders.LOCKS).mkdir(exist_ok=True)
        lock = filelock.FileLock(folder / folders.LOCKS / FOLDER_LOCK, timeout=0)
        try:
            lock.acquire()
        except filelock.Timeout:
            raise JaxcombineError(
                f"output folder {out} is in use by another jaxcombine run; wait for it "
                "to finish or use another --out"
            ) from None
    try:
        folders.remove_stale_temps(folder)
        yield folder
    except BaseException:
        if lock is not None:  # refused or failed: leave the folder as it was found
            with contextlib.suppress(OSError):
                Path(lock.lock_file).unlink()
                (folder / folders.LOCKS).rmdir()
        raise
    finally:
        if lock is not None:
            lock.release()


class Hooks:
    """What a command adds to the skeleton. Override what differs; the defaults are a
    plain run's."""

    config: RunConfig
    plan: Plan
    prep: Prepared
    out: Path | None = None

    def make_plan(self) -> Plan:
        """Every decision about the run (:func:`jaxcombine.run.plan.make`)."""
        return plan_lib.make(self.config)

    def prepare(self, plan: Plan) -> Prepared:
        """Weights, images, targets and starts (:func:`jaxcombine.run.prepare.prepare`)."""
        return prepare(plan)

    def stages(self) -> list[scales.Stage]:
        """The scales, each with its steps and the targets it computes when it begins."""
        return self.prep.stages()

    def new_state(self, pixels: Any, steps: Any) -> program.State:
        """A fresh engine state at a scale's size."""
        return self.prep.initial_state(pixels, steps=steps)

    def begin(self, stages: Sequence[scales.Stage]) -> tuple[program.State, int]:
        """(the state the run begins from, the index of its scale)."""
        return self.new_state(self.prep.x0, stages[0].steps), 0

    def on_chunk(self, step: int, comps: np.ndarray, fetch: Any) -> None:
        """After each chunk: global step, its components (n, k, c), a pixel fetcher."""

    def end(self, outcome: driver.Outcome, stopped: Callable[[], bool]) -> Any:
        """Write the outputs; returns the command's result. ``stopped()``: whether a stop
        was requested so far (ask after the writes: a Ctrl-C may come during them)."""
        return outcome


def execute(
    hooks: Hooks,
    *,
    out: str | os.PathLike | None = None,
    exclusive: bool = True,
    stop: threading.Event | None = None,
    snapshot_every: int = 0,
    progress: bool = False,
) -> Any:
    """Run ``hooks``' plan (see the module docstring); returns ``hooks.end``'s result.

    ``out``: the output folder, checked and (``exclusive``) locked first; ``stop``: the
    stop requests of a caller that holds them over several runs (a batch), else this run's
    own; ``snapshot_every``: every snapshot ends a chunk; ``progress``: a bar over the
    steps on stderr.
    """
    with output_folder(out, exclusive=exclusive) as folder:
        hooks.out = folder
        plan = hooks.plan = hooks.make_plan()  # before any image is decoded
        hooks.config = plan.config  # settled: the recipe's suggested options applied
        # held over the writes too: none is cut short
        requests = interrupts.stop_requests() if stop is None else contextlib.nullcontext(stop)
        with requests as stop:
            hooks.prep = hooks.prepare(plan)
            stages = hooks.stages()
            state, first = hooks.begin(stages)
            bar = outputs.ProgressBar(
                sum(s.longest for s in stages),
                desc=f"{plan.starts} start{'s' if plan.starts > 1 else ''}",
                weights=state.weights,
                enabled=progress,
            )

            def on_chunk(step, comps, fetch):
                bar.to_step(step, comps)
                hooks.on_chunk(step, comps, fetch)

            outcome = optimise(
                plan,
                hooks.prep,
                stages,
                state,
                hooks.new_state,
                first_stage=first,
                snapshot_every=snapshot_every,
                on_chunk=on_chunk,
                stop=stop.is_set,
            )
            bar.close()
            return hooks.end(outcome, stop.is_set)


def optimise(
    plan: Plan,
    prep: Prepared,
    stages: Sequence[scales.Stage],
    state: program.State,
    new_state: Callable[[Any, Any], program.State],
    *,
    first_stage: int = 0,
    snapshot_every: int = 0,
    on_chunk: driver.ChunkCallback | None = None,
    stop: Callable[[], bool] | None = None,
) -> driver.Outcome:
    """The scales loop with the plan's loop form, device layout and chunk size (every
    snapshot ends a chunk); an allocator's failure inside becomes one line. The only
    caller of :func:`jaxcombine.engine.scales.optimise_scales`."""
    config = plan.config
    with plan.out_of_memory_as_error(), _partitioning_as_error(plan):
        outcome = scales.optimise_scales(
            prep.problem,
            prep.variables,
            stages,
            state,
            new_state,
            first_stage=first_stage,
            carry_optimizer=config.scale_optimizer == "carry",
            from_average=config.scale_from == "average",
            chunk=outputs.chunk_size(config.chunk, snapshot_every),
            loop=plan.loop,
            on_chunk=on_chunk,
            stop=stop,
            per_start_targets=plan.per_start_targets,
            layout=plan.layout,
        )
    return outcome


@contextlib.contextmanager
def _partitioning_as_error(plan: Plan) -> Iterator[None]:
    """A rows layout that XLA's partitioner still refuses (the plan only picks one where
    every layer's height divides) becomes one line naming the way out."""
    try:
        yield
    except jax.errors.JaxRuntimeError as e:
        if plan.layout.mode != "rows" or memory.is_out_of_memory(e):
            raise
        first = " ".join(str(e).strip().splitlines()[0].split()) if str(e).strip() else ""
        raise JaxcombineError(
            f"XLA could not split the rows of {plan.describe()} over "
            f"{plan.layout.grid[1]} devices ({first[:200]}); use --shard starts"
        ) from e
