"""Cost per step of the style statistics on the same layers: gram against w2, swd, ...

Each recipe is Gatys' (content: block4_conv2 activations; style: block1..5_conv1, or
``--layers``) with the style statistic replaced, so only the statistic differs. Every case is compiled ahead of
time, warmed up by one chunk, then timed in turn (A B C A B C ...) and the median chunk
counts (jaxcombine.tools.bench.interleaved), so a shared machine's drift slows all alike.

    python scripts/stat_cost.py --size 256 --steps 3 --repeats 5 --out bench-stats

``--recipes`` times whole recipes instead (presets or .toml files, the first the
reference), each at one scale of ``--size`` with its own optimiser and parameterization,
on ``--model`` where given (else each recipe's own):

    python scripts/stat_cost.py --recipes gatys,strotss,nnst --model vgg16-tv --size 512
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np

from jaxcombine.engine import program
from jaxcombine.io import records
from jaxcombine.options import config as config_lib
from jaxcombine.run import prepare as prepare_lib
from jaxcombine.tools import bench

RECIPE = """\
init = "content"
[[terms]]
layer = "block4_conv2"
source = "content"
statistic = "activations"
[[terms]]
layers = {layers}
source = "style"
statistic = "{statistic}"
"""


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--steps", type=int, default=3, help="steps per timed chunk")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--starts", type=int, default=1, help="vmapped copies of the start")
    parser.add_argument("--statistics", default="gram,w2,swd,covariance")
    parser.add_argument(
        "--layers",
        default="block1_conv1,block2_conv1,block3_conv1,block4_conv1,block5_conv1",
        help="style layers (comma-separated)",
    )
    parser.add_argument("--recipes", help="whole recipes instead of statistics (comma-separated)")
    parser.add_argument("--model", help="backbone for every recipe (default: each recipe's own)")
    parser.add_argument("--out", type=Path, default=Path("bench-stats"))
    args = parser.parse_args(argv)
    names = [s.strip() for s in (args.recipes or args.statistics).split(",") if s.strip()]
    reference = names[0] if args.recipes else "gram"
    with tempfile.TemporaryDirectory() as tmp:
        preps = []
        for name in names:
            if args.recipes:  # one scale: the cost of a step at --size, not of a ladder
                recipe, ladder = name, {"scale_count": 1}
            else:
                path = Path(tmp) / f"{name}.toml"
                layers = [s.strip() for s in args.layers.split(",") if s.strip()]
                path.write_text(RECIPE.format(statistic=name, layers=json.dumps(layers)))
                recipe, ladder = str(path), {}
            model = {"model": args.model} if args.model else {}
            run = config_lib.RunConfig(recipe=recipe, size=args.size, **ladder, **model)
            preps.append(prepare_lib.prepare(run))
        loop = program.default_loop(conv=preps[0].problem.conv)
        compiled = [bench.ours(p, args.starts, loop, args.steps) for p in preps]
        times = bench.interleaved([chunk for _, chunk in compiled], args.repeats)
    ms = [1e3 * float(np.median(t)) / args.steps for t in times]
    h, w = preps[0].content.shape[:2]
    rows = [
        {
            "name": n,
            "ms_per_step": m,
            "vs_reference": m / ms[names.index(reference)] if reference in names else None,
            "compile_s": c,
            "chunk_s": t,
        }
        for n, m, (c, _), t in zip(names, ms, compiled, times)
    ]
    env = {**records.environment(), **bench.machine()}
    lines = [
        f"{w}x{h}, {args.starts} start(s), "
        + (
            f"model {args.model or 'each recipe’s own'}, one scale"
            if args.recipes
            else f"style layers {args.layers}"
        )
        + f", loop {loop}, conv {preps[0].problem.conv}, median of {args.repeats} "
        f"chunks of {args.steps} steps, interleaved; {env['cpu_model']}, "
        f"{env['cpu_count']} cores, jax {env['jax']}",
        "",
        f"| {'recipe' if args.recipes else 'statistic'} | ms/step | vs {reference} | compile s |",
        "|---|---|---|---|",
    ]
    for r in rows:
        ratio = f"{r['vs_reference']:.2f}x" if r["vs_reference"] else "-"
        lines.append(f"| {r['name']} | {r['ms_per_step']:.0f} | {ratio} | {r['compile_s']:.1f} |")
    text = "\n".join(lines) + "\n"
    records.write_json(
        args.out / "stat_cost.json",
        {"environment": env, "args": vars(args), "command": " ".join(sys.argv), "rows": rows},
    )
    records.atomic_write_text(args.out / "stat_cost.md", text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
