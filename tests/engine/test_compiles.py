"""Only shapes and structure select a compiled program: numbers a user sweeps are traced."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import recipe_files
from PIL import Image

from jaxcombine.batch import runner as batch
from jaxcombine.engine import optimizers
from jaxcombine.io import images
from jaxcombine.options import config as config_lib
from jaxcombine.run import job


@pytest.fixture(scope="module")
def recipes(tmp_path_factory):
    d = tmp_path_factory.mktemp("recipes")
    recipe_files.write(d / "a.toml", recipe_files.shallow_weighted(1.0, 1.0, tv=0.0))
    recipe_files.write(
        d / "b.toml", recipe_files.shallow_weighted(0.5, 4.0, tv=1e-3)
    )  # same structure
    grey = d / "grey.png"
    Image.new("RGB", (40, 40), (120, 130, 140)).save(grey)
    return d


def test_changing_only_traced_numbers_compiles_nothing(vgg19, recipes, compiled):
    """Every compile counted (the small programs too): a second run that differs only in
    traced numbers, its step count among them, compiles nothing. 4 then 8 steps in chunks
    of 3 end with a chunk of 1, then of 2: slicing the history by a length on the
    device compiled a program per length."""
    styles = (str(images.STYLE), str(recipes / "grey.png"))
    base = dict(size=28, chunk=3, init="content,noise", style=styles, schedule="cosine")
    first = job.combine(
        recipe=str(recipes / "a.toml"), steps=4, lr=4.0, style_weights=(1.0, 1.0), **base
    )
    before = len(compiled)  # the first run's compiles
    assert before > 0  # the listener hears compiles
    second = job.combine(
        recipe=str(recipes / "b.toml"),
        steps=8,
        lr=2.0,
        tv_weight=0.01,
        style_weights=(0.2, 0.8),
        **base,
    )
    assert compiled[before:] == []
    # ... and the new numbers really were used
    assert second.outcome.history.shape[0] == 8 and first.outcome.history.shape[0] == 4
    np.testing.assert_allclose(second.outcome.weights[0], [0.5, 4.0, 4.0, 0.01])
    assert not np.allclose(first.outcome.history[0, 0], second.outcome.history[0, 0])
    lr = jax.tree.leaves(
        second.outcome.opt_state, is_leaf=lambda n: isinstance(n, optimizers.LearningRate)
    )
    lr = next(n for n in lr if isinstance(n, optimizers.LearningRate))
    assert lr.value.tolist() == [2.0, 2.0] and lr.total_steps.tolist() == [8, 8]
    assert lr.count.tolist() == [8, 8]


def test_cosine_schedule_follows_each_starts_step_count():
    """lr(t) = lr·(0.1 + 0.9·½(1+cos(πt/T))), with lr and T per start, in one program."""
    opt = optimizers.build("sgd", "cosine")
    params = jnp.zeros((2, 1))
    state = optimizers.set_learning_rate(jax.vmap(opt.init)(params), [1.0, 3.0], [4, 8])
    update = jax.jit(jax.vmap(opt.update))
    grads = jnp.ones((2, 1))
    steps = []
    for _ in range(9):
        # momentum 0.9 accumulates the gradient; divide it out to read the rate
        before = state[0].trace
        updates, state = update(grads, state, params)
        trace = 0.9 * before + grads
        steps.append(np.asarray(-updates / trace)[:, 0])
    rates = np.stack(steps)
    expected = lambda lr, total, t: (
        lr * (0.1 + 0.9 * 0.5 * (1 + np.cos(np.pi * min(t, total) / total)))
    )  # noqa: E731
    np.testing.assert_allclose(rates[:, 0], [expected(1.0, 4, t) for t in range(9)], rtol=1e-5)
    np.testing.assert_allclose(rates[:, 1], [expected(3.0, 8, t) for t in range(9)], rtol=1e-5)
    assert rates[4, 0] == pytest.approx(0.1) and rates[8, 1] == pytest.approx(0.3)


GRID = """\
[defaults]
size = 24
chunk = 2
init = "content"
recipe = "{recipe}"

[grid]
lr = {lr}
steps = {steps}
tv_weight = {tv}
"""


@pytest.mark.slow
def test_a_grid_of_traced_numbers_is_one_program(vgg19, recipes, tmp_path, compiled):
    """lr × steps × tv_weight at one size: one batched group of 8 jobs; the same grid with
    other numbers compiles nothing (every compile counted); each job stops at its own step
    count and equals the same job run alone."""
    other = tmp_path / "other.toml"
    other.write_text(
        GRID.format(recipe=recipes / "a.toml", lr=[1.0, 3.0], steps=[3, 4], tv=[0.02, 0.03])
    )
    first = batch.run_batch(other, tmp_path / "other", progress=False)
    assert len(first.done) == 8 and len(compiled) > 0  # the listener hears the first grid
    before = len(compiled)
    (tmp_path / "m.toml").write_text(
        GRID.format(recipe=recipes / "a.toml", lr=[2.0, 5.0], steps=[2, 3], tv=[0.0, 0.01])
    )
    report = batch.run_batch(tmp_path / "m.toml", tmp_path / "out", progress=False)
    assert len(report.done) == 8 and not report.failed
    assert compiled[before:] == []
    records = [
        json.loads(p.read_text())
        for p in (tmp_path / "out").glob("*.json")
        if not p.name.startswith("batch-report")
    ]
    assert {r["group_size"] for r in records} == {8}
    for r in records:
        rows = (tmp_path / "out" / r["history"]).read_text().splitlines()
        assert len(rows) - 1 == r["config"]["steps"] == r["steps_done"]
    short = next(
        r
        for r in records
        if r["config"]["steps"] == 2
        and r["config"]["lr"] == 5.0
        and r["config"]["tv_weight"] == 0.01
    )
    alone = job.combine(
        config_lib.RunConfig(
            **{k: tuple(v) if isinstance(v, list) else v for k, v in short["config"].items()}
        )
    )
    assert alone.final_losses()["content"] == pytest.approx(short["final_loss"], rel=1e-4)
    np.testing.assert_allclose(
        alone.images["content"], np.asarray(Image.open(tmp_path / "out" / short["image"])), atol=1
    )
