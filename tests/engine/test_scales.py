"""Coarse to fine (--scales, --min-size): sizes, records, vmapped starts, carried state, resume.

Plumbing on the shallow test recipe at tiny sizes: what is tested (the ladder,
the hand-over between scales) does not depend on depth.
"""

import csv
import dataclasses
import json
import subprocess
import sys

import numpy as np
import pytest
import recipe_files
from cli_run import cpu_env
from PIL import Image

import jaxcombine
from jaxcombine.engine import driver, optimizers, scales
from jaxcombine.io import images
from jaxcombine.options.config import RunConfig
from jaxcombine.options.rules import ConfigError
from jaxcombine.study import runner as study_lib

SHALLOW = str(recipe_files.SHALLOW)
# XLA's convolutions in the CPU's default loop form (a rolled scan): the ladder does not
# depend on the convolution algorithm, and Winograd's programs compile 2-3 times slower on
# the CPU (test_rows and test_tiles run Winograd through scales).
FAST = dict(conv="xla", loop="scan")
LADDER = dict(recipe=SHALLOW, size=32, scales=(24,), steps=3, chunk=3, **FAST)  # 24, 32 px


def read_csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_the_ladder_of_sizes():
    assert RunConfig(size=512, min_size=128).sizes() == (128, 181, 256, 362, 512)
    assert RunConfig(size=512, scales=(128, 256)).sizes() == (128, 256, 512)
    assert RunConfig(size=512, scales=(128, 256, 512)).sizes() == (128, 256, 512)
    assert RunConfig(size=96).sizes() == (96,) and not RunConfig(size=96).multi_scale
    assert RunConfig(scales=(48, 64)).sizes() == (48, 64)  # no --size: the last scale
    assert RunConfig(size=64, scales=(32,), scale_steps=(5, 7)).steps_per_scale() == (5, 7)
    for bad, field in [
        (dict(scales=(64, 32), size=96), "scales"),
        (dict(scales=(512,), size=96), "size"),  # the last scale is the end size
        (dict(scales=(32,), min_size=16, size=96), "scales"),
        (dict(min_size=200, size=96), "min_size"),
        (dict(scales=(32,), size=96, scale_steps=(1,)), "scale_steps"),
        (dict(scales=(0, 32), size=96), "scales"),
    ]:
        with pytest.raises(ConfigError) as e:
            RunConfig(**bad)
        assert e.value.field == field


# Slow tier: the ladder's sizes, compiles and carried state are checked in-process below;
# this is the command line's repeat (the output's size, the record of every scale).
@pytest.mark.slow
def test_cli_run_ends_at_the_size_and_records_every_scale(vgg19, tmp_path):
    env = cpu_env()
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "jaxcombine",
            "run",
            "--recipe",
            SHALLOW,
            "--size",
            "40",
            "--scales",
            "24,32",
            "--steps",
            "3",
            "--init",
            "noise",
            "--conv",
            "xla",
            "--quiet",
            "--out",
            tmp_path,
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr
    with Image.open(tmp_path / "noise-s0.png") as img:
        assert max(img.size) == 40
    record = json.loads((tmp_path / "run.json").read_text())
    assert record["scales"]["sizes"] == [24, 32, 40] and record["scales"]["steps"] == [3, 3, 3]
    assert record["steps_done"] == 9
    rows = read_csv(tmp_path / "noise-s0.history.csv")
    assert [int(r["step"]) for r in rows] == list(range(1, 10))
    assert [int(r["size"]) for r in rows] == [24] * 3 + [32] * 3 + [40] * 3


@pytest.mark.slow
def test_vmapped_starts_through_scales_equal_one_by_one(vgg19):
    together = jaxcombine.combine(init="content,noise", **LADDER)
    for j, init in enumerate(("content", "noise")):
        alone = jaxcombine.combine(init=init, **LADDER)
        np.testing.assert_allclose(together.outcome.pixels[j], alone.outcome.pixels[0], atol=0.05)
        np.testing.assert_allclose(
            together.history[:, j], alone.history[:, 0], rtol=1e-4, atol=1e-6
        )
    assert together.outcome.pixels.shape[1:3] == (32, 32)
    assert together.outcome.row_stage.tolist() == [0] * 3 + [1] * 3


