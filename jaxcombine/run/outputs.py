"""What the drivers (job, study, batch) write and show around the engine.

Chunk size, snapshot images, per-start history CSVs and the progress bar: the
same for a single run, a study and a batch, so they live here once.
"""

from __future__ import annotations

import csv
import io
import sys
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from jaxcombine.engine import driver
from jaxcombine.io import images


def chunk_size(chunk: int, snapshot_every: int) -> int:
    """Steps per compiled chunk: the largest divisor of ``snapshot_every`` not above
    ``chunk``, so every snapshot ends a chunk (``chunk`` itself when there are none)."""
    if not snapshot_every:
        return chunk
    return max(d for d in range(1, min(chunk, snapshot_every) + 1) if snapshot_every % d == 0)


def snapshot_path(out: Path, label: str, step: int) -> Path:
    """Where the image of start ``label`` after ``step`` steps is kept."""
    return out / "snapshots" / f"{label}-step{step:06d}.png"


def csv_text(columns: dict[str, np.ndarray]) -> str:
    """Tidy columns (name → equal-length array) as CSV; floats with 6 significant digits."""
    buf = io.StringIO()
    wr = csv.writer(buf, lineterminator="\n")
    wr.writerow(columns)
    fmt = [
        (lambda v: f"{v:.6g}") if np.asarray(col).dtype.kind == "f" else str
        for col in columns.values()
    ]
    for row in zip(*columns.values()):
        wr.writerow([f(v) for f, v in zip(fmt, row)])
    return buf.getvalue()


def history_csv(outcome: driver.Outcome, j: int) -> str:
    """Start ``j``'s history up to its own last step: step, the size optimised at (longest
    side, px: coarse-to-fine runs change it), weighted total, then each unweighted
    component (``nan`` where the loss was not finite)."""
    buf = io.StringIO()
    wr = csv.writer(buf)
    wr.writerow(["step", "size", "total", *outcome.labels])
    totals = outcome.totals
    sizes = row_sizes(outcome)
    rows = (
        outcome.history.shape[0]
        if outcome.step is None
        else max(0, int(outcome.step[j]) - outcome.start_step)
    )
    for i in range(min(rows, outcome.history.shape[0])):
        wr.writerow(
            [
                outcome.start_step + i + 1,
                sizes[i],
                f"{totals[i, j]:.6g}",
                *(f"{v:.6g}" for v in outcome.history[i, j]),
            ]
        )
    return buf.getvalue()


def row_sizes(outcome: driver.Outcome) -> np.ndarray:
    """(rows,) the longest side, px, of the image each history row was optimised at."""
    if outcome.row_stage is None:
        return np.full(len(outcome.history), max(outcome.pixels.shape[1:3]), int)
    return np.asarray([max(hw) for hw in outcome.stage_sizes], int)[outcome.row_stage]


def from_recipe_record(plan) -> dict:
    """The run options whose values came from the recipe's ``[run]`` table, with them."""
    return {name: getattr(plan.config, name) for name in plan.from_recipe}


def scales_record(config, outcome: driver.Outcome, plan=None) -> dict:
    """What a JSON record says of the scales: sizes (longest side and (height, width)),
    steps at each, how one scale was handed to the next, the content weight factor, the
    final pass's steps and (given the run's ``plan``) the image's pyramid levels at each
    stage."""
    shapes = outcome.stage_sizes or (tuple(outcome.pixels.shape[1:3]),)
    out = {
        "sizes": list(config.sizes()),
        "shapes": [list(s) for s in shapes],
        "steps": list(config.steps_per_scale()),
        "content_weight_factors": list(config.content_factors()),
        "lr_factors": list(config.lr_factors()),
        "final_steps": config.final_steps or 0,
        "final_lr_factor": config.final_lr_factor,
        "scale_from": config.scale_from,
        "scale_detail": config.scale_detail,
        "scale_optimizer": config.scale_optimizer,
    }
    if plan is not None:
        out["pyramid_levels"] = [s.levels for s in plan.scales]
    return out


class SnapshotWriter:
    """Writes ``snapshots/<label>-stepNNNNNN.png`` every ``every`` steps (0: never);
    ``finish`` maps the (k, H, W, 3) pixels to the images to write (colour preservation)."""

    def __init__(
        self,
        out: Path | None,
        labels: Sequence[str],
        every: int,
        finish: Callable[[np.ndarray], np.ndarray] | None = None,
    ):
        self.out, self.labels, self.every, self.finish = out, labels, every, finish

    def __call__(self, step: int, get_pixels) -> None:
        if self.out is None or not self.every or step % self.every:
            return
        pixels = get_pixels()
        for lab, px in zip(self.labels, pixels if self.finish is None else self.finish(pixels)):
            images.write(snapshot_path(self.out, lab, step), px)


class ProgressBar:
    """The progress bar of every command: one tqdm bar on stderr, over steps (run, study:
    one refresh per chunk, with the mean loss) or over jobs (batch: fractional updates, so
    the ETA moves); ``enabled=False``: it does nothing."""

    def __init__(
        self,
        total: float,
        *,
        unit: str = "step",
        desc: str | None = None,
        weights: np.ndarray | None = None,
        enabled: bool = True,
    ):
        self.weights = None if weights is None else np.asarray(weights)  # (k, components)
        self.done = 0.0
        self.bar = None
        if enabled:
            from tqdm import tqdm

            self.bar = tqdm(
                total=total,
                unit=unit,
                file=sys.stderr,
                dynamic_ncols=True,
                desc=desc,
                bar_format=None
                if unit == "step"
                else "{l_bar}{bar}| {n:.1f}/{total} [{elapsed}<{remaining}]",
            )

    def to_step(self, step: int, comps: np.ndarray) -> None:
        """Move to global ``step``, showing the mean weighted loss of ``comps``' last row."""
        if self.bar is not None and self.weights is not None:
            total = np.einsum("kc,kc->k", comps[-1], self.weights)
            if np.isfinite(total).any():
                self.bar.set_postfix_str(f"loss {np.nanmean(total):.4g}", refresh=False)
        self.update(step - self.done)

    def update(self, n: float) -> None:
        """Advance by ``n`` units."""
        self.done += n
        if self.bar is not None and n:
            self.bar.update(n)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
