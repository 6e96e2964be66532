"""Images in every mode Pillow reads, resizing, atomic writes, and one-line errors."""

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from jaxcombine.errors import JaxcombineError
from jaxcombine.io import images


@pytest.fixture
def photo():
    """The bundled public-domain photo as uint8 RGB, downscaled."""
    return np.asarray(Image.open(images.CONTENT).convert("RGB").resize((48, 32)))


def _save(tmp_path, img, name):
    path = tmp_path / name
    img.save(path)
    return path


def test_rgb_png_round_trips_exactly(tmp_path, photo):
    path = _save(tmp_path, Image.fromarray(photo), "a.png")
    rgb = images.read(path)
    assert rgb.dtype == np.float32 and rgb.shape == (32, 48, 3)
    np.testing.assert_array_equal(rgb, photo)


@pytest.mark.parametrize("mode", ["L", "1", "P", "CMYK", "I;16", "I", "F", "LA", "RGBA"])
def test_every_mode_becomes_rgb_0_255(tmp_path, photo, mode):
    base = Image.fromarray(photo)
    if mode == "I;16":
        grey = np.asarray(base.convert("L"), np.uint16) * 257  # full 16-bit range
        img = Image.frombytes("I;16", (grey.shape[1], grey.shape[0]), grey.astype("<u2").tobytes())
        name = "a.png"
    elif mode == "F":
        img = Image.fromarray(np.asarray(base.convert("L"), np.float32) / 255.0)
        name = "a.tiff"
    elif mode == "I":
        img = Image.fromarray(np.asarray(base.convert("L"), np.int32) * 257)
        name = "a.tiff"
    elif mode == "P":
        img = base.quantize(64)  # adaptive palette
        name = "a.png"
    else:
        img = base.convert(mode)
        name = "a.tiff" if mode == "CMYK" else "a.png"
    rgb = images.read(_save(tmp_path, img, name))
    assert rgb.shape == (32, 48, 3) and rgb.dtype == np.float32
    assert 0 <= rgb.min() and rgb.max() <= 255
    if mode in ("L", "I;16", "I", "F", "LA"):
        grey = np.asarray(base.convert("L"), np.float32)
        np.testing.assert_allclose(rgb[..., 0], grey, atol=1.0)
    if mode in ("P", "CMYK", "RGBA"):
        assert np.abs(rgb - photo).mean() < 12  # palette / CMYK round trips are lossy


def test_transparency_is_composited_on_white(tmp_path):
    rgba = np.zeros((8, 8, 4), np.uint8)
    rgba[..., 0] = 255  # red, fully transparent on the left half
    rgba[:, 4:, 3] = 255
    rgb = images.read(_save(tmp_path, Image.fromarray(rgba, "RGBA"), "t.png"))
    np.testing.assert_array_equal(rgb[:, :4], 255)
    assert (rgb[:, 4:] == np.array([255, 0, 0], np.float32)).all()


def test_exif_orientation_is_applied(tmp_path, photo):
    img = Image.fromarray(photo)
    exif = img.getexif()
    exif[0x0112] = 6  # rotate 90° clockwise on display
    path = tmp_path / "r.jpg"
    img.save(path, exif=exif)
    assert images.read(path).shape == (48, 32, 3)


def test_resize_by_longest_side_and_by_pixels(tmp_path, photo):
    path = _save(tmp_path, Image.fromarray(photo), "a.png")
    assert images.read(path, size=24).shape == (16, 24, 3)
    h, w, _ = images.read(path, pixels=384).shape
    assert abs(h * w - 384) < 30 and abs(w / h - 1.5) < 0.1


