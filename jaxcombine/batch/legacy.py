"""Folders written by jaxcombine 0.1.0, whose job ids hashed the files' paths.

Ids now hash what a job computes from, not where its files lie
(:func:`~jaxcombine.batch.manifest.job_id`), so a moved folder skips its finished jobs.
The change renames every job, and a folder written before it would run all its jobs
again. Instead, a rerun *adopts* each finished job it finds under the job's old id
(:func:`~jaxcombine.batch.manifest.legacy_job_id`, computed where the files lie now):
its image, history and snapshots are renamed to the new id, then its record is written
under the new id, naming the old one (``adopted_from``), and the old record removed.

Every step is a rename or an atomic write, and the new record comes last: a process
killed midway leaves the old record in place, and the next rerun finishes the adoption.
It runs under the new id's job lock, so two processes never adopt (or run) one job at
once. A legacy record whose image is gone, that is not readable JSON, or that names
files other than its own id's, is left alone: that job runs again.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Sequence

from jaxcombine.batch.manifest import Job, legacy_job_id
from jaxcombine.io import folders, records
from jaxcombine.run import outputs

ARTEFACTS = (("image", ".png"), ("history", ".history.csv"))  # record key → file suffix


def adopt_all(out: Path, jobs: Sequence[Job]) -> list[str]:
    """Adopt every job of ``jobs`` that ``out`` holds finished under its legacy id; the ids
    adopted. 0.1.0's id is hashed only for a job not finished under its id whose readable
    part (the same in both ids) names a record in ``out``: a new folder hashes nothing."""
    names = {p.stem.rsplit("-", 1)[0] for p in out.glob("*.json")}
    return [j.id for j in jobs if j.id.rsplit("-", 1)[0] in names and adopt(out, j)]


def adopt(out: Path, job: Job) -> bool:
    """Adopt ``job``'s finished result in ``out`` from its legacy id; whether it did (not
    where there is none, where the job is finished under its id already, or where another
    process holds the job: it is running or adopting it)."""
    new = out / f"{job.id}.json"
    if new.exists():
        return False
    legacy_id = legacy_job_id(job.config, job.recipe)
    old = out / f"{legacy_id}.json"
    if legacy_id == job.id or not old.exists():
        return False
    with folders.job_lock(out, job.id) as mine:
        if not mine or new.exists() or not old.exists():
            return False
        try:
            record = json.loads(old.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return False  # not a record this can read: the job runs again
        for key, suffix in ARTEFACTS:
            if not isinstance(record, dict) or record.get(key) != f"{legacy_id}{suffix}":
                return False  # not as 0.1.0 wrote it: nothing outside its own names moves
            source, target = out / record[key], out / f"{job.id}{suffix}"
            if source.exists():
                os.replace(source, target)
            elif not target.exists():  # neither: the result is lost, so run the job again
                return False
            record[key] = target.name
        for snap in sorted((out / "snapshots").glob(f"{legacy_id}-step*.png")):
            step = int(snap.stem.rsplit("-step", 1)[1])
            os.replace(snap, outputs.snapshot_path(out, job.id, step))
        records.write_json(new, {**record, "id": job.id, "adopted_from": legacy_id})
        old.unlink()
    return True
