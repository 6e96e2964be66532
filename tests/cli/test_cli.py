"""The console script, run as a real subprocess: outputs, records, one-line errors."""

import json
from pathlib import Path

import numpy as np
import pytest
import recipe_files
from cli_run import assert_one_line_error, jaxcombine, start
from PIL import Image

from jaxcombine.io import images

TINY = ["--size", "32", "--steps", "4", "--chunk", "2", "--quiet"]
# Mechanics (compile cache, signals) do not depend on depth: a recipe stopping at block2_conv1.
SHALLOW = str(recipe_files.SHALLOW)


@pytest.mark.slow
def test_run_writes_images_histories_and_records(vgg19, tmp_path):
    out = tmp_path / "out"
    jaxcombine(
        "run",
        *TINY,
        "--init",
        "content,style,noise",
        "--snapshot-every",
        "2",
        "--out",
        out,
        check=True,
    )
    for label in ("content", "style", "noise-s0"):
        img = np.asarray(Image.open(out / f"{label}.png"))
        assert img.shape == (32, 32, 3)
        rows = (out / f"{label}.history.csv").read_text().splitlines()
        assert rows[0].startswith("step,size,total,content:activations:block4_conv2")
        assert len(rows) == 5
        rec = json.loads((out / f"{label}.json").read_text())
        assert rec["config"]["steps"] == 4 and rec["init"]["kind"] == label.split("-")[0]
        assert rec["weights"]["fingerprint"] == vgg19.fingerprint
        assert rec["environment"]["jaxcombine"] and rec["environment"]["backend"] == "cpu"
        assert rec["config"]["conv"] == "auto" and rec["problem"]["conv"] == "winograd"  # resolved
        assert (
            rec["config"]["loop"] == "auto" and rec["loop"] == "scan" and rec["shard"] == "starts"
        )
        assert (out / "snapshots" / f"{label}-step000002.png").exists()
    run = json.loads((out / "run.json").read_text())
    assert run["inits"] == ["content", "style", "noise-s0"]
    assert not [p for p in out.rglob(".jaxcombine-tmp*")]


@pytest.mark.slow
def test_zero_steps_write_the_start_and_say_so(tmp_path):
    """``--steps 0`` writes the start image and its record; the summary says no step ran
    (it printed "loss nan", which reads like a diverged run)."""
    out = tmp_path / "out"
    proc = jaxcombine("run", "--size", "32", "--steps", "0", "--quiet", "--out", out, check=True)
    assert f"{out / 'content.png'}: the start image, no steps run" in proc.stdout, proc.stdout
    assert "nan" not in proc.stdout
    assert np.asarray(Image.open(out / "content.png")).shape == (32, 32, 3)
    assert json.loads((out / "content.json").read_text())["final_loss"] is None


def test_features_match_the_python_api(vgg19, tmp_path):
    from jaxcombine.tools import features

    out = tmp_path / "f.npz"
    proc = jaxcombine(
        "features",
        images.CONTENT,
        "--layers",
        "block1_conv1,block3_pool",
        "--size",
        "40",
        "--out",
        out,
        check=True,
    )
    assert "block3_pool: 5x5x256" in proc.stdout
    saved = np.load(out)
    assert saved["block1_conv1"].shape == (40, 40, 64) and saved["block1_conv1"].dtype == np.float32
    direct = features.extract(images.read(images.CONTENT, size=40), ["block3_pool"])
    np.testing.assert_allclose(saved["block3_pool"], direct["block3_pool"], rtol=1e-5, atol=1e-4)
    rec = json.loads(out.with_suffix(".json").read_text())
    assert rec["config"]["layers"] == ["block1_conv1", "block3_pool"]


