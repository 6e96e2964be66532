"""Training photos: a folder (or the default set), random crops, flips and scales, prefetched.

Photos are read once through the one guarded reader (:func:`jaxcombine.io.images.read`);
one that cannot be read is skipped with one line, an empty set is a one-line error. Each
is kept at most as large as a crop at the largest zoom needs. The batch of step ``t`` is
drawn from ``numpy.random.default_rng((seed, t))`` alone, so a resumed training sees
the batches an uninterrupted one would, and :class:`Prefetch` prepares the next batches
on a host thread while the device runs the current step.

The default set (no folder given) is the photographs that ship with installed packages:
matplotlib's sample ``grace_hopper.jpg`` (always installed) and, when scikit-image is
installed, its bundled ``camera``, ``chelsea``, ``coffee`` and ``rocket``
(docs/training.md lists their licences). The bundled astronaut is always held out, for the
sample grids.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import queue
import threading
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np

from jaxcombine.errors import JaxcombineError
from jaxcombine.io import images

# What the guarded reader opens (Pillow); other files in a folder are not photos.
SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".webp", ".bmp", ".gif")
HELD_OUT = "astronaut"  # the bundled photo (images.CONTENT), always held out
SKIMAGE_PHOTOS = ("camera.png", "chelsea.png", "coffee.png", "rocket.jpg")
MATPLOTLIB_PHOTOS = ("grace_hopper.jpg",)


def default_paths() -> list[Path]:
    """The photos of installed packages (see the module's docstring); those present."""
    import matplotlib

    out = [Path(matplotlib.get_data_path()) / "sample_data" / n for n in MATPLOTLIB_PHOTOS]
    spec = importlib.util.find_spec("skimage")
    if spec is not None and spec.origin:
        folder = Path(spec.origin).parent / "data"
        out += [folder / n for n in SKIMAGE_PHOTOS]
    return [p for p in out if p.is_file()]


def folder_paths(folder: str | Path) -> list[Path]:
    """The files of ``folder`` with an image suffix, sorted by name; one line if it is no folder."""
    folder = Path(folder)
    if not folder.is_dir():
        raise JaxcombineError(f"photo folder not found: {folder}")
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in SUFFIXES and p.is_file())


def listed(folder: str | Path | None) -> list[Path]:
    """The image files a training on ``folder`` reads (None: :func:`default_paths`)."""
    return default_paths() if folder is None else folder_paths(folder)


@dataclasses.dataclass(frozen=True)
class Photos:
    """The training photos (float32 RGB 0–255, any sizes) and the held-out ones, by name."""

    train: tuple[np.ndarray, ...]
    names: tuple[str, ...]
    held_out: tuple[tuple[str, np.ndarray], ...]


def load(
    folder: str | Path | None,
    *,
    crop: int,
    zoom: float,
    holdout: Sequence[str] = (),
    max_pixels: int = images.DEFAULT_MAX_PIXELS,
    warn: Callable[[str], None] = print,
) -> Photos:
    """Read the photos of ``folder`` (None: :func:`default_paths`), skipping unreadable ones
    with one ``warn`` line each; those named in ``holdout`` (and the bundled astronaut)
    are held out. Each is shrunk so its shorter side is at most ``crop × zoom``."""
    paths = listed(folder)
    where = "the default set" if folder is None else str(folder)
    held = set(holdout) | {HELD_OUT}
    train, names, held_out = [], [], []
    for path in paths:
        try:
            rgb = _shrunk(images.read(path, max_pixels=max_pixels), crop * zoom)
        except JaxcombineError as e:
            warn(f"skipping photo {e}")
            continue
        if path.stem in held:
            held_out.append((path.stem, rgb))
        else:
            train.append(rgb)
            names.append(path.name)
    if not train:
        raise JaxcombineError(
            f"no training photos in {where}"
            + (f" (of {len(paths)} image files, none readable)" if paths else "")
            + "; give a folder of photos with --photos"
        )
    if HELD_OUT not in {n for n, _ in held_out}:
        held_out.append((HELD_OUT, _shrunk(images.read(images.CONTENT), crop * zoom)))
    return Photos(tuple(train), tuple(names), tuple(held_out))


def _shrunk(rgb: np.ndarray, short_side: float) -> np.ndarray:
    """``rgb`` resized down so its shorter side is at most ``short_side`` (never up)."""
    h, w = rgb.shape[:2]
    scale = short_side / min(h, w)
    if scale >= 1:
        return rgb
    return images.resize(rgb, (max(1, round(w * scale)), max(1, round(h * scale))))


def batch(
    photos: Sequence[np.ndarray], seed: int, step: int, *, size: int, crop: int, zoom: float
) -> np.ndarray:
    """(size, crop, crop, 3) float32: random photos, each resized so its shorter side is
    ``crop`` × U[1, zoom], cropped at random and flipped left-right with probability ½;
    drawn from ``default_rng((seed, step))`` alone."""
    rng = np.random.default_rng((seed, step))
    out = np.empty((size, crop, crop, 3), np.float32)
    for b in range(size):
        rgb = photos[rng.integers(len(photos))]
        h, w = rgb.shape[:2]
        scale = crop * rng.uniform(1.0, zoom) / min(h, w)
        sw, sh = max(crop, round(w * scale)), max(crop, round(h * scale))
        big = images.resize(rgb, (sw, sh))
        top, left = rng.integers(sh - crop + 1), rng.integers(sw - crop + 1)
        tile = big[top : top + crop, left : left + crop]
        out[b] = tile[:, ::-1] if rng.random() < 0.5 else tile
    return out


def style_indices(seed: int, step: int, *, size: int, styles: int) -> np.ndarray:
    """(size,) int32: the style each photo of step ``step``'s batch is trained towards by
    a conditional network, drawn evenly (all styles, then at random)."""
    rng = np.random.default_rng((seed, step, 1))
    base = np.arange(size) % styles
    return rng.permutation(base).astype(np.int32)


class Prefetch:
    """The batches of steps ``start``, ``start + 1``, … made by ``make(step)`` on a host
    thread, ``depth`` ahead of the consumer; ``close`` stops the thread."""

    def __init__(self, make: Callable[[int], object], start: int, stop: int, depth: int = 2):
        self._queue: queue.Queue = queue.Queue(maxsize=depth)
        self._closed = threading.Event()
        self._thread = threading.Thread(
            target=self._fill, args=(make, start, stop), daemon=True, name="jaxcombine-photos"
        )
        self._thread.start()

    def _fill(self, make, start, stop):
        for step in range(start, stop):
            try:
                item = (step, make(step), None)
            except BaseException as e:  # handed to the consumer, raised there
                item = (step, None, e)
            while not self._closed.is_set():
                try:
                    self._queue.put(item, timeout=0.1)
                    break
                except queue.Full:
                    continue
            if self._closed.is_set() or item[2] is not None:
                return

    def __iter__(self) -> Iterator[tuple[int, object]]:
        while True:
            step, value, error = self._queue.get()
            if error is not None:
                raise error
            yield step, value

    def close(self) -> None:
        self._closed.set()
        self._thread.join(timeout=5)
