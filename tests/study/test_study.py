"""Convergence studies: tidy tables, distances, plots, report, resume, CLI errors.

Studies are plumbing around the engine: they run the shallow test recipe, whose
block2_conv1 carries two statistics (so feature-space names are disambiguated), with XLA's
convolutions (nothing here depends on the algorithm; Winograd's programs compile 2-3x
slower). The two CLI runs share one program shape (4 starts: 2 inits x 2 swept values,
32 px, chunks of 2), so the session's compile cache compiles it once.
"""

import csv
import json
import signal
import time
from itertools import combinations

import numpy as np
import pytest
import recipe_files
from cli_run import start
from PIL import Image

from jaxcombine.errors import JaxcombineError
from jaxcombine.options.config import RunConfig
from jaxcombine.run import outputs
from jaxcombine.run.prepare import prepare
from jaxcombine.study import record as study_record
from jaxcombine.study import runner as study_lib

SHALLOW = str(recipe_files.SHALLOW)
CONFIG = RunConfig(recipe=SHALLOW, init="content,style,noise", steps=8, size=32, conv="xla")
STARTS = ("content", "style", "noise-s0")
FILES = (
    "history.csv",
    "distances.csv",
    "contact_sheet.png",
    "loss.png",
    "distances.png",
    "report.html",
    "summary.json",
    "study.json",
    "state.npz",
    *(f"{s}.png" for s in STARTS),
)


def read_csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def done(vgg19, tmp_path_factory):
    """One uninterrupted study: 8 steps, snapshots every 4."""
    out = tmp_path_factory.mktemp("study")
    return study_lib.run_study(CONFIG, out, snapshot_every=4, progress=False)


def test_every_file_is_written_and_plots_are_pngs(done):
    for name in FILES:
        assert (done.out / name).is_file(), name
    for name in ("contact_sheet.png", "loss.png", "distances.png"):
        with Image.open(done.out / name) as img:
            assert img.format == "PNG" and min(img.size) > 200
    snaps = sorted(p.name for p in (done.out / "snapshots").iterdir())
    assert snaps == sorted(f"{s}-step{t:06d}.png" for s in STARTS for t in (0, 4, 8))
    assert not list(done.out.glob(".jaxcombine-tmp-*"))


def test_history_csv_is_tidy(done):
    rows = read_csv(done.out / "history.csv")
    assert list(rows[0]) == list(study_record.HISTORY_COLUMNS)
    terms = prepare(CONFIG).problem.recipe.labels
    assert len(rows) == 8 * len(STARTS) * (len(terms) + 1)
    assert {r["term"] for r in rows} == {*terms, "total"}
    assert {r["start"] for r in rows} == set(STARTS)
    assert sorted({int(r["step"]) for r in rows}) == list(range(1, 9))
    for step in (1, 8):  # total = sum of the weighted terms
        for s in STARTS:
            mine = [r for r in rows if int(r["step"]) == step and r["start"] == s]
            total = float(next(r["weighted"] for r in mine if r["term"] == "total"))
            parts = sum(float(r["weighted"]) for r in mine if r["term"] != "total")
            assert total == pytest.approx(parts, rel=1e-4)
    assert done.history["step"].shape == (len(rows),)


def test_distances_match_the_saved_final_images(done):
    rows = read_csv(done.out / "distances.csv")
    assert list(rows[0]) == list(study_record.DISTANCE_COLUMNS)
    assert sorted({int(r["step"]) for r in rows}) == [0, 4, 8]
    final = {(r["a"], r["b"], r["space"]): float(r["value"]) for r in rows if r["step"] == "8"}
    pngs = np.stack([np.asarray(Image.open(done.out / f"{s}.png"), np.float32) for s in STARTS])
    prep = prepare(CONFIG)
    recomputed = study_record.pair_distances(prep.problem, prep.variables, pngs)
    spaces = ["pixel", *(name for name, _, _ in study_record.feature_spaces(prep.problem.recipe))]
    assert {k[2] for k in final} == set(spaces)
    for p, (a, b) in enumerate(combinations(range(len(STARTS)), 2)):
        key = (STARTS[a], STARTS[b])
        pixel = np.mean(np.abs(pngs[a] - pngs[b]))
        assert final[(*key, "pixel")] == pytest.approx(pixel, abs=0.6)  # uint8 rounding
        for i, space in enumerate(spaces[1:], 1):
            assert final[(*key, space)] == pytest.approx(recomputed[i, p], rel=0.05, abs=1e-3)


def test_summary_json(done):
    s = json.loads((done.out / "summary.json").read_text())
    assert s["starts"] == list(STARTS) and s["steps_done"] == 8 and not s["interrupted"]
    assert set(s["final_loss"]) == set(STARTS)
    assert all(np.isfinite(v["total"]) for v in s["final_loss"].values())
    assert len(s["final_distances"]) == 3 * (1 + 3)  # pairs × (pixel + 3 recipe statistics)
    assert set(s["convergence"]["step"]) == set(STARTS)
    assert s["convergence"]["window"] == 4 and "definition" in s["convergence"]
    for key in ("wall_s", "compile_s", "steps_per_s", "backend", "devices"):
        assert s[key] is not None
    rec = json.loads((done.out / "study.json").read_text())
    assert rec["config"]["steps"] == 8 and rec["starts"] == list(STARTS)


