"""Hypercolumn terms in real runs: the seed is traced (swapping it compiles nothing, and
changes the positions drawn), a mask restricts the output's positions, several starts run
side by side, and the command line runs a TOML recipe of every hypercolumn statistic."""

import numpy as np
import recipe_files
from cli_run import jaxcombine
from PIL import Image

from jaxcombine.run import job

LAYERS = ["rgb", "block1_conv1", "block2_conv1"]


def hypercolumn(statistic, source="style", layers=LAYERS, **extra):
    return {"hypercolumn": layers, "source": source, "statistic": statistic, **extra}


def test_swapping_the_seed_compiles_nothing_and_draws_other_positions(vgg19, tmp_path, compiled):
    Image.new("L", (32, 32), 0).save(tmp_path / "left.png")
    mask = np.asarray(Image.open(tmp_path / "left.png")).copy()
    mask[:, :16] = 255
    Image.fromarray(mask).save(tmp_path / "left.png")
    terms = [
        hypercolumn("self_similarity", "content", samples=64),
        hypercolumn("emd", samples=64, mask="left.png"),
        hypercolumn("moments", samples=64),
    ]
    path = recipe_files.write(tmp_path / "r.toml", {"terms": terms})
    options = dict(recipe=str(path), size=32, steps=3, chunk=3, init="content,noise", conv="xla")
    first = job.combine(seed=1, **options)
    assert len(compiled) > 0
    before = len(compiled)
    second = job.combine(seed=2, **options)
    assert compiled[before:] == []
    a, b = first.outcome.history, second.outcome.history
    assert a.shape == (3, 2, 4) and np.all(np.isfinite(a))
    assert not np.allclose(a[:, :, :3], b[:, :, :3])  # other positions, other values
    assert not np.allclose(a[:, 0, 1:3], a[:, 1, 1:3])  # two starts, each its own terms


def test_the_command_line_runs_every_hypercolumn_statistic(vgg19, tmp_path):
    terms = [
        hypercolumn("self_similarity", "content", samples=256, weight=100.0),
        hypercolumn("emd", samples=256),
        hypercolumn("palette", layers=["rgb"], samples=256),
        hypercolumn("nearest", layers=LAYERS[1:], samples=64, stride=2, layer_scales="channels"),
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
        "8",
        "--chunk",
        "4",
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
    assert len(totals) == 6 and totals[-1] < 0.9 * totals[0], totals
    assert np.asarray(Image.open(out / "content.png")).shape == (48, 48, 3)
