"""Unattended runs at the edges: shared folders, killed writers, checked resumes, exit codes.

Faults between processes are tested with real processes: two ``batch`` runs on one
folder, ``kill -9``, a live writer beside a cleaner. The runs use XLA's convolutions
(``conv = "xla"``): no fault here depends on the algorithm, and Winograd's programs compile
2-3x slower.
"""

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import recipe_files
from cli_run import cpu_env, start
from PIL import Image
from recipe_files import term

from jaxcombine.batch import manifest
from jaxcombine.batch import runner as batch
from jaxcombine.errors import JaxcombineError
from jaxcombine.io import folders, images, records
from jaxcombine.networks import store, weights
from jaxcombine.options.config import RunConfig
from jaxcombine.study import runner as study_lib

SHALLOW = recipe_files.shallow()
SLOW = pytest.mark.slow  # a case whose route a quick sibling already takes


def finish(proc, timeout=600):
    out, err = proc.communicate(timeout=timeout)
    return proc.returncode, out, err


def one_line_error(err, fragment):
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("jaxcombine: error:"), err
    assert fragment in lines[0], lines[0]
    assert "Traceback" not in err


# The in-process runs' size: two steps in one chunk at 24 px with XLA's convolutions (the
# fault is the subject, not the picture; the same shapes reuse a compiled program).
SMALL = dict(steps=2, size=24, chunk=2, conv="xla")


@pytest.fixture(scope="module")
def shallow(tmp_path_factory):
    d = tmp_path_factory.mktemp("recipes")
    recipe_files.write(d / "shallow.toml", SHALLOW)
    # terms whose weighted sum overflows float32: every start diverges at step 1
    recipe_files.write(d / "overflow.toml", recipe_files.with_terms(SHALLOW, weight=3e38))
    return d


# --------------------------------------------------------------------------- output folder


@pytest.mark.parametrize(
    "below, fragment",
    [
        ("", "is a file, not a folder"),
        ("sub", "cannot write to output folder"),
    ],
)
def test_a_bad_output_folder_is_refused_before_any_work(tmp_path, below, fragment):
    (tmp_path / "taken").write_text("a file where the folder should be")
    out = tmp_path / "taken" / below if below else tmp_path / "taken"
    # the content image is missing too: the folder must be what is reported, first
    code, _, err = finish(start("run", "--content", tmp_path / "missing.png", "--out", out))
    assert code == 2
    one_line_error(err, fragment)
    assert str(out) in err


# --------------------------------------------------------------------------- exit codes, JSON


def test_diverged_starts_exit_3_with_strict_json(vgg19, shallow, tmp_path):
    code, out, err = finish(
        start(
            "run",
            "--recipe",
            shallow / "overflow.toml",
            "--size",
            "24",
            "--steps",
            "2",
            "--chunk",
            "2",
            "--conv",
            "xla",
            "-q",
            "--out",
            tmp_path,
        )
    )
    assert code == 3, err
    assert "1 of 1 starts diverged (content)" in err and "Traceback" not in err

    def no_constants(name):
        raise AssertionError(f"non-standard JSON constant {name}")

    rec = json.loads((tmp_path / "content.json").read_text(), parse_constant=no_constants)
    assert rec["diverged_at_step"] == 1 and rec["final_loss"] is None
    assert "nan" in (tmp_path / "content.history.csv").read_text().splitlines()[1]  # CSV keeps it
    assert np.asarray(Image.open(tmp_path / "content.png")).shape[:2] == (24, 24)


def test_records_are_strict_json(tmp_path):
    records.write_json(
        tmp_path / "r.json",
        {"a": float("nan"), "b": [1.0, float("inf")], "c": np.array([np.nan, 2.0])},
    )
    assert json.loads((tmp_path / "r.json").read_text()) == {
        "a": None,
        "b": [1.0, None],
        "c": [None, 2.0],
    }