def test_report_is_self_contained(done):
    text = (done.out / "report.html").read_text()
    assert "http://" not in text and "https://" not in text
    assert text.count('src="') == text.count('src="data:image/png;base64,') == 3 + len(STARTS)


def test_resume_continues_to_the_same_history(done, tmp_path, stopped_after_first_chunk):
    """Stop after 4 of 8 steps (as Ctrl-C would), resume, and match the uninterrupted study."""
    with stopped_after_first_chunk():
        half = study_lib.run_study(CONFIG, tmp_path, snapshot_every=4, progress=False)
    assert half.interrupted and half.summary["steps_done"] == 4
    assert int(np.load(tmp_path / "state.npz")["step"]) == 4
    whole = study_lib.run_study(CONFIG, tmp_path, snapshot_every=4, progress=False, resume=True)
    assert not whole.interrupted and whole.summary["resumed_from_step"] == 4
    for key in ("step", "start", "term"):
        assert list(whole.history[key]) == list(done.history[key])
    np.testing.assert_allclose(whole.history["value"], done.history["value"], rtol=1e-3, atol=1e-6)
    assert list(whole.distances["step"]) == list(done.distances["step"])


def test_convergence_step():
    flat = np.array([10.0, 5, 3, 2, 1.5, 1.2, 1.2, 1.2, 1.2])  # L(1..9)
    assert study_lib.convergence_step(flat, 2, 0.01) == 8  # r(t) < 1% from t = 8 (= 1.2 vs 1.2)
    assert study_lib.convergence_step(flat, 2, 0.5) == 6  # r(5) = 0.5 is not below
    assert study_lib.convergence_step(np.array([4.0, 2, 1]), 1, 0.01) is None
    assert study_lib.convergence_step(flat[:2], 2, 0.01) is None
    assert study_lib.convergence_step(np.array([1.0, 1, np.nan]), 1, 0.01) is None


def test_sweep_parsing_and_chunks():
    assert study_lib.parse_sweep("tv-weight=0,1e-3") == study_lib.Sweep("tv_weight", (0.0, 1e-3))
    assert study_lib.Sweep("lr", (4.0,)).suffix(4.0) == "@lr=4"
    for bad in ("foo=1", "lr", "lr=a", "lr=0", "lr=1,1"):
        with pytest.raises(JaxcombineError):
            study_lib.parse_sweep(bad)
    assert outputs.chunk_size(25, 25) == 25
    assert outputs.chunk_size(25, 4) == 4
    assert outputs.chunk_size(10, 25) == 5 and outputs.chunk_size(25, 0) == 25


def sweep_study(out, steps):
    """A CLI study of two starts crossed with two TV weights: one program shape, shared by
    the tests that run it (compiled once a session)."""
    return start(
        *("study", "--recipe", SHALLOW, "--size", 32, "--steps", steps, "--snapshot-every", 2),
        *("--quiet", "--inits", "content,noise", "--sweep", "tv_weight=0,0.01"),
        *("--conv", "xla", "--out", out),
    )


def test_cli_study_with_sweep(vgg19, tmp_path):
    out = tmp_path / "s"
    proc = sweep_study(out, steps=2)
    stdout, stderr = proc.communicate(timeout=600)
    assert proc.returncode == 0, stderr
    labels = [f"{s}@tv_weight={v}" for s in ("content", "noise-s0") for v in ("0", "0.01")]
    assert sorted(json.loads((out / "summary.json").read_text())["starts"]) == sorted(labels)
    for lab in labels:
        assert (out / f"{lab}.png").is_file() and lab in stdout
    rows = read_csv(out / "history.csv")
    tv = {r["start"]: (float(r["value"]), float(r["weighted"])) for r in rows if r["term"] == "tv"}
    assert tv["content@tv_weight=0"][1] == 0
    assert tv["content@tv_weight=0.01"][1] == pytest.approx(0.01 * tv["content@tv_weight=0.01"][0])


def test_cli_bad_sweep_is_one_line():
    proc = start("study", "--sweep", "foo=1", "--quiet")
    _, stderr = proc.communicate(timeout=600)
    assert proc.returncode == 2
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("jaxcombine: error:") and "foo" in lines[0]
    assert "Traceback" not in stderr


@pytest.mark.slow
def test_cli_sigint_stops_cleanly(vgg19, tmp_path):
    """A real Ctrl-C: exit 130, everything so far on disk, resumable. The sweep study's
    program shape (test_cli_study_with_sweep), so its compile is shared."""
    out = tmp_path / "s"
    proc = sweep_study(out, steps=100000)
    deadline = time.time() + 300
    while not (out / "state.npz").exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 130, stderr
    assert "Traceback" not in stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["interrupted"] and 0 < summary["steps_done"] < 100000
    state_step = int(np.load(out / "state.npz")["step"])
    assert state_step == summary["steps_done"]
    steps = {int(r["step"]) for r in read_csv(out / "history.csv")}
    assert max(steps) == state_step
