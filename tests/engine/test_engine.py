"""The engine on tiny images with the real weights: presets, statistics, inits, optimisers."""

import functools
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import recipe_files
from cli_run import cpu_env, host_devices
from PIL import Image
from recipe_files import HYPERCOLUMN, hypercolumn, term

from jaxcombine.engine import driver
from jaxcombine.errors import JaxcombineError
from jaxcombine.io import images
from jaxcombine.options import config, recipe
from jaxcombine.options import config as config_lib
from jaxcombine.run import job
from jaxcombine.run import prepare as prepare_lib
from jaxcombine.stats import losses
from jaxcombine.stats.gram import gram

TINY = dict(size=32, chunk=3)
# Plumbing (optimisers, inits, loop forms, dtypes, divergence) does not depend on the
# network's depth: these tests use a recipe that stops at block2_conv1, whose programs
# compile several times faster than gatys's, all at one size and step count so that
# tests running the same shapes share a compiled program.
SHALLOW = str(recipe_files.SHALLOW)
# XLA's convolutions in the CPU's default loop form (a rolled scan): what these tests check
# does not depend on the convolution algorithm, and Winograd's programs compile 2-3 times
# slower on the CPU. Winograd runs end to end in test_rows, test_tiles, test_cli and
# test_batch, and layer by layer in test_model and test_winograd.
FAST = dict(conv="xla", loop="scan")
PLUMBING = dict(recipe=SHALLOW, steps=4, **TINY, **FAST)


def _falls(result, j=0):
    totals = result.outcome.totals[:, j]
    return totals[-1] < totals[0]


# Direct convolutions: on the CPU, programs with Winograd layers down to block5 compile about
# three times slower, and what is tested here is the preset. The Winograd layers are checked
# one by one (test_model, test_winograd) and run end to end with gatys (test_cli, test_batch).
# The quick tier runs the default, gatys, end to end. nnst and strotss (their hypercolumn
# statistics run in the program of every statistic below and in test_hypercolumn_runs, their
# pyramid in test_pyramid_runs) and the presets that swap in another statistic (each run at two layers
# by test_every_statistic_lowers_its_own_term_in_one_program) run end to end in the slow tier.
CORE_PRESETS = ("gatys",)


@pytest.mark.parametrize(
    "name",
    [
        pytest.param(name, marks=() if name in CORE_PRESETS else pytest.mark.slow)
        for name in recipe.preset_names()
    ],
)
def test_every_preset_lowers_its_loss(vgg19, tv_weights, name):
    # a preset's coarse-to-fine ladder (strotss, nnst: 4 scales) would start below what
    # its layers take at this size: one scale, its other suggestions kept
    ladder = {"scale_count": 1} if recipe.load(name).suggested("scale_count") else {}
    # From noise: from the content a self-similarity term starts at its zero, and RMSprop's
    # first step (10x its rate, no bias correction, as the paper's) leaves it upwards
    start = {"init": "noise"} if name == "strotss" else {}
    result = job.combine(recipe=name, steps=6, conv="xla", **{**TINY, **start}, **ladder)
    assert result.outcome.history.shape == (6, 1, len(recipe.load(name).labels))
    assert _falls(result), result.outcome.totals[:, 0]


