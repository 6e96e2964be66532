"""One image split by rows over several (fake CPU) devices: same result, less memory each."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from cli_run import cpu_env, host_devices
from recipe_files import SHALLOW

from jaxcombine.engine import layout
from jaxcombine.errors import JaxcombineError
from jaxcombine.options import config, layers, recipe, rules

SHALLOW_LAYERS = recipe.load(str(SHALLOW)).layers

# Runs in a fresh process (the device count is fixed when JAX starts): one start of the
# shallow recipe at 64x48 (rows divide by 4 at every block it reaches), then the compiled
# chunk program's per-device memory and collectives for the state as the engine places it.
WORKER = r"""
import json, sys
import jax, jax.numpy as jnp, numpy as np
from jaxcombine.engine import program
from jaxcombine.run import job, plan
from jaxcombine.run import prepare as prepare_lib
from jaxcombine.stats import losses
from jaxcombine.options.config import RunConfig
cfg = RunConfig(recipe=sys.argv[1], size=64, steps=4, chunk=2, init=sys.argv[5],
                shard=sys.argv[2], conv=sys.argv[3], scales=json.loads(sys.argv[6]))
result = job.combine(cfg)
prep = prepare_lib.prepare(plan.make(cfg))
mode = prep.plan.layout.mode
state, targets, _ = prep.plan.layout.place(prep.initial_state(), prep.targets, activation_keys=[
    losses.target_key(t) for t in prep.problem.recipe.terms if t.statistic == "activations"])
compiled = program._jit_step.lower(prep.problem, prep.variables, targets, state).compile()
text = compiled.as_text()
np.save(sys.argv[4], result.outcome.pixels)
study = {}
if len(sys.argv) > 7:  # the same run as a study, in the same process: the same programs
    from jaxcombine.study.runner import run_study
    study = run_study(cfg, sys.argv[7], snapshot_every=4, progress=False).summary
print(json.dumps({"devices": len(jax.devices()), "mode": mode, "outcome_shard": result.outcome.shard,
                  "study": {"shard": study.get("shard"), "final_loss": study.get("final_loss")},
                  "final_loss": result.final_losses(),
                  "spec": str(state.params.sharding.spec) if mode == "rows" else "",
                  "mesh": dict(state.params.sharding.mesh.shape) if mode == "rows" else {},
                  "history": result.outcome.history.tolist(),
                  "temp": compiled.memory_analysis().temp_size_in_bytes,
                  "permutes": text.count("collective-permute"),
                  "all_reduces": text.count("all-reduce")}))