def test_an_image_with_nan_pixels_is_refused(tmp_path):
    a = np.full((40, 40), 100.0, np.float32)
    a[3, 3] = np.nan
    Image.fromarray(a, mode="F").save(tmp_path / "nan.tiff")
    with pytest.raises(JaxcombineError, match="NaN or infinite pixels"):
        images.read(tmp_path / "nan.tiff")


# --------------------------------------------------------------------------- temp files


def test_temp_files_are_removed_only_when_their_writer_is_gone(tmp_path):
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            (
                "import sys, time, pathlib\n"
                "from jaxcombine.io import folders\n"
                "d = pathlib.Path(sys.argv[1])\n"
                "with folders.guarded_temp_prefix(d) as prefix:\n"
                "    (d / (prefix + 'live.png')).write_bytes(b'half')\n"
                "    print('ready', flush=True)\n"
                "    time.sleep(600)\n"
            ),
            str(tmp_path),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout.readline().strip() == "ready"
    legacy = tmp_path / (folders.TMP_PREFIX + "oldstyle.png")  # from a version without locks
    legacy.write_bytes(b"half")
    live = next(tmp_path.glob(folders.TMP_PREFIX + "*live.png"))
    assert folders.remove_stale_temps(tmp_path) == [legacy]
    assert live.exists()
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    assert folders.remove_stale_temps(tmp_path) == [live] and not live.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # its lock went too


# --------------------------------------------------------------------------- batches


def _manifest(folder: Path, recipe: Path, steps: int, n: int) -> Path:
    path = folder / "m.toml"
    path.write_text(
        f'[defaults]\nsize = 24\nchunk = 1\nsteps = {steps}\nrecipe = "{recipe}"\n'
        f'init = "noise:{n}"\nconv = "xla"\n[[jobs]]\n'
    )
    return path


def _records(out: Path) -> dict[str, dict]:
    """The finished jobs' records. Not a writer's temporary (``.jaxcombine-tmp-….json``,
    which ``glob`` matches too): seen whole before its rename, it made a killed process
    look as if it had finished a job that the rerun then rightly did again."""
    return {
        p.stem: json.loads(p.read_text())
        for p in out.glob("*.json")
        if not p.name.startswith(("batch-report", folders.TMP_PREFIX))
    }


def test_two_batches_share_a_folder_then_one_is_killed_and_a_rerun_finishes(
    vgg19, shallow, tmp_path
):
    """Every job done exactly once, no partial file, no temp file left."""
    n = 8
    manifest = _manifest(tmp_path, shallow / "shallow.toml", steps=40, n=n)  # both get to work
    out = tmp_path / "out"
    a = start("batch", manifest, "--out", out, "--no-batching", "-q")
    b = start("batch", manifest, "--out", out, "--no-batching", "-q")
    deadline = time.monotonic() + 300
    writers = lambda: {rec["environment"]["pid"] for rec in _records(out).values()}  # noqa: E731
    while not {a.pid, b.pid} <= writers() and time.monotonic() < deadline:  # both at work
        assert a.poll() is None, "finished before it could be killed"
        time.sleep(0.05)
    a.send_signal(signal.SIGKILL)
    a.wait()
    code_b, out_b, err_b = finish(b)
    assert code_b == 0, err_b
    code_c, out_c, err_c = finish(start("batch", manifest, "--out", out, "-q"))
    assert code_c == 0, err_c

    recs = _records(out)
    assert len(recs) == n
    for rec in recs.values():
        assert np.asarray(Image.open(out / rec["image"])).shape == (24, 24, 3)  # whole files
    by_a = sum(rec["environment"]["pid"] == a.pid for rec in recs.values())
    by_b = sum(rec["environment"]["pid"] == b.pid for rec in recs.values())
    done_b, done_c = (int(o.split(" done,")[0]) for o in (out_b, out_c))
    assert by_a >= 1 and by_b == done_b >= 1  # both ran jobs before the kill
    # each job exactly once: what A, B and the rerun did adds up to the manifest, no more
    assert by_a + done_b + done_c == n
    assert not list(out.rglob(folders.TMP_PREFIX + "*"))


