"""Mask files (jaxcombine.io.masks): alpha or luma, fitted without ringing, and one-line
warnings when masks leave a term nothing to measure."""

import warnings

import numpy as np
import pytest
import recipe_files
from PIL import Image
from recipe_files import term

from jaxcombine.errors import JaxcombineError, JaxcombineWarning
from jaxcombine.io import masks
from jaxcombine.options import recipe

SHAPE = np.zeros((16, 16), bool)
SHAPE[4:12, 2:8] = True  # a rectangle left of centre


def _rgba(rgb, alpha):
    return Image.fromarray(np.dstack([np.broadcast_to(rgb, (16, 16, 3)), alpha]).astype(np.uint8))


@pytest.mark.parametrize("colour", [(255, 255, 255), (0, 0, 0), (200, 30, 30)])
def test_a_shape_on_a_transparent_background_is_read_by_its_alpha(tmp_path, colour):
    """Whatever its colour, the opaque shape is the mask and the transparent rest is 0
    (composited on white, a white shape would select everything)."""
    path = tmp_path / "shape.png"
    _rgba(np.array(colour), np.where(SHAPE, 255, 0)).save(path)
    np.testing.assert_array_equal(masks.read(path, 16, 16), SHAPE.astype(np.float32))


def test_partial_alpha_is_a_weight_and_la_and_palette_masks_count_too(tmp_path):
    alpha = np.where(SHAPE, 255, 0)
    alpha[0, 0] = 51  # a fifth
    _rgba(np.array([255, 255, 255]), alpha).convert("LA").save(tmp_path / "la.png")
    m = masks.read(tmp_path / "la.png", 16, 16)
    assert m[0, 0] == pytest.approx(0.2) and m[SHAPE].min() == 1.0 and m[1:3].max() == 0.0
    p = Image.fromarray(np.where(SHAPE, 1, 0).astype(np.uint8), "P")
    p.putpalette([0, 0, 0, 255, 255, 255])
    p.info["transparency"] = 0  # palette entry 0 transparent
    p.save(tmp_path / "p.png", transparency=0)
    np.testing.assert_array_equal(masks.read(tmp_path / "p.png", 16, 16), SHAPE)


def test_an_opaque_mask_is_read_by_its_luma(tmp_path):
    grey = np.where(SHAPE, 255, 64).astype(np.uint8)
    _rgba(np.dstack([grey] * 3), np.full((16, 16), 255)).save(tmp_path / "opaque.png")
    Image.fromarray(grey).save(tmp_path / "grey.png")
    for name in ("opaque.png", "grey.png"):
        np.testing.assert_allclose(masks.read(tmp_path / name, 16, 16), grey / 255.0, atol=1e-6)


def test_transparent_everywhere_or_ambiguous_masks_are_refused_in_one_line(tmp_path):
    _rgba(np.array([255, 255, 255]), np.zeros((16, 16))).save(tmp_path / "clear.png")
    with pytest.raises(JaxcombineError, match="black everywhere \\(or transparent\\)") as err:
        masks.read(tmp_path / "clear.png", 16, 16)
    assert "\n" not in str(err.value)
    levels = np.dstack([np.tile(np.arange(0, 256, 16), (16, 1))] * 3)  # grey ramp, opaque
    _rgba(levels, np.where(SHAPE, 255, 0)).save(tmp_path / "both.png")
    with pytest.raises(JaxcombineError, match="both transparency and grey levels") as err:
        masks.read(tmp_path / "both.png", 16, 16)
    assert "\n" not in str(err.value)


