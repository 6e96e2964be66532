"""One configuration: the same bad value is refused the same way from the API, the CLI,
a manifest and a sweep; random values give a config or a ConfigError, nothing else."""

import math
import subprocess
import sys

import numpy as np
import pytest
from cli_run import jaxcombine
from hypothesis import given, settings
from hypothesis import strategies as st

from jaxcombine.batch import runner as batch
from jaxcombine.errors import JaxcombineError
from jaxcombine.options import config, rules
from jaxcombine.options.config import RunConfig
from jaxcombine.options.rules import ConfigError
from jaxcombine.run import job

# (option, bad value as the API / a manifest gives it, as a command line gives it, message)
BAD = [
    ("lr", math.inf, "inf", "lr must be a finite number > 0, got inf"),
    ("lr", math.nan, "nan", "lr must be a finite number > 0, got nan"),
    ("lr", "4", None, "lr must be a finite number > 0, got '4'"),
    ("tv_weight", math.inf, "inf", "tv_weight must be a finite number >= 0, got inf"),
    ("tv_weight", 1e308, "1e308", "tv_weight must be a finite number >= 0, got 1e+308"),
    ("steps", "two", "two", "steps must be an integer >= 0 and <= 10000000, got 'two'"),
    ("steps", 2.5, "2.5", "steps must be an integer >= 0 and <= 10000000, got 2.5"),
    ("size", "48", None, "size must be an integer >= 1 and <= 1000000, got '48'"),
    ("seed", 2**70, str(2**70), "seed must be an integer >= 0 and <= 2147483647"),
    ("optimizer", "adamw", "adamw", "unknown optimizer 'adamw'; choose adam, sgd, lbfgs, rmsprop"),
    (
        "preserve_color",
        "purple",
        "purple",
        "unknown preserve_color 'purple'; choose none, luminance, stats, histogram",
    ),
    (
        "style_weights",
        (math.nan, 1.0),
        "nan,1",
        "style_weights must be a finite number >= 0, got nan",
    ),
    ("style_weights", 0.5, None, "style_weights must be a non-empty list of numbers, got 0.5"),
    ("remat", "yes", None, "remat must be true or false, got 'yes'"),
    ("init", "noise:0", "noise:0", "bad init 'noise:0': use noise:N with N >= 1"),
]


def _api_value(option, value):
    """What a bad value needs beside it to reach its own check (two styles for two weights)."""
    return {"style": ("a.png", "b.png")} if option == "style_weights" else {}


@pytest.mark.parametrize("option, value, text, message", BAD)
def test_python_api_refuses_in_one_line(option, value, text, message):
    with pytest.raises(ConfigError) as err:
        RunConfig(**{option: value, **_api_value(option, value)})
    assert message in str(err.value) and "\n" not in str(err.value)
    assert err.value.field == option
    with pytest.raises(ConfigError, match=message.split(",")[0]):  # combine() builds the same
        job.combine(**{option: value, **_api_value(option, value)})


@pytest.mark.parametrize("option, value, text, message", [b for b in BAD if b[2] is not None])
def test_rules_parse_command_line_text_the_same_way(option, value, text, message):
    with pytest.raises(ConfigError) as err:
        RunConfig(**{option: config.rule(option).parse(option, text), **_api_value(option, value)})
    assert str(err.value).split(", got")[0] == message.split(", got")[0]