@pytest.mark.parametrize(
    "args, fragment",
    [
        (["run", "--content", "missing.png"], "image not found"),
        (["run", "--recipe", "nope"], "unknown recipe"),
        (["run", "--init", "sideways"], "bad init"),
        (["run", "--steps", "ten"], "steps must be an integer >= 0 and <= 10000000, got 'ten'"),
        (["run", "--size", "4"], "too small for layer"),
        (["run", "--conv", "winograd", "--dtype", "bfloat16"], "needs float32"),
        (["run", "--bogus"], "No such option"),
        (["features", "IMG", "--layers", "block9_conv9", "--out", "x.npz"], "unknown layer"),
        (["features", "NOTIMG", "--layers", "block1_conv1", "--out", "x.npz"], "not an image"),
        (["recipes", "show", "nope"], "unknown recipe"),
        (["train", "--crop", "30"], "crop must be a multiple of 4"),
        (["stylize", "--net", "nowhere", "IMG"], "holds no trained network"),
    ],
)
def test_bad_input_is_one_line_and_non_zero(vgg19, tmp_path, args, fragment):
    (tmp_path / "NOTIMG").write_text("just text")
    args = [str(images.CONTENT) if a == "IMG" else a for a in args]
    assert_one_line_error(jaxcombine(*args, cwd=tmp_path), fragment)


@pytest.mark.parametrize(
    "args, fragment",
    [
        (["run", "--style", "missing.png"], "image not found"),
        (["run", "--style-mask", "missing.png"], "style mask not found"),
        (["run", "--init", "content,missing.png"], "bad init 'missing.png'"),
        (["run", "--content", "NOTIMG"], "not an image Pillow can read"),
        (["study", "--style", "missing.png"], "image not found"),
        (["eval", "missing.png"], "image not found"),
        (["features", "NOTIMG", "--layers", "block1_conv1", "--out", "x.npz"], "not an image"),
    ],
)
def test_bad_files_are_refused_before_jax_starts(tmp_path, monkeypatch, args, fragment):
    """Missing or unreadable inputs are refused before the command starts JAX (a second or
    more of start-up): a compile cache that cannot be used would add a warning line the
    moment JAX started (test_an_unusable_compile_cache_is_one_warning_line), and none is
    there."""
    (tmp_path / "file").write_text("a file where the cache folder should be")
    monkeypatch.setenv("JAXCOMBINE_COMPILE_CACHE", str(tmp_path / "file" / "xla"))
    (tmp_path / "NOTIMG").write_text("just text")
    assert_one_line_error(jaxcombine(*args, cwd=tmp_path), fragment)


def test_recipes_list_and_show():
    proc = jaxcombine("recipes", check=True)
    assert "gatys" in proc.stdout and "style4-content3" in proc.stdout
    toml = jaxcombine("recipes", "show", "gatys", check=True).stdout
    assert 'statistic = "gram"' in toml


@pytest.mark.slow
def test_compiled_programs_are_kept_between_runs(vgg19, tmp_path, monkeypatch):
    """``off`` writes no cache (not even the default one) for a command that computes (a
    features extraction: the cheapest); a cache folder is filled by a first run, and a
    second run of the same shapes adds nothing and gives the same image. Its own cache
    folder: the session's shared one may hold these programs already. XLA's convolutions:
    what is cached does not depend on the algorithm, and they compile 2-3x faster."""
    cache = tmp_path / "xla"
    monkeypatch.setenv(
        "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0"
    )  # keep even quick compiles
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "home-cache"))  # the default's parent
    monkeypatch.setenv("JAXCOMBINE_COMPILE_CACHE", "off")
    features = ["--layers", "block1_conv1", "--size", "32", "--out", tmp_path / "f.npz"]
    jaxcombine("features", images.CONTENT, *features, check=True)
    assert (tmp_path / "f.npz").is_file()  # it computed
    assert not (tmp_path / "home-cache" / "jaxcombine" / "xla").exists()
    monkeypatch.setenv("JAXCOMBINE_COMPILE_CACHE", str(cache))
    run = [*TINY, "--recipe", SHALLOW, "--conv", "xla", "--loop", "scan"]
    jaxcombine("run", *run, "--out", tmp_path / "b", check=True)
    kept = sorted(cache.iterdir())
    assert any("_rolled_chunk" in p.name for p in kept)  # the chunk program, at least
    jaxcombine("run", *run, "--out", tmp_path / "c", check=True)
    assert sorted(cache.iterdir()) == kept  # the second run compiled nothing new
    np.testing.assert_array_equal(
        np.asarray(Image.open(tmp_path / "b" / "content.png")),
        np.asarray(Image.open(tmp_path / "c" / "content.png")),
    )


