"""The run plan: decided once, from the configuration, the recipe, the headers and the devices."""

import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import recipe_files
from cli_run import cpu_env, host_devices, jaxcombine, start
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image
from recipe_files import term

from jaxcombine.errors import JaxcombineError
from jaxcombine.io import folders, images
from jaxcombine.options.config import RunConfig
from jaxcombine.options.rules import ConfigError
from jaxcombine.run import job, runner
from jaxcombine.run import plan as plan_lib
from jaxcombine.study.runner import run_study

SHALLOW = str(recipe_files.SHALLOW)


def test_a_run_reads_the_content_header_once(vgg19, monkeypatch):
    """Two scales: the content's header is read once (the plan), never again to find a
    shape (it was read 2 + 2S + 1 times); its pixels are decoded once per scale."""
    content = str(images.CONTENT)
    headers, decodes = [], []
    real_size, real_open = images.header_size, images.open_image

    def header_size(path, **kw):
        headers.append(str(path))
        return real_size(path, **kw)

    def open_image(path, **kw):
        decodes.append(str(path))
        return real_open(path, **kw)

    monkeypatch.setattr(images, "header_size", header_size)
    monkeypatch.setattr(images, "open_image", open_image)
    result = job.combine(recipe=SHALLOW, scales=(24, 32), steps=1, chunk=1, conv="xla")
    assert result.images["content"].shape == (32, 32, 3)
    assert headers.count(content) == 1
    assert decodes.count(content) == 2


def test_the_last_scale_is_the_end_size():
    """``--scales 48,64`` ends at 64 px (it used to append the default 192); a larger
    ``--size`` is added after the last scale; a smaller one is an error."""
    assert RunConfig(scales=(48, 64)).sizes() == (48, 64)
    assert RunConfig(scales=(48, 64)).end_size == 64
    assert RunConfig().replace(scales=(48, 64)).sizes() == (48, 64)
    assert RunConfig(scales=(48, 64), size=96).sizes() == (48, 64, 96)
    assert RunConfig(min_size=100).sizes()[-1] == 192
    assert RunConfig().end_size == 192
    with pytest.raises(ConfigError, match="size 32 is smaller than the last scale 64"):
        RunConfig(scales=(48, 64), size=32)
    plan = plan_lib.make(RunConfig(recipe=SHALLOW, scales=(24, 32), steps=3))
    assert [s.shape for s in plan.scales] == [(24, 24), (32, 32)]
    assert plan.output_shape == (32, 32)


def test_a_study_takes_the_configs_snapshot_interval(vgg19, tmp_path):
    """``run_study(config, out)`` snapshots every ``config.snapshot_every`` steps (it
    silently used 25 unless the CLI passed it)."""
    config = RunConfig(
        recipe=SHALLOW, size=24, steps=4, init="content", snapshot_every=2, conv="xla"
    )
    run_study(config, tmp_path / "s", progress=False)
    snaps = sorted(p.name for p in (tmp_path / "s" / "snapshots").glob("content-*.png"))
    assert snaps == [f"content-step{s:06d}.png" for s in (0, 2, 4)]


def test_a_held_output_folder_refuses_a_study(vgg19, tmp_path):
    config = RunConfig(recipe=SHALLOW, size=24, steps=1, conv="xla")
    with runner.output_folder(tmp_path / "s"):
        with pytest.raises(JaxcombineError, match="in use by another jaxcombine run"):
            run_study(config, tmp_path / "s", progress=False)
    # released: the folder is usable again
    run_study(config, tmp_path / "s", progress=False)


