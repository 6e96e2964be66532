"""Hypercolumn terms in recipes: validated once (options/recipe.py), in one line each, and
written back to TOML as they were read."""

import tomllib

import pytest
import recipe_files

from jaxcombine.errors import JaxcombineError
from jaxcombine.options import recipe as recipe_lib
from jaxcombine.options.recipe import Hypercolumn

LAYERS = ["rgb", "block1_conv1", "block2_conv1"]


def hypercolumn_term(statistic="emd", source="style", **extra) -> dict:
    return {"hypercolumn": LAYERS, "source": source, "statistic": statistic, **extra}


def load(tmp_path, *terms, arch="vgg19"):
    path = recipe_files.write(tmp_path / "r.toml", {"terms": list(terms)})
    return recipe_lib.load(str(path), arch)


def test_a_hypercolumn_term_reads_its_layers_and_round_trips(tmp_path):
    term = hypercolumn_term(samples=64, stride=2, layer_scales=[1.0, 0.5, 0.25], weight=3.0)
    rec = load(tmp_path, term, hypercolumn_term("self_similarity", "content"))
    hc = rec.terms[0].hypercolumn
    assert hc == Hypercolumn(tuple(LAYERS), (1.0, 0.5, 0.25), 64, 2)
    assert rec.layers == ("block1_conv1", "block2_conv1")  # the taps: rgb is no layer
    assert rec.labels[:2] == (
        "style:emd:rgb..block2_conv1",
        "content:self_similarity:rgb..block2_conv1",
    )
    # vgg16-tv names its layers as Keras does
    assert load(tmp_path, term, arch="vgg16-tv").terms[0].hypercolumn == hc
    # the TOML written (records, eval-suite recipes) reads back as the same recipe
    again = recipe_lib.from_dict(tomllib.loads(rec.to_toml()), rec.name)
    assert again.terms == rec.terms
    # jitter: off unless asked for, and written back only when on
    assert not hc.jitter and "jitter" not in rec.to_toml()
    jittered = load(tmp_path, hypercolumn_term(stride=4, jitter=True))
    assert jittered.terms[0].hypercolumn.jitter
    again = recipe_lib.from_dict(tomllib.loads(jittered.to_toml()), jittered.name)
    assert again.terms == jittered.terms
    # rotations, likewise; they change the target, so they are part of its key
    assert not hc.rotations and "rotations" not in rec.to_toml()
    turned = load(tmp_path, hypercolumn_term(rotations=True))
    assert turned.terms[0].hypercolumn.rotations
    plain = load(tmp_path, hypercolumn_term()).terms[0].hypercolumn
    assert turned.terms[0].hypercolumn.key != plain.key
    again = recipe_lib.from_dict(tomllib.loads(turned.to_toml()), turned.name)
    assert again.terms == turned.terms


def test_split_makes_one_term_of_each_entry(tmp_path):
    """``split = true``: one term per entry, each its own one-entry hypercolumn with that
    entry's scale and the table's other keys, written back as those terms."""
    table = hypercolumn_term(
        "nearest_each_step", samples=64, stride=4, layer_scales=[1.0, 0.5, 0.25], split=True
    )
    rec = load(tmp_path, table)
    assert [t.layer for t in rec.terms] == LAYERS
    assert [t.hypercolumn for t in rec.terms] == [
        Hypercolumn((name,), (scale,), 64, 4) for name, scale in zip(LAYERS, (1.0, 0.5, 0.25))
    ]
    assert rec.labels[:3] == tuple(f"style:nearest_each_step:{name}" for name in LAYERS)
    channels = load(tmp_path, {**table, "layer_scales": "channels"})
    assert {t.hypercolumn.scales for t in channels.terms} == {"channels"}
    again = recipe_lib.from_dict(tomllib.loads(rec.to_toml()), rec.name)
    assert again.terms == rec.terms and "split" not in rec.to_toml()


