"""Scripted batch generation: the jobs of a manifest (:mod:`jaxcombine.batch.manifest`) in, one
output set per job out.

A job is finished once ``<id>.json`` exists (written last, atomically), so a
rerun after a crash does only the rest; a per-job lock lets several processes
share one output folder without doing a job twice.

Jobs whose :class:`~jaxcombine.engine.program.Problem` and output size agree run as
one vmapped program, each start with its own targets. See docs/batch.md.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import os
import socket
import sys
import time
from pathlib import Path
from typing import Any, Iterable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jaxcombine.batch import legacy
from jaxcombine.batch.manifest import Job, load_manifest, process_share
from jaxcombine.engine import driver
from jaxcombine.errors import JaxcombineError, one_line
from jaxcombine.io import folders, images, records
from jaxcombine.options import config as config_lib
from jaxcombine.run import interrupts, memory, outputs, runner
from jaxcombine.run import plan as plan_lib
from jaxcombine.run.prepare import Prepared, prepare
from jaxcombine.tools import metrics

REPORT = "batch-report.json"


@dataclasses.dataclass
class BatchReport:
    """What a batch did: ids done now, skipped (finished before), failed (id → one-line
    reason), elsewhere (another live process held the job when this one reached it), and
    adopted (finished under the id jaxcombine 0.1.0 gave them, renamed now; skipped too)."""

    done: list[str] = dataclasses.field(default_factory=list)
    skipped: list[str] = dataclasses.field(default_factory=list)
    failed: dict[str, str] = dataclasses.field(default_factory=dict)
    interrupted: bool = False
    wall_s: float = 0.0
    elsewhere: list[str] = dataclasses.field(default_factory=list)
    unscored: dict[str, str] = dataclasses.field(default_factory=dict)  # --eval: id → why not
    groups: int = 0  # groups of jobs run, each as one program (docs/batch.md)
    adopted: list[str] = dataclasses.field(default_factory=list)  # batch.legacy

    @property
    def jobs_per_minute(self) -> float | None:
        return round(60 * len(self.done) / self.wall_s, 3) if self.wall_s and self.done else None

    def to_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "jobs_per_minute": self.jobs_per_minute}

    def merge(self, other: "BatchReport") -> None:
        self.done += other.done
        self.skipped += other.skipped
        self.adopted += other.adopted
        self.failed.update(other.failed)
        self.elsewhere += [j for j in other.elsewhere if j not in self.done]
        self.unscored.update(other.unscored)
        self.interrupted |= other.interrupted
        self.groups += other.groups
        self.wall_s = max(self.wall_s, other.wall_s)


# --------------------------------------------------------------------------- running


def run_batch(
    manifest_path: str | os.PathLike,
    out: str | os.PathLike,
    *,
    force: bool = False,
    progress: bool = True,
    batching: bool = True,
    max_batch: int = 64,
    process_index: int | None = None,
    process_count: int | None = None,
    evaluate: bool = False,
) -> BatchReport:
    """Run every unfinished job of a manifest into ``out``; never raises for one bad job.

    Jobs are taken ``max_batch`` at a time (which bounds memory: their images and
    targets are held until they are done); within those, jobs of one shape run as
    one program. ``batching=False`` runs one job at a time.

    ``process_index``/``process_count`` default to JAX's (several hosts: call
    ``jax.distributed.initialize`` first); each process runs its share and writes
    ``batch-report.<i>.json``, and process 0 merges them into ``batch-report.json``.

    ``evaluate``: once the jobs are done, score every finished job that has no scores yet
    (those finished now, and those finished before) as ``jaxcombine eval`` does
    (:func:`score_jobs`); ``eval.csv`` gathers every finished job's scores.
    """
    max_batch = config_lib.positive_int(max_batch, "max_batch")
    t0 = time.perf_counter()
    with runner.output_folder(out, exclusive=False) as folder:  # shared: jobs have locks
        report = _run_jobs(
            load_manifest(manifest_path),
            folder,
            force=force,
            progress=progress,
            window=max_batch if batching else 1,
            evaluate=evaluate,
            index=jax.process_index() if process_index is None else process_index,
            count=jax.process_count() if process_count is None else process_count,
            t0=t0,
        )
    return report


def _run_jobs(
    manifest_jobs: list[Job],
    out: Path,
    *,
    force: bool,
    progress: bool,
    window: int,
    evaluate: bool,
    index: int,
    count: int,
    t0: float,
) -> BatchReport:
    """This process's share of the jobs, ``window`` at a time; its report written (and,
    on process 0 of several, every process's merged)."""
    jobs = process_share(manifest_jobs, index, count)
    report = BatchReport()
    if not force:
        report.adopted = legacy.adopt_all(out, jobs)
    finished = lambda j: not force and (out / f"{j.id}.json").exists()  # noqa: E731
    report.skipped = [j.id for j in jobs if finished(j)]
    todo = [j for j in jobs if not finished(j)]
    bar = outputs.ProgressBar(len(todo), unit="job", enabled=progress)
    programs = _HeldPrograms()
    with interrupts.stop_requests() as stop:
        for start in range(0, len(todo), window):
            if report.interrupted or stop.is_set():
                report.interrupted = True
                break
            with contextlib.ExitStack() as held:  # this window's job locks, until written
                mine = []
                for j in todo[start : start + window]:
                    if not held.enter_context(folders.job_lock(out, j.id)):
                        report.elsewhere.append(j.id)  # a live process is running it
                        bar.update(1)
                    elif finished(j):  # another process finished it meanwhile
                        report.skipped.append(j.id)
                        bar.update(1)
                    else:
                        mine.append(j)
                _run_window(mine, out, report, bar, programs, stop)
    bar.close()
    report.wall_s = round(time.perf_counter() - t0, 3)
    records.write_json(
        out / f"batch-report.{index}.json" if count > 1 else out / REPORT,
        records.record(None, **report.to_dict()),
    )
    if count > 1:
        _barrier("jaxcombine-batch-done")
        if index == 0:
            report = merge_reports(out, count)
    if evaluate and index == 0 and not report.interrupted:
        score_jobs(out, manifest_jobs, report)
        if report.unscored:  # the report says which were not scored, and why
            records.write_json(out / REPORT, records.record(None, **report.to_dict()))
    return report