def test_two_runs_on_one_folder_the_second_refuses(vgg19, tmp_path):
    """Two real processes, one --out: the second refuses in one line (exit 2) while the
    first runs (it used to overwrite the first's files, both exiting 0); the first goes on.
    The second starts as soon as the first holds the folder's lock (the first writes no
    snapshots: it computes all the while the second starts, so each step is kept cheap)."""
    out = tmp_path / "out"
    args = ["run", "-q", "--recipe", SHALLOW, "--size", "24", "--conv", "xla"]
    first = start(*args, "--steps", "100000", "--chunk", "1", "--out", out)
    try:
        deadline = time.monotonic() + 300
        held = out / folders.LOCKS / runner.FOLDER_LOCK  # made as the first takes the folder
        while not held.exists():
            assert first.poll() is None and time.monotonic() < deadline, first.stderr.read()
            time.sleep(0.2)
        second = jaxcombine(*args, "--steps", "1", "--out", out)
        assert second.returncode == 2
        lines = second.stderr.strip().splitlines()
        assert len(lines) == 1 and "in use by another jaxcombine run" in lines[0], second.stderr
        assert first.poll() is None  # the first is untouched
    finally:
        first.send_signal(signal.SIGINT)
        _, err = first.communicate(timeout=300)
    assert first.returncode == 130, err
    assert (out / "content.png").exists() and (out / "run.json").exists()


