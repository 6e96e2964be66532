"""A recipe's [run] table: options it suggests, settled under the user's (no JAX)."""

import pytest
import recipe_files

from jaxcombine.errors import JaxcombineError
from jaxcombine.options import recipe
from jaxcombine.options.config import RunConfig


def test_presets_suggest_their_papers_schedules():
    strotss = RunConfig(recipe="strotss", size=512)
    config, taken = strotss.settle(recipe.load("strotss").run)
    assert config.sizes() == (64, 128, 256, 512) and config.steps_per_scale() == (200,) * 4
    assert config.content_factors() == (1.0, 0.5, 0.25, 0.125)
    assert config.lr_factors() == (1.0, 1.0, 1.0, 3.0)  # a faster last scale (see the file)
    assert (config.optimizer, config.parameterization, config.model) == (
        "rmsprop",
        "laplacian",
        "vgg16-tv",
    )
    assert "scale_content_weights" in taken and "steps" not in taken
    assert config.scale_detail == "content"  # STROTSS adds the content's detail per scale
    nnst, _ = RunConfig(recipe="nnst", size=512).settle(recipe.load("nnst").run)
    assert nnst.optimizer == "adam" and nnst.parameterization == "laplacian"
    assert nnst.sizes() == (64, 128, 256, 512)


@pytest.mark.parametrize("name", ["strotss", "nnst"])
def test_presets_keep_their_papers_smallest_scale_at_any_size(name):
    """Four scales ending at 256 px would begin at 32: the floor drops it, and the
    per-scale lists lose its entry, so the three scales keep the finest three factors."""
    config, taken = RunConfig(recipe=name, size=256).settle(recipe.load(name).run)
    assert "scale_floor" in taken
    assert config.ladder() == (32, 64, 128, 256) and config.sizes() == (64, 128, 256)
    assert config.steps_per_scale() == (200, 200, 200)
    factors = {"strotss": (0.5, 0.25, 0.125), "nnst": (1.0, 1.0, 1.0)}[name]
    assert config.content_factors() == factors
    rates = {"strotss": (1.0, 1.0, 3.0), "nnst": (1.0, 1.0, 1.0)}[name]
    assert config.lr_factors() == rates
    small, _ = RunConfig(recipe=name, size=48).settle(recipe.load(name).run)
    assert small.sizes() == (48,) and small.steps_per_scale() == (200,)  # the output stays
    # your ladder takes the recipe's floor with it; your floor applies to its ladder
    own, taken = RunConfig(size=256, scale_count=4).settle(recipe.load(name).run)
    assert own.sizes() == (32, 64, 128, 256) and "scale_floor" not in taken
    higher, _ = RunConfig(size=256, scale_floor=128).settle(recipe.load(name).run)
    assert higher.sizes() == (128, 256) and higher.steps_per_scale() == (200, 200)


def test_a_floor_drops_coarse_scales_of_every_ladder_with_their_list_entries():
    steps, factors, rates = (1, 2, 3, 4), (1.0, 0.5, 0.25, 0.125), (1.0, 1.0, 2.0, 0.5)
    config = RunConfig(
        size=512,
        scale_count=4,
        scale_floor=100,
        scale_steps=steps,
        scale_content_weights=factors,
        scale_lr_factors=rates,
    )
    assert config.sizes() == (128, 256, 512)
    assert config.steps_per_scale() == (2, 3, 4) and config.content_factors() == (0.5, 0.25, 0.125)
    assert config.lr_factors() == (1.0, 2.0, 0.5)
    assert RunConfig(size=512, scale_count=2).lr_factors() == (1.0, 1.0)  # the default
    assert RunConfig(size=512, min_size=128, scale_floor=300).sizes() == (362, 512)
    assert RunConfig(scales=(64, 128, 256), scale_floor=128).sizes() == (128, 256)
    assert RunConfig(size=64, scale_floor=128).sizes() == (64,)  # never the output itself
    with pytest.raises(JaxcombineError) as e:
        RunConfig(size=512, scale_count=4, scale_floor=100, scale_steps=(2, 3, 4))
    assert str(e.value).endswith(
        "give one step count per scale: 3 for the 4 scales 64,128,256,512 (before scale_floor 100)"
    )