def test_every_statistic_lowers_its_own_term_in_one_program(vgg19, recipe_file):
    """A style term of every statistic at two layers and a term of every hypercolumn style
    statistic, optimised together from noise: one program (one compile instead of one per
    statistic), and each statistic's own loss falls. The targets all come from one
    style, so the terms pull the same way (the content's self-similarity, which pulls
    elsewhere, runs alone in test_hypercolumn_runs); each statistic alone runs in the slow
    tier (test_every_statistic), the hypercolumn ones from the command line."""
    terms = [term("style", ["block1_conv1", "block2_conv1"], s) for s in recipe.STATISTICS]
    # palette and nearest weighted up so that, among the 16 Gram-like terms, each falls well
    # past the noise of its sampled positions in 6 steps (measured: late/early 0.85-0.92)
    sampled = [
        hypercolumn("emd", samples=256),
        hypercolumn("palette", layers=["rgb"], samples=256, weight=10.0),
        hypercolumn("nearest", layers=HYPERCOLUMN[1:], samples=64, stride=2, weight=10.0),
        hypercolumn("nearest_each_step", layers=["block1_conv1"], samples=256),
    ]
    path = recipe_file({"init": "noise", "terms": terms + sampled})
    result = job.combine(recipe=path, steps=6, **TINY, **FAST)
    labels = recipe.load(path).labels
    history = result.outcome.history[:, 0]  # (steps, labels): every unweighted term
    for statistic in recipe.STATISTICS:
        columns = [i for i, label in enumerate(labels) if label.split(":")[1:2] == [statistic]]
        assert len(columns) == 2, (statistic, labels)
        first, last = history[0, columns].sum(), history[-1, columns].sum()
        assert last < first, (statistic, first, last)
    # each step samples other positions, so compare the halves, not two steps
    first_sampled = 2 * len(terms)  # a label per layer of each two-layer term, then these
    names = [label.split(":")[1] for label in labels[first_sampled : first_sampled + 4]]
    assert names == ["emd", "palette", "nearest", "nearest_each_step"], labels
    for i in range(first_sampled, first_sampled + 4):
        early, late = history[:3, i].mean(), history[3:, i].mean()
        assert late < 0.95 * early, (labels[i], history[:, i])


@pytest.mark.slow
@pytest.mark.parametrize("statistic", recipe.STATISTICS)
def test_every_statistic(vgg19, recipe_file, statistic):
    style = term("style", ["block1_conv1", "block2_conv1"], statistic)
    result = job.combine(
        recipe=recipe_file({"init": "noise", "terms": [style]}), steps=6, **TINY, **FAST
    )
    assert _falls(result)


# Adam (the default) and L-BFGS (whose state once compiled a second program) in the quick
# tier; SGD and RMSprop, optax's plainest states, in the slow tier (RMSprop also runs a
# pyramid in test_pyramid_runs).
QUICK_OPTIMIZERS = ("adam", "lbfgs")


@pytest.mark.parametrize(
    "optimizer",
    [
        o if o in QUICK_OPTIMIZERS else pytest.param(o, marks=pytest.mark.slow)
        for o in config.OPTIMIZERS
    ],
)
def test_every_optimizer(vgg19, optimizer, compiled):
    """Each optimiser lowers the loss, and its state selects one chunk program: a run of
    one chunk compiles (the listener hears it), then a run of the same shapes in two chunks
    with another learning rate compiles nothing (L-BFGS's state starts weakly typed; the
    second chunk, fed the first one's state, compiled a second program). A size no other
    test runs, so that the first run compiles whatever ran before in this process."""
    shapes = dict(recipe=SHALLOW, size=30, chunk=3, optimizer=optimizer, init="noise", **FAST)
    job.combine(steps=3, **shapes)
    assert len(compiled) > 0
    before = len(compiled)
    result = job.combine(steps=6, lr=2.0, **shapes)
    assert compiled[before:] == []
    assert _falls(result), result.outcome.totals[:, 0]


def test_every_init_and_vmapped_equals_separate(vgg19, tmp_path):
    """Five starts of every kind, vmapped, each equal to the same start run alone."""
    init_file = tmp_path / "start.png"
    Image.open(images.STYLE).save(init_file)
    spec = f"content,style,noise:2,{init_file}"
    together = job.combine(init=spec, **PLUMBING)
    assert together.labels == ("content", "style", "noise-s0", "noise-s1", "init-start")
    inits = config.parse_inits(spec)
    assert [i.label for i in inits] == list(together.labels)
    for j, start in enumerate(inits):
        alone = job.combine(init=start.spec, seed=start.seed, **PLUMBING)
        assert alone.labels == (start.label,)
        np.testing.assert_allclose(alone.outcome.pixels[0], together.outcome.pixels[j], atol=0.05)
        np.testing.assert_allclose(
            alone.outcome.history[:, 0], together.outcome.history[:, j], rtol=1e-3, atol=1e-6
        )
    # Different starts really are different images.
    px = together.outcome.pixels
    assert np.abs(px[0] - px[1]).mean() > 10 and np.abs(px[2] - px[3]).mean() > 10


