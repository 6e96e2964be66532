"""docs/color.png: one photo and one painting under every --preserve-color mode.

    python scripts/color_example.py ../shared/images/tubingen.jpg ../shared/images/the_scream.jpg

Panels: content, style (cropped as the run sees it), then the result of each mode
(gatys recipe, content start, same steps and size), labelled, saved as a palette PNG.
"""

import argparse
import time

from panels import save_grid

import jaxcombine
from jaxcombine.io import images
from jaxcombine.options import config

parser = argparse.ArgumentParser(
    description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
)
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
    result = jaxcombine.combine(
        content=args.content,
        style=(args.style,),
        size=args.size,
        steps=args.steps,
        init="content",
        preserve_color=mode,
    )
    print(
        f"{mode}: loss {result.final_losses()['content']:.4g}, {time.perf_counter() - t0:.0f} s",
        flush=True,
    )
    panels.append(("plain" if mode == "none" else mode, result.images["content"]))

save_grid(panels, 3 if len(panels) > 4 else len(panels), args.out)