def test_explicit_options_win_and_take_their_group_with_them():
    run = recipe.load("strotss").run
    config, taken = RunConfig(steps=5, optimizer="adam", scales=(32, 64)).settle(run)
    assert config.steps_per_scale() == (5, 5)  # the recipe's scale_steps gave way
    assert config.content_factors() == (1.0, 1.0)  # its per-scale factors too
    assert config.lr_factors() == (1.0, 1.0)
    rates = (("scale_count", 2), ("optimizer", "rmsprop"), ("scale_lr_factors", (1.0, 2.0)))
    assert RunConfig().settle(rates)[0].lr_factors() == (1.0, 2.0)
    adam, adam_taken = RunConfig(optimizer="adam").settle(rates)
    assert adam.lr_factors() == (1.0, 1.0) and adam_taken == ("scale_count",)  # rmsprop's
    assert config.lr is None and config.learning_rate() == 4.0  # its lr was rmsprop's
    assert taken == ("model", "parameterization", "scale_detail")  # not part of the ladder
    pixels, taken = RunConfig(parameterization="pixels").settle(run)
    assert pixels.pyramid_levels is None and "pyramid_levels" not in taken
    plain, taken = RunConfig().settle(())
    assert (plain.steps, plain.optimizer, plain.parameterization, plain.model) == (
        200,
        "adam",
        "pixels",
        "vgg19",
    )
    assert taken == ()


def test_a_recipe_may_suggest_its_padding_and_yours_wins():
    run = (("padding", "reflect"),)
    suggested, taken = RunConfig().settle(run)
    assert suggested.padding == "reflect" and taken == ("padding",)
    yours, taken = RunConfig(padding="zeros").settle(run)
    assert yours.padding == "zeros" and taken == ()
    assert RunConfig().settle(())[0].padding == "zeros"


def test_the_nnst_preset_suggests_its_final_pass_rate_and_yours_wins():
    """The preset's final pass is off (no final_steps) at half its rate; your --final-steps
    turns it on, and your --optimizer takes the suggested rate factor with it."""
    run = recipe.load("nnst").run
    config, taken = RunConfig().settle(run)
    assert config.final_steps is None and config.final_lr_factor == 0.5
    assert "final_lr_factor" in taken
    on, _ = RunConfig(final_steps=200).settle(run)
    assert on.final_steps == 200 and on.final_lr_factor == 0.5
    adam, taken = RunConfig(final_steps=200, optimizer="adam").settle(run)
    assert adam.final_lr_factor is None and "final_lr_factor" not in taken


def test_a_suggestion_that_no_longer_fits_is_refused():
    run = (("scale_steps", (1, 2, 3)),)
    with pytest.raises(JaxcombineError, match="give one step count per scale: 3 for the 1"):
        RunConfig().settle(run)


@pytest.mark.parametrize(
    "run, message",
    [
        ({"optimizer": "adamw"}, "recipe bad: [run]: unknown optimizer 'adamw'; choose"),
        ({"scale_count": 2, "scale_steps": [1]}, "[run]: give one step count per scale: 1"),
        (
            {"scale_count": 2, "scale_lr_factors": [1, 1, 1]},
            "[run]: give one learning rate factor per scale: 3 for the 2 scales",
        ),
        ({"scale_lr_factors": [1, -1]}, "[run]: scale_lr_factors"),
        ({"final_steps": 1.5}, "[run]: final_steps must be an integer"),
        ({"final_lr_factor": "half"}, "[run]: final_lr_factor must be a finite number"),
        ({"chunk": 3}, "[run]: 'chunk' is not an option a recipe may suggest"),
        ({"parameterization": "pixels", "pyramid_levels": 2}, "[run]: pyramid_levels applies"),
        ({"scales": [64, 32]}, "[run]: scales must be ascending"),
        ({"padding": "mirror"}, "[run]: unknown padding 'mirror'; choose zeros, reflect, circular"),
    ],
)
def test_a_bad_run_table_is_refused_by_the_options_rules(tmp_path, run, message):
    path = recipe_files.write(tmp_path / "bad.toml", recipe_files.shallow(run=run))
    with pytest.raises(JaxcombineError) as e:
        recipe.load(str(path))
    assert message in str(e.value) and "\n" not in str(e.value)


def test_explicit_per_scale_lists_fit_the_recipe_s_ladder():
    """Your --scale-steps may be for the recipe's ladder: checked once it is settled, one
    per scale of the ladder, the floor dropping the coarse ones (at 192 px, 24 and 48)."""
    run = recipe.load("strotss").run
    config, taken = RunConfig(scale_steps=(1, 2, 3, 4)).settle(run)
    assert config.ladder() == (24, 48, 96, 192) and config.sizes() == (96, 192)
    assert config.steps_per_scale() == (3, 4) and "scale_steps" not in taken
    with pytest.raises(JaxcombineError, match="give one step count per scale: 2 for the 1"):
        RunConfig(scale_steps=(1, 2)).settle(())