def test_a_write_failure_belongs_to_its_job_alone(vgg19, shallow, tmp_path, monkeypatch):
    manifest = _manifest(tmp_path, shallow / "shallow.toml", steps=2, n=3)
    jobs = batch.load_manifest(manifest)
    real = batch.write_job

    def flaky(out, job, *a, **kw):
        if job.id == jobs[1].id:
            raise OSError(28, "No space left on device")
        return real(out, job, *a, **kw)

    monkeypatch.setattr(batch, "write_job", flaky)
    report = batch.run_batch(manifest, tmp_path / "out", progress=False)
    assert sorted(report.done) == sorted([jobs[0].id, jobs[2].id])
    assert list(report.failed) == [jobs[1].id] and "No space left" in report.failed[jobs[1].id]
    assert set(_records(tmp_path / "out")) == {jobs[0].id, jobs[2].id}


def test_job_ids_are_capped_and_follow_the_weights(tmp_path, monkeypatch):
    long = tmp_path / ("a-very-long-style-name-" * 6 + ".png")
    Image.new("RGB", (8, 8)).save(long)
    folder = tmp_path / "weights"  # a weights folder: only its record is read to name a job
    folder.mkdir()
    record = {"arch": "vgg19", "file": "vgg19.h5", "fingerprint": "sha256:one", "created": "x"}
    (folder / "vgg19.json").write_text(json.dumps(record))
    config = RunConfig(style=(str(long),) * 4, init="content", weights=str(folder))
    monkeypatch.setattr(weights, "load", lambda *a, **k: pytest.fail("weights loaded"))
    jid = manifest.job_id(config)
    assert len(jid.encode()) <= manifest.MAX_READABLE_ID + 11
    (folder / "vgg19.json").write_text(json.dumps({**record, "created": "y"}))
    assert manifest.job_id(config) == jid  # the same weights, recorded again
    (folder / "vgg19.json").write_text(json.dumps({**record, "fingerprint": "sha256:two"}))
    assert manifest.job_id(config) != jid


@pytest.mark.parametrize("model", ["vgg19", "vgg16-tv", "alexnet"])
def test_a_job_is_named_alike_before_and_after_its_weights_are_fetched(tmp_path, model):
    """A suite on vgg16-tv started before its weights were fetched named every job with no
    fingerprint, and its rerun, after the fetch, named them anew and ran them all again:
    an id takes the fingerprint the fetch will give."""
    folder = tmp_path / "weights"
    folder.mkdir()
    config = RunConfig(model=model, init="content", weights=str(folder))
    before = manifest.job_id(config)  # nothing fetched yet
    fetched = store.fetched_fingerprint(model)
    assert fetched is not None and fetched.startswith("sha256:")
    record = {"arch": model, "file": f"{model}.h5", "fingerprint": fetched, "created": "x"}
    (folder / f"{model}.json").write_text(json.dumps(record))
    assert manifest.job_id(config) == before
    (folder / f"{model}.json").write_text(json.dumps({**record, "fingerprint": "sha256:own"}))
    assert manifest.job_id(config) != before  # weights of your own: another job
    assert store.fetched_fingerprint("vgg16") is None  # Keras's VGG16 is only imported


def test_job_ids_follow_the_mask_files_a_recipe_names(tmp_path):
    """A batch must not take a finished job as done after the mask its recipe names
    was redrawn (the recipe file itself is unchanged)."""
    masked = term("style", "block1_conv1", "gram", mask="region.png")
    recipe_files.write(tmp_path / "masked.toml", {"terms": [masked]})
    Image.new("L", (8, 8), 255).save(tmp_path / "region.png")
    config = RunConfig(recipe=str(tmp_path / "masked.toml"), init="content")
    jid = manifest.job_id(config)
    Image.new("L", (8, 8), 128).save(tmp_path / "region.png")
    assert manifest.job_id(config) != jid