"""


def run_worker(
    tmp_path: Path,
    devices: int,
    shard: str,
    conv: str = "xla",
    init: str = "content",
    scales=None,
    study: bool = False,
) -> tuple[dict, np.ndarray]:
    env = cpu_env(**host_devices(devices))
    out = tmp_path / f"px-{devices}-{shard}-{conv}.npy"
    extra = [str(tmp_path / f"study-{devices}")] if study else []
    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            WORKER,
            str(SHALLOW),
            shard,
            conv,
            str(out),
            init,
            json.dumps(scales),
            *extra,
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1]), np.load(out)


def assert_same_pixels(sharded: np.ndarray, single: np.ndarray) -> None:
    """Pixels of a run by rows against one device's: float32 sums in another order. All but
    the few pixels a ReLU or max-pool near-tie flips agree to 0.05 of 0-255; those drift
    further, the noise start's most (seen: 15 of 24576 over 0.05, one at 1.18, after NumPy
    drew the noise; 16, up to ~0.25, when jax.random did)."""
    assert np.mean(np.abs(sharded - single) > 0.05) < 0.01
    np.testing.assert_allclose(sharded, single, atol=2.0)


@pytest.mark.slow
def test_four_devices_by_rows_match_one(tmp_path):
    """The row-sharded run gives the one-device run's losses (to 1e-4 relative at every
    step: float32 partial sums added in another order) and pixels (to 0.05 of 0-255), with
    halos exchanged and statistics all-reduced, in under half the per-device temporaries.
    XLA's convolutions here; the 2x2-mesh test below runs Winograd's by rows."""
    four, px4 = run_worker(tmp_path, 4, "auto", "xla")
    one, px1 = run_worker(tmp_path, 1, "auto", "xla")
    assert (four["devices"], four["mode"], one["mode"]) == (4, "rows", "starts")
    assert four["spec"] == "P('inits', 'rows', None, None)"  # a 1x4 mesh
    assert four["permutes"] > 0 and four["all_reduces"] > 0  # halos and global statistics
    np.testing.assert_allclose(four["history"], one["history"], rtol=1e-4, atol=1e-7)
    assert_same_pixels(px4, px1)
    assert four["temp"] < 0.5 * one["temp"]


@pytest.mark.slow
def test_two_starts_on_a_two_by_two_mesh_match_one_device(tmp_path):
    """Explicit ``rows`` with 2 starts on 4 devices: starts over 2, rows over 2; coarse to
    fine (32 then 64 px); Winograd's convolutions. A study of the same run shards alike."""
    four, px4 = run_worker(
        tmp_path, 4, "rows", "winograd", init="content,noise", scales=[32, 64], study=True
    )
    one, px1 = run_worker(tmp_path, 1, "auto", "winograd", init="content,noise", scales=[32, 64])
    assert len(four["history"]) == 8
    assert four["mode"] == "rows" and four["permutes"] > 0
    assert four["mesh"] == {"inits": 2, "rows": 2}
    assert four["outcome_shard"] == four["study"]["shard"] == "rows"
    assert one["outcome_shard"] == "starts"
    for label, loss in four["final_loss"].items():
        assert four["study"]["final_loss"][label]["total"] == pytest.approx(loss, rel=1e-5)
    np.testing.assert_allclose(four["history"], one["history"], rtol=1e-4, atol=1e-7)
    assert_same_pixels(px4, px1)
    assert four["temp"] < 0.5 * one["temp"]


def heights(*scales: int) -> list[list[tuple[str, int]]]:
    """(name, height) of the image and of every layer of the shallow recipe's forward."""
    return [
        [("image", h), *((n, s[0]) for n, s in layers.layer_shapes(SHALLOW_LAYERS, h, h).items())]
        for h in scales
    ]


def test_choose_picks_rows_only_where_every_layer_divides():
    choose = layout.choose
    assert choose("auto", starts=1, heights=heights(64), devices=4).mode == "rows"
    assert choose("auto", starts=2, heights=heights(64), devices=4).mode == "starts"
    assert choose("auto", starts=1, heights=heights(66), devices=4).mode == "starts"
    assert choose("auto", starts=1, heights=heights(64), devices=1).mode == "starts"
    assert choose("auto", starts=1, heights=heights(48), devices=4).mode == "rows"  # 48, 24
    # 36 px: 36 divides by 4, block1_pool's 18 rows do not (XLA's partitioner fails there)
    assert choose("auto", starts=1, heights=heights(36), devices=4).mode == "starts"
    assert choose("auto", starts=1, heights=heights(32, 36), devices=4).mode == "starts"
    assert choose("auto", starts=1, heights=heights(32, 64), devices=4).mode == "rows"
    assert choose("rows", starts=3, heights=heights(64), devices=4).mode == "rows"
    assert choose("rows", starts=2, heights=heights(64), devices=4).grid == (2, 2)
    assert choose("starts", starts=1, heights=heights(64), devices=4).grid == (4, 1)
    with pytest.raises(JaxcombineError, match=r"multiple of the 4 devices.* block1_pool is 18"):
        choose("rows", starts=1, heights=heights(36), devices=4)
    with pytest.raises(JaxcombineError, match="share their targets"):
        choose("rows", starts=2, heights=heights(64), devices=4, per_start_targets=True)
    assert layout.grid(2, 4) == (2, 2) and layout.grid(3, 4) == (1, 4)
    assert layout.grid(4, 4) == (4, 1)


def test_shard_is_a_validated_option():
    assert config.RunConfig().shard == "auto"
    assert config.RunConfig(shard="rows").shard == "rows"
    with pytest.raises(rules.ConfigError, match="unknown shard 'cols'; choose auto, starts, rows"):
        config.RunConfig(shard="cols")
