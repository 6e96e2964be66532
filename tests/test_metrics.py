"""``jaxcombine eval``: SSIM, CIE Lab and histogram distances against known values, and the
command end to end (a real subprocess) on a tiny content image and a tiny stylised output."""

import csv
import json

import numpy as np
import pytest
from test_cli import assert_one_line_error, jaxcombine
from test_compiles import SHALLOW

from jaxcombine.io import images
from jaxcombine.run import job
from jaxcombine.tools import metrics


def test_lab_conversion_known_values():
    lab = metrics.srgb_to_lab(np.asarray([[255, 255, 255], [0, 0, 0], [255, 0, 0], [0, 0, 255]]))
    np.testing.assert_allclose(lab[0], [100.0, 0.0, 0.0], atol=0.01)
    np.testing.assert_allclose(lab[1], [0.0, 0.0, 0.0], atol=0.01)
    np.testing.assert_allclose(lab[2], [53.24, 80.09, 67.20], atol=0.05)  # sRGB red, D65
    np.testing.assert_allclose(lab[3], [32.30, 79.19, -107.86], atol=0.05)  # sRGB blue


def test_lab_histogram_distance_is_the_shift_of_lightness():
    grey = lambda v: np.full((16, 16, 3), v, np.float32)  # noqa: E731
    assert metrics.lab_histogram_emd(grey(100), grey(100)) == (0.0, 0.0, 0.0)
    l1, l2 = metrics.srgb_to_lab(grey(100)[0, 0])[0], metrics.srgb_to_lab(grey(160)[0, 0])[0]
    emd_l, emd_a, emd_b = metrics.lab_histogram_emd(grey(100), grey(160))
    assert emd_l == pytest.approx(abs(l2 - l1), abs=1.0) and emd_a == emd_b == 0.0


def test_ssim_identity_noise_and_symmetry():
    rng = np.random.default_rng(0)
    a = rng.uniform(0, 255, (24, 24)).cumsum(0) % 255
    b = rng.uniform(0, 255, (24, 24))
    assert metrics.ssim(a, a) == pytest.approx(1.0)
    assert metrics.ssim(a, b) < 0.2
    assert metrics.ssim(a, b) == pytest.approx(metrics.ssim(b, a))
    assert metrics.ssim(a, a + 20) < 1.0  # the luminance term sees a brightness shift


def test_cli_eval_writes_csv_and_json_and_orders_images(vgg19, tmp_path):
    """The content scored against itself: content distance 0, SSIM 1; a stylised output
    is farther from the content and nearer the style."""
    content = tmp_path / "content.png"
    images.write(content, images.read(images.CONTENT, size=32))
    recipe = tmp_path / "r.toml"
    recipe.write_text(SHALLOW.format(tv=0.0, content=0.1, style=1.0))
    styled = job.combine(
        content=str(content), recipe=str(recipe), size=32, steps=8, lr=8.0, chunk=8
    )
    images.write(tmp_path / "styled.png", styled.outcome.pixels[0])
    out = tmp_path / "t" / "table.csv"
    proc = jaxcombine(
        "eval", content, tmp_path / "styled.png", "--content", content, "--out", out, check=True
    )
    assert "styled.png" in proc.stdout
    rows = list(csv.DictReader(out.open()))
    record = json.loads(out.with_suffix(".json").read_text())
    assert [r["image"] for r in record["rows"]] == [r["image"] for r in rows]
    assert record["config"]["pooling"] == "avg" and record["weights"]["fingerprint"]
    same, stylised = ({k: float(v) for k, v in r.items() if k not in ("image",)} for r in rows)
    assert same["content"] < 1e-6 and same["ssim"] == pytest.approx(1.0)
    assert same["lab_emd_content"] == 0.0
    assert stylised["content"] > 1e-3 and stylised["ssim"] < 0.99
    assert stylised["lab_emd_content"] > 0
    style_keys = [k for k in rows[0] if k.startswith("style_")]  # one per eval statistic
    assert len(style_keys) == 5
    for key in (*style_keys, "lab_emd_style"):
        assert stylised[key] < same[key], key


def test_cli_eval_missing_image_is_one_line(tmp_path):
    proc = jaxcombine("eval", tmp_path / "nope.png", "--out", tmp_path / "t.csv")
    assert_one_line_error(proc, "image not found")
    assert proc.returncode == 2 and not (tmp_path / "t.csv").exists()
    proc = jaxcombine("eval", images.CONTENT, "--out", tmp_path / "t.txt")
    assert_one_line_error(proc, ".csv")


def test_study_and_batch_reports_carry_eval_scores(vgg19, tmp_path):
    """--eval in a study and a batch: the scores are those of `jaxcombine eval` on the
    written images, in the summary/report and in each job's record and eval.csv."""
    from pathlib import Path

    from jaxcombine.batch import runner as batch
    from jaxcombine.study import runner as study

    shallow = str(Path(__file__).with_name("shallow.toml"))
    config = job.RunConfig(recipe=shallow, init="content,noise", steps=2, size=48)
    done = study.run_study(config, tmp_path / "s", snapshot_every=2, progress=False, evaluate=True)
    direct = metrics.evaluate([tmp_path / "s" / "noise-s0.png"]).rows[0]
    assert done.summary["eval"]["noise-s0"]["style_gram"] == pytest.approx(direct["style_gram"])
    assert done.summary["eval"]["content"]["ssim"] > direct["ssim"]  # the content start
    with open(tmp_path / "s" / "eval.csv", newline="") as f:
        assert len(list(csv.DictReader(f))) == 2
    assert "Scores (jaxcombine eval)" in (tmp_path / "s" / "report.html").read_text()

    manifest = tmp_path / "m.toml"
    manifest.write_text(
        f'[defaults]\nrecipe = "{shallow}"\nsize = 48\nsteps = 2\n'
        '[grid]\ninit = ["content", "noise"]\n'
    )
    report = batch.run_batch(manifest, tmp_path / "b", progress=False, evaluate=True)
    assert len(report.done) == 2
    with open(tmp_path / "b" / "eval.csv", newline="") as f:
        rows = {r["id"]: r for r in csv.DictReader(f)}
    assert sorted(rows) == sorted(report.done)
    for job_id in report.done:
        record = json.loads((tmp_path / "b" / f"{job_id}.json").read_text())
        direct = metrics.evaluate([tmp_path / "b" / f"{job_id}.png"]).rows[0]
        assert record["eval"]["content"] == pytest.approx(direct["content"])
        assert float(rows[job_id]["content"]) == pytest.approx(direct["content"], rel=1e-5)