def score_jobs(out: Path, jobs: Sequence[Job], report: BatchReport) -> None:
    """Score each finished job of ``jobs`` whose record has no ``eval`` entry yet, as
    ``jaxcombine eval`` does (against its content and first style, under its
    ``max_memory``), into its record (rewritten atomically, under the job's lock); then
    write ``eval.csv`` from every finished job's scores. A job that cannot be scored (an
    unreadable record, an image too large to score) is one line in ``report.unscored``
    and on stderr; the others are scored."""
    rows = []
    for job in jobs:
        path = out / f"{job.id}.json"
        if not path.exists():
            continue  # not finished: nothing to score
        try:
            with folders.job_lock(out, job.id) as mine:
                if not mine:
                    raise JaxcombineError("another process holds it")
                record = _read_record(path)
                if not isinstance(record.get("eval"), dict):
                    c = job.config
                    row = metrics.evaluate(
                        [out / str(record.get("image") or f"{job.id}.png")],
                        content=c.content,
                        style=c.style[0] if c.style else None,
                        weights=c.weights,
                        max_pixels=c.max_pixels,
                        max_memory=c.max_memory,
                    ).rows[0]
                    record["eval"] = {k: v for k, v in row.items() if k != "image"}
                    records.write_json(path, record)
        except JaxcombineError as e:
            report.unscored[job.id] = str(e)
            print(f"jaxcombine: job {job.id} not scored: {e}", file=sys.stderr)
            continue
        rows.append({"id": job.id, **record["eval"]})
    if rows:
        records.atomic_write_text(
            out / "eval.csv",
            outputs.csv_text({k: np.asarray([r.get(k) for r in rows]) for k in rows[0]}),
        )


COORDINATOR_TIMEOUT_S = 60


def _read_record(path: Path) -> dict[str, Any]:
    """A job's JSON record; one line if it is not a readable JSON object."""
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise JaxcombineError(f"its record {path} is not readable JSON ({one_line(e)})") from None
    if not isinstance(record, dict):
        raise JaxcombineError(f"its record {path} is not a JSON object")
    return record


