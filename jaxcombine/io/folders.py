"""Output folders that several writers share: checked first, locked per job, cleaned safely.

Unattended runs write into folders that other processes (a second ``batch`` on
the same manifest, the other hosts of a cluster) write into too, and that a
``kill -9`` may leave half-written. Three rules keep that safe:

* :func:`check_output_folder` runs before any image is read or program
  compiled: the folder must exist or be creatable, be a folder and be
  writable, and the message names the path the user gave.
* Every temporary file has a lock beside it (``<temp name>.lock``), held by
  its writer from before the file exists until it is renamed into place. The
  operating system drops the lock when the writer dies, however it dies, so
  :func:`remove_stale_temps` deletes exactly the temporary files whose writer
  is gone and never those of a live one.
* :func:`job_lock` lets one process at a time run a job; the others skip it.

Locks are ``filelock`` (``flock``) locks, which local file systems and NFSv4 honour.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import tempfile
from pathlib import Path
from typing import Iterator

import filelock

from jaxcombine.errors import JaxcombineError

TMP_PREFIX = ".jaxcombine-tmp-"
LOCKS = ".jaxcombine-locks"


def check_output_folder(path: str | os.PathLike) -> Path:
    """``path`` as a folder that exists (created if needed) and that this process can write.

    Raises a one-line :class:`JaxcombineError` naming ``path`` otherwise.
    """
    given = Path(path)
    if given.exists() and not given.is_dir():
        raise JaxcombineError(f"output folder {given} is a file, not a folder")
    try:
        given.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=given, prefix=TMP_PREFIX + "probe-"):
            pass
    except OSError as e:
        raise JaxcombineError(
            f"cannot write to output folder {given}: {e.strerror or e.__class__.__name__}"
        ) from None
    return given


def check_output_files(*paths: str | os.PathLike) -> None:
    """Before any work: each of ``paths`` can be written (its folder as
    :func:`check_output_folder` checks it; the path itself not a folder). Raises a one-line :class:`JaxcombineError` naming the path given."""
    for path in map(Path, paths):
        if path.is_dir():
            raise JaxcombineError(f"cannot write {path}: it is a folder")
        try:
            check_output_folder(path.parent)
        except JaxcombineError as e:
            raise JaxcombineError(f"cannot write {path}: {e}") from None


def check_table_path(out: str | os.PathLike) -> None:
    """Before any work: ``out`` names a score table (``.csv``) that can be written, with
    its record (the same name, ``.json``) beside it. The rule of ``eval`` and its judge,
    which the command line also checks before JAX starts."""
    table = Path(out)
    if table.suffix.lower() != ".csv":
        raise JaxcombineError(f"the table must be a .csv file, got {out}")
    check_output_files(table, table.with_suffix(".json"))


@contextlib.contextmanager
def guarded_temp_prefix(directory: Path) -> Iterator[str]:
    """A fresh prefix for one temporary file in ``directory``, locked while the block runs.

    The lock (``<prefix>lock``) is taken before the caller creates its file and
    removed after it renamed it, so a cleaner sees a temporary file only with a
    held lock beside it, or a dead writer's.
    """
    prefix = f"{TMP_PREFIX}{secrets.token_hex(8)}."
    path = Path(directory) / f"{prefix}lock"
    lock = filelock.FileLock(path, timeout=0)
    lock.acquire()
    try:
        yield prefix
    finally:
        lock.release()
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def _held(lock_path: Path) -> bool:
    """Whether a live process holds ``lock_path`` (a missing lock is nobody's)."""
    if not lock_path.exists():
        return False
    try:
        with filelock.FileLock(lock_path, timeout=0):
            return False
    except filelock.Timeout:
        return True


def remove_stale_temps(out: str | os.PathLike) -> list[Path]:
    """Delete the temporary files (in ``out`` and ``out/snapshots``) whose writer is gone,
    and their locks. Files of live writers, this process's included, are left alone."""
    removed = []
    for directory in (Path(out), Path(out) / "snapshots"):
        if not directory.is_dir():
            continue
        for temp in sorted(directory.glob(TMP_PREFIX + "*")):
            prefix = TMP_PREFIX + temp.name[len(TMP_PREFIX) :].split(".")[0] + "."
            lock = directory / f"{prefix}lock"
            if temp == lock or _held(lock):
                continue
            with contextlib.suppress(FileNotFoundError):
                temp.unlink()
            removed.append(temp)
        for lock in directory.glob(TMP_PREFIX + "*.lock"):  # locks of dead writers
            if not _held(lock):
                with contextlib.suppress(FileNotFoundError):
                    lock.unlink()
    return removed


@contextlib.contextmanager
def job_lock(out: Path, job_id: str) -> Iterator[bool]:
    """Try to take job ``job_id`` in ``out`` without waiting; yields whether this process has it.

    The lock is released when the block ends, or by the operating system when
    the process dies.
    """
    lock_dir = Path(out) / LOCKS
    lock_dir.mkdir(parents=True, exist_ok=True)
    lock = filelock.FileLock(lock_dir / f"{job_id}.lock", timeout=0)
    try:
        lock.acquire()
    except filelock.Timeout:
        yield False
        return
    try:
        yield True
    finally:
        lock.release()