def test_the_state_carried_across_a_scale_has_the_new_shape(vgg19):
    prep = jaxcombine.prepare(RunConfig(init="content,noise", **LADDER))
    stages = prep.stages()
    first = driver.optimise(
        prep.problem, prep.variables, stages[0].targets(), prep.initial_state(average=True), chunk=3
    )
    assert first.average.shape == first.pixels.shape == (2, 24, 24, 3)
    assert not np.allclose(first.average, first.pixels)  # an average, not the last iterate

    def new_state(x, steps):
        return prep.initial_state(x, steps=steps)

    for carry in (True, False):
        state = scales.next_state(
            prep.problem, first, stages[1], new_state, carry_optimizer=carry, from_average=False
        )
        assert state.params.shape == (2, 32, 32, 3)
        adam = state.opt_state[0]
        assert adam.mu.shape == adam.nu.shape == (2, 32, 32, 3)
        lr = state.opt_state[1]
        assert isinstance(lr, optimizers.LearningRate) and lr.count.tolist() == [0, 0]
        if carry:  # Adam's moments resized and its step count kept
            assert adam.count.tolist() == [3, 3] and float(np.min(adam.nu)) >= 0
            assert float(np.abs(adam.mu).max()) > 0
        else:
            assert adam.count.tolist() == [0, 0] and float(np.abs(adam.mu).max()) == 0
    handed = scales.next_state(
        prep.problem, first, stages[1], new_state, carry_optimizer=True, from_average=True
    )
    np.testing.assert_allclose(
        handed.params, np.clip(scales.resize_images(first.average, 32, 32), 0, 255), atol=1e-4
    )

    # scale_detail="content": the content's detail at 32 px is added to the upsampled image.
    # A start that is still the content at 24 px begins the next scale as the content read
    # at 32 px (not its blurred upsample); another gets the same detail (numpy reference).
    detailed = jaxcombine.prepare(RunConfig(init="content,noise", scale_detail="content", **LADDER))
    c24, c32 = (images.read(images.CONTENT, size=n) for n in (24, 32))
    still = dataclasses.replace(first, pixels=np.stack([c24, first.pixels[1]]))
    state = scales.next_state(
        prep.problem, still, detailed.stages()[1], new_state, carry_optimizer=False,
        from_average=False,
    )  # fmt: skip
    params = np.asarray(state.params)
    upsampled = np.asarray(scales.resize_images(still.pixels, 32, 32))
    assert np.abs(upsampled[0] - c32).max() > 20  # what scale_detail="none" starts from
    np.testing.assert_allclose(params[0], c32, atol=1e-3)
    want = np.clip(upsampled[1] + (c32 - upsampled[0]), 0, 255)
    np.testing.assert_allclose(params[1], want, atol=1e-3)
    assert prep.stages()[1].detail is None  # the default adds nothing


def test_each_scale_compiles_once(vgg19, compiled):
    ladder = {**LADDER, "size": 42, "scales": (26,)}  # shapes no other test compiled
    jaxcombine.combine(init="content", **ladder)
    first = len(compiled)
    assert first >= 2  # at least a chunk program per scale
    jaxcombine.combine(init="content", lr=2.0, **ladder)  # another learning rate: traced
    assert len(compiled) == first


STUDY = RunConfig(init="content,noise", scale_from="average", **LADDER)


@pytest.fixture(scope="module")
def whole_study(vgg19, tmp_path_factory):
    return study_lib.run_study(
        STUDY, tmp_path_factory.mktemp("whole"), snapshot_every=3, progress=False
    )


@pytest.mark.slow
@pytest.mark.parametrize(
    "stop_at",
    [pytest.param(2, id="mid-scale"), pytest.param(3, id="at-a-boundary")],
)
def test_study_resumes_across_scales(whole_study, tmp_path, stopped_after_first_chunk, stop_at):
    """Stop after the first chunk, resume, and match the uninterrupted study."""
    config, whole = STUDY, whole_study
    with stopped_after_first_chunk():
        half = study_lib.run_study(
            config, tmp_path / "half", snapshot_every=stop_at, progress=False
        )
    assert half.interrupted and half.summary["steps_done"] == stop_at
    resumed = study_lib.run_study(
        config, tmp_path / "half", snapshot_every=stop_at, progress=False, resume=True
    )
    assert resumed.summary["steps_done"] == 6
    for key in ("step", "size", "start", "term"):
        assert list(resumed.history[key]) == list(whole.history[key])
    np.testing.assert_allclose(
        resumed.history["value"], whole.history["value"], rtol=1e-3, atol=1e-6
    )
    for name in ("content.png", "noise-s0.png"):
        a = np.asarray(Image.open(whole.out / name), np.float32)
        b = np.asarray(Image.open(tmp_path / "half" / name), np.float32)
        assert a.shape == (32, 32, 3) and np.abs(a - b).max() <= 1


def test_batch_jobs_share_a_ladder(vgg19, tmp_path):
    manifest = tmp_path / "m.toml"
    manifest.write_text(
        f'[defaults]\nrecipe = "{SHALLOW}"\nsize = 32\nscales = [24]\n'
        'steps = 3\nconv = "xla"\nloop = "scan"\nscale_detail = "content"\n'
        "[grid]\nlr = [2.0, 4.0]\n"
    )
    report = jaxcombine.run_batch(manifest, tmp_path / "out", progress=False)
    assert len(report.done) == 2 and not report.failed
    for job_id in report.done:
        record = json.loads((tmp_path / "out" / f"{job_id}.json").read_text())
        assert record["scales"]["sizes"] == [24, 32]
        assert record["scales"]["scale_detail"] == "content"
        with Image.open(tmp_path / "out" / f"{job_id}.png") as img:
            assert max(img.size) == 32