def test_a_mask_file_of_another_shape_is_fitted_like_a_style_without_ringing(tmp_path):
    """Cover then centre-crop; bilinear, so 0 stays exactly 0 away from an edge (Lanczos
    left a ringing strip of weight there) and 1 stays 1."""
    m = np.zeros((20, 60), np.uint8)
    m[:, 30:] = 255  # right half of a wide mask → right half of a square output (centre crop)
    Image.fromarray(m).save(tmp_path / "wide.png")
    out = masks.read(tmp_path / "wide.png", 10, 10)
    assert out.shape == (10, 10) and out[:, :4].max() == 0.0 and out[:, 6:].min() == 1.0
    small = np.zeros((8, 8), np.uint8)
    small[:, 4:] = 255
    Image.fromarray(small).save(tmp_path / "small.png")
    up = masks.read(tmp_path / "small.png", 96, 96)  # 12× up: Lanczos rang 36 px out
    assert up[:, :40].max() == 0.0 and up[:, 56:].min() == 1.0
    assert ((up >= 0) & (up <= 1)).all()
    with pytest.raises(JaxcombineError, match="black"):
        Image.new("L", (5, 5), 0).save(tmp_path / "black.png")
        masks.read(tmp_path / "black.png", 10, 10)


# --------------------------------------------------------------------------- coverage

MASKED = recipe.from_dict(
    {
        "terms": [
            {"layer": "block2_conv1", "source": "content", "statistic": "activations"},
            {"layers": ["block1_conv1", "block3_conv1"], "source": "style", "mask": "m.png"},
        ]
    },
    "masked",
)


def _half(h, w, right):
    m = np.zeros((h, w), np.float32)
    m[:, w // 2 :] = 1.0
    return m if right else 1.0 - m


def test_coverage_is_quiet_when_every_term_has_area():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        notes = masks.check_coverage(
            MASKED, _half(32, 32, True)[None], np.stack([_half(32, 32, True)] * 2)
        )
    assert notes == []


def test_a_mask_without_area_at_a_layer_is_one_warning():
    """A 3×3-pixel region is 9 positions at block1 but 9/16 of one at block3 (4×4 px each)."""
    dot = np.zeros((32, 32), np.float32)
    dot[10:13, 10:13] = 1.0
    with pytest.warns(JaxcombineWarning, match="covers 0.56 positions of block3_conv1") as heard:
        notes = masks.check_coverage(MASKED, dot[None], None)
    assert len(notes) == 1 and len(heard) == 1 and "\n" not in notes[0]
    assert masks.area_at(dot, "block1_conv1") == 9.0
    assert masks.area_at(dot, "block3_conv1") == pytest.approx(9 / 16)


def test_a_term_mask_that_misses_a_style_mask_is_one_warning_per_layer_and_style():
    right, left = _half(32, 32, True), _half(32, 32, False)
    with pytest.warns(JaxcombineWarning, match="overlap on 0.0% of the mask's region"):
        notes = masks.check_coverage(MASKED, right[None], np.stack([left, right]))
    assert len(notes) == 2  # style 1 (left), at block1_conv1 and block3_conv1
    assert all("style mask 1" in n for n in notes)


def test_style_masks_without_a_style_term_is_one_warning():
    content_only = recipe.from_dict(
        {"terms": [{"layer": "block2_conv1", "source": "content"}]}, "content-only"
    )
    with pytest.warns(JaxcombineWarning, match="--style-mask has no effect"):
        assert len(masks.check_coverage(content_only, None, _half(32, 32, True)[None])) == 1


@pytest.mark.slow  # the warning's rule is checked above; every warning's one-line form, in test_cli
def test_a_run_warns_in_one_line_on_the_command_line(vgg19, tmp_path):
    """Through `jaxcombine run`: the warning is one line on stderr, the run finishes."""
    from cli_run import jaxcombine

    recipe_files.write(tmp_path / "content.toml", {"terms": [term("content", "block1_conv1")]})
    Image.fromarray(np.full((8, 8), 255, np.uint8)).save(tmp_path / "all.png")
    proc = jaxcombine(
        "run",
        "--recipe",
        tmp_path / "content.toml",
        "--style-mask",
        tmp_path / "all.png",
        "--size",
        "24",
        "--steps",
        "1",
        "--quiet",
        "--out",
        tmp_path / "o",
    )
    assert proc.returncode == 0, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line]
    assert lines == [
        "jaxcombine: warning: --style-mask has no effect: recipe content has no style term"
    ]