# SIGTERM in the slow tier: run.interrupts installs one handler for both signals, and the
# quick tier keeps SIGINT here and the second Ctrl-C in test_faults.
@pytest.mark.parametrize("sig", ["SIGINT", pytest.param("SIGTERM", marks=pytest.mark.slow)])
def test_interrupt_stops_at_a_chunk_and_keeps_results(vgg19, tmp_path, sig):
    """Both signals run one program shape (XLA's convolutions), compiled once a session."""
    import signal
    import time

    out = tmp_path / "out"
    proc = start(
        "run", "--recipe", SHALLOW, "--size", "32", "--steps", "100000", "--chunk", "2",
        "--snapshot-every", "2", "--conv", "xla", "--quiet", "--out", out,
    )  # fmt: skip
    deadline = time.time() + 300
    while not list(out.glob("snapshots/*.png")) and time.time() < deadline:
        time.sleep(0.2)
    proc.send_signal(getattr(signal, sig))
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stderr
    assert "Traceback" not in stderr
    rows = (out / "content.history.csv").read_text().splitlines()
    rec = json.loads((out / "content.json").read_text())
    assert rec["interrupted"] is True and rec["steps_done"] == len(rows) - 1 >= 2
    assert np.asarray(Image.open(out / "content.png")).shape == (32, 32, 3)


def test_an_entry_a_killed_process_left_half_written_does_not_break_the_cache(tmp_path):
    """JAX writes a cache entry, then its access time; a process killed between the two
    leaves an entry without one, and every later write failed while JAX sized the folder
    (a warning per compiled program, in every later run). The next command removes it.
    The kill's window is too short to hit on purpose: its leftover is made by hand from a
    real run's entries."""
    cache = tmp_path / "xla"
    env = {"JAXCOMBINE_COMPILE_CACHE": str(cache)}
    # features: the cheapest command that compiles (one forward to block1_conv1)
    features = ["features", images.CONTENT, "--layers", "block1_conv1"]
    jaxcombine(*features, "--size", "24", "--out", tmp_path / "a.npz", env=env, check=True)
    atimes = sorted(cache.glob("*-atime"))
    assert atimes  # the real command wrote entries (the session's cache keeps every program)
    atimes[0].unlink()
    orphan = Path(str(atimes[0]).removesuffix("-atime") + "-cache")
    assert orphan.exists()
    # another size: new programs, so JAX writes to the cache and sizes the folder
    proc = jaxcombine(*features, "--size", "28", "--out", tmp_path / "b.npz", env=env, check=True)
    assert proc.stderr == ""
    assert not orphan.exists()
    entries = {p.name.removesuffix("-cache") for p in cache.glob("*-cache")}
    assert entries == {p.name.removesuffix("-atime") for p in cache.glob("*-atime")}
    assert len(entries) > len(atimes) - 1  # the second run's programs were written


def test_an_unusable_compile_cache_is_one_warning_line(tmp_path, monkeypatch):
    (tmp_path / "file").write_text("a file where the cache folder should be")
    monkeypatch.setenv("JAXCOMBINE_COMPILE_CACHE", str(tmp_path / "file" / "xla"))
    # A command that computes turns the cache on (one that only reads options never does);
    # it goes on without the cache: here to its own one-line refusal of a memory limit
    # (checked after JAX starts; a missing file is refused before, with no cache to warn of).
    proc = jaxcombine(
        "features",
        images.CONTENT,
        "--layers",
        "block1_conv1",
        "--out",
        tmp_path / "f.npz",
        "--max-memory",
        "0.001",
    )
    assert proc.stderr.splitlines()[0] == (
        f"jaxcombine: warning: compile cache {tmp_path / 'file' / 'xla'} is unusable "
        f"([Errno 20] Not a directory: '{tmp_path / 'file' / 'xla'}'); running without it "
        "(set JAXCOMBINE_COMPILE_CACHE=off to silence this)"
    )
    assert proc.returncode == 2 and len(proc.stderr.splitlines()) == 2
    assert proc.stderr.splitlines()[1].startswith("jaxcombine: error:")
    assert "but 1 MB is available" in proc.stderr.splitlines()[1]
    quiet = jaxcombine("recipes", "show", "gatys", check=True)
    assert quiet.stderr == ""  # listing recipes never imports JAX nor touches the cache
