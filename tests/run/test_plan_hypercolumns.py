"""The run plan with hypercolumn terms: tiling refused in one line, and the memory estimate
counting their sampled matrices and their targets."""

import pytest
import recipe_files

from jaxcombine.errors import JaxcombineError
from jaxcombine.options import recipe as recipe_lib
from jaxcombine.options.config import RunConfig
from jaxcombine.options.rules import ConfigError
from jaxcombine.run import memory
from jaxcombine.run import plan as plan_lib

LAYERS = ["rgb", "block1_conv1", "block2_conv1"]


def recipe(tmp_path, samples: int, statistic: str = "emd", source: str = "style", **extra) -> str:
    terms = [
        {"layer": "block2_conv1", "source": "content", "statistic": "activations"},
        {"hypercolumn": LAYERS, "source": source, "statistic": statistic, "samples": samples}
        | extra,
    ]
    path = tmp_path / f"{statistic}{samples}{''.join(extra)}.toml"
    return str(recipe_files.write(path, {"terms": terms}))


def test_tiles_refuse_hypercolumn_terms_in_one_line(tmp_path):
    config = RunConfig(recipe=recipe(tmp_path, 64), size=64, tile=32)
    with pytest.raises(JaxcombineError, match=r"tile does not take hypercolumn terms \(style:emd"):
        plan_lib.make(config)


@pytest.mark.parametrize(
    "statistic, source", [("emd", "style"), ("self_similarity", "content"), ("nearest", "style")]
)
def test_the_estimate_counts_the_sampled_matrices(tmp_path, statistic, source):
    """At 64 px (4096 positions) a term of 2048 samples holds matrices 16 times those of
    512 (N×N) per start; the plan's estimate grows by what hypercolumn_bytes says, and
    that is at least the N×N float32 matrices' growth."""
    small, large = (
        plan_lib.make(
            RunConfig(recipe=recipe(tmp_path, n, statistic, source), size=64, init="content,noise")
        )
        for n in (512, 2048)
    )
    counted = [
        memory.hypercolumn_bytes(p.recipe, 64, 64, 2, style_shapes=p.scales[-1].style_shapes)
        for p in (small, large)
    ]
    assert large.memory_bytes - small.memory_bytes == counted[1] - counted[0]
    if statistic != "nearest":  # the N×N (or N×M) matrices of both starts
        assert counted[1] - counted[0] > 2 * 4 * (2048**2 - 512**2)
    else:  # N hypercolumns against N targets: linear in N
        assert counted[1] > counted[0]
    assert recipe_lib.load(large.config.recipe).terms[1].hypercolumn.samples == 2048


@pytest.mark.parametrize("statistic", ["emd", "nearest"])
def test_the_estimate_counts_a_rotations_term_s_turned_styles(tmp_path, statistic):
    """A rotations term holds the maps of the style and its three turns, and draws its
    style points from all four (a nearest term: searches them): the estimate counts four
    styles' worth, as hypercolumn_bytes does with the turned shapes."""
    plain, turned = (
        plan_lib.make(
            RunConfig(recipe=recipe(tmp_path, 512, statistic, **extra), size=64, init="content")
        )
        for extra in ({}, {"rotations": True})
    )
    shapes = plain.scales[-1].style_shapes
    counted = [
        memory.hypercolumn_bytes(p.recipe, 64, 64, 1, style_shapes=shapes) for p in (plain, turned)
    ]
    four = memory.hypercolumn_bytes(plain.recipe, 64, 64, 1, style_shapes=shapes * 4)
    assert counted[1] == four > counted[0]
    assert turned.memory_bytes - plain.memory_bytes == counted[1] - counted[0]


def test_style_regions_are_for_hypercolumn_style_terms_only(tmp_path):
    from PIL import Image

    Image.new("L", (8, 8), 255).save(tmp_path / "all.png")
    region = (str(tmp_path / "all.png"),)
    plan_lib.make(RunConfig(recipe=recipe(tmp_path, 64), size=64, style_regions=region))
    gram = recipe_files.write(
        tmp_path / "gram.toml",
        {"terms": [{"layer": "block1_conv1", "source": "style", "statistic": "gram"}]},
    )
    with pytest.raises(JaxcombineError, match=r"term style:gram:block1_conv1 takes the whole"):
        plan_lib.make(RunConfig(recipe=str(gram), size=64, style_regions=region))
    with pytest.raises(ConfigError, match="one style region per style image: 2 for 1"):
        RunConfig(style_regions=region * 2)


