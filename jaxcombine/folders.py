"""Output folders that several writers share: checked first, locked per job, cleaned safely.

Unattended runs write into folders that other processes (a second ``batch`` on
the same manifest, the other hosts of a cluster) write into too, and that a
``kill -9`` may leave half-written. Three rules keep that safe:

* :func:`check_output_folder` runs before any image is read or program
  compiled: the folder must exist or be creatable, be a folder and be
  writable, and the message names the path the user gave.
* Every writing process holds an exclusive lock on
  ``.jaxcombine-writers/<token>.lock`` in each folder it writes, for as long as
  it lives, and names its temporary files after that token. The operating
  system drops the lock when the process dies, however it dies, so
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
WRITERS = ".jaxcombine-writers"
LOCKS = ".jaxcombine-locks"

# This process's writer token: pid and a random part (a pid alone is reused).
_TOKEN = f"{os.getpid()}.{secrets.token_hex(4)}"
_held: dict[Path, filelock.BaseFileLock] = {}


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
        raise JaxcombineError(f"cannot write to output folder {given}: "
                              f"{e.strerror or e.__class__.__name__}") from None
    return given


def temp_prefix(directory: Path) -> str:
    """The prefix of this process's temporary files in ``directory`` (registering it there)."""
    _register(directory)
    return f"{TMP_PREFIX}{_TOKEN}."


def _register(directory: Path) -> None:
    """Hold this process's writer lock in ``directory`` until the process ends."""
    directory = Path(directory).resolve()
    if directory in _held:
        return
    lock_dir = directory / WRITERS
    lock_dir.mkdir(parents=True, exist_ok=True)
    lock = filelock.FileLock(lock_dir / f"{_TOKEN}.lock", timeout=0)
    lock.acquire()
    _held[directory] = lock


def _writer_of(temp: Path) -> str | None:
    """The writer token in a temporary file's name (None for names from older versions)."""
    parts = temp.name[len(TMP_PREFIX):].split(".")
    return ".".join(parts[:2]) if len(parts) >= 3 and parts[0].isdigit() else None


def writer_alive(directory: Path, token: str) -> bool:
    """Whether the process that registered ``token`` in ``directory`` still runs."""
    if token == _TOKEN:
        return True
    path = Path(directory) / WRITERS / f"{token}.lock"
    if not path.exists():
        return False
    try:
        with filelock.FileLock(path, timeout=0):
            return False
    except filelock.Timeout:
        return True


def remove_stale_temps(out: str | os.PathLike) -> list[Path]:
    """Delete the temporary files (in ``out`` and ``out/snapshots``) whose writer is gone.

    Files of live writers, this process included, are left alone.
    """
    removed = []
    for directory in (Path(out), Path(out) / "snapshots"):
        if not directory.is_dir():
            continue
        alive: dict[str, bool] = {}
        for temp in directory.glob(TMP_PREFIX + "*"):
            token = _writer_of(temp)
            if token is not None:
                if token not in alive:
                    alive[token] = writer_alive(directory, token)
                if alive[token]:
                    continue
            with contextlib.suppress(FileNotFoundError):
                temp.unlink()
            removed.append(temp)
        for lock in (directory / WRITERS).glob("*.lock") if (directory / WRITERS).is_dir() else ():
            if not writer_alive(directory, lock.stem):
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
