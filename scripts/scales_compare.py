"""Single-scale against coarse-to-fine at about equal time, scored by jaxcombine eval.

    python scripts/scales_compare.py ../shared/images/tubingen.jpg ../shared/images/starry_night.jpg \
        --size 512 --min-size 128 --steps 200 --variants single,carry-last --out /tmp/scales

A single-scale run takes ``--steps`` steps at ``--size``. Each coarse-to-fine variant
(``<carry|reset>-<last|average>``: --scale-optimizer and --scale-from) runs the √2
ladder from ``--min-size`` with ``--steps // 2`` steps per scale: the scales below the
output size cost about one output-size step together (each has half the pixels of the
next), so the ladder takes about the single run's time; the wall times measured are
printed with the scores. Scores (docs/evaluation.md) are taken at the output size and
again with every image shrunk to half its size, where large-scale structure dominates.

Writes ``<out>/<variant>.png``, ``<out>/scores.csv`` and a side-by-side panel
``<out>/panel.png`` (content, style, then each variant, labelled with its time).
``--figure docs/scales.png`` also writes the README's figure: each variant shrunk to
640 px wide above a 1:1 crop of it (``--crop X,Y``, 320 px square), so the scale of
the strokes shows; ``--figure-only`` makes it from an earlier run's files.
"""

import argparse
import csv
import json
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

import jaxcombine
from jaxcombine.io import images
from jaxcombine.tools import metrics

parser = argparse.ArgumentParser(
    description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
)
parser.add_argument("content")
parser.add_argument("style")
parser.add_argument("--size", type=int, default=512)
parser.add_argument("--min-size", type=int, default=128)
parser.add_argument("--steps", type=int, default=200)
parser.add_argument("--recipe", default="gatys")
parser.add_argument("--variants", default="single,reset-last,carry-last,reset-average")
parser.add_argument("--out", default="/tmp/scales")
parser.add_argument("--figure", default=None)
parser.add_argument("--figure-only", action="store_true")
parser.add_argument("--crop", default="0,0")
args = parser.parse_args()
out = Path(args.out)
out.mkdir(parents=True, exist_ok=True)


def figure(rows: list[dict], path: str) -> None:
    """Each variant 640 px wide, a 320 px 1:1 crop below it; labelled; palette PNG."""
    x0, y0 = map(int, args.crop.split(","))
    width, crop, pad, label = 640, 320, 8, 20
    tiles = []
    for r in rows:
        img = images.read(out / f"{r['variant']}.png")
        h, w = img.shape[:2]
        small = images.resize(img, (width, round(h * width / w)))
        tiles.append((r, small, img[y0 : y0 + crop, x0 : x0 + crop]))
    height = tiles[0][1].shape[0] + crop + 2 * label + 3 * pad
    sheet = Image.new("RGB", (len(tiles) * (width + pad) + pad, height), "white")
    draw = ImageDraw.Draw(sheet)
    for i, (r, small, cut) in enumerate(tiles):
        x = pad + i * (width + pad)
        name = "single scale" if r["variant"] == "single" else "coarse to fine"
        draw.text(
            (x, 4),
            f"{name}: {r['sizes']} px, steps {r['steps']}, {float(r['wall_s']):.0f} s",
            fill="black",
        )
        sheet.paste(Image.fromarray(images.to_uint8(small)), (x, label + pad))
        y = label + 2 * pad + small.shape[0]
        draw.text((x, y), f"1:1 crop at ({x0}, {y0})", fill="black")
        sheet.paste(Image.fromarray(images.to_uint8(cut)), (x, y + label))
    sheet.quantize(256).save(path)
    print(f"wrote {path}")


if args.figure_only:
    with open(out / "scores.csv", newline="") as f:
        figure(list(csv.DictReader(f)), args.figure)
    raise SystemExit

base = jaxcombine.RunConfig(
    content=args.content, style=(args.style,), size=args.size, recipe=args.recipe, init="content"
)
rows = []
for variant in args.variants.split(","):
    if variant == "single":
        config = base.replace(steps=args.steps)
    else:
        carry, start = variant.split("-")
        config = base.replace(
            steps=args.steps // 2, min_size=args.min_size, scale_optimizer=carry, scale_from=start
        )
    t0 = time.perf_counter()
    result = jaxcombine.combine(config)
    wall = time.perf_counter() - t0
    image = result.images["content"]
    path = out / f"{variant}.png"
    images.write(path, image)
    row = {
        "variant": variant,
        "sizes": "/".join(map(str, config.sizes())),
        "steps": "/".join(map(str, config.steps_per_scale())),
        "wall_s": round(wall, 1),
        "run_s": round(result.outcome.run_s, 1),
        "compile_s": round(result.outcome.compile_s, 1),
        "final_loss": round(result.final_losses()["content"], 4),
    }
    for tag, shrink in (("", 1), ("half_", 2)):
        img = path
        if shrink > 1:
            h, w = image.shape[:2]
            img = out / f"{variant}-half.png"
            images.write(img, images.resize(image.astype(np.float32), (w // shrink, h // shrink)))
        ev = metrics.evaluate([img], content=args.content, style=args.style)
        score = ev.rows[0]
        for key in ("style_gram", "style_w2", "style_swd", "content", "ssim"):
            row[tag + key] = round(float(score[key]), 4)
    rows.append(row)
    print(json.dumps(row), flush=True)

with open(out / "scores.csv", "w", newline="") as f:
    wr = csv.DictWriter(f, fieldnames=list(rows[0]))
    wr.writeheader()
    wr.writerows(rows)

content = images.read(args.content, size=args.size)
h, w = content.shape[:2]
panels = [("content", content), ("style", images.fit(images.read(args.style), h, w))]
panels += [
    (f"{r['variant']} ({r['wall_s']:.0f} s)", images.read(out / f"{r['variant']}.png"))
    for r in rows
]
pad, label = 6, 22
sheet = Image.new("RGB", (len(panels) * (w + pad) + pad, h + label + 2 * pad), "white")
draw = ImageDraw.Draw(sheet)
for i, (name, img) in enumerate(panels):
    x = pad + i * (w + pad)
    sheet.paste(Image.fromarray(images.to_uint8(img)), (x, label + pad))
    draw.text((x, 4), name, fill="black")
sheet.save(out / "panel.png")
print(f"wrote {out / 'panel.png'} and {out / 'scores.csv'}")
if args.figure:
    figure(rows, args.figure)
