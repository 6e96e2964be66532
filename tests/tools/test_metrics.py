"""``jaxcombine eval``: SSIM, CIE Lab and histogram distances against known values, and the
command end to end (a real subprocess) on a tiny content image and a tiny stylised output."""

import csv
import errno
import json
import re

import numpy as np
import pytest
import recipe_files
from cli_run import assert_one_line_error, jaxcombine
from PIL import Image

from jaxcombine.errors import JaxcombineError
from jaxcombine.io import images
from jaxcombine.options import config as config_lib
from jaxcombine.run import prepare as prepare_lib
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
    """The content scored against itself: content distance 0, SSIM 1; an image made of
    the content and the style, half each, is farther from the content and nearer the
    style (a run's output, whose compile the command does not test, would add seconds).
    Without the judge (``--judge none``: test_judge runs it), whose network would double
    the command's compiles."""
    content = tmp_path / "content.png"
    rgb = images.read(images.CONTENT, size=32)
    images.write(content, rgb)
    style = images.fit(images.read(images.STYLE), *rgb.shape[:2])
    images.write(tmp_path / "styled.png", 0.5 * rgb + 0.5 * style)
    out = tmp_path / "t" / "table.csv"
    proc = jaxcombine(
        "eval",
        content,
        tmp_path / "styled.png",
        "--content",
        content,
        "--judge",
        "none",
        "--out",
        out,
        check=True,
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


@pytest.mark.slow
def test_study_and_batch_reports_carry_eval_scores(vgg19, tmp_path):
    """--eval in a study and a batch: the scores are those of `jaxcombine eval` on the
    written images, in the summary/report and in each job's record and eval.csv."""

    from jaxcombine.batch import runner as batch
    from jaxcombine.study import runner as study

    shallow = str(recipe_files.SHALLOW)
    config = config_lib.RunConfig(
        recipe=shallow, init="content,noise", steps=2, size=24, conv="xla"
    )
    done = study.run_study(config, tmp_path / "s", snapshot_every=2, progress=False, evaluate=True)
    direct = metrics.evaluate([tmp_path / "s" / "noise-s0.png"]).rows[0]
    assert done.summary["eval"]["noise-s0"]["style_gram"] == pytest.approx(direct["style_gram"])
    assert done.summary["eval"]["content"]["ssim"] > direct["ssim"]  # the content start
    with open(tmp_path / "s" / "eval.csv", newline="") as f:
        assert len(list(csv.DictReader(f))) == 2
    assert "Scores (jaxcombine eval)" in (tmp_path / "s" / "report.html").read_text()

    manifest = tmp_path / "m.toml"
    manifest.write_text(
        f'[defaults]\nrecipe = "{shallow}"\nsize = 24\nsteps = 2\nconv = "xla"\n'
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


# --------------------------------------------------------------------------- memory, outputs

# Peaks of `jaxcombine eval` (max RSS, /usr/bin/time) on a 2-core AMD EPYC, 24 GiB, CPU.
MEASURED_PEAKS = {  # the five style distances (metrics.py says how they were measured)
    (192, 256): 2.262e9,
    (384, 512): 3.023e9,
    (576, 768): 4.560e9,
    (768, 1024): 6.161e9,
    (1200, 1600): 11.644e9,
}


def test_the_eval_estimate_errs_high_against_every_measured_peak():
    for (h, w), peak in MEASURED_PEAKS.items():
        assert peak < metrics.estimate_bytes(h, w) < 1.3 * peak, (h, w)


def test_eval_too_big_for_memory_is_refused_in_one_line_before_any_work(tmp_path):
    """1600x1200 under a 3 GB limit: one line naming the size that fits, nothing written."""
    big = tmp_path / "big.png"
    Image.new("RGB", (1600, 1200), (90, 120, 150)).save(big)
    out = tmp_path / "t.csv"
    proc = jaxcombine("eval", big, "--out", out, "--max-memory", "3")
    assert proc.returncode == 2
    assert_one_line_error(proc, "(scoring 1600x1200) but 3.0 GB is available")
    size = int(re.search(r"use --size (\d+) ", proc.stderr).group(1))
    w, h = images.target_size(1600, 1200, size=size)
    assert 300 < size < 1600 and metrics.estimate_bytes(h, w) <= 3e9
    assert not out.exists() and not out.with_suffix(".json").exists()


@pytest.mark.slow
def test_eval_size_scores_a_downscaled_copy_and_records_it(vgg19, tmp_path):
    """Scored at 24 px, the size the study and batch reports score at (one compile)."""
    path = tmp_path / "a.png"
    images.write(path, images.read(images.CONTENT, size=64))
    ev = metrics.evaluate([path], size=24, out=tmp_path / "t.csv")
    assert (ev.rows[0]["width"], ev.rows[0]["height"]) == (24, 24)
    record = json.loads((tmp_path / "t.json").read_text())
    assert record["config"]["size"] == 24 and "at most 24 px" in record["config"]["scored_at"]


def test_an_out_of_memory_while_scoring_is_one_line(vgg19, tmp_path, monkeypatch):
    """Should the allocator fail anyway (the estimate is a fit), it is one line, not a
    JaxRuntimeError traceback."""
    import jax

    def exhausted(*args, **kwargs):
        raise jax.errors.JaxRuntimeError("RESOURCE_EXHAUSTED: Out of memory allocating 123 bytes.")

    monkeypatch.setattr(metrics, "_style_distances", exhausted)
    path = tmp_path / "a.png"
    images.write(path, images.read(images.CONTENT, size=32))
    with pytest.raises(JaxcombineError, match="ran out of memory \\(eval of 32x32: ") as err:
        metrics.evaluate([path])
    assert "\n" not in str(err.value) and "--size" in str(err.value)


@pytest.mark.parametrize("command", ["eval", "features"])
def test_eval_and_features_check_out_first_and_name_the_users_path(tmp_path, command):
    (tmp_path / "file").write_text("a file where a folder should be")
    out = tmp_path / "file" / ("t.csv" if command == "eval" else "f.npz")
    args = ["--layers", "block1_conv1"] if command == "features" else []
    # the image is missing too: the output must be what is reported, first
    proc = jaxcombine(command, tmp_path / "missing.png", *args, "--out", out)
    assert proc.returncode == 2
    assert_one_line_error(proc, f"cannot write {out}")
    assert ".jaxcombine-tmp" not in proc.stderr


def test_an_output_and_its_record_are_written_together_or_not_at_all(tmp_path, monkeypatch):
    """A full disk at the second file leaves neither, and names the user's path."""
    from jaxcombine.io import records

    table, record = tmp_path / "t.csv", tmp_path / "t.json"
    table.write_text("old")
    calls = []

    def fsync(fd):
        calls.append(fd)
        if len(calls) == 2:
            raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(records.os, "fsync", fsync)
    with pytest.raises(OSError) as err:
        records.atomic_write_all({table: "new", record: "{}"})
    assert len(calls) == 2 and err.value.filename == str(record)
    assert table.read_text() == "old" and not record.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t.csv"]  # no temporary left


@pytest.mark.slow  # scores with the default judge: AlexNet and LPIPS compile besides VGG19
def test_batch_eval_scores_a_finished_batch_and_one_bad_record_is_one_line(vgg19, tmp_path):
    """`batch --eval` after a batch ran without it scores the finished jobs; a job whose
    record is unreadable is one line (exit 3), the others are scored."""

    from jaxcombine.batch import runner as batch

    shallow = str(recipe_files.SHALLOW)
    manifest = tmp_path / "m.toml"
    manifest.write_text(
        f'[defaults]\nrecipe = "{shallow}"\nsize = 24\nsteps = 1\nconv = "xla"\n'
        '[grid]\ninit = ["content", "noise"]\n'
    )
    out = tmp_path / "b"
    first = batch.run_batch(manifest, out, progress=False)
    assert len(first.done) == 2 and not (out / "eval.csv").exists()
    again = batch.run_batch(manifest, out, progress=False, evaluate=True)
    assert sorted(again.skipped) == sorted(first.done) and not again.unscored
    with open(out / "eval.csv", newline="") as f:
        assert sorted(r["id"] for r in csv.DictReader(f)) == sorted(first.done)
    broken, kept = sorted(first.done)
    (out / f"{broken}.json").write_text("{ not json")
    (out / "eval.csv").unlink()
    proc = jaxcombine("batch", manifest, "--out", out, "--eval", "--quiet")
    assert proc.returncode == 3 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines() == [
        f"jaxcombine: job {broken} not scored: its record {out / broken}.json is not "
        "readable JSON (Expecting property name enclosed in double quotes: line 1 column 3 "
        "(char 2))"
    ]
    assert "1 not scored" in proc.stdout
    with open(out / "eval.csv", newline="") as f:
        assert [r["id"] for r in csv.DictReader(f)] == [kept]


# --------------------------------------------------------------------------- one forward


@pytest.mark.slow
def test_features_eval_and_study_distances_share_one_compiled_forward(vgg19, tmp_path, compiled):
    """One jitted forward, compiled once per (network, taps, image size) whoever asks."""

    from jaxcombine.options import config
    from jaxcombine.study import record
    from jaxcombine.tools import features

    path = tmp_path / "a.png"  # a size no other test scores, so nothing is cached yet
    images.write(path, images.resize(images.read(images.CONTENT), (45, 37)))
    rgb = images.read(path)
    taps = [*config.EVAL_STYLE_LAYERS, config.EVAL_CONTENT_LAYER]
    acts = features.extract(rgb, taps, pooling=config.EVAL_POOLING)
    assert compiled.count("jit(_forward)") == 1  # the listener hears it compile
    metrics.evaluate([path])  # the same network, taps and size: no second compile
    assert compiled.count("jit(_forward)") == 1
    assert acts["block1_conv2"].shape == (37, 45, 64)

    shallow = str(recipe_files.SHALLOW)
    prep = prepare_lib.prepare(config_lib.RunConfig(recipe=shallow, init="content,noise", size=27))
    first = record.pair_distances(prep.problem, prep.variables, prep.x0)
    assert compiled.count("jit(_forward)") == 2  # another network (its taps, pooling, algorithm)
    again = record.pair_distances(prep.problem, prep.variables, prep.x0[::-1])
    assert compiled.count("jit(_forward)") == 2
    np.testing.assert_allclose(first[0], again[0])  # the pixel distance is symmetric
    assert first.shape == (1 + 3, 1) and (first > 0).all()  # pixels, 3 spaces