@pytest.mark.slow  # several hosts: jax.distributed's failure, not a single machine's
def test_an_unreachable_coordinator_is_one_line(tmp_path, shallow):
    manifest = _manifest(tmp_path, shallow / "shallow.toml", steps=1, n=1)
    t0 = time.monotonic()
    code, _, err = finish(
        start(
            "batch",
            manifest,
            "--out",
            tmp_path / "o",
            "--coordinator",
            "127.0.0.1:9",
            "--num-processes",
            "2",
            "--process-id",
            "1",
            "--coordinator-timeout",
            "2",
        ),
        timeout=120,
    )
    assert code == 2 and time.monotonic() - t0 < 60
    one_line_error(err, "coordinator 127.0.0.1:9 unreachable after 2 s")


# --------------------------------------------------------------------------- resume


def test_resume_refuses_another_configuration_or_a_corrupt_state(vgg19, shallow, tmp_path):
    config = RunConfig(
        recipe=str(shallow / "shallow.toml"),
        init="content",
        **SMALL,
    )
    study_lib.run_study(config, tmp_path, snapshot_every=2, progress=False)
    grey = tmp_path / "grey.png"
    Image.new("RGB", (30, 30), (90, 90, 90)).save(grey)
    with pytest.raises(JaxcombineError, match="made with other files \\(style 1 ") as e:
        study_lib.run_study(
            config.replace(style=(str(grey),), steps=4),
            tmp_path,
            snapshot_every=2,
            progress=False,
            resume=True,
        )
    assert "\n" not in str(e.value)
    with pytest.raises(JaxcombineError, match="made with other lr"):
        study_lib.run_study(
            config.replace(lr=1.0), tmp_path, snapshot_every=2, progress=False, resume=True
        )
    # a state saved by 0.1.0 held the paths in its identity: they no longer count
    with np.load(tmp_path / "state.npz") as z:
        state = dict(z)
    identity = json.loads(str(state["identity"]))
    state["identity"] = np.asarray(json.dumps({**identity, "content": "/elsewhere/c.png"}))
    np.savez(tmp_path / "state.npz", **state)
    # more steps, from copies of its files elsewhere (the same bytes): allowed
    moved = tmp_path / "moved"
    moved.mkdir()
    for name, source in (
        ("c.png", images.CONTENT),
        ("s.jpg", images.STYLE),
        ("r.toml", shallow / "shallow.toml"),
    ):
        (moved / name).write_bytes(Path(source).read_bytes())
    more = study_lib.run_study(
        config.replace(
            steps=4,
            content=str(moved / "c.png"),
            style=(str(moved / "s.jpg"),),
            recipe=str(moved / "r.toml"),
        ),
        tmp_path,
        snapshot_every=2,
        progress=False,
        resume=True,
    )
    assert more.summary["steps_done"] == 4 and more.summary["resumed_from_step"] == 2
    (tmp_path / "state.npz").write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(JaxcombineError, match="state.npz is not a readable jaxcombine study state"):
        study_lib.run_study(config, tmp_path, snapshot_every=2, progress=False, resume=True)


@pytest.mark.parametrize("edit", ["recipe", pytest.param("mask", marks=SLOW)])
def test_resume_refuses_an_edited_recipe_or_a_redrawn_mask(vgg19, shallow, tmp_path, edit):
    """The identity covers the bytes of every file a run reads, so the history written
    before a resume never changes: an edited weight in the recipe file (same path) or a
    redrawn style mask is refused, naming the file, and history.csv is left as it was."""
    recipe = tmp_path / "r.toml"
    recipe_files.write(recipe, SHALLOW)
    mask = tmp_path / "m.png"
    Image.new("L", (24, 24), 255).save(mask)
    config = RunConfig(
        recipe=str(recipe),
        style_masks=(str(mask),),
        init="content",
        **SMALL,
    )
    out = tmp_path / "study"
    study_lib.run_study(config, out, snapshot_every=2, progress=False)
    history = (out / "history.csv").read_bytes()
    if edit == "recipe":
        recipe_files.write(recipe, recipe_files.with_terms(SHALLOW, weight=50.0))
        fragment = f"files (recipe {recipe})"
    else:
        Image.new("L", (24, 24), 90).save(mask)
        fragment = f"files (style mask 1 {mask})"
    with pytest.raises(JaxcombineError) as e:
        study_lib.run_study(
            config.replace(steps=4), out, snapshot_every=2, progress=False, resume=True
        )
    assert fragment in str(e.value) and "\n" not in str(e.value)
    assert (out / "history.csv").read_bytes() == history


