"""The statistic protocol (jaxcombine.stats.base): a statistic defined and registered in this
test module alone is usable in a recipe, untiled and tiled; unknown names are one line;
outside stats/ and the configuration no module names a statistic."""

import dataclasses
import re
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pytest
import recipe_files
from recipe_files import term

from jaxcombine import stats
from jaxcombine.errors import JaxcombineError
from jaxcombine.options import config
from jaxcombine.options import recipe as recipe_lib
from jaxcombine.stats import base, statistics

PACKAGE = Path(__file__).resolve().parents[2] / "jaxcombine"


@dataclasses.dataclass(frozen=True)
class ChannelMean(base.Family):
    """A toy: each channel's mean, relative squared error. A sum over positions."""

    name = "toy_channel_mean"
    tileable = True

    def target(self, features, weights):
        maps = list(features)
        return base.blend(weights, [jnp.mean(statistics.points(f), axis=0) for f in maps])

    def term(self, features, target, *, key=None, mask=None):
        h, w, _ = features.shape
        where = jnp.ones((h, w)) if mask is None else statistics.point_weights(mask, features)
        count = h * w if mask is None else 1.0
        return self.from_sums(self.sums(features, where.reshape(h, w), target), count, target)

    def sums(self, features, where, target):
        return {"s1": jnp.einsum("hw,hwc->c", where, features)}

    def from_sums(self, sums, count, target):
        return base.relative_mse(sums["s1"] / count, target)

    def target_from_sums(self, sums, counts, weights):
        return base.blend(weights, [s["s1"] / n for s, n in zip(sums, counts)])


@pytest.fixture
def toy():
    stat = stats.register(ChannelMean())
    yield stat
    stats.unregister(stat.name)


def toy_recipe(statistic: str) -> dict:
    return {"init": "noise", "terms": [term("style", ["block1_conv1", "block2_conv1"], statistic)]}


def test_a_statistic_registered_here_runs_untiled_and_tiled(toy, tmp_path, vgg19):
    from jaxcombine.run.job import combine

    path = tmp_path / "toy.toml"
    recipe_files.write(path, toy_recipe(toy.name))
    assert recipe_lib.load(str(path)).terms[0].statistic == toy.name
    opts = dict(recipe=str(path), size=48, steps=4, chunk=2, conv="xla")
    whole, tiled = combine(**opts), combine(**opts, tile=16)
    totals = whole.history[:, 0, :2].sum(axis=1)
    assert totals[-1] < 0.7 * totals[0], totals  # the toy term is optimised
    # tiled = untiled to float32 rounding (test_tiles.py derives the same 1e-4)
    np.testing.assert_allclose(tiled.history, whole.history, rtol=1e-4, atol=1e-8)


def test_unknown_statistics_are_one_line_naming_the_registered_ones(toy, tmp_path):
    path = tmp_path / "bad.toml"
    recipe_files.write(path, toy_recipe("nope"))
    with pytest.raises(JaxcombineError, match="statistic must be one of .*toy_channel_mean"):
        recipe_lib.load(str(path))
    with pytest.raises(JaxcombineError, match=r"unknown statistic 'nope'; registered: .*w2"):
        stats.get("nope")
    with pytest.raises(ValueError, match="already registered"):
        stats.register(ChannelMean.__new__(ChannelMean))
    with pytest.raises(ValueError, match="built-in"):
        stats.unregister("gram")


def test_every_builtin_is_registered_with_its_flags():
    assert set(recipe_lib.STATISTICS) <= set(stats.names())
    for name in stats.names():
        stat = stats.get(name)
        assert isinstance(stat, stats.Statistic) and stat.name == name
    hypercolumn = set(config.HYPERCOLUMN_STATISTICS)
    assert {n for n in stats.names() if stats.get(n).hypercolumn} == hypercolumn
    assert {n for n in stats.names() if stats.get(n).random} == {"swd"} | hypercolumn
    assert [n for n in stats.names() if stats.get(n).spatial] == ["activations"]
    assert [n for n in stats.names() if stats.get(n).paired] == ["nearest"]
    assert {n for n in stats.names() if not stats.get(n).tileable} == {
        "swd",
        "histogram",
    } | hypercolumn
    assert stats.get("swd", directions=7).directions == 7


def test_no_module_outside_stats_and_options_names_a_statistic():
    """The rule of issue 19: statistic names live in stats/, the configuration and presets."""
    quoted = re.compile(r"""["'](%s)["']""" % "|".join(recipe_lib.STATISTICS))
    found = []
    for path in PACKAGE.rglob("*.py"):
        folder = path.relative_to(PACKAGE).parts[0]
        if folder in ("stats", "options"):
            continue
        for i, line in enumerate(path.read_text().splitlines(), 1):
            hit = quoted.search(line)
            # "histogram" is also a colour mode (--preserve-color), whose home is io/color
            if hit and not (hit[1] in config.PRESERVE_COLORS and path.name == "color.py"):
                found.append(f"{path.relative_to(PACKAGE)}:{i}: {line.strip()}")
    assert len(recipe_lib.STATISTICS) == 8
    assert not found, "\n".join(found)
