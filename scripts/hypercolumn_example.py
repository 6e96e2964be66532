"""docs/hypercolumns.png: gatys, nnst and strotss on the bundled pair, labelled with their time.

    python scripts/hypercolumn_example.py RUN_FOLDER... [--out docs/hypercolumns.png]

Each RUN_FOLDER is a ``jaxcombine run`` output on the bundled pair; its panel is labelled
with the recipe, the steps and the seconds spent stepping (``run.json``'s ``run_s``:
compiles excluded, since the compile cache keeps them on a rerun), so that runs given the
same time budget can be seen to have had it. The photo and the painting come first.
"""

import argparse
import json
from pathlib import Path

from panels import save_grid

from jaxcombine.io import images


def label(folder: Path) -> str:
    """``recipe, N steps, S s`` from the run's record."""
    record = json.loads((folder / "run.json").read_text())
    recipe = Path(str(record["config"]["recipe"])).stem
    return f"{recipe}, {record['steps_done']} steps, {record['run_s']:.0f} s"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="+", type=Path)
    ap.add_argument("--cols", type=int, default=3)
    ap.add_argument("--out", default="docs/hypercolumns.png")
    a = ap.parse_args()
    named = [("photo", images.CONTENT), ("painting", images.STYLE)]
    named += [(label(f), f / "content.png") for f in a.runs]
    pics = [(name, images.read(path)) for name, path in named]
    h, w = pics[-1][1].shape[:2]
    save_grid([(name, images.fit(rgb, h, w)) for name, rgb in pics], a.cols, a.out)


if __name__ == "__main__":
    main()
