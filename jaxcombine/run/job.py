"""One job end to end: images and weights in, optimised images and records out.

``combine(...)`` is the Python face of ``jaxcombine run``::

    import jaxcombine
    result = jaxcombine.combine(init="content,style,noise", steps=200, size=256)
    result.images["noise-s0"]          # uint8 (H, W, 3)
    result.history                     # per-step loss components, per start

With ``out=...`` every image, history and JSON record is written atomically.
"""

from __future__ import annotations

import dataclasses
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from jaxcombine.engine import driver
from jaxcombine.io import images, records
from jaxcombine.options.config import RunConfig
from jaxcombine.run import outputs, runner
from jaxcombine.run.prepare import Prepared


@dataclasses.dataclass
class Result:
    """A finished (or interrupted) run: final images, histories, and where they were written."""

    config: RunConfig
    labels: tuple[str, ...]
    outcome: driver.Outcome
    weights_fingerprint: str
    wall_s: float
    out: Path | None = None
    stop_requested: bool = False  # Ctrl-C or SIGTERM came, perhaps after the last step
    finish: Any = None  # optimised pixels → written images (Prepared.finish); None: as they are

    @property
    def interrupted(self) -> bool:
        return self.outcome.interrupted or self.stop_requested

    @property
    def diverged(self) -> list[str]:
        """Labels of the starts whose loss became non-finite (their last good image is kept)."""
        return [lab for lab, ok in zip(self.labels, self.outcome.alive) if not ok]

    @property
    def images(self) -> dict[str, np.ndarray]:
        """The final images, as written (``outcome.pixels`` holds the optimised pixels)."""
        pixels = self.outcome.pixels if self.finish is None else self.finish(self.outcome.pixels)
        return {lab: images.to_uint8(px) for lab, px in zip(self.labels, pixels)}

    @property
    def history(self) -> np.ndarray:
        return self.outcome.history

    def final_losses(self) -> dict[str, float]:
        finals = self.outcome.final_totals()
        return {lab: float(finals[j]) for j, lab in enumerate(self.labels)}


class _Run(runner.Hooks):
    """``jaxcombine run``'s hooks: snapshots while it runs; images, histories, records after."""

    def __init__(self, config: RunConfig, t0: float):
        self.config, self.t0 = config, t0

    def on_chunk(self, step, comps, fetch):
        self.writer(step, fetch)

    def begin(self, stages):
        self.writer = outputs.SnapshotWriter(
            self.out, self.prep.labels, self.config.snapshot_every, self.prep.finish
        )
        return super().begin(stages)

    def end(self, outcome: driver.Outcome, stopped) -> "Result":
        prep = self.prep
        result = Result(
            self.config,
            prep.labels,
            outcome,
            prep.weights.fingerprint,
            time.perf_counter() - self.t0,
            self.out,
            finish=prep.finish,
        )
        if self.out is not None:
            write_outputs(result, prep)
        result.stop_requested = stopped()
        return result


def combine(
    config: RunConfig | None = None,
    *,
    out: str | os.PathLike | None = None,
    progress: bool = False,
    **options: Any,
) -> Result:
    """Run one job. Options are :class:`RunConfig` fields; ``out`` writes files there.

    Ctrl-C or SIGTERM stops after the current chunk; the result then has
    ``outcome.interrupted`` and is written like a finished one.
    """
    config = (config or RunConfig()).replace(**options)
    return runner.execute(
        _Run(config, time.perf_counter()),
        out=out,
        snapshot_every=config.snapshot_every,
        progress=progress,
    )


# --------------------------------------------------------------------------- outputs


def write_outputs(result: Result, prep: Prepared) -> None:
    """Per start: image, history CSV and JSON record; plus ``run.json`` for the whole run."""
    out = result.out
    assert out is not None
    oc = result.outcome
    common = dict(
        problem=prep.problem,
        recipe=prep.recipe.to_dict(),
        steps_done=oc.steps_done,
        interrupted=oc.interrupted,
        loop=oc.loop,
        shard=oc.shard,
        scales=outputs.scales_record(result.config, oc, prep.plan),
        from_recipe=outputs.from_recipe_record(prep.plan),
        compile_s=round(oc.compile_s, 3),
        run_s=round(oc.run_s, 3),
        wall_s=round(result.wall_s, 3),
        steps_per_s=round(oc.steps_done / oc.run_s, 4) if oc.run_s else None,
    )
    finals = result.final_losses()
    finished = prep.finish(oc.pixels)
    for j, init in enumerate(prep.inits):
        lab = init.label
        images.write(out / f"{lab}.png", finished[j])
        records.atomic_write_text(out / f"{lab}.history.csv", outputs.history_csv(oc, j))
        records.write_json(
            out / f"{lab}.json",
            records.record(
                result.config,
                weights=prep.weights,
                init=dataclasses.asdict(init),
                final_loss=finals[lab],
                diverged_at_step=oc.diverged_at[j],
                image=f"{lab}.png",
                history=f"{lab}.history.csv",
                **common,
            ),
        )
    records.write_json(
        out / "run.json",
        records.record(
            result.config,
            weights=prep.weights,
            inits=list(prep.labels),
            final_loss=finals,
            diverged_at_step=dict(zip(prep.labels, oc.diverged_at)),
            **common,
        ),
    )
