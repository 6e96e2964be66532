"""Hypercolumn terms in real runs: the content's self-similarity from noise; the command
line runs a TOML recipe of every hypercolumn statistic (slow tier: the style ones run in
the quick tier's program of every statistic, test_engine); a guided run (style masks
over the output, style regions over the style) keeps each region's style in its own
region, two starts side by side, and another seed (traced) compiles nothing but draws
other positions."""

import numpy as np
import pytest
import recipe_files
from cli_run import jaxcombine
from PIL import Image
from recipe_files import HYPERCOLUMN, hypercolumn

from jaxcombine.run import job


def test_self_similarity_from_noise_lowers_its_term(vgg19, recipe_file):
    """The content's self-similarity alone, from noise, at the shallow layers: its term
    falls (each step samples other positions, so the halves are compared)."""
    path = recipe_file({"terms": [hypercolumn("self_similarity", "content", HYPERCOLUMN[:2])]})
    result = job.combine(
        recipe=path, init="noise", size=32, steps=12, chunk=6, lr=32.0, conv="xla", loop="scan"
    )
    history = result.outcome.history[:, 0, 0]
    assert np.mean(history[6:]) < 0.95 * np.mean(history[:6]), history


@pytest.mark.slow
def test_the_command_line_runs_every_hypercolumn_statistic(vgg19, tmp_path):
    terms = [
        hypercolumn("self_similarity", "content", samples=256, weight=100.0),
        hypercolumn("emd", samples=256),
        hypercolumn("palette", layers=["rgb"], samples=256),
        hypercolumn(
            "nearest", layers=HYPERCOLUMN[1:], samples=64, stride=2, layer_scales="channels"
        ),
    ]
    path = recipe_files.write(tmp_path / "hc.toml", {"terms": terms, "init": "content"})
    out = tmp_path / "out"
    proc = jaxcombine(
        "run",
        "--recipe",
        path,
        "--size",
        "48",
        "--steps",
        "6",
        "--chunk",
        "3",
        # XLA's convolutions: what is tested is the recipe's hypercolumn terms, which read the
        # same features under either algorithm; Winograd's step program compiles ~40% slower
        "--conv",
        "xla",
        "--quiet",
        "--out",
        out,
    )
    assert proc.returncode == 0, proc.stderr
    rows = (out / "content.history.csv").read_text().splitlines()
    assert rows[0].split(",")[3:7] == [
        "content:self_similarity:rgb..block2_conv1",
        "style:emd:rgb..block2_conv1",
        "style:palette:rgb",
        "style:nearest:block1_conv1+block2_conv1",
    ]
    totals = [float(r.split(",")[2]) for r in rows[1:]]
    # each step samples other positions, so compare halves, not two steps
    assert len(totals) == 6 and np.mean(totals[3:]) < 0.95 * np.mean(totals[:3]), totals
    assert np.asarray(Image.open(out / "content.png")).shape == (48, 48, 3)


@pytest.mark.slow
def test_a_guided_run_keeps_each_region_in_its_own_and_a_new_seed_compiles_nothing(
    vgg19, tmp_path, compiled
):
    """Region-to-region guidance: a style image red on its left and blue on its right,
    given twice, the first copy's region its left half and governing the output's top
    half, the second's its right half and the bottom. From a grey start the palette term
    makes the top red and the bottom blue; neither takes the other region's colour (with
    no regions both halves come out the same purple mix). A content term masked to the
    output's left half rides along. Run twice, with seeds 1 and 2: the second run compiles
    nothing and its sampled terms differ."""
    style = np.zeros((32, 32, 3), np.uint8)
    style[:, :16] = (220, 40, 40)
    style[:, 16:] = (40, 40, 220)
    Image.fromarray(style).save(tmp_path / "style.png")
    grey = np.random.default_rng(0).normal(128, 8, (32, 32, 3)).clip(0, 255).astype(np.uint8)
    Image.fromarray(grey).save(tmp_path / "grey.png")
    for name, rows, cols in (
        ("top", slice(0, 16), slice(None)),
        ("bottom", slice(16, 32), slice(None)),
        ("left", slice(None), slice(0, 16)),
        ("right", slice(None), slice(16, 32)),
    ):
        mask = np.zeros((32, 32), np.uint8)
        mask[rows, cols] = 255
        Image.fromarray(mask).save(tmp_path / f"{name}.png")
    terms = [
        hypercolumn("palette", layers=["rgb"], samples=128),
        hypercolumn("emd", layers=HYPERCOLUMN[:2], samples=128),
        hypercolumn("self_similarity", "content", samples=64, mask="left.png"),
    ]
    path = recipe_files.write(tmp_path / "guided.toml", {"terms": terms})
    options = dict(
        recipe=str(path),
        content=str(tmp_path / "grey.png"),
        style=(str(tmp_path / "style.png"),) * 2,
        style_masks=(str(tmp_path / "top.png"), str(tmp_path / "bottom.png")),
        style_regions=(str(tmp_path / "left.png"), str(tmp_path / "right.png")),
        init="content,noise",
        size=32,
        steps=12,
        chunk=12,
        lr=16.0,
        conv="xla",
    )
    first = job.combine(seed=1, **options)
    assert len(compiled) > 0
    before = len(compiled)
    second = job.combine(seed=2, **options)
    assert compiled[before:] == []
    a, b = first.outcome.history, second.outcome.history
    assert a.shape == (12, 2, 4) and np.all(np.isfinite(a))
    assert not np.allclose(a[:, :, :3], b[:, :, :3])  # other positions, other values
    assert not np.allclose(a[:, 0, :3], a[:, 1, :3])  # two starts, each its own terms
    for result in (first, second):
        out = result.images["content"].astype(np.float64)
        top, bottom = out[4:12].reshape(-1, 3).mean(0), out[20:28].reshape(-1, 3).mean(0)
        assert result.outcome.totals[-1, 0] < 0.7 * result.outcome.totals[0, 0]
        assert top[0] - top[2] > 60, top  # red, not blue
        assert bottom[2] - bottom[0] > 60, bottom  # blue, not red
