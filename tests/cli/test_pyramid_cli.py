"""A recipe's suggested schedule on a Laplacian pyramid, through the console script: it
composes with vmapped starts, coarse to fine, snapshots and colour preservation; the
user's explicit options win. (A bad [run] table's one-line errors: options/test_recipe_run.)"""

import json

import numpy as np
import pytest
import recipe_files
from cli_run import jaxcombine
from PIL import Image

from jaxcombine.io import images

# At --size 32 the ladder is 8, 16, 32; the floor drops 8 px with its step count and
# factor, so two scales of 2 steps run, at factors 1 and 0.5.
SCHEDULE = {
    "scale_count": 3,
    "scale_floor": 16,
    "scale_steps": [1000, 2, 2],
    "scale_content_weights": [9.0, 1.0, 0.5],
    "optimizer": "rmsprop",
    "lr": 0.5,
    "parameterization": "laplacian",
}


@pytest.mark.slow
def test_a_recipe_schedule_on_a_pyramid_runs_under_explicit_options(vgg19, tmp_path):
    rec = recipe_files.write(tmp_path / "sched.toml", recipe_files.shallow(run=SCHEDULE))
    out = tmp_path / "out"
    args = ["--recipe", rec, "--size", "32", "--init", "content,noise", "--lr", "2"]
    more = ["--snapshot-every", "2", "--preserve-color", "luminance", "--quiet", "--out", out]
    jaxcombine("run", *args, *more, check=True)
    run = json.loads((out / "run.json").read_text())
    assert run["from_recipe"] == {k: v for k, v in SCHEDULE.items() if k != "lr"}
    config = run["config"]
    assert config["lr"] == 2.0 and config["optimizer"] == "rmsprop"  # explicit wins
    assert config["parameterization"] == "laplacian" and config["model"] == "vgg19"
    assert run["scales"]["sizes"] == [16, 32] and run["scales"]["pyramid_levels"] == [1, 2]
    assert run["scales"]["content_weight_factors"] == [1.0, 0.5]
    assert run["steps_done"] == 4
    content = images.read(images.CONTENT, size=32)
    for label in ("content", "noise-s0"):
        img = np.asarray(Image.open(out / f"{label}.png")).astype(float)
        assert img.shape == content.shape and np.abs(img - content).mean() > 1.0
        assert (out / "snapshots" / f"{label}-step000004.png").is_file()
    noise = np.asarray(Image.open(out / "noise-s0.png")).astype(float)
    assert np.abs(noise - content).mean() > 5  # a start of its own, not the content's
