"""Batch manifests: expansion, ids, crash-safe reruns, bad jobs, several devices and processes.

The 12-job grid (default recipe) is only expanded, never run; the mechanics (batching
windows, devices, processes, kill -9) run small manifests on the shallow test recipe with
``conv = "xla"`` (what they test does not depend on the convolution algorithm, and XLA's
programs compile 2-3x faster than Winograd's) and compare against a reference computed for
the same manifest.
"""

import json
import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
import recipe_files
from cli_run import host_devices, jaxcombine, start
from PIL import Image
from recipe_files import SHALLOW

from jaxcombine.batch import runner as batch
from jaxcombine.batch.manifest import legacy_job_id
from jaxcombine.errors import JaxcombineError
from jaxcombine.io import images, records
from jaxcombine.options.config import RunConfig
from jaxcombine.run import plan as plan_lib
from jaxcombine.run.prepare import prepare

MANIFEST = """\
[defaults]
steps = {steps}
size = 32
chunk = 1

[grid]
content = ["c1.png", "c2.png"]
style = ["s1.png", "s2.jpg"]
init = ["content", "style", "noise"]
"""

# Four jobs, two per output shape (c1 is square, c2 is not), each pair differing in style
# and init: batching groups them in twos, with per-job targets and starts.
SMALL = """\
[defaults]
steps = 3
size = 32
chunk = 1
recipe = "shallow.toml"
conv = "xla"

[[jobs]]
content = "c1.png"
style = "s1.png"
init = "content"

[[jobs]]
content = "c1.png"
style = "s2.jpg"
init = "noise"

[[jobs]]
content = "c2.png"
style = "s1.png"
init = "style"

[[jobs]]
content = "c2.png"
style = "s2.jpg"
init = "noise"
"""

# Six jobs of one shape, each long enough (steps) that a kill lands between jobs.
KILL_STEPS = 100  # ~0.2 s a job here: four jobs still to run when two are done
KILL = """\
[defaults]
steps = {steps}
size = 32
chunk = 1
recipe = "shallow.toml"
conv = "xla"

[grid]
content = ["c1.png"]
style = ["s1.png", "s2.jpg"]
init = ["content", "style", "noise"]
"""


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    """Two crops of the bundled photo, two of the painting, the 12-job manifest, and the
    small one with its recipe beside it (a relative recipe path, resolved by the manifest)."""
    d = tmp_path_factory.mktemp("batch")
    photo = Image.open(images.CONTENT).convert("RGB")
    paint = Image.open(images.STYLE).convert("RGB")
    photo.crop((0, 0, 200, 200)).save(d / "c1.png")
    photo.crop((100, 100, 300, 260)).save(d / "c2.png")
    paint.crop((0, 0, 200, 160)).save(d / "s1.png")
    paint.crop((50, 50, 250, 250)).save(d / "s2.jpg")
    (d / "m.toml").write_text(MANIFEST.format(steps=3))
    (d / "small.toml").write_text(SMALL)
    (d / "shallow.toml").write_text(SHALLOW.read_text())
    return d


def run_cli(*args, env=None, cwd=None) -> subprocess.CompletedProcess:
    return jaxcombine("batch", *args, "-q", env=env, cwd=cwd)


def outputs(out: Path) -> dict[str, np.ndarray]:
    """id → decoded image, checking each finished job's three files."""
    found = {}
    for rec in out.glob("*.json"):
        if rec.name.startswith("batch-report"):
            continue
        meta = json.loads(rec.read_text())
        found[meta["id"]] = np.asarray(Image.open(out / meta["image"]))
        assert (out / meta["history"]).read_text().startswith("step,size,total,")
    assert not list(out.rglob(records.TMP_PREFIX + "*"))
    return found


def final_losses(out: Path) -> dict[str, float]:
    return {
        json.loads(p.read_text())["id"]: json.loads(p.read_text())["final_loss"]
        for p in out.glob("*.json")
        if not p.name.startswith("batch-report")
    }


@pytest.fixture(scope="module")
def small_reference(folder, vgg19) -> Path:
    """The small manifest's 4 jobs on one device, one process, batched."""
    out = folder / "small-ref"
    report = batch.run_batch(folder / "small.toml", out, progress=False)
    assert len(report.done) == 4 and not report.failed
    return out