# --------------------------------------------------------------------------- interrupts


# 0.8 s and later land in the run's preparation or compile, where one late case suffices
@pytest.mark.parametrize("delay", [0.05, 0.3, 0.8, pytest.param(1.6, marks=SLOW)])
def test_ctrl_c_at_start_up_is_exit_130_without_a_traceback(shallow, tmp_path, delay):
    """A Ctrl-C ``delay`` s after the console script's module is imported (while the CLI's
    modules load, JAX imports, the run is prepared) exits 130 without a traceback. The
    delay counts from that import, which ``-X importtime`` reports on stderr, and not from
    the process's start: before it, the interpreter's own start-up owns SIGINT, which no
    code of ours can guard, and a guess of its length fails under load. The run is cheap
    per chunk (shallow, 32 px, XLA's convolutions, one step a chunk): a Ctrl-C that lands
    as late as the compile stops it after one step."""
    proc = start(
        "run", "--recipe", shallow / "shallow.toml", "--size", "32", "--conv", "xla",
        "--steps", "100000", "--chunk", "1", "-q", "--out", tmp_path,
        interpreter_options=("-X", "importtime"), stdout=subprocess.DEVNULL,
    )  # fmt: skip
    lines, entered = [], threading.Event()

    def drain():  # "import time: self | cumulative | module" as each import ends, then ours
        for line in proc.stderr:
            lines.append(line)
            if line.rstrip().endswith("| jaxcombine.cli.entry"):
                entered.set()

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    try:
        assert entered.wait(120), "".join(lines)[-2000:]
        time.sleep(delay)
        proc.send_signal(signal.SIGINT)
        code = proc.wait(120)
    finally:
        proc.kill()  # a lost Ctrl-C: the run would go on for 100000 steps
    reader.join(10)
    err = "".join(lines)
    assert code == 130, err[-2000:]
    assert "Traceback" not in err


GC_CALLBACK_CTRL_C = r"""
import gc, os, signal
from jaxcombine.run import interrupts
interrupts.note_interrupts()
def collecting(phase, info):  # like JAX's own gc callback: a Ctrl-C lands while it runs
    if phase == "start" and not interrupts.RECEIVED:
        os.kill(os.getpid(), signal.SIGINT)
        for _ in range(1000):  # the handler runs at one of these bytecodes
            pass
gc.callbacks.append(collecting)
gc.collect()
with interrupts.stop_requests() as stop:
    print(len(interrupts.RECEIVED), stop.is_set())
"""


