"""Peak RSS of whole ``jaxcombine run`` processes, one process per case, appended to a CSV.

The data behind :mod:`jaxcombine.run.memory`'s fitted table (docs/benchmarks.md). Each
case is ``SIZE:CONV:STARTS:RECIPE[:remat][:bfloat16]`` (``jaxcombine run``) or
``features:SIZE:RECIPE`` (``jaxcombine features`` of the recipe's layers, or of
layers joined by ``+``: a forward only); the bundled content is square, so ``--size S`` gives S×S pixels. Run big cases alone: the peak of a
process says nothing about what else the machine was doing, but an OOM kill does.

    python scripts/memory_measure.py --csv docs/memory-measurements.csv \
        128:xla:1:gatys 128:winograd:4:scripts/shallow-block2.toml 512:xla:1:gatys:remat
    python scripts/memory_measure.py --again   # every case in the CSV, once more

Peaks move by up to 12 % between measurements days and commits apart
(docs/benchmarks.md), so the table is fitted to each case's largest: measure every case
again on a new machine or JAX version, or after the run's code changed, then refit
(scripts/memory_fit.py).
"""

from __future__ import annotations

import argparse
import csv
import datetime
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SCRIPTS = Path(__file__).resolve().parent

FIELDS = (
    "machine",
    "date",
    "mode",
    "command",
    "size",
    "height",
    "width",
    "conv",
    "dtype",
    "remat",
    "recipe",
    "deepest",
    "starts",
    "steps",
    "peak_rss_bytes",
    "wall_s",
    "exit_code",
)


def machine() -> str:
    """CPU model, cores and RAM, for the CSV's ``machine`` column."""
    model = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )
    mem_kib = next(
        int(line.split()[1])
        for line in Path("/proc/meminfo").read_text().splitlines()
        if line.startswith("MemTotal")
    )
    return (
        f"{model}, {os.cpu_count()} cores, {mem_kib / 2**20:.0f} GiB RAM, {platform.system()} CPU"
    )


def deepest(recipe: str) -> str:
    from jaxcombine.options import layers as layers_lib
    from jaxcombine.options import recipe as recipe_lib

    layers = recipe.split("+") if recipe.startswith("block") else recipe_lib.load(recipe).layers
    return layers_lib.check_layers(layers)[-1]


def command(case: str, steps: int, out: str) -> tuple[list[str], dict]:
    """The command line of ``case`` and the CSV fields it fixes."""
    if case.startswith("features:"):
        from jaxcombine.io import images
        from jaxcombine.options import recipe as recipe_lib

        _, size, recipe = case.split(":")
        os.makedirs(out, exist_ok=True)
        layers = recipe.split("+") if recipe.startswith("block") else recipe_lib.load(recipe).layers
        cmd = [
            "jaxcombine",
            "features",
            str(images.CONTENT),
            "--size",
            size,
            "--layers",
            ",".join(layers),
            "--out",
            os.path.join(out, "features.npz"),
        ]
        return cmd, dict(
            mode="features",
            size=size,
            conv="xla",
            dtype="float32",
            remat=0,
            recipe=recipe,
            starts=0,
            steps=0,
        )
    size, conv, starts, recipe, *flags = case.split(":")
    remat, dtype = "remat" in flags, "bfloat16" if "bfloat16" in flags else "float32"
    inits = "content" if int(starts) == 1 else f"content,noise:{int(starts) - 1}"
    cmd = [
        "jaxcombine",
        "run",
        "--steps",
        str(steps),
        "--chunk",
        str(steps),
        "--quiet",
        "--size",
        size,
        "--conv",
        conv,
        "--init",
        inits,
        "--recipe",
        recipe,
        "--dtype",
        dtype,
        "--out",
        out,
    ] + (["--remat"] if remat else [])
    return cmd, dict(
        mode="run",
        size=size,
        conv=conv,
        dtype=dtype,
        remat=int(remat),
        recipe=recipe,
        starts=starts,
        steps=steps,
    )


def case_of(row: dict) -> str:
    """The case a CSV row measured, as this script's argument: to measure it again."""
    recipe = row["recipe"]
    local = SCRIPTS / f"{recipe}.toml"
    if local.exists():
        recipe = str(local.relative_to(Path.cwd()) if local.is_relative_to(Path.cwd()) else local)
    if row["mode"] == "features":
        return f"features:{row['size']}:{recipe}"
    flags = [":remat"] if row["remat"] == "1" else []
    flags += [f":{row['dtype']}"] if row["dtype"] != "float32" else []
    return f"{row['size']}:{row['conv']}:{row['starts']}:{recipe}" + "".join(flags)


def every_case(path: Path) -> list[str]:
    """Every case the CSV holds, once each, in the order first measured."""
    with path.open(newline="") as f:
        return list(dict.fromkeys(case_of(r) for r in csv.DictReader(f)))


def measure(case: str, steps: int, out: str) -> dict:
    cmd, fields = command(case, steps, out)
    env = dict(os.environ, JAXCOMBINE_COMPILE_CACHE="off", JAX_PLATFORMS="cpu")
    with tempfile.NamedTemporaryFile("r") as tf:
        t0 = time.perf_counter()
        rc = subprocess.run(["/usr/bin/time", "-f", "%M", "-o", tf.name, *cmd], env=env).returncode
        wall = time.perf_counter() - t0
        peak_kib = int(tf.read().split()[-1])
    recipe = fields.pop("recipe")
    return dict(
        fields,
        machine=machine(),
        date=datetime.date.today().isoformat(),
        command=" ".join(cmd),
        height=fields["size"],
        width=fields["size"],
        recipe=Path(recipe).stem,
        deepest=deepest(recipe),
        peak_rss_bytes=peak_kib * 1024,
        wall_s=round(wall, 1),
        exit_code=rc,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("cases", nargs="*")
    parser.add_argument("--csv", default="docs/memory-measurements.csv")
    parser.add_argument(
        "--again",
        action="store_true",
        help="measure every case the CSV already holds once more (another day or machine)",
    )
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--out", default=os.path.join(tempfile.gettempdir(), "jaxcombine-memory"))
    args = parser.parse_args()
    path = Path(args.csv)
    cases = [*(every_case(path) if args.again else []), *args.cases]
    if not cases:
        parser.error("name cases to measure, or --again for every case in the CSV")
    new = not path.exists()
    for case in cases:
        row = measure(case, args.steps, args.out)
        with path.open("a", newline="") as f:
            writer = csv.DictWriter(f, FIELDS)
            if new:
                writer.writeheader()
                new = False
            writer.writerow(row)
        print(
            f"{case}: {row['peak_rss_bytes'] / 2**20:.0f} MiB, {row['wall_s']} s, "
            f"exit {row['exit_code']}",
            flush=True,
        )


if __name__ == "__main__":
    sys.exit(main())