def initialize_distributed(
    coordinator: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
    *,
    auto: bool = False,
    timeout_s: int = COORDINATOR_TIMEOUT_S,
) -> None:
    """``jax.distributed.initialize`` from flags, or (``auto``) from the cluster's environment.

    A coordinator that cannot be reached within ``timeout_s`` is a one-line error
    (JAX itself would wait its own timeout, then abort the process).
    """
    if coordinator is None and num_processes is None and process_id is None and not auto:
        return
    if coordinator and process_id:  # process 0 hosts the coordinator; the others dial it
        _wait_for(coordinator, timeout_s)
    try:
        jax.distributed.initialize(
            coordinator, num_processes, process_id, initialization_timeout=timeout_s
        )
    except (RuntimeError, ValueError) as e:
        raise JaxcombineError(f"could not initialise jax.distributed: {' '.join(str(e).split())}")


def _wait_for(address: str, timeout_s: float) -> None:
    """Until ``HOST:PORT`` accepts a TCP connection; a one-line error after ``timeout_s``."""
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise JaxcombineError(f"coordinator must be HOST:PORT, got {address!r}")
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with socket.create_connection((host.strip("[]"), int(port)), timeout=2):
                return
        except OSError as e:
            if time.monotonic() > deadline:
                raise JaxcombineError(
                    f"coordinator {address} unreachable after {timeout_s:g} s "
                    f"({e.strerror or e}); is process 0 running?"
                ) from None
            time.sleep(0.5)


def _barrier(name: str, timeout_s: int = 7 * 24 * 3600) -> None:
    """Wait for every process (through the jax.distributed coordinator, when there is one)."""
    from jax._src import distributed  # the coordinator client has no public barrier

    client = getattr(distributed.global_state, "client", None)
    if client is not None:
        client.wait_at_barrier(name, timeout_s * 1000)


class _HeldPrograms:
    """Which group's programs this batch process holds, and how many it has released.

    Each group compiles programs of its own (one per scale), and a process that kept
    them all would grow with every shape of a manifest. A group whose key
    (:func:`_groups`) differs from the last one's releases the programs before it
    (:func:`memory.release_programs`); one of the same key (the next window's jobs of that
    shape, ``--no-batching``'s one job a window) runs them again. Measured on the 2-core
    AMD EPYC (docs/benchmarks.md, "A batch's groups"): 12 jobs of 12 sizes peaked at
    2.13 GB kept and 1.63 GB released, against 1.42 GB for the largest alone. What each
    release still leaves is counted in every later group's memory check
    (``Plan.earlier_groups``). The last programs stay, so from Python a second batch of
    the same shapes compiles nothing."""

    def __init__(self) -> None:
        self.key: Any = None
        self.released = 0

    def _replaces(self, key: Any) -> bool:
        """Whether a group of ``key`` needs other programs than those held."""
        return self.key is not None and key != self.key

    def earlier(self, key: Any) -> int:
        """Releases this process will have made once a group of ``key`` starts."""
        return self.released + self._replaces(key)

    def hold(self, key: Any) -> None:
        """Before a group of ``key`` runs: the programs of another key released."""
        if self._replaces(key):
            memory.release_programs()
            self.released += 1
        self.key = key


def _run_window(
    jobs: Sequence[Job], out: Path, report: BatchReport, bar, programs: _HeldPrograms, stop=None
) -> None:
    """Plan and prepare up to ``max_batch`` jobs (images, targets), then run them group by
    group, each after ``programs.hold`` (see :class:`_HeldPrograms`)."""
    prepared = []
    for j in jobs:
        try:
            prep = prepare(plan_lib.make(j.config, recipe=j.recipe))
        except Exception as e:  # e.g. a string where a number belongs: this job only
            _fail(report, bar, [j], _reason(e))
            continue
        prepared.append((j, prep))
    for key, group in (
        (key, part) for key, g in _groups(prepared) for part in _fitting(g, programs.earlier(key))
    ):
        if report.interrupted:
            break
        programs.hold(key)
        try:
            runner.execute(
                _Group(group, report, bar, programs.released), out=out, exclusive=False, stop=stop
            )
        except Exception as e:  # one broken group must not stop the others
            _fail(report, bar, [j for j, _ in group], _reason(e))
        finally:
            report.groups += 1


def _fitting(group: list, earlier: int) -> list[list]:
    """``group`` cut into runs whose estimated memory fits (each job alone was checked when
    it was planned) after ``earlier`` groups: halved until the plan for one run passes."""
    plan = group[0][1].plan
    size = len(group)
    while size > 1:
        try:
            plan.with_starts(size, per_start_targets=True, earlier_groups=earlier)
            break
        except JaxcombineError:
            size = (size + 1) // 2
    return [group[i : i + size] for i in range(0, len(group), size)]


