"""Tiled against whole-image loss and gradient: time per evaluation, and memory.

``time``: in one process, the whole-image ``value_and_grad`` and the tiled one for
each ``--tiles`` size, at ``--size``², compiled ahead of time (seconds kept apart),
then timed in turn (A B C A B C ...), ``--repeats`` times, each waiting for its
result; prints medians, the ratio to the whole-image time and the largest gradient
difference. ``peak``: one evaluation (``--tiles`` one value, 0 = whole image) in this
process; prints XLA's ``memory_analysis()`` temporaries of the compiled program and
the process's peak RSS (``getrusage``), targets computed the same way
(``--compile-only``: the temporaries of a program too large to run here).

    JAXCOMBINE_WEIGHTS_DIR=weights python scripts/tiles_bench.py time --size 512 --tiles 128,256
    JAXCOMBINE_WEIGHTS_DIR=weights python scripts/tiles_bench.py peak --size 2048 --tiles 256
"""

import argparse
import resource
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np

from jaxcombine.engine import program, tiles
from jaxcombine.networks import model, weights
from jaxcombine.options import recipe as recipe_lib
from jaxcombine.stats import losses


def setup(size: int, recipe: str, conv: str, tile: int):
    rec = recipe_lib.load(recipe)
    problem = program.Problem(recipe=rec.structure(), conv=conv)
    variables = model.variables(model.trim(weights.load("vgg19").arrays, rec.layers), conv)
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:size, :size]
    smooth = 60 * (2 + np.sin(yy / 9.0)[..., None] + np.cos(xx / 13.0)[..., None])
    content, style, x = (
        (0.5 * rng.uniform(0, 255, (size, size, 3)) + smooth).clip(0, 255).astype(np.float32)
        for _ in range(3)
    )
    if tile:
        targets = jax.jit(tiles.targets, static_argnames=("problem", "tile"))(
            problem, variables, content, style[None], tile=tile
        )
    else:
        targets = jax.jit(program.compute_targets, static_argnames="problem")(
            problem, variables, content, style[None]
        )
    return problem, variables, targets, jnp.asarray(x), losses.weights(rec)


def evaluation(problem, tile):
    if tile:
        return jax.jit(lambda v, t, p, w: tiles.value_and_grad(problem, v, t, p, w, tile=tile))
    return jax.jit(
        lambda v, t, p, w: jax.value_and_grad(
            lambda q: program.loss(problem, v, t, q, w), has_aux=True
        )(p)
    )


def timing(a) -> None:
    problem, variables, targets, x, w = setup(a.size, a.recipe, a.conv, 0)
    cases = {}
    for tile in [0] + [int(t) for t in a.tiles.split(",")]:
        t0 = time.perf_counter()
        fn = evaluation(problem, tile).lower(variables, targets, x, w).compile()
        cases[tile] = (fn, time.perf_counter() - t0, [])
        jax.block_until_ready(fn(variables, targets, x, w))  # warm-up
    for _ in range(a.repeats):
        for tile, (fn, _, times) in cases.items():
            t0 = time.perf_counter()
            jax.block_until_ready(fn(variables, targets, x, w))
            times.append(time.perf_counter() - t0)
    (_, g0), base = cases[0][0](variables, targets, x, w), statistics.median(cases[0][2])
    print(f"{a.size}x{a.size} {a.recipe} conv {a.conv}, median of {a.repeats} interleaved")
    print(
        "| tile | windows | window px | compile s | s per value+grad | × whole image | "
        "max |Δgrad| / max |grad| |"
    )
    print("|---|---|---|---|---|---|---|")
    for tile, (fn, compile_s, times) in cases.items():
        (_, g), med = fn(variables, targets, x, w), statistics.median(times)
        if tile:
            rows, cols = tiles.plan(a.size, a.size, tile, problem.recipe.layers)
            n, win = f"{len(rows.origins)}×{len(cols.origins)}", f"{rows.window}×{cols.window}"
        else:
            n, win = "1", f"{a.size}×{a.size}"
        err = float(jnp.max(jnp.abs(g - g0)) / jnp.max(jnp.abs(g0)))
        print(
            f"| {tile or 'off'} | {n} | {win} | {compile_s:.1f} | {med:.2f} | "
            f"{med / base:.2f} | {err:.1e} |",
            flush=True,
        )


def peak(a) -> None:
    tile = int(a.tiles)
    problem, variables, targets, x, w = setup(a.size, a.recipe, a.conv, tile)
    fn = evaluation(problem, tile).lower(variables, targets, x, w).compile()
    temp = fn.memory_analysis().temp_size_in_bytes
    if a.compile_only:
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        print(
            f"size {a.size} tile {tile or 'off'}: temporaries {temp / 1e9:.2f} GB "
            f"(compiled, not run; peak RSS so far {rss / 1e9:.2f} GB)"
        )
        return
    t0 = time.perf_counter()
    jax.block_until_ready(fn(variables, targets, x, w))
    seconds = time.perf_counter() - t0
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(
        f"size {a.size} tile {tile or 'off'}: temporaries {temp / 1e9:.2f} GB, "
        f"peak RSS {rss / 1e9:.2f} GB, one value+grad {seconds:.1f} s"
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("what", choices=("time", "peak"))
    p.add_argument("--size", type=int, default=512)
    p.add_argument("--tiles", default="128,256")
    p.add_argument("--recipe", default="gatys")
    p.add_argument("--conv", default=model.default_conv())
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--compile-only", action="store_true", help="peak: compile, do not run")
    a = p.parse_args()
    timing(a) if a.what == "time" else peak(a)


if __name__ == "__main__":
    main()
