"""The photo/painting pairs of docs/evaluation.md as square crops of one size, and a
pairs file for ``jaxcombine eval-suite`` that names them.

    python scripts/square_pairs.py OUT_DIR [--size 256] [--set tuned] [--shared ../shared/images]

``--set`` picks the pairs (``OUT_DIR/pairs.toml``): ``tuned``, the six the ``strotss``
preset's weights and rate were chosen on; ``held-out``, the other nine pairings of the
same five photos and three paintings, run after those choices in three sets of three;
``new-photos``, three photos of scikit-image's, each with one painting, paired by a rule
fixed before any was run (photos and paintings each in alphabetical order); ``all``.

Why square: ``eval-suite`` runs the jobs of one output shape and one recipe as a single
vmapped program (docs/batch.md). The six pairs have six aspect ratios, so each recipe
compiles six times over (four scales each for the coarse-to-fine presets); on a GPU lent
for a few minutes the compiles, not the steps, would fill the time. Centre crops of one
size make every recipe one program. The crops keep each picture's middle (the bridge,
the old town, the astronaut, Grace Hopper's face; the Scream's figure and sky, the Starry
Night's swirls and village, the Shipwreck's wave and hull) and Hoover tower, near its
photo's right edge.

Sources: ``../shared/images/`` (golden_gate, tubingen, hoovertowernight; the_scream,
starry_night, shipwreck), the package's astronaut (NASA, public domain),
matplotlib's sample grace_hopper.jpg (US Navy, public domain) and, for ``new-photos``,
scikit-image's bundled chelsea, coffee and rocket (``--skimage``: its ``data`` folder;
scikit-image is no dependency, and ``pip download scikit-image==0.26.0 --no-deps``
unzipped gives the folder). Lanczos resampling; PNG, so no second compression.
"""

from __future__ import annotations

import argparse
import importlib.util
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
HELD_OUT = (  # three sets of three, in the order they were run
    ("hoovertowernight", "starry_night"),
    ("grace_hopper", "shipwreck"),
    ("tubingen", "the_scream"),
    ("golden_gate", "starry_night"),
    ("astronaut", "shipwreck"),
    ("hoovertowernight", "the_scream"),
    ("golden_gate", "shipwreck"),
    ("astronaut", "the_scream"),
    ("grace_hopper", "starry_night"),
)
NEW_PHOTOS = (("chelsea", "shipwreck"), ("coffee", "starry_night"), ("rocket", "the_scream"))
SETS = {
    "tuned": PAIRS,
    "held-out": HELD_OUT,
    "new-photos": NEW_PHOTOS,
    "all": PAIRS + HELD_OUT + NEW_PHOTOS,
}
SKIMAGE_FILES = {"chelsea": "chelsea.png", "coffee": "coffee.png", "rocket": "rocket.jpg"}


def source(name: str, shared: Path, skimage: Path | None = None) -> Path:
    if name == "astronaut":
        return Path(images.CONTENT)
    if name == "grace_hopper":
        return Path(cbook.get_sample_data("grace_hopper.jpg", asfileobj=False))
    if name in SKIMAGE_FILES:
        return (skimage or Path("<no --skimage>")) / SKIMAGE_FILES[name]
    return shared / f"{name}.jpg"


def skimage_data() -> Path | None:
    """The installed scikit-image's ``data`` folder, if it is installed."""
    spec = importlib.util.find_spec("skimage")
    return Path(spec.origin).parent / "data" if spec and spec.origin else None


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
    parser.add_argument("--set", choices=SETS, default="tuned", dest="pair_set")
    parser.add_argument("--skimage", type=Path, default=skimage_data())
    args = parser.parse_args()
    if args.size < 1:
        parser.error(f"--size must be a positive number of pixels, got {args.size}")
    pairs = SETS[args.pair_set]
    missing = [str(source(n, args.shared, args.skimage)) for pair in pairs for n in pair]
    missing = sorted({path for path in missing if not Path(path).is_file()})
    if missing:
        parser.error(
            f"image not found: {', '.join(missing)} (set --shared or --skimage to their folder)"
        )
    args.out.mkdir(parents=True, exist_ok=True)
    lines = []
    for content, style in pairs:
        for name in (content, style):
            target = args.out / f"{name}.png"
            if not target.exists():
                square(
                    source(name, args.shared, args.skimage), args.size, ACROSS.get(name, 0.5)
                ).save(target)
        lines += [
            "[[pairs]]",
            f'name = "{content}-{style}"',
            f'content = "{content}.png"',
            f'style = "{style}.png"',
            "",
        ]
    (args.out / "pairs.toml").write_text("\n".join(lines), encoding="utf-8")
    print(f"wrote {len(pairs)} pairs of {args.size}x{args.size} crops to {args.out}/pairs.toml")


if __name__ == "__main__":
    main()
