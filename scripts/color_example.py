"""docs/color.png: one photo and one painting under every --preserve-color mode.

    python scripts/color_example.py ../shared/images/tubingen.jpg ../shared/images/the_scream.jpg

Panels: content, style (cropped as the run sees it), then the result of each mode
(gatys recipe, content start, same steps and size), labelled, saved as a palette PNG.
"""

import argparse
import time

import numpy as np
from PIL import Image, ImageDraw, ImageFont

import jaxcombine
from jaxcombine import config, images

parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
parser.add_argument("content")
parser.add_argument("style")
parser.add_argument("--size", type=int, default=256)
parser.add_argument("--steps", type=int, default=200)
parser.add_argument("--modes", default=",".join(config.PRESERVE_COLORS))
parser.add_argument("--out", default="docs/color.png")
args = parser.parse_args()

content = images.read(args.content, size=args.size)
h, w = content.shape[:2]
panels = [("content", content), ("style", images.fit(images.read(args.style), h, w))]
for mode in args.modes.split(","):
    t0 = time.perf_counter()
    result = jaxcombine.combine(content=args.content, style=(args.style,), size=args.size,
                                steps=args.steps, init="content", preserve_color=mode)
    print(f"{mode}: loss {result.final_losses()['content']:.4g}, {time.perf_counter() - t0:.0f} s",
          flush=True)
    panels.append(("plain" if mode == "none" else mode, result.images["content"]))

cols = 3 if len(panels) > 4 else len(panels)
rows = -(-len(panels) // cols)
pad, label = 4, 18
sheet = Image.new("RGB", (cols * (w + pad) + pad, rows * (h + pad + label) + pad), "white")
draw = ImageDraw.Draw(sheet)
font = ImageFont.load_default(size=14)
for i, (name, img) in enumerate(panels):
    x, y = pad + (i % cols) * (w + pad), pad + (i // cols) * (h + pad + label)
    sheet.paste(Image.fromarray(images.to_uint8(img)), (x, y))
    draw.text((x + 2, y + h + 1), name, fill="black", font=font)
sheet.quantize(256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.FLOYDSTEINBERG).save(
    args.out, optimize=True)
print(f"wrote {args.out}: {sheet.size[0]}x{sheet.size[1]}")