@pytest.mark.slow
def test_shard_on_four_devices_at_48_px_falls_back_or_is_one_line(tmp_path):
    """gatys at 48 px on 4 CPU devices: block3_pool's 6 rows do not divide among 4, so ``auto``
    runs by starts (it chose rows, and XLA's partitioner died in a traceback) and an
    explicit ``rows`` is one line before anything is read. The configuration that crashed
    (gatys, 48 px, 4 devices) is kept as is: a smaller recipe or size no longer reaches it.
    The layout depends on the layers' heights alone, not on the convolution algorithm: XLA's
    (``--conv xla``), whose deep programs compile 2-3x faster than Winograd's."""
    env = cpu_env(**host_devices(4))
    cmd = [sys.executable, "-m", "jaxcombine", "run", "-q", "--size", "48", "--steps", "1"]
    cmd += ["--conv", "xla"]
    rows = subprocess.run(
        [*cmd, "--shard", "rows", "--out", str(tmp_path / "r")],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert rows.returncode == 2
    assert rows.stderr.strip().splitlines() == [
        "jaxcombine: error: shard 'rows' needs every layer's height to be a multiple of the 4 "
        "devices along the rows, but block3_pool is 6 rows high; change --size or use "
        "--shard starts"
    ]
    auto = subprocess.run(
        [*cmd, "--out", str(tmp_path / "a")], env=env, capture_output=True, text=True, timeout=600
    )
    assert auto.returncode == 0, auto.stderr[-2000:]
    import json

    record = json.loads((tmp_path / "a" / "run.json").read_text())
    assert record["shard"] == "starts" and len(record["environment"]["devices"]) == 4


def test_decoding_a_huge_mask_is_counted(tmp_path):
    """A 16-megapixel mask for a 48 px output costs its decoding (measured: 30 bytes per
    pixel of a greyscale mask above the same run without it); the estimate counts it, so
    a limit the run without it fits refuses it in one line (it was accepted)."""
    Image.new("L", (4000, 4000), 255).save(tmp_path / "mask.png")
    base = RunConfig(recipe=SHALLOW, size=48)
    without = plan_lib.make(base)
    masked = base.replace(style_masks=(str(tmp_path / "mask.png"),))
    assert plan_lib.make(masked).memory_bytes - without.memory_bytes > 30 * 16e6
    limit = (without.memory_bytes + 0.3e9) / 1e9
    plan_lib.make(base.replace(max_memory=limit))
    with pytest.raises(JaxcombineError, match=r"needs about .*decoding mask.png.*smaller input"):
        plan_lib.make(masked.replace(max_memory=limit))


def test_a_large_style_scale_estimate_is_above_its_measured_peak():
    """gatys at 192 px, style at 8x (1536 px): measured peaks 4.68 GB (Winograd) and
    4.14 GB (XLA's convolutions) on XLA:CPU; the estimate was 2.8 GB."""
    config = RunConfig(size=192, style_scale=(8.0,), max_memory=100.0)
    assert plan_lib.make(config.replace(conv="winograd")).memory_bytes > 4.68e9
    assert plan_lib.make(config.replace(conv="xla")).memory_bytes > 4.14e9


def test_the_padding_reaches_the_network_and_tiles_refuse_reflect():
    plan = plan_lib.make(RunConfig(size=64, padding="reflect"))
    assert plan.problem.padding == "reflect" and plan.problem.network().padding == "reflect"
    assert plan_lib.make(RunConfig(size=64)).problem.padding == "zeros"
    assert plan_lib.make(RunConfig(size=64, tile=32)).problem.tile == 32  # zeros tile
    with pytest.raises(JaxcombineError) as e:
        plan_lib.make(RunConfig(size=64, tile=32, padding="reflect"))
    assert str(e.value).startswith("tile does not take padding 'reflect'")
    assert "\n" not in str(e.value)


# --------------------------------------------------------------------------- property


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    d = tmp_path_factory.mktemp("inputs")
    rng = np.random.default_rng(0)
    for name, shape in {"wide.png": (20, 50, 3), "tall.png": (61, 17, 3)}.items():
        Image.fromarray(rng.integers(0, 255, shape, np.uint8)).save(d / name)
    Image.fromarray(np.full((30, 30), 255, np.uint8)).save(d / "mask.png")
    Image.fromarray(np.zeros((9, 9), np.uint8)).save(d / "empty.png")
    masked = term("style", "block1_conv1", "gram", mask="mask.png")
    recipe_files.write(d / "masked.toml", {"terms": [masked]})
    (d / "bad.toml").write_text("[[terms]]\nlayer = 3\n")
    return d


OPTIONS = {
    "size": st.one_of(st.none(), st.integers(1, 80)),
    "scales": st.one_of(st.none(), st.lists(st.integers(1, 80), min_size=1, max_size=3)),
    "min_size": st.one_of(st.none(), st.integers(1, 80)),
    "style_scale": st.one_of(st.none(), st.lists(st.floats(0.01, 17.0), min_size=1, max_size=3)),
    "tile": st.sampled_from([0, 8, 16, 17, 32]),
    "shard": st.sampled_from(["auto", "starts", "rows", "cols"]),
    "conv": st.sampled_from(["auto", "xla", "winograd"]),
    "padding": st.sampled_from([None, "zeros", "reflect"]),
    "dtype": st.sampled_from(["float32", "bfloat16"]),
    "loop": st.sampled_from(["auto", "scan", "step"]),
    "init": st.sampled_from([None, "content", "noise:3", "style,content", "missing.png"]),
    "preserve_color": st.sampled_from([None, "luminance", "stats"]),
    "max_memory": st.one_of(st.none(), st.floats(0.01, 100.0)),
}


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    options=st.fixed_dictionaries({}, optional=OPTIONS),
    recipe=st.sampled_from(["gatys", "shallow", "masked", "bad", "w2", "swd"]),
    content=st.sampled_from(["wide.png", "tall.png", None, "missing.png"]),
    styles=st.lists(st.sampled_from(["wide.png", "tall.png", "mask.png"]), max_size=3),
    masks=st.sampled_from([None, "mask.png", "empty.png", "missing.png", "tall.png"]),
)
def test_any_configuration_plans_or_is_one_line(inputs, options, recipe, content, styles, masks):
    """Configuration + recipe + masks through the configuration and the plan: a plan, or a
    ConfigError / JaxcombineError (one line), never another exception."""
    d = inputs
    options = dict(options)
    if options.get("scales") is not None:
        options["scales"] = tuple(options["scales"])
    if options.get("style_scale") is not None:
        options["style_scale"] = tuple(options["style_scale"])
    if options.get("init") == "missing.png":
        options["init"] = str(d / "missing.png")
    recipe = {"shallow": SHALLOW, "masked": str(d / "masked.toml"), "bad": str(d / "bad.toml")}.get(
        recipe, recipe
    )
    options.update(
        recipe=recipe,
        content=None if content is None else str(d / content),
        style=tuple(str(d / s) for s in styles),
    )
    if masks is not None:
        options["style_masks"] = (str(d / masks),) * max(1, len(styles))
    try:
        plan = plan_lib.make(RunConfig(**options))
    except (ConfigError, JaxcombineError) as e:
        assert "\n" not in str(e)
        return
    assert plan.output_shape == plan.scales[-1].shape
    assert max(plan.output_shape) == plan.config.end_size
    assert plan.layout.mode in ("starts", "rows") and plan.memory_bytes > 0