def assert_same_outputs(out: Path, ref: Path) -> None:
    """Every job of ``ref`` is in ``out``, with the same image and final loss."""
    want, got = outputs(ref), outputs(out)
    assert got.keys() == want.keys()
    for k in want:
        np.testing.assert_allclose(got[k], want[k], atol=2)
    np.testing.assert_allclose(
        [final_losses(out)[k] for k in want], [final_losses(ref)[k] for k in want], rtol=1e-3
    )


# --------------------------------------------------------------------------- manifest


def test_manifest_expands_grid_with_stable_ids(folder):
    jobs = batch.load_manifest(folder / "m.toml")
    assert len(jobs) == 12 and len({j.id for j in jobs}) == 12
    assert [j.id for j in jobs] == [j.id for j in batch.load_manifest(folder / "m.toml")]
    assert {j.config.init for j in jobs} == {"content", "style", "noise"}
    assert all(
        Path(j.config.content).is_absolute() and j.config.content.startswith(str(folder))
        for j in jobs
    )
    assert jobs[0].id.startswith("c1-s1-content-")


def test_edited_image_is_a_new_job(tmp_path, folder):
    for name in ("c1.png", "s1.png"):
        (tmp_path / name).write_bytes((folder / name).read_bytes())
    (tmp_path / "m.toml").write_text(
        '[[jobs]]\ncontent = "c1.png"\nstyle = "s1.png"\ninit = "noise:2"\n'
    )
    before = [j.id for j in batch.load_manifest(tmp_path / "m.toml")]
    assert len(before) == 2 and before[0].split("-")[2] != before[1].split("-")[2]
    Image.open(folder / "c2.png").save(tmp_path / "c1.png")
    after = [j.id for j in batch.load_manifest(tmp_path / "m.toml")]
    assert not set(before) & set(after)


MOVABLE = """\
[defaults]
steps = 2
size = 32
chunk = 1
recipe = "shallow.toml"
conv = "xla"
init = "content,noise"
snapshot_every = 1

[[jobs]]
content = "c1.png"
style = "s1.png"
"""


def movable_folder(where: Path, folder: Path) -> Path:
    """``where``: a copy of c1, s1 and the shallow recipe, and MOVABLE (two jobs), all
    named relative to the manifest."""
    where.mkdir(parents=True)
    for name in ("c1.png", "s1.png", "shallow.toml"):
        (where / name).write_bytes((folder / name).read_bytes())
    (where / "m.toml").write_text(MOVABLE)
    return where


def test_ids_name_the_files_bytes_not_their_paths(tmp_path, folder):
    here = movable_folder(tmp_path / "here", folder)
    there = movable_folder(tmp_path / "elsewhere" / "deeper", folder)
    ids = lambda d: [j.id for j in batch.load_manifest(d / "m.toml")]  # noqa: E731
    legacy = lambda d: [  # noqa: E731
        legacy_job_id(j.config, j.recipe) for j in batch.load_manifest(d / "m.toml")
    ]
    assert len(ids(here)) == 2 and ids(here) == ids(there)
    assert not set(legacy(here)) & set(legacy(there))  # 0.1.0's ids hashed the paths
    (there / "shallow.toml").write_text(SHALLOW.read_text() + "\n# edited\n")
    assert not set(ids(here)) & set(ids(there))  # the recipe file's bytes still count


def as_written_by_0_1_0(out: Path, job) -> None:
    """Give ``job``'s finished files the names, and its record the fields, that
    jaxcombine 0.1.0 would have written: the inverse of an adoption."""
    legacy_id = legacy_job_id(job.config, job.recipe)
    record = json.loads((out / f"{job.id}.json").read_text())
    (out / f"{job.id}.png").rename(out / f"{legacy_id}.png")
    (out / f"{job.id}.history.csv").rename(out / f"{legacy_id}.history.csv")
    for snap in (out / "snapshots").glob(f"{job.id}-step*.png"):
        snap.rename(snap.with_name(snap.name.replace(job.id, legacy_id)))
    record.update(id=legacy_id, image=f"{legacy_id}.png", history=f"{legacy_id}.history.csv")
    (out / f"{legacy_id}.json").write_text(json.dumps(record))
    (out / f"{job.id}.json").unlink()