@pytest.mark.slow
def test_loop_forms_agree(vgg19):
    runs = {loop: job.combine(**{**PLUMBING, "loop": loop}, init="noise") for loop in config.LOOPS}
    for loop in ("scan", "unroll"):
        np.testing.assert_allclose(
            runs[loop].outcome.pixels, runs["step"].outcome.pixels, atol=0.05
        )


@pytest.mark.slow  # quick sibling: test_every_optimizer (same shapes in more chunks compile nothing)
def test_a_shorter_last_chunk_compiles_nothing(vgg19, compiled):
    """The rolled loop takes its trip count as an argument, and the history is sliced on
    the host: 5 steps in chunks of 3 compile exactly the programs 3 steps in one chunk do
    (every compile counted), not one more for the 2-step chunk. After a first run (the
    weights' programs), two sizes no other test uses, so both compile their shapes."""
    run = functools.partial(job.combine, recipe=SHALLOW, init="content", chunk=3, **FAST)
    run(steps=1, size=20)
    before = len(compiled)
    whole = run(steps=3, size=21)
    one_chunk = len(compiled) - before
    assert one_chunk > 0 and whole.outcome.history.shape[0] == 3  # the listener hears them
    ragged = run(steps=5, size=22)
    assert ragged.outcome.loop == "scan" and ragged.outcome.history.shape[0] == 5
    assert np.isfinite(ragged.outcome.history).all()  # the 2-step chunk's unused rows are cut
    assert len(compiled) - before - one_chunk == one_chunk


def test_divergence_freezes_that_start_only(vgg19):
    prep = prepare_lib.prepare(config_lib.RunConfig(init="content,noise", **PLUMBING))
    x0 = prep.x0.copy()
    x0[1, 0, 0, 0] = np.nan  # this start's loss is NaN from the first step
    out = driver.optimise(
        prep.problem, prep.variables, prep.targets, prep.initial_state(x0), chunk=2
    )
    assert out.alive.tolist() == [True, False]
    assert out.diverged_at == [None, 1]
    np.testing.assert_array_equal(np.isnan(out.pixels[1]), np.isnan(x0[1]))  # last good image kept
    assert np.isfinite(out.history[:, 0]).all() and out.totals[-1, 0] < out.totals[0, 0]


def test_losses_are_normalised():
    f = jnp.asarray(np.random.default_rng(0).uniform(size=(8, 8, 4)), jnp.float32)
    assert float(losses.relative_mse(jnp.zeros_like(f), f)) == pytest.approx(1.0, rel=1e-5)
    assert float(losses.relative_mse(3 * f, 3 * f)) == 0.0
    big = jnp.tile(f, (4, 4, 1))  # same statistics on a 4x larger image
    np.testing.assert_allclose(gram(big), gram(f), rtol=1e-5)
    assert float(losses.total_variation(jnp.zeros((4, 4, 3)))) == 0.0


@pytest.mark.parametrize(
    "options, message",
    [
        (dict(steps=-1), "steps must be"),
        (dict(size=0), "size must be"),
        (dict(size=8), "too small for layer"),
        (dict(lr=-1.0), "lr must be a finite number > 0, got -1.0"),
        (dict(init="noise:0"), "noise:N"),
        # a start that is no file is found once the targets are computed: a recipe and
        # size whose targets program other tests here compiled already
        (dict(init="sideways", **PLUMBING), "bad init"),
        (dict(recipe="nope"), "unknown recipe"),
        (dict(content="/no/such.png"), "image not found"),
    ],
)
def test_bad_options_fail_in_one_line(vgg19, options, message):
    with pytest.raises(JaxcombineError, match=message) as err:
        job.combine(**{**TINY, "steps": 1, **options})
    assert "\n" not in str(err.value)