@pytest.mark.parametrize(
    "term, fragment",
    [
        ({**hypercolumn_term(), "layer": "block1_conv1"}, "not both"),
        (hypercolumn_term(hypercolumn=[]), "non-empty list of layer names"),
        (hypercolumn_term(hypercolumn=["rgb", "rgb"]), "names 'rgb' twice"),
        (hypercolumn_term(hypercolumn=["rgb", "fc7"]), "unknown layer 'fc7' for vgg19"),
        (hypercolumn_term("gram"), "statistic 'gram' needs 'layer' or 'layers'"),
        (
            {"layers": ["block1_conv1"], "source": "style", "statistic": "emd"},
            "statistic 'emd' needs 'hypercolumn'",
        ),
        (hypercolumn_term(samples=0), "samples must be an integer >= 1"),
        (hypercolumn_term(stride=1.5), "stride must be an integer >= 1"),
        (hypercolumn_term(jitter="yes"), "jitter must be true or false, got 'yes'"),
        (hypercolumn_term(rotations=1), "rotations must be true or false, got 1"),
        (hypercolumn_term(split="no"), "split must be true or false, got 'no'"),
        (
            {"layer": "block1_conv1", "source": "style", "statistic": "gram", "split": True},
            "'split' belongs to a 'hypercolumn' term",
        ),
        (
            hypercolumn_term("self_similarity", "content", rotations=True),
            "rotations belongs to a style term",
        ),
        (hypercolumn_term(layer_scales=[1.0]), "a list of 3 numbers"),
        (hypercolumn_term(layer_scales=[1.0, -1.0, 1.0]), "layer_scales"),
        (
            {"layer": "block1_conv1", "source": "style", "statistic": "gram", "samples": 5},
            "'samples' belongs to a 'hypercolumn' term",
        ),
    ],
)
def test_bad_hypercolumn_terms_are_one_line(tmp_path, term, fragment):
    with pytest.raises(JaxcombineError, match=fragment) as e:
        load(tmp_path, term)
    assert "\n" not in str(e.value)


def test_a_recipe_of_colours_alone_is_one_line(tmp_path):
    with pytest.raises(JaxcombineError, match="no term reads a layer of the network"):
        load(tmp_path, hypercolumn_term("palette", hypercolumn=["rgb"]))


def test_hypercolumns_need_a_network_of_halvings(tmp_path):
    term = {**hypercolumn_term(), "hypercolumn": ["conv1", "conv2"]}
    with pytest.raises(JaxcombineError, match="hypercolumn terms needs a network of 3x3"):
        load(tmp_path, term, arch="alexnet")


def test_a_style_term_may_take_the_inverse_of_the_content_weight(tmp_path):
    """STROTSS's palette weight is 1/α: the flag is read, written back, and left out of
    the structure (it changes a weight, not the program); one line where it is wrong."""
    rec = load(
        tmp_path,
        hypercolumn_term("self_similarity", "content"),
        hypercolumn_term("palette", hypercolumn=["rgb"], inverse_content_weight=True),
    )
    assert [t.inverse_content_weight for t in rec.terms] == [False, True]
    assert [t.content_factor(4.0) for t in rec.terms] == [4.0, 0.25]
    again = recipe_lib.from_dict(tomllib.loads(rec.to_toml()), rec.name)
    assert again.terms == rec.terms
    plain = load(
        tmp_path,
        hypercolumn_term("self_similarity", "content"),
        hypercolumn_term("palette", hypercolumn=["rgb"]),
    )
    assert rec.structure() == plain.structure()  # one compiled program for both
    for term, fragment in [
        (hypercolumn_term("self_similarity", "content", inverse_content_weight=True), "style term"),
        (hypercolumn_term(inverse_content_weight="yes"), "must be true or false, got 'yes'"),
    ]:
        with pytest.raises(JaxcombineError, match=fragment) as e:
            load(tmp_path, term)
        assert "\n" not in str(e.value)


def test_a_term_may_count_in_the_scales_or_the_final_pass_only(tmp_path):
    """NNST's final pass: ``during`` is read, written back only where it is not "all", and
    left out of the structure (it zeroes a weight per stage, a traced number); one line
    where it is wrong."""
    rec = load(
        tmp_path,
        hypercolumn_term("nearest", stride=2),
        hypercolumn_term("nearest_each_step", hypercolumn=["block1_conv1"], during="final"),
        hypercolumn_term("emd", during="scales"),
    )
    assert [t.during for t in rec.terms] == ["all", "final", "scales"]
    assert [(t.counts(False), t.counts(True)) for t in rec.terms] == [
        (True, True),
        (False, True),
        (True, False),
    ]
    assert "during" not in rec.to_dict()["terms"][0]
    again = recipe_lib.from_dict(tomllib.loads(rec.to_toml()), rec.name)
    assert again.terms == rec.terms
    assert {t.during for t in rec.structure().terms} == {"all"}
    for bad in ("last", 1, True):
        with pytest.raises(JaxcombineError, match="during must be one of all, scales, final") as e:
            load(tmp_path, hypercolumn_term(during=bad))
        assert "\n" not in str(e.value)