def _groups(prepared: list) -> Iterable[tuple[Any, list]]:
    """(key, jobs) for the jobs that can share one compiled program: same structure
    (:class:`engine.Problem`), output size, targets' shapes (masks, style sizes), weights
    and loop. Learning rates, step counts and loss weights may differ: they are
    per-start arrays of one program. Coarse-to-fine jobs (and jobs with a final pass)
    also share their scales, steps per scale, final pass, style scales, how scales hand
    on and each stage's loss and learning-rate factors (a single-stage job's key has its
    steps apart)."""
    groups: dict[Any, list] = {}
    for j, prep in prepared:
        c = prep.plan.config  # settled: the recipe's suggested ladder included
        shapes = (
            jax.tree.structure(prep.targets),  # masks, styles' sizes (style_scale)
            tuple(a.shape for a in jax.tree.leaves(prep.targets)),
        )
        ladder = (
            (
                c.sizes(),
                c.steps_per_scale(),
                c.scale_from,
                c.scale_detail,
                c.scale_optimizer,
                c.style_scales(),
                c.final_steps,
            )
            if c.multi_stage
            else ()
        )
        key = (
            prep.problem,
            prep.x0.shape[1:],
            shapes,
            c.weights,
            c.chunk,
            prep.plan.loop,
            c.snapshot_every,
            ladder,
            # each stage's loss factors and learning-rate factor are the group's
            # (Stage.loss_factors, Stage.lr_factor): the content factors, their inverse on
            # a term with inverse_content_weight, and the scale's rate
            tuple(prep.plan.loss_factors(s) for s in prep.plan.scales),
            tuple(s.lr_factor for s in prep.plan.scales),
        )
        groups.setdefault(key, []).append((j, prep))
    return list(groups.items())


class _Group(runner.Hooks):
    """A group's hooks: its jobs as the starts of one vmapped program, each with its own
    targets (stacked along the starts), snapshots per job, then each job written alone."""

    def __init__(self, group: list, report: BatchReport, bar, earlier_groups: int):
        self.group, self.report, self.bar = group, report, bar
        self.earlier_groups = earlier_groups  # released before it in this process
        self.jobs, self.preps = [j for j, _ in group], [p for _, p in group]
        self.t0 = time.perf_counter()

    def make_plan(self):  # checked again now: after the groups this process ran before
        return self.preps[0].plan.with_starts(
            len(self.group), per_start_targets=True, earlier_groups=self.earlier_groups
        )

    def prepare(self, plan):
        return self.preps[0]  # every job was prepared before the groups were formed

    def new_state(self, x0, steps):
        preps, config = self.preps, self.prep.config
        return self.prep.initial_state(
            x0,
            steps=steps,
            loss_weights=np.stack([p.loss_weights for p in preps]),
            lr=[p.config.learning_rate() for p in preps] if config.learning_rate() else None,
            seed=[p.config.seed for p in preps],
        )

    def stages(self):
        preps = self.preps
        n_scales = len(self.plan.scales)
        self.per_scale = [[p.plan.scales[i].steps for p in preps] for i in range(n_scales)]

        def stacked_targets(i):  # each job its own images: targets lead with the jobs axis
            return jax.tree.map(
                lambda *t: jnp.stack(t), *[p.at_scale(p.plan.scales[i]).targets for p in preps]
            )

        def stacked_detail(i):  # each job its own content's, once for each of its starts
            return np.concatenate(
                [
                    np.repeat(
                        p.content_detail(p.plan.scales[i - 1], p.plan.scales[i]), len(p.x0), 0
                    )
                    for p in preps
                ]
            )

        return [
            dataclasses.replace(
                stage,
                targets=functools.partial(stacked_targets, i),
                detail=None if stage.detail is None else functools.partial(stacked_detail, i),
            )
            for i, stage in enumerate(self.prep.stages(self.per_scale))
        ]

    def begin(self, stages):
        preps = self.preps
        self.longest = max(sum(max(steps) for steps in self.per_scale), 1)
        self.done_steps = 0
        self.writer = outputs.SnapshotWriter(  # each job its own content's colours
            self.out,
            [j.id for j in self.jobs],
            self.prep.config.snapshot_every,
            lambda px: [p.finish(x) for p, x in zip(preps, px)],
        )
        return self.new_state(np.concatenate([p.x0 for p in preps]), self.per_scale[0]), 0

    def on_chunk(self, step, comps, fetch):
        self.bar.update(len(self.jobs) * (step - self.done_steps) / self.longest)
        self.done_steps = step
        self.writer(step, fetch)

    def end(self, outcome: driver.Outcome, stopped) -> None:
        if outcome.interrupted:
            self.report.interrupted = True
            return
        wall = time.perf_counter() - self.t0
        for j, (job, prep) in enumerate(self.group):
            try:  # a failure belongs to its job alone; every other result is written
                write_job(
                    self.out,
                    job,
                    prep,
                    outcome,
                    j,
                    wall_s=wall,
                    group_size=len(self.group),
                )
            except Exception as e:  # noqa: BLE001 (disk full, permissions, ... for this job)
                _fail(self.report, None, [job], _reason(e))
                continue
            self.report.done.append(job.id)
        self.bar.update(len(self.jobs) * (1 - self.done_steps / self.longest))