@pytest.mark.parametrize(
    "args, message",
    [
        (["--lr", "nan"], "lr must be a finite number > 0, got nan"),
        (["--tv-weight", "inf"], "tv_weight must be a finite number >= 0, got inf"),
        (
            ["--style", "a.png", "--style", "b.png", "--style-weights", "inf,1"],
            "style_weights must be a finite number >= 0, got inf",
        ),
        (["--steps", "two"], "steps must be an integer >= 0 and <= 10000000, got 'two'"),
        (["--seed", str(2**64)], "seed must be an integer >= 0"),
        (
            ["--preserve-color", "purple"],
            "unknown preserve_color 'purple'; choose none, luminance, stats, histogram",
        ),
    ],
)
def test_cli_refuses_in_one_line(args, message):
    proc = jaxcombine("run", *args, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [f"jaxcombine: error: {message}"] or (
        len(proc.stderr.strip().splitlines()) == 1 and message in proc.stderr
    ), proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize(
    "table, key_line, where",
    [
        (
            "defaults",
            'steps = "two"',
            "[defaults], steps: steps must be an integer >= 0 and <= 10000000, got 'two'",
        ),
        ("defaults", 'size = "48"', "[defaults], size: size must be an integer"),
        ("defaults", "lr = nan", "[defaults], lr: lr must be a finite number > 0, got nan"),
        (
            "defaults",
            "style_weights = 0.5",
            "[defaults], style_weights: style_weights must be a non-empty",
        ),
        (
            "jobs",
            "tv_weight = inf",
            "[[jobs]] 2, tv_weight: tv_weight must be a finite number >= 0, got inf",
        ),
        (
            "grid",
            "lr = [1.0, -2.0]",
            "[grid] combination 2, lr: lr must be a finite number > 0, got -2.0",
        ),
        ("jobs", 'shard = "rows"', "[[jobs]] 2, shard: shard 'rows' is for one image at a time"),
    ],
)
def test_manifest_names_the_table_and_the_key(tmp_path, table, key_line, where):
    body = {
        "defaults": f"[defaults]\n{key_line}\n[[jobs]]\ninit = 'content'\n",
        "jobs": "[[jobs]]\ninit = 'content'\n[[jobs]]\n" + key_line + "\n",
        "grid": "[grid]\n" + key_line + "\n",
    }[table]
    (tmp_path / "m.toml").write_text(body)
    with pytest.raises(JaxcombineError) as err:
        batch.load_manifest(tmp_path / "m.toml")
    assert str(err.value).startswith(f"m.toml: {where}"), str(err.value)


@pytest.mark.parametrize(
    "spec, message",
    [
        ("lr=nan,1", "lr must be a finite number > 0, got nan"),
        ("lr=0", "lr must be a finite number > 0, got 0"),
        ("tv_weight=inf", "tv_weight must be a finite number >= 0, got inf"),
        ("lr=a", "lr must be a finite number > 0, got 'a'"),
        ("lr=1,1", "give distinct values"),
        ("steps=1,2", "NAME one of lr, tv_weight"),
    ],
)
def test_sweep_values_go_through_the_option_rules(spec, message):
    with pytest.raises(ConfigError, match=message):
        config.parse_sweep(spec)


def test_a_recipe_weight_too_big_for_float32_is_refused(tmp_path):
    from jaxcombine.options import recipe

    path = tmp_path / "r.toml"
    path.write_text('[[terms]]\nlayer = "block1_conv1"\nsource = "style"\nweight = 1e308\n')
    with pytest.raises(JaxcombineError, match="weight must be a finite number >= 0, got 1e"):
        recipe.load(str(path))
    path.write_text('[[terms]]\nlayers = "block1_conv1"\nsource = "style"\n')  # not a list
    with pytest.raises(JaxcombineError, match="layers must be a non-empty list of layer names"):
        recipe.load(str(path))


def test_the_configuration_module_needs_no_jax():
    code = "import sys, jaxcombine.options.config as c; c.RunConfig(lr=2.0); print('jax' in sys.modules)"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert proc.stdout.strip() == "False"


def test_every_option_is_on_the_command_line_with_the_configs_default():
    from jaxcombine.cli import main as cli

    params = {p.name: p for p in cli.run.params}
    for field in config.run_fields():
        assert field in params, field
        assert params[field].default == (config.default(field) if field != "weights" else None)
    assert {p.name: p for p in cli.study.params}["snapshot_every"].default == 25
    assert tuple(params["optimizer"].type.choices) == config.OPTIMIZERS


def test_valid_values_are_normalised():
    assert RunConfig(style="a.png", lr=np.float32(2.5)).style == ("a.png",)
    with pytest.raises(ConfigError, match="one style weight per style image: 2 for 1"):
        RunConfig(style="a.png", style_weights=[1, 2])
    c = RunConfig(style=["a.png", "b.png"], style_weights=[1, 2], steps=np.int64(3))
    assert c.style == ("a.png", "b.png") and c.style_weights == (1.0, 2.0) and type(c.steps) is int
    assert hash(c) == hash(RunConfig(style=("a.png", "b.png"), style_weights=(1.0, 2.0), steps=3))
    assert [i.label for i in RunConfig(init="content,noise:2", seed=5).inits()] == [
        "content",
        "noise-s5",
        "noise-s6",
    ]


_values = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12),
    st.lists(st.floats(allow_nan=True), max_size=3),
    st.lists(st.text(max_size=6), max_size=3),
)


@settings(max_examples=400, deadline=None)
@given(st.dictionaries(st.sampled_from(config.run_fields()), _values, max_size=4))
def test_random_values_give_a_config_or_a_config_error(options):
    """Never anything but a valid, hashable config or a one-line ConfigError."""
    try:
        c = RunConfig(**options)
    except ConfigError as e:
        assert str(e) and "\n" not in str(e) and e.field in config.run_fields()
        return
    hash(c)
    assert c == c.replace()  # a valid config rebuilt from itself is still valid and equal
    for name in ("lr", "tv_weight"):
        value = getattr(c, name)
        assert value is None or (math.isfinite(value) and abs(value) <= rules.FLOAT32_MAX)