def test_fit_covers_and_centre_crops():
    """Three vertical bands (red, green, blue), 48 wide and 32 high, fitted to 20x20: scaled
    to 30x20 to cover the square, then the centre kept, so 5 columns of red, 10 of green, 5
    of blue (a crop from one side would lose a band); turned on its side, the crop takes
    rows from the top and the bottom alike."""
    bands = np.zeros((32, 48, 3), np.float32)
    for channel in range(3):
        bands[:, 16 * channel : 16 * (channel + 1), channel] = 255
    for image, axis in ((bands, 1), (bands.transpose(1, 0, 2), 0)):
        out = images.fit(image, 20, 20)
        assert out.shape == (20, 20, 3)
        profile = out.mean(axis=1 - axis)  # each column (or row): its mean colour
        widths = [int((profile[:, c] > 127.5).sum()) for c in range(3)]
        assert widths == [5, 10, 5], widths
        # away from the band edges (resampling blends a column or two) each band is pure
        for band, (lo, hi) in enumerate(((0, 3), (7, 13), (17, 20))):
            assert (profile[lo:hi, band] > 200).all() and (profile[lo:hi, band - 1] < 55).all()


def test_write_is_atomic_and_by_extension(tmp_path, photo):
    for ext in ("png", "jpg", "tiff"):
        path = images.write(tmp_path / f"o.{ext}", photo.astype(np.float32))
        assert Image.open(path).size == (48, 32)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".jaxcombine-tmp")]
    with pytest.raises(JaxcombineError, match="unknown image extension"):
        images.write(tmp_path / "o.xyz", photo)


@pytest.mark.parametrize(
    "case, message",
    [
        ("missing", "image not found"),
        ("folder", "got a folder"),
        ("text", "not an image"),
        ("truncated", "corrupt or truncated"),
        ("empty", "not an image"),
    ],
)
def test_bad_images_give_one_line_errors(tmp_path, photo, case, message):
    path = tmp_path / "bad.png"
    if case == "folder":
        path.mkdir()
    elif case == "text":
        path.write_text("hello, not a picture")
    elif case == "truncated":
        Image.fromarray(photo).save(path)
        path.write_bytes(path.read_bytes()[:200])
    elif case == "empty":
        path.write_bytes(b"")
    with pytest.raises(JaxcombineError, match=message) as err:
        images.read(path)
    assert "\n" not in str(err.value)


def test_pixel_limit_refuses_bombs(tmp_path, photo):
    path = _save(tmp_path, Image.fromarray(photo), "a.png")
    with pytest.raises(JaxcombineError, match="larger than the limit"):
        images.read(path, max_pixels=100)


def _png_header_claiming(path, width, height):
    """A PNG whose header claims ``width`` × ``height`` (a decompression bomb's header)."""
    import struct
    import zlib

    def chunk(kind, data):
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b"\0" * 64))
        + chunk(b"IEND", b"")
    )
    return path


@pytest.mark.parametrize("size", [None, 64])
def test_a_header_read_has_the_readers_guards(tmp_path, photo, size):
    """The header read behind every memory estimate refuses what the reader refuses."""
    bomb = _png_header_claiming(tmp_path / "bomb.png", 60000, 60000)
    with pytest.raises(JaxcombineError, match="decompression bomb") as err:
        images.output_size(bomb, size=size)
    assert "\n" not in str(err.value)
    path = _save(tmp_path, Image.fromarray(photo), "a.png")
    with pytest.raises(JaxcombineError, match="larger than the limit"):
        images.output_size(path, size=size, max_pixels=100)
    assert images.header_size(path) == photo.shape[:2]


def test_only_the_guarded_reader_opens_image_files():
    """Every path that opens an image (or reads its header) goes through io/images.py."""
    package = Path(images.__file__).resolve().parents[1]
    openers = [
        str(p.relative_to(package))
        for p in package.rglob("*.py")
        if "Image.open(" in p.read_text() and p.name != "images.py"
    ]
    assert openers == []
    assert "Image.open(" in Path(images.__file__).read_text()  # the guard looks where it opens


def test_features_of_a_decompression_bomb_is_one_line(tmp_path):
    from cli_run import assert_one_line_error, jaxcombine

    bomb = _png_header_claiming(tmp_path / "bomb.png", 60000, 60000)
    proc = jaxcombine("features", bomb, "--layers", "block1_conv1", "--out", tmp_path / "f.npz")
    assert proc.returncode == 2
    assert_one_line_error(proc, "refused as a possible decompression bomb")
    assert not (tmp_path / "f.npz").exists()
