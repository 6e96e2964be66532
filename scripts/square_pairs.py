"""The six photo/painting pairs of docs/evaluation.md as square crops of one size, and a
pairs file for ``jaxcombine eval-suite`` that names them.

    python scripts/square_pairs.py OUT_DIR [--size 256] [--shared ../shared/images]

Why square: ``eval-suite`` runs the jobs of one output shape and one recipe as a single
vmapped program (docs/batch.md). The six pairs have six aspect ratios, so each recipe
compiles six times over (four scales each for the coarse-to-fine presets); on a GPU lent
for a few minutes the compiles, not the steps, would fill the time. Centre crops of one
size make every recipe one program. The crops keep each picture's middle (the bridge,
the old town, the astronaut, Grace Hopper's face; the Scream's figure and sky, the Starry
Night's swirls and village, the Shipwreck's wave and hull) and Hoover tower, near its
photo's right edge.

Sources: ``../shared/images/`` (golden_gate, tubingen, hoovertowernight; the_scream,
starry_night, shipwreck), the package's astronaut (NASA, public domain) and
matplotlib's sample grace_hopper.jpg (US Navy, public domain). Lanczos resampling; PNG,
so no second compression.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from matplotlib import cbook
from PIL import Image

from jaxcombine.io import images

# Where the square sits across a landscape picture (0 left, 0.5 centre, 1 right): Hoover
# tower stands near the photo's right edge.
ACROSS = {"hoovertowernight": 0.75}

PAIRS = (  # (content, style), as named in docs/evaluation.md
    ("golden_gate", "the_scream"),
    ("tubingen", "starry_night"),
    ("hoovertowernight", "shipwreck"),
    ("astronaut", "starry_night"),
    ("grace_hopper", "the_scream"),
    ("tubingen", "shipwreck"),
)


def source(name: str, shared: Path) -> Path:
    if name == "astronaut":
        return Path(images.CONTENT)
    if name == "grace_hopper":
        return Path(cbook.get_sample_data("grace_hopper.jpg", asfileobj=False))
    return shared / f"{name}.jpg"


def square(path: Path, size: int, across: float = 0.5) -> Image.Image:
    image = Image.open(path).convert("RGB")
    w, h = image.size
    side = min(w, h)
    left, top = round((w - side) * across), (h - side) // 2
    box = (left, top, left + side, top + side)
    return image.resize((size, size), Image.Resampling.LANCZOS, box=box)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument(
        "--shared", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "images"
    )
    args = parser.parse_args()
    if args.size < 1:
        parser.error(f"--size must be a positive number of pixels, got {args.size}")
    missing = [str(source(n, args.shared)) for pair in PAIRS for n in pair]
    missing = sorted({path for path in missing if not Path(path).is_file()})
    if missing:
        parser.error(f"image not found: {', '.join(missing)} (set --shared to their folder)")
    args.out.mkdir(parents=True, exist_ok=True)
    lines = []
    for content, style in PAIRS:
        for name in (content, style):
            target = args.out / f"{name}.png"
            if not target.exists():
                square(source(name, args.shared), args.size, ACROSS.get(name, 0.5)).save(target)
        lines += [
            "[[pairs]]",
            f'name = "{content}-{style}"',
            f'content = "{content}.png"',
            f'style = "{style}.png"',
            "",
        ]
    (args.out / "pairs.toml").write_text("\n".join(lines), encoding="utf-8")
    print(f"wrote {len(PAIRS)} pairs of {args.size}x{args.size} crops to {args.out}/pairs.toml")


if __name__ == "__main__":
    main()