def test_a_moved_folder_skips_its_jobs_and_an_old_one_is_adopted(tmp_path, folder, vgg19):
    here = movable_folder(tmp_path / "here", folder)
    first = batch.run_batch(here / "m.toml", here / "out", progress=False)
    assert len(first.done) == 2 and not first.failed
    made = {p.name: p.read_bytes() for p in (here / "out").rglob("*.png")}
    assert len(made) == 2 + 2 * 2  # two outputs, and a snapshot of each after each step

    there = tmp_path / "elsewhere" / "deeper"
    there.parent.mkdir()
    here.rename(there)
    moved = batch.run_batch(there / "m.toml", there / "out", progress=False)
    assert moved.done == [] and sorted(moved.skipped) == sorted(first.done)

    # The folder as 0.1.0 would have left it here (its ids hashed these paths): adopted
    # by a real rerun of the command, every byte kept, under the new ids.
    out = there / "out"
    jobs = batch.load_manifest(there / "m.toml")
    for job in jobs:
        as_written_by_0_1_0(out, job)
    assert not any(out.glob(f"{jobs[0].id}*"))
    # a kill midway through an adoption: the image renamed, the record not yet written
    (out / f"{legacy_job_id(jobs[1].config, jobs[1].recipe)}.png").rename(out / f"{jobs[1].id}.png")
    result = run_cli(there / "m.toml", "--out", out)
    assert result.returncode == 0, result.stderr
    assert "0 done, 2 skipped (2 renamed from 0.1.0's ids), 0 failed" in result.stdout
    assert {p.name: p.read_bytes() for p in out.rglob("*.png")} == made
    for job in jobs:
        record = json.loads((out / f"{job.id}.json").read_text())
        legacy_id = legacy_job_id(job.config, job.recipe)
        assert record["adopted_from"] == legacy_id and record["id"] == job.id
        assert (out / record["history"]).read_text().startswith("step,size,total,")
        assert not any(out.rglob(f"{legacy_id}*"))
    assert sorted(json.loads((out / batch.REPORT).read_text())["adopted"]) == sorted(first.done)


def test_a_record_that_is_not_0_1_0s_is_not_adopted(tmp_path, folder):
    """A legacy record that is not JSON, or that names files other than its own id's (a
    hostile one naming a file outside the folder), moves nothing: its job runs again."""
    here = movable_folder(tmp_path / "here", folder)
    out = here / "out"
    out.mkdir()
    job = batch.load_manifest(here / "m.toml")[0]
    legacy_id = legacy_job_id(job.config, job.recipe)
    outside = tmp_path / "outside.png"
    outside.write_bytes(b"not the folder's")
    for text in ("{not json", json.dumps({"image": "../outside.png", "history": "h.csv"})):
        (out / f"{legacy_id}.json").write_text(text)
        assert batch.legacy.adopt_all(out, [job]) == []
        assert outside.read_bytes() == b"not the folder's"
        assert not (out / f"{job.id}.json").exists() and not (out / f"{job.id}.png").exists()


def test_unknown_key_names_the_valid_ones(tmp_path):
    (tmp_path / "m.toml").write_text("[defaults]\nstepz = 3\n")
    with pytest.raises(
        JaxcombineError, match=r"unknown key in \[defaults\] 'stepz'; valid: .*steps"
    ):
        batch.load_manifest(tmp_path / "m.toml")


@pytest.mark.parametrize("value", ["0.5", '["x"]'])
def test_malformed_value_is_a_one_line_error(tmp_path, value):
    (tmp_path / "m.toml").write_text(f"[defaults]\nstyle_weights = {value}\n[[jobs]]\n")
    with pytest.raises(
        JaxcombineError, match=r"m.toml: \[defaults\], style_weights: style_weights must be"
    ):
        batch.load_manifest(tmp_path / "m.toml")


def test_an_empty_manifest_is_an_error(tmp_path):
    (tmp_path / "m.toml").write_text("[defaults]\nsteps = 3\n")
    with pytest.raises(JaxcombineError, match="no jobs"):
        batch.load_manifest(tmp_path / "m.toml")


def test_a_window_keeps_one_copy_of_the_weights(folder, vgg19, monkeypatch):
    groups = []
    monkeypatch.setattr(batch.runner, "execute", lambda hooks, **k: groups.append(hooks.group))
    jobs = batch.load_manifest(folder / "small.toml")[:3]
    bar = batch.outputs.ProgressBar(3, unit="job", enabled=False)
    batch._run_window(jobs, folder / "unused", batch.BatchReport(), bar, batch._HeldPrograms())
    preps = [prep for group in groups for _, prep in group]
    assert len(preps) == 3 and all(p.variables is preps[0].variables for p in preps)


