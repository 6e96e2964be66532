"""Runs on a Laplacian pyramid and with RMSprop, and the per-scale content weight:
real weights, the shallow recipe, tiny images, few steps."""

import numpy as np
import pytest
import recipe_files

from jaxcombine.run import job

SHALLOW = str(recipe_files.SHALLOW)
# XLA's convolutions in the CPU's default loop form (a rolled scan): the parameterization
# does not depend on the convolution algorithm, and Winograd's programs compile 2-3 times
# slower on the CPU
BASE = dict(
    recipe=SHALLOW, size=32, steps=4, chunk=2, init="content,noise", conv="xla", loop="scan"
)


def test_a_one_level_pyramid_runs_as_the_pixels(vgg19):
    """One level: the same parameters, gradients, updates and projection as pixels, in the
    same float32 operations, so the runs agree to the last bit (two starts side by side)."""
    pixels = job.combine(parameterization="pixels", **BASE)
    pyramid = job.combine(parameterization="laplacian", pyramid_levels=1, **BASE)
    assert isinstance(pyramid.outcome.params, tuple) and len(pyramid.outcome.params) == 1
    np.testing.assert_array_equal(pyramid.outcome.history, pixels.outcome.history)
    np.testing.assert_array_equal(pyramid.outcome.pixels, pixels.outcome.pixels)
    assert not np.array_equal(pixels.outcome.pixels[1], pixels.outcome.pixels[0])


def test_rmsprop_on_a_pyramid_lowers_the_loss(vgg19):
    result = job.combine(parameterization="laplacian", optimizer="rmsprop", lr=1.0, **BASE)
    assert [a.shape[1:3] for a in result.outcome.params] == [(32, 32), (16, 16)]
    totals = result.outcome.totals
    assert np.all(np.isfinite(totals)) and np.all(totals[-1] < totals[0])


def test_the_content_weight_per_scale_is_traced(vgg19, compiled):
    """Two coarse-to-fine runs that differ only in their content weight factors: the second
    compiles nothing, and each scale's loss was weighted with its own factor."""
    ladder = dict(BASE, scales=(24, 32), steps=2, parameterization="laplacian")
    first = job.combine(scale_content_weights=(1.0, 0.5), **ladder)
    before = len(compiled)
    assert before > 0  # the listener hears compiles
    second = job.combine(scale_content_weights=(2.0, 0.25), **ladder)
    assert compiled[before:] == []
    content = 0  # the shallow recipe's first term
    assert second.outcome.weights[:, content].tolist() == [0.25, 0.25]
    np.testing.assert_array_equal(second.outcome.stage_weights[:, 0, content], [2.0, 0.25])
    assert first.outcome.stage_weights[0, 0, content] == 1.0
    oc = second.outcome
    want = np.einsum("skc,kc->sk", oc.history[:2], oc.stage_weights[0])
    np.testing.assert_allclose(oc.totals[:2], want, rtol=1e-6)


def test_the_learning_rate_per_scale_is_traced_and_multiplies_the_rate(vgg19, compiled):
    """A scale's factor multiplies the run's learning rate there: lr 2 at factors (1, 0.25)
    is, to the last bit, lr 1 at (2, 0.5), compiled once; at factor 0 a scale does not
    move the image, so its loss stays where the scale began."""
    ladder = dict(BASE, scales=(24, 32), parameterization="laplacian", optimizer="rmsprop")
    first = job.combine(lr=2.0, scale_lr_factors=(1.0, 0.25), **ladder)
    before = len(compiled)
    assert before > 0  # the listener hears compiles
    second = job.combine(lr=1.0, scale_lr_factors=(2.0, 0.5), **ladder)
    assert compiled[before:] == []
    np.testing.assert_array_equal(second.outcome.history, first.outcome.history)
    np.testing.assert_array_equal(second.outcome.pixels, first.outcome.pixels)
    plain = job.combine(lr=2.0, **ladder)
    assert not np.array_equal(plain.outcome.pixels, first.outcome.pixels)
    frozen = job.combine(lr=2.0, scale_lr_factors=(1.0, 0.0), **ladder).outcome
    fine = frozen.history[frozen.row_stage == 1]
    assert len(fine) == 4 and np.all(fine == fine[0])
    coarse = frozen.history[frozen.row_stage == 0]
    assert not np.all(coarse == coarse[0])


def test_a_final_pass_matches_its_own_terms_and_compiles_nothing(vgg19, compiled, recipe_file):
    """final_steps: one more stage at the output's size in which the style term (during =
    "final") counts and nowhere else: the first stage's program does not compute it (it
    reads 0 there), and from the content, with only the content term counting, that
    stage barely moves; the final pass lowers the style term. Its step count is traced:
    a longer final pass compiles nothing."""
    content, style = recipe_files.shallow()["terms"]
    final = recipe_file(recipe_files.shallow(terms=[content, {**style, "during": "final"}]))
    run = dict(BASE, init="content", steps=2, final_steps=2, parameterization="laplacian")
    oc = job.combine(**{**run, "recipe": final}).outcome
    assert oc.stage_sizes == ((32, 32), (32, 32))
    assert oc.row_stage.tolist() == [0, 0, 1, 1]
    np.testing.assert_array_equal(oc.stage_weights[:, 0, 1:3], [[0.0, 0.0], [1.0, 1.0]])
    gram = (slice(None), 0, slice(1, 3))  # (rows, start, component)
    first, last = oc.history[oc.row_stage == 0][gram], oc.history[oc.row_stage == 1][gram]
    assert first.shape == (2, 2) and np.all(first == 0.0)  # not computed in the scale
    assert np.all(last[-1] < last[0] - 1e-2)  # the Gram terms fall in the final pass
    # the content term at its minimum barely moves the content (Adam scales a rounding
    # error's gradient up to its rate): the final pass starts where the scale began
    unmoved = job.combine(**{**run, "recipe": final, "steps": 1, "final_steps": 1}).outcome
    np.testing.assert_allclose(unmoved.history[-1][gram[1:]], last[0], rtol=1e-4)
    before = len(compiled)
    assert before > 0  # the listener hears compiles
    longer = job.combine(**{**run, "recipe": final, "final_steps": 4}).outcome
    assert compiled[before:] == [] and longer.row_stage.tolist() == [0, 0, 1, 1, 1, 1]
    off = job.combine(**{**run, "recipe": final, "final_steps": 0}).outcome
    assert off.stage_sizes == () and np.all(off.history[gram] == 0.0)  # never computed
    everywhere = recipe_file(recipe_files.shallow(terms=[content, style]), "everywhere")
    again = job.combine(**{**run, "recipe": everywhere}).outcome
    assert np.all(again.history[1, 0, 1:3] < again.history[0, 0, 1:3] - 1e-2)  # now it moves


def test_pyramids_the_scales_cannot_hold_are_refused_before_a_run():
    from jaxcombine.errors import JaxcombineError
    from jaxcombine.options.config import RunConfig
    from jaxcombine.run import plan

    ladder = dict(recipe=SHALLOW, scales=(24, 32), parameterization="laplacian")
    for options, message in (
        (dict(scale_optimizer="carry"), "carry needs the same pyramid levels at every scale"),
        (dict(pyramid_levels=9), "pyramid_levels 9 is too many for the 24x24 scale"),
    ):
        with pytest.raises(JaxcombineError, match=message):
            plan.make(RunConfig(**ladder, **options))
    levels = [s.levels for s in plan.make(RunConfig(**ladder)).scales]
    assert levels == [1, 2]  # the default: halvings keeping 16 px