@pytest.mark.parametrize(
    "body, message",
    [
        ("", "no terms"),
        ('[[terms]]\nlayer = "block9_conv1"\nsource = "style"', "unknown layer 'block9_conv1'"),
        ('[[terms]]\nlayer = "block1_conv1"\nsource = "moon"', "source must be"),
        (
            '[[terms]]\nlayer = "block1_conv1"\nsource = "style"\nstatistic = "median"',
            "statistic must be",
        ),
        (
            '[[terms]]\nlayer = "block1_conv1"\nsource = "style"\nweight = -1',
            "weight must be a finite number >= 0, got -1",
        ),
        (
            '[[terms]]\nlayer = "block1_conv1"\nsource = "style"\nweight = 0',
            "every term has weight 0",
        ),
        ("[[terms]\n", "invalid TOML"),
    ],
)
def test_bad_recipes_fail_in_one_line(tmp_path, body, message):
    path = tmp_path / "bad.toml"
    path.write_text(body)
    with pytest.raises(JaxcombineError, match=message):
        recipe.load(str(path))


def test_recipe_round_trips_through_toml():
    for name in recipe.preset_names():
        r = recipe.load(name)
        again = recipe.from_dict(__import__("tomllib").loads(r.to_toml()), name)
        assert again == r


def test_four_fake_devices_match_one(vgg19, tmp_path):
    """Starts sharded over a 4-device mesh (5 starts, padded to 8) give the single-device
    result, computed here (one device) with the program the init test compiled."""
    options = dict(init="content,style,noise:3", **PLUMBING)
    code = textwrap.dedent(f"""
        import sys, numpy as np, jax
        from jaxcombine.run import job
        r = job.combine(**{options!r})
        np.save(sys.argv[1], r.outcome.pixels)
        print(len(jax.devices()))
    """)
    env = cpu_env(**host_devices(4))
    path = tmp_path / "px4.npy"
    proc = subprocess.run(
        [sys.executable, "-c", code, str(path)], env=env, capture_output=True, text=True, check=True
    )
    assert proc.stdout.strip() == "4"
    assert len(jax.local_devices()) == 1
    one = job.combine(**options)
    np.testing.assert_allclose(np.load(path), one.outcome.pixels, atol=0.05)


@pytest.mark.slow  # a dtype variant of the float32 runs the quick tier makes throughout
def test_bfloat16_activations_still_optimise(vgg19):
    result = job.combine(dtype="bfloat16", init="noise", **PLUMBING)
    assert result.outcome.history.dtype == np.float32 and _falls(result)


def test_style_blend_weights_select_and_mix(vgg19, tmp_path):
    other = tmp_path / "grey.png"
    Image.new("RGB", (64, 64), (128, 128, 128)).save(other)
    styles = (str(images.STYLE), str(other))
    only_first = prepare_lib.prepare(
        config_lib.RunConfig(style=styles, style_weights=(1.0, 0.0), **PLUMBING)
    )
    single = prepare_lib.prepare(config_lib.RunConfig(style=styles[:1], **PLUMBING))
    for key, target in single.targets.items():  # float32 sums over a batch of 1 vs 2
        scale = float(np.abs(target).max())
        np.testing.assert_allclose(only_first.targets[key], target, rtol=1e-5, atol=1e-5 * scale)
    mixed = prepare_lib.prepare(config_lib.RunConfig(style=styles, **PLUMBING))
    key = "style:gram:block1_conv1"
    assert not np.allclose(mixed.targets[key], single.targets[key])


def test_any_optax_transformation_can_drive_the_pixels(vgg19):
    import optax

    chain = optax.chain(optax.clip_by_global_norm(1e4), optax.adam(3.0))
    result = job.combine(optimizer=chain, init="noise", **PLUMBING)
    assert _falls(result)
