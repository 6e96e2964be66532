"""A study on a Laplacian pyramid resumes to what it would have made in one go: its
state.npz keeps the pyramid's levels by name (an image decomposed again would be other
coefficients)."""

import numpy as np
import pytest
import recipe_files
from PIL import Image

from jaxcombine.options.config import RunConfig
from jaxcombine.study import runner as study_lib

CONFIG = RunConfig(
    recipe=str(recipe_files.SHALLOW),
    init="content,noise",
    scales=(24, 32),
    steps=4,
    optimizer="rmsprop",
    lr=1.0,
    parameterization="laplacian",
    pyramid_levels=2,
    # a saved state holds its scale's rate, factor applied; resumed, it is not applied twice
    scale_lr_factors=(0.5, 2.0),
)


def stop_and_resume(config, folder, stopped_after_first_chunk, total: int, saved=None) -> None:
    """Run ``config`` whole, then stopped after its first chunk (2 steps) and resumed: the
    resumed study's history and images equal the whole one's. ``saved(path)`` looks at the
    stopped study's state.npz before it is resumed."""
    whole = study_lib.run_study(config, folder / "whole", snapshot_every=2, progress=False)
    assert whole.summary["steps_done"] == total
    with stopped_after_first_chunk():
        half = study_lib.run_study(config, folder / "half", snapshot_every=2, progress=False)
    assert half.interrupted and half.summary["steps_done"] == 2
    if saved is not None:
        saved(folder / "half" / "state.npz")
    resumed = study_lib.run_study(
        config, folder / "half", snapshot_every=2, progress=False, resume=True
    )
    assert resumed.summary["resumed_from_step"] == 2 and resumed.summary["steps_done"] == total
    np.testing.assert_array_equal(resumed.history["value"], whole.history["value"])
    for label in ("content", "noise-s0"):
        a = np.asarray(Image.open(folder / "whole" / f"{label}.png"))
        b = np.asarray(Image.open(folder / "half" / f"{label}.png"))
        np.testing.assert_array_equal(a, b)


@pytest.mark.slow
def test_a_resumed_pyramid_study_equals_one_made_in_one_go(
    vgg19, tmp_path, stopped_after_first_chunk
):
    def pyramid_levels_by_name(path):
        with np.load(path) as saved:
            levels = sorted(k for k in saved if k.startswith("params"))
            assert levels == ["params[0]", "params[1]"]
            assert saved["params[1]"].shape == (2, 12, 12, 3)

    stop_and_resume(CONFIG, tmp_path, stopped_after_first_chunk, 8, pyramid_levels_by_name)


@pytest.mark.slow
def test_a_study_resumed_before_its_final_pass_equals_one_made_in_one_go(
    vgg19, tmp_path, recipe_file, stopped_after_first_chunk
):
    """Stopped in its first scale, a study with a final pass (whose style terms count only
    there) resumes through the rest of the ladder and the pass to the same history and
    images as one run in one go."""
    content, style = recipe_files.shallow()["terms"]
    recipe = recipe_file(recipe_files.shallow(terms=[content, {**style, "during": "final"}]))
    config = CONFIG.replace(recipe=recipe, steps=2, final_steps=4, final_lr_factor=0.5)
    stop_and_resume(config, tmp_path, stopped_after_first_chunk, total=8)
