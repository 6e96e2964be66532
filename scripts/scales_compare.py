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
"""

import argparse
import csv
import json
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

import jaxcombine
from jaxcombine import images, metrics

parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
parser.add_argument("content")
parser.add_argument("style")
parser.add_argument("--size", type=int, default=512)
parser.add_argument("--min-size", type=int, default=128)
parser.add_argument("--steps", type=int, default=200)
parser.add_argument("--recipe", default="gatys")
parser.add_argument("--variants", default="single,reset-last,carry-last,reset-average")
parser.add_argument("--out", default="/tmp/scales")
args = parser.parse_args()
out = Path(args.out)
out.mkdir(parents=True, exist_ok=True)

base = jaxcombine.RunConfig(content=args.content, style=(args.style,), size=args.size,
                            recipe=args.recipe, init="content")
rows = []
for variant in args.variants.split(","):
    if variant == "single":
        config = base.replace(steps=args.steps)
    else:
        carry, start = variant.split("-")
        config = base.replace(steps=args.steps // 2, min_size=args.min_size,
                              scale_optimizer=carry, scale_from=start)
    t0 = time.perf_counter()
    result = jaxcombine.combine(config)
    wall = time.perf_counter() - t0
    image = result.images["content"]
    path = out / f"{variant}.png"
    images.write(path, image)
    row = {"variant": variant, "sizes": "/".join(map(str, config.sizes())),
           "steps": "/".join(map(str, config.steps_per_scale())), "wall_s": round(wall, 1),
           "run_s": round(result.outcome.run_s, 1), "compile_s": round(result.outcome.compile_s, 1),
           "final_loss": round(result.final_losses()["content"], 4)}
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
panels += [(f"{r['variant']} ({r['wall_s']:.0f} s)", images.read(out / f"{r['variant']}.png"))
           for r in rows]
pad, label = 6, 22
sheet = Image.new("RGB", (len(panels) * (w + pad) + pad, h + label + 2 * pad), "white")
draw = ImageDraw.Draw(sheet)
for i, (name, img) in enumerate(panels):
    x = pad + i * (w + pad)
    sheet.paste(Image.fromarray(images.to_uint8(img)), (x, label + pad))
    draw.text((x, 4), name, fill="black")
sheet.save(out / "panel.png")
print(f"wrote {out / 'panel.png'} and {out / 'scores.csv'}")