def test_process_shares_partition_the_jobs(folder):
    jobs = batch.load_manifest(folder / "m.toml")
    shares = [batch.process_share(jobs, i, 3) for i in range(3)]
    ids = [j.id for share in shares for j in share]
    assert sorted(ids) == sorted(j.id for j in jobs) and len(set(ids)) == 12


# --------------------------------------------------------------------------- runs


# max_batch=3 splits the c2 pair over two windows.
# one at a time in the quick tier; a group split by --max-batch, the same check again, in
# the slow tier
@pytest.mark.parametrize(
    "options", [{"batching": False}, pytest.param({"max_batch": 3}, marks=pytest.mark.slow)]
)
def test_batched_matches_one_at_a_time(folder, small_reference, options):
    out = folder / f"single-{len(os.listdir(folder))}"
    report = batch.run_batch(folder / "small.toml", out, progress=False, **options)
    assert len(report.done) == 4
    assert_same_outputs(out, small_reference)


# small.toml's jobs: two of c1's shape, then two of c2's. Batched, they are two groups;
# one at a time, four, the second and the fourth running the programs of the one before
# (the same count again: slow tier).
@pytest.mark.parametrize(
    "batching, groups", [(True, 2), pytest.param(False, 4, marks=pytest.mark.slow)]
)
def test_a_batch_releases_programs_only_when_the_program_changes(
    folder, vgg19, monkeypatch, batching, groups
):
    released, release = [], batch.memory.release_programs
    monkeypatch.setattr(batch.memory, "release_programs", lambda: released.append(1) or release())
    out = folder / f"held-{batching}"
    report = batch.run_batch(folder / "small.toml", out, progress=False, batching=batching)
    assert len(report.done) == 4 and report.groups == groups
    assert len(released) == 1  # c1's programs, once c2's first group came
    assert json.loads((out / batch.REPORT).read_text())["groups"] == groups