def test_a_palette_weight_can_go_as_one_over_the_content_weight(tmp_path):
    """STROTSS weighs ℓp by 1/α: each scale multiplies the self-similarity weight by its
    content factor (1, 1/2, 1/4) and divides the palette's by it (the flagged term only);
    eval-suite's content weight does the same to the recipe's own weights."""
    from jaxcombine.suite.runner import weighted_recipe

    terms = [
        {"hypercolumn": LAYERS, "source": "content", "statistic": "self_similarity"},
        {"hypercolumn": LAYERS, "source": "style", "statistic": "emd"},
        {"hypercolumn": ["rgb"], "source": "style", "statistic": "palette", "weight": 0.1},
        {"hypercolumn": ["rgb"], "source": "style", "statistic": "palette", "weight": 0.2},
    ]
    terms[2]["inverse_content_weight"] = True
    path = str(recipe_files.write(tmp_path / "r.toml", {"terms": terms}))
    config = RunConfig(recipe=path, size=128, scale_count=3, scale_content_weights=(1, 0.5, 0.25))
    plan = plan_lib.make(config)
    assert [plan.loss_factors(s) for s in plan.scales] == [
        (1.0, 1.0, 1.0, 1.0, 1.0),
        (0.5, 1.0, 2.0, 1.0, 1.0),
        (0.25, 1.0, 4.0, 1.0, 1.0),
    ]
    base, low = recipe_lib.load(path), weighted_recipe(path, 0.1)
    assert [w.weight / b.weight for b, w in zip(base.terms, low.terms)] == pytest.approx(
        [0.1, 1.0, 10.0, 1.0]
    )


def test_a_final_pass_is_one_more_stage_where_its_own_terms_count(tmp_path):
    """final_steps adds a stage of the last scale's shape and factors; the terms with
    during = "final" count there alone, those with "scales" everywhere else, and each
    stage's program leaves out the terms that do not count there. Without a final pass a
    final term is never computed. A recipe whose stages would leave nothing to match is
    refused in one line."""
    terms = [
        {"hypercolumn": LAYERS, "source": "content", "statistic": "self_similarity"},
        {"hypercolumn": LAYERS, "source": "style", "statistic": "emd", "during": "scales"},
        {"hypercolumn": ["block1_conv1"], "source": "style", "statistic": "nearest_each_step"},
    ]
    terms[2]["during"] = "final"
    path = str(recipe_files.write(tmp_path / "r.toml", {"terms": terms}))
    ladder = dict(recipe=path, size=64, scale_count=2, scale_content_weights=(1, 0.5))
    plan = plan_lib.make(RunConfig(**ladder, final_steps=7))
    assert [(s.size, s.steps, s.final) for s in plan.scales] == [
        (32, 200, False),
        (64, 200, False),
        (64, 7, True),
    ]
    assert plan.scales[2].content_factor == 0.5  # the last scale's
    assert plan.scales[2].lr_factor == 1.0
    for bad in (-1, float("nan"), "half"):
        with pytest.raises(ConfigError, match="final_lr_factor"):
            RunConfig(**ladder, final_steps=7, final_lr_factor=bad)
    assert plan_lib.make(RunConfig(**ladder, final_steps=7, final_lr_factor=0.5)).scales[
        2
    ].lr_factor == pytest.approx(0.5)
    assert [plan.loss_factors(s) for s in plan.scales] == [
        (1.0, 1.0, 0.0, 1.0),
        (0.5, 1.0, 0.0, 1.0),
        (0.5, 0.0, 1.0, 1.0),
    ]
    skipped = [[t.skipped for t in plan.problem_at(s).recipe.terms] for s in plan.scales]
    assert skipped == [[False, False, True], [False, False, True], [False, True, False]]
    assert not any(t.skipped for t in plan.problem.recipe.terms)  # targets: every term's
    without = plan_lib.make(RunConfig(**ladder))
    assert [s.final for s in without.scales] == [False, False]
    assert without.problem_at(without.scales[-1]).recipe.terms[2].skipped
    assert without.problem.recipe.terms[2].skipped  # no stage computes it: no target either
    assert without.memory_bytes < plan.memory_bytes  # nor is it counted
    for t in terms[:2]:
        t["during"] = "final"
    path = str(recipe_files.write(tmp_path / "f.toml", {"terms": terms}))
    with pytest.raises(JaxcombineError, match="no term of nonzero weight counts in the scales"):
        plan_lib.make(RunConfig(recipe=path, size=64, final_steps=7))
