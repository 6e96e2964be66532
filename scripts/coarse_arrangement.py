"""Whether an output's coarse colours sit where the painting's do: a pixel-level check of
the judge's ``judge_style_arrangement`` that no network takes part in.

    python scripts/coarse_arrangement.py SUITE_DIR [SUITE_DIR ...] [--weight 0.1]

Each output and its style are box-averaged to 16×16 (after resizing to 256×256). The
score is ``(s − d) / s``: ``d`` the mean squared RGB difference between the output and
the style as it is, ``s`` the mean of those to the style shifted cyclically by half its
height, half its width and both. 0: the output is as near the style's shifted layouts as
its own; positive: its coarse colours follow the painting's layout (a sky band where the
painting's sky is, a border where its border is). The content photo gets a score too:
what chance alignment of photo and painting gives, the floor an output starts from.

Why a second measure: the judge's column shifts only by half the width and goes through
AlexNet's features, so a layout that is mainly horizontal (the Scream's sky band) moves
it little. Reads each suite's ``suite.csv`` (``jaxcombine eval-suite``), and each
output's run record for its photo and painting.
"""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

import numpy as np
from PIL import Image

CELLS = 16


def coarse(path: Path) -> np.ndarray:
    """The image at 256×256, box-averaged to CELLS×CELLS RGB (float64, 0–255)."""
    rgb = Image.open(path).convert("RGB").resize((256, 256), Image.LANCZOS)
    return np.asarray(rgb.resize((CELLS, CELLS), Image.BOX), np.float64)


def score(image: Path, style: Path) -> float:
    """(s − d) / s of the module docstring."""
    o, s = coarse(image), coarse(style)
    half = CELLS // 2
    to_style = np.mean((o - s) ** 2)
    shifted = np.mean(
        [
            np.mean((o - np.roll(s, shift, (0, 1))) ** 2)
            for shift in ((half, 0), (0, half), (half, half))
        ]
    )
    return float((shifted - to_style) / shifted)


def inputs_of(image: Path) -> tuple[Path, Path]:
    """(content, style) of an output, from its run record (``<image>.json``)."""
    config = json.loads(image.with_suffix(".json").read_text())["config"]
    return Path(config["content"]), Path(config["style"][0])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("suites", nargs="+", type=Path)
    parser.add_argument("--weight", type=float, default=None, help="only this content weight")
    args = parser.parse_args()
    for suite in args.suites:
        for row in csv.DictReader(open(suite / "suite.csv")):
            weight = float(row["content_weight"])
            if args.weight is not None and abs(weight - args.weight) > 1e-6:
                continue
            image = suite / row["image"]
            content, style = inputs_of(image)
            print(
                f"{row['pair']:28s} {row['recipe']:28s} {weight:<9.4g} "
                f"photo {score(content, style):+.2f}  output {score(image, style):+.2f}"
            )


if __name__ == "__main__":
    main()
