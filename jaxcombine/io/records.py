"""Atomic file writes and the JSON record that sits beside every output.

Every file the tool produces goes through :func:`atomic_write`: it is written
to a temporary file in the same folder, flushed, fsynced and renamed over the
destination, so a reader (or a rerun after ``kill -9``) sees either the old
file, the whole new file, or nothing — never half a file.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as _dt
import hashlib
import json
import math
import os
import platform
import tempfile
from pathlib import Path
from typing import Any, Iterator, Mapping

from jaxcombine._version import __version__
from jaxcombine.io import folders

TMP_PREFIX = folders.TMP_PREFIX


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "wb") -> Iterator[Any]:
    """Open a temporary file beside ``path``; rename it over ``path`` on success."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # the temp file's lock tells a cleaner (another process) that its writer still runs
    with folders.guarded_temp_prefix(path.parent) as prefix:
        fd, tmp = tempfile.mkstemp(prefix=prefix, suffix=path.suffix, dir=path.parent)
        try:
            with os.fdopen(fd, mode) as f:
                yield f
                f.flush()
                os.fchmod(f.fileno(), 0o666 & ~_umask())  # mkstemp makes 0600; the usual mode
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    with atomic_write(path, "wb") as f:
        f.write(data)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_write(path, "w") as f:
        f.write(text)


def _jsonable(obj: Any) -> Any:
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {k: _jsonable(v) for k, v in dataclasses.asdict(obj).items()}
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, tuple) and hasattr(obj, "_fields") and any(callable(v) for v in obj):
        return repr(obj)  # a NamedTuple of functions (optax transformations)
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    if hasattr(obj, "tolist"):  # numpy / jax scalars and arrays
        return _jsonable(obj.tolist())
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None  # strict JSON has no NaN or Infinity
    if obj is None or isinstance(obj, (str, int, bool)):
        return obj
    return repr(obj)  # e.g. a user's optax transformation: recorded, not reloadable


def to_json(obj: Any) -> Any:
    """``obj`` as the JSON-ready value a record holds (dataclasses as dicts, NaN as None)."""
    return _jsonable(obj)


def file_sha256(path: str | os.PathLike) -> str:
    """Hex sha256 of a file's bytes, read in blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def json_text(obj: Any) -> str:
    """Strict JSON (non-finite numbers become ``null``), so browsers, Node and jq read it."""
    return json.dumps(_jsonable(obj), indent=2, allow_nan=False) + "\n"


def write_json(path: str | os.PathLike, obj: Any) -> None:
    """``obj`` as strict JSON (:func:`json_text`), written atomically."""
    atomic_write_text(path, json_text(obj))


def atomic_write_all(files: Mapping[str | os.PathLike, bytes | str]) -> None:
    """Write every file of ``files`` or none (an output and its JSON record, say): each is
    written to a guarded temporary file and fsynced, and only when all are complete are
    they renamed into place. A failure (a full disk) leaves none of them changed, and its
    error names the user's path, not a temporary file."""
    temps: list[str] = []
    with contextlib.ExitStack() as locks:
        try:
            for name, data in files.items():
                path = Path(name)
                try:
                    path.parent.mkdir(parents=True, exist_ok=True)
                    prefix = locks.enter_context(folders.guarded_temp_prefix(path.parent))
                    fd, tmp = tempfile.mkstemp(prefix=prefix, suffix=path.suffix, dir=path.parent)
                    temps.append(tmp)
                    with os.fdopen(fd, "wb") as f:
                        f.write(data.encode() if isinstance(data, str) else data)
                        f.flush()
                        os.fchmod(f.fileno(), 0o666 & ~_umask())
                        os.fsync(f.fileno())
                except OSError as e:
                    raise OSError(e.errno, e.strerror or str(e), str(path)) from None
            for tmp, name in zip(temps, files):
                os.replace(tmp, name)
        except BaseException:
            for tmp in temps:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(tmp)
            raise


def weights_block(weights: Any) -> dict[str, Any] | None:
    """What a record says of the weights: their fingerprint and their record's fields."""
    if weights is None or isinstance(weights, dict):
        return weights
    return {"fingerprint": weights.fingerprint, **weights.info}


def environment() -> dict[str, Any]:
    """Versions, backend and devices: what a reader needs to reproduce a figure."""
    import jax

    devices = jax.devices()
    return {
        "jaxcombine": __version__,
        "jax": jax.__version__,
        "python": platform.python_version(),
        "backend": jax.default_backend(),
        "devices": [str(d.device_kind) for d in devices],
        "process_index": jax.process_index(),
        "pid": os.getpid(),
        "process_count": jax.process_count(),
        "host": platform.node(),
        "machine": platform.machine(),
    }


def record(config: Any, *, weights: Any = None, **extra: Any) -> dict[str, Any]:
    """The JSON record written next to every output (run, study, batch, eval, features,
    bench): config, weights, environment, then ``extra``. ``weights``: the loaded weights
    (:class:`~jaxcombine.networks.store.Weights`; their block, fingerprint and source,
    is written here and nowhere else), or a block already made, or None."""
    out = {
        "config": _jsonable(config),
        "weights": weights_block(weights),
        "environment": environment(),
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }
    out.update(_jsonable(extra))
    return out