def write_job(
    out: Path,
    job: Job,
    prep: Prepared,
    outcome: driver.Outcome,
    j: int,
    **timings: Any,
) -> None:
    """Image, history, then the JSON record last: its presence marks the job finished."""
    images.write(out / f"{job.id}.png", prep.finish(outcome.pixels[j]))
    records.atomic_write_text(out / f"{job.id}.history.csv", outputs.history_csv(outcome, j))
    final = float(outcome.final_totals()[j])
    last = int(outcome.step[j]) - outcome.start_step - 1
    records.write_json(
        out / f"{job.id}.json",
        records.record(
            prep.plan.config,  # settled: the recipe's suggestions applied under the job's
            weights=prep.weights,
            id=job.id,
            init=dataclasses.asdict(prep.inits[0]),
            problem=prep.problem,
            recipe=prep.recipe.to_dict(),
            steps_done=int(outcome.step[j]) - outcome.start_step,
            final_loss=final if last >= 0 else None,
            final_components=dict(zip(outcome.labels, outcome.history[last, j].tolist()))
            if last >= 0
            else None,
            diverged_at_step=outcome.diverged_at[j],
            image=f"{job.id}.png",
            scales=outputs.scales_record(prep.plan.config, outcome, prep.plan),
            from_recipe=outputs.from_recipe_record(prep.plan),
            history=f"{job.id}.history.csv",
            compile_s=round(outcome.compile_s, 3),
            run_s=round(outcome.run_s, 3),
            **{k: round(v, 3) if isinstance(v, float) else v for k, v in timings.items()},
        ),
    )


def _reason(error: Exception) -> str:
    return str(error) if isinstance(error, JaxcombineError) else f"{type(error).__name__}: {error}"


def _fail(report: BatchReport, bar, jobs: Sequence[Job], reason: str) -> None:
    line = " ".join(str(reason).split())
    for j in jobs:
        report.failed[j.id] = line
        print(f"jaxcombine: job {j.id} failed: {line}", file=sys.stderr)
    if bar is not None:
        bar.update(len(jobs))


def merge_reports(out: Path, count: int, timeout_s: float = 7 * 24 * 3600) -> BatchReport:
    """Process 0: wait for every ``batch-report.<i>.json``, write their union as ``batch-report.json``.

    Without a coordinator (explicit ``process_index``/``count``) the wait is a poll
    for the files, so clear old per-process reports before such a rerun.
    """
    paths = [out / f"batch-report.{i}.json" for i in range(count)]
    deadline = time.monotonic() + timeout_s
    while not all(p.exists() for p in paths):
        if time.monotonic() > deadline:
            raise JaxcombineError(f"timed out waiting for {', '.join(str(p) for p in paths)}")
        time.sleep(1.0)
    merged = BatchReport()
    for p in paths:
        d = json.loads(p.read_text())
        merged.merge(
            BatchReport(d["done"], d["skipped"], d["failed"], d["interrupted"], d["wall_s"])
        )
    merged.done.sort()
    merged.skipped.sort()
    records.write_json(out / REPORT, records.record(None, processes=count, **merged.to_dict()))
    return merged