@pytest.mark.slow
def test_kill_9_then_rerun_completes(folder, vgg19):
    out = folder / "killed"
    (folder / "kill.toml").write_text(KILL.format(steps=KILL_STEPS))
    proc = start(
        "batch", folder / "kill.toml", "--out", out, "--no-batching", "-q",
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    deadline = time.monotonic() + 300
    while len(list(out.glob("c*.json"))) < 2 and time.monotonic() < deadline:
        assert proc.poll() is None, "finished before it could be killed"
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    finished = {
        p.name: (p.read_bytes(), p.stat().st_mtime_ns)
        for rec in out.glob("c*.json")
        for p in out.glob(rec.stem + ".*")
    }
    assert 2 <= len(finished) // 3 < 6
    (out / (records.TMP_PREFIX + "stale.png")).write_bytes(b"half")  # as a kill mid-write leaves

    result = run_cli(folder / "kill.toml", "--out", out)
    assert result.returncode == 0, result.stderr
    assert f"{6 - len(finished) // 3} done, {len(finished) // 3} skipped, 0 failed" in result.stdout
    assert len(outputs(out)) == 6
    for name, (data, mtime) in finished.items():
        assert (out / name).read_bytes() == data and (out / name).stat().st_mtime_ns == mtime
    report = json.loads((out / "batch-report.json").read_text())
    assert len(report["done"]) + len(report["skipped"]) == 6


def test_bad_job_is_reported_and_skipped(tmp_path, folder, vgg19):
    (tmp_path / "m.toml").write_text(f"""\
[defaults]
steps = 2
size = 32
init = "content"
recipe = "{SHALLOW}"
conv = "xla"

[[jobs]]
content = "{folder / "c1.png"}"

[[jobs]]
content = "missing.png"

[[jobs]]
content = "{folder / "c2.png"}"
recipe = "no-such-recipe"

[[jobs]]
content = "{folder / "c2.png"}"
size = 1
""")
    result = run_cli(tmp_path / "m.toml", "--out", tmp_path / "out")
    assert result.returncode == 3  # finished, but some jobs failed
    assert "1 done, 0 skipped, 3 failed" in result.stdout
    lines = [ln for ln in result.stderr.splitlines() if "failed:" in ln]
    assert len(lines) == 3
    assert any("image not found" in ln and "missing.png" in ln for ln in lines)
    assert any("no-such-recipe" in ln for ln in lines)
    assert any("too small" in ln for ln in lines)
    report = json.loads((tmp_path / "out" / "batch-report.json").read_text())
    assert len(report["done"]) == 1 and len(report["failed"]) == 3
    assert all("\n" not in why for why in report["failed"].values())
    assert len(outputs(tmp_path / "out")) == 1


@pytest.mark.slow
def test_four_devices_match_one(folder, small_reference):
    out = folder / "four"
    result = run_cli(
        folder / "small.toml",
        "--out",
        out,
        env=host_devices(4),
    )
    assert result.returncode == 0, result.stderr
    assert_same_outputs(out, small_reference)  # groups of 2 starts, padded to 4 devices
    env = json.loads(next(out.glob("c1-*.json")).read_text())["environment"]
    assert len(env["devices"]) == 4


@pytest.mark.slow
def test_two_processes_match_one(folder, small_reference):
    out = folder / "two"
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    procs = [
        start(
            "batch",
            folder / "small.toml",
            "--out",
            out,
            "-q",
            "--coordinator",
            f"127.0.0.1:{port}",
            "--num-processes",
            "2",
            "--process-id",
            i,
        )  # fmt: skip
        for i in range(2)
    ]
    results = [p.communicate(timeout=600) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], results
    # process 1 tells its share; process 0 the union, once both are done
    assert [r[0].split(",")[0] for r in results] == ["4 done", "2 done"]
    assert [
        len(json.loads((out / f"batch-report.{i}.json").read_text())["done"]) for i in range(2)
    ] == [2, 2]
    assert_same_outputs(out, small_reference)
    report = json.loads((out / "batch-report.json").read_text())
    assert sorted(report["done"]) == sorted(outputs(small_reference)) and report["processes"] == 2
    owners = {
        json.loads(p.read_text())["environment"]["process_index"] for p in out.glob("c*.json")
    }
    assert owners == {0, 1}


@pytest.mark.slow
def test_a_batched_job_matches_jaxcombine_run(folder, small_reference):
    """Per-job targets (batched) give what a plain ``combine`` with shared targets gives."""
    from jaxcombine.run.job import combine

    job = next(j for j in batch.load_manifest(folder / "small.toml") if "c2-s2-noise" in j.id)
    result = combine(job.config)
    np.testing.assert_allclose(
        result.images[result.labels[0]], outputs(small_reference)[job.id], atol=2
    )
    assert result.final_losses()[result.labels[0]] == pytest.approx(
        final_losses(small_reference)[job.id], rel=1e-3
    )


def test_jobs_whose_scales_weigh_terms_apart_do_not_share_a_program(tmp_path):
    """A coarse-to-fine group runs each scale with one set of loss factors (the first
    job's), so a job whose style term takes the inverse of the content factor
    (inverse_content_weight) must not join a group of jobs whose term does not, though
    both compile the same program; two identical jobs still share one."""
    plain, flagged = recipe_files.shallow(), recipe_files.shallow()
    flagged["terms"][1]["inverse_content_weight"] = True
    preps = []
    for name, recipe in (("a", plain), ("b", plain), ("c", flagged)):
        path = str(recipe_files.write(tmp_path / f"{name}.toml", recipe))
        config = RunConfig(
            recipe=path, size=64, scale_count=2, scale_content_weights=(1, 0.5), conv="xla"
        )
        preps.append((name, prepare(plan_lib.make(config))))
    groups = [[j for j, _ in g] for _, g in batch._groups(preps)]
    assert sorted(groups) == [["a", "b"], ["c"]]


def test_jobs_whose_scales_step_apart_do_not_share_a_program(tmp_path):
    """Each scale's learning-rate factor is the group's (the first job's) too: jobs that
    differ only in scale_lr_factors run apart (an eval-suite of two such recipes once
    gave the second the first's rates and identical images)."""
    path = str(recipe_files.write(tmp_path / "r.toml", recipe_files.shallow()))
    preps = []
    for name, rates in (("a", (1.0, 3.0)), ("b", (1.0, 3.0)), ("c", (1.0, 5.0))):
        config = RunConfig(recipe=path, size=64, scale_count=2, scale_lr_factors=rates, conv="xla")
        preps.append((name, prepare(plan_lib.make(config))))
    groups = [[j for j, _ in g] for _, g in batch._groups(preps)]
    assert sorted(groups) == [["a", "b"], ["c"]]