def test_a_ctrl_c_inside_a_gc_callback_is_noted_without_a_traceback():
    """Python swallows an exception raised in a garbage-collection callback and prints
    its traceback ("Exception ignored in ..."): seen in CI, a Ctrl-C during JAX's gc
    callback. There the Ctrl-C is only noted, and the next run starts stopped."""
    proc = subprocess.run(
        [sys.executable, "-c", GC_CALLBACK_CTRL_C],
        capture_output=True,
        text=True,
        env=cpu_env(),
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["1", "True"]
    assert "Traceback" not in proc.stderr and "Exception ignored" not in proc.stderr


def test_a_non_utf8_recipe_is_one_line(tmp_path):
    (tmp_path / "r.toml").write_bytes(b"description = '\xff\xfe'\n")
    code, _, err = finish(start("run", "--recipe", tmp_path / "r.toml", "--out", tmp_path / "o"))
    assert code == 2
    one_line_error(err, "not a UTF-8 text file")


# --------------------------------------------------------------------------- memory


@pytest.mark.parametrize(
    "args, fragment",
    [
        (["run", "--size", "100000"], "1 start at 100000x100000, gatys to block5_conv1"),
        # the same refusal by other routes (the starts, a --max-memory): slow tier
        pytest.param(["run", "--init", "noise:99999"], "99999 starts at 192x192", marks=SLOW),
        pytest.param(
            ["run", "--size", "64", "--max-memory", "0.1"], "but 100 MB is available", marks=SLOW
        ),
        (
            [
                "features",
                images.CONTENT,
                "--layers",
                "block5_conv1",
                "--size",
                "30000",
                "--out",
                "f.npz",
            ],
            "features of 30000x30000 to block5_conv1",
        ),
    ],
)
def test_a_run_too_big_for_memory_is_refused_before_it_starts(tmp_path, args, fragment):
    code, _, err = finish(
        start(
            *args,
            "--out" if args[0] == "run" else "--max-memory",
            tmp_path / "o" if args[0] == "run" else "20",
            cwd=tmp_path,
        )
    )
    assert code == 2
    one_line_error(err, "needs about")
    assert fragment in err and "--max-memory to override" in err
    assert not (tmp_path / "o").exists() or not any((tmp_path / "o").iterdir())


def test_a_second_ctrl_c_mid_chunk_aborts_at_once(vgg19, shallow, tmp_path):
    """One chunk of 100000 steps: the first Ctrl-C asks for a stop after it, the second
    aborts within seconds (the main thread waits for a chunk in short sleeps, so its
    signal handler runs; the exit does not wait for the chunk), exit 130, one line."""
    proc = start(
        "run",
        "--recipe",
        shallow / "shallow.toml",
        "--size",
        "64",
        "--steps",
        "100000",
        "--chunk",
        "100000",
        "--conv",
        "xla",
        "--loop",
        "scan",  # one compiled chunk (xla's CPU default is a Python loop of steps)
        "--out",
        tmp_path / "out",
    )
    started, seen = threading.Event(), []

    def watch():  # the progress bar appears as the chunks begin
        for char in iter(lambda: proc.stderr.read(1), ""):
            seen.append(char)
            if "0/100000" in "".join(seen[-40:]):
                started.set()

    threading.Thread(target=watch, daemon=True).start()
    try:
        assert started.wait(120), "".join(seen)
        time.sleep(1.0)
        proc.send_signal(signal.SIGINT)
        time.sleep(1.0)
        proc.send_signal(signal.SIGINT)
        sent = time.monotonic()
        assert proc.wait(60) == 130
        assert time.monotonic() - sent < 10
    finally:
        proc.kill()  # without the abort the chunk would run for minutes
    time.sleep(0.2)  # the watcher's last characters
    err = "".join(seen)
    assert "Traceback" not in err and err.rstrip().endswith("jaxcombine: interrupted")
    assert not (tmp_path / "out" / "content.png").exists()  # the run in flight wrote nothing


def test_ctrl_c_during_the_writes_lets_them_finish(vgg19, shallow, tmp_path, monkeypatch):
    """A real SIGINT while the first image is written: every start and run.json still land."""
    from jaxcombine.run import job

    real, sent = images.write, []

    def write_then_interrupt(path, rgb):
        if not sent:
            sent.append(path)
            os.kill(os.getpid(), signal.SIGINT)
        return real(path, rgb)

    monkeypatch.setattr(images, "write", write_then_interrupt)
    result = job.combine(
        recipe=str(shallow / "shallow.toml"),
        init="content,noise:3",
        **SMALL,
        out=tmp_path,
    )
    assert sent and result.interrupted and result.outcome.steps_done == 2
    for label in result.labels:
        for suffix in (".png", ".json", ".history.csv"):
            assert (tmp_path / f"{label}{suffix}").is_file(), label + suffix
    assert json.loads((tmp_path / "run.json").read_text())["inits"] == list(result.labels)
