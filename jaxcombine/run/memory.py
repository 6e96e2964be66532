"""How much memory a run will need, estimated before anything is read at size or compiled.

Why: an image or a number of starts too large for the machine used to end in
an OOM kill, a C++ abort or a traceback minutes in. :func:`estimate_bytes`
predicts a run's peak from its shape alone — arithmetic over the VGG structure
(:mod:`jaxcombine.networks.model`) and a table fitted to measured peaks — so
:func:`check_fits` can refuse it first, in one line::

    layers = ["block1_conv1", "block4_conv2", "block5_conv1"]
    need = estimate_bytes(layers, 8192, 8192, 1, conv="winograd")
    check_fits(need, available_bytes(), describe(layers, 8192, 8192, 1, conv="winograd"),
               remedies=remedies("winograd", 1))
    # JaxcombineError: needs about 264.2 GB (1 start at 8192x8192, to block5_conv1,
    # conv winograd) but 22.1 GB is available; use a smaller --size or --conv xla, or
    # --max-memory to override

The model: a fixed cost (runtime, compiled program, the weights and, with
Winograd, their transformed copies); per start, per pixel, the activations up
to the deepest tap kept for the backward pass plus the working set of the
costliest convolution (a Winograd one costs most); once per run, the images and
any targets that are whole activation maps. It was fitted to the peak RSS of 60
``jaxcombine run`` and 10 ``jaxcombine features`` cases on XLA:CPU, each measured on
two days (docs/benchmarks.md, docs/memory-measurements.csv, scripts/memory_fit.py),
and errs high: every process measured lies at or below its estimate, and no
estimate is more than 1.25 times the larger peak of its case. On an
accelerator (not measured) it also counts the host runtime, which only makes it
more cautious. :func:`out_of_memory_as_error` turns the allocator's own failure,
should it still come, into the same kind of one-line error.
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import math
import os
import re
from pathlib import Path
from typing import Any, Iterator, Sequence

import jax

from jaxcombine.engine import tiles
from jaxcombine.errors import JaxcombineError
from jaxcombine.networks import model
from jaxcombine.options import layers as layers_lib
from jaxcombine.options.config import DTYPES
from jaxcombine.stats import base, hypercolumns, losses

# --------------------------------------------------------------------------- fitted table
# Fitted by scripts/memory_fit.py to docs/memory-measurements.csv (peak RSS of whole
# `jaxcombine run` and `features` processes on XLA:CPU, each case on two days, fitted to
# its larger peak); fit quality: docs/benchmarks.md.

BASE = {"xla": 453e6, "winograd": 465e6}  # bytes: runtime, libraries, the compiler
PER_CONV_LAYER = 12.9e6  # bytes of compiled program and compiler work per conv layer run
WEIGHT_COPIES = 1.21  # copies of the (trimmed, and with Winograd transformed) weights held
IMAGE_BYTES_PER_PIXEL = 9.72  # once per run: content, styles, starts on the host, …
TARGET_COPIES = 0.891  # once per run (or per start): activation-map targets
# Per start: copies of every activation up to the deepest tap kept for the backward pass,
# plus the working set of the costliest convolution (its input and output, times this).
STORED_COPIES = {"xla": 2.08, "winograd": 0.797}
WORKING_COPIES = {
    ("xla", "direct"): 0.976,
    ("winograd", "direct"): 0.274,
    ("winograd", "winograd"): 8.34,
}
REMAT = {"xla": 1.0, "winograd": 1.12}  # per-start part with --remat (no saving on XLA:CPU)
REDUCED_PRECISION = 0.795  # per-start part in 16-bit dtypes, relative to float32
# `jaxcombine features` (a forward, no gradient): the peak is either the forward (the
# costliest convolution's working set beside the tapped maps computed so far) or the
# save (the tapped maps on the host and in the .npz buffer).
FEATURES_BASE = 283e6  # bytes: runtime, libraries, the compiler
FEATURES_IMAGE_BYTES_PER_PIXEL = 34.6  # the image read, resized and preprocessed
FORWARD_WORKING_COPIES = 0.918
SAVED_TAP_COPIES = 2.10
MARGIN = 1.14  # the estimate is the fit times this: it errs high, not low


# --------------------------------------------------------------------------- structure


def weight_bytes(layers: Sequence[str], *, arch: str = "vgg19", conv: str = "xla") -> int:
    """Bytes of the weights a run holds: the trimmed float32 kernels and biases, plus with
    Winograd the prepared forward and adjoint kernels (transformed: 36/9 the size)."""
    total = 0
    for name, shape in layers_lib.conv_shapes(arch).items():
        if name not in layers_lib.downsampling(layers, arch):
            continue
        params = math.prod(shape) + shape[-1]
        total += 4 * params
        if conv == "winograd":
            grow = 4 if model.uses_winograd(name, conv) else 1
            total += 2 * 4 * math.prod(shape) * grow
    return total


def working_sets(
    shapes: dict[str, tuple[int, int, int]], conv: str, padded: bool = False
) -> list[tuple[str, int]]:
    """(``direct`` | ``winograd``, input + output elements) of every convolution in ``shapes``.

    A convolution's backward holds its input and output gradients, and Winograd's also
    its tiles' transforms (36 values per 16 outputs, and the strips between), so its
    working set costs more per element: one coefficient per kind, fitted. ``padded``: the
    network pads its own input (``padding`` reflect or circular), so each convolution
    reads and, under Winograd, writes a map two pixels taller and wider.
    """
    grow = 2 if padded else 0

    def elements(m: tuple[int, int, int], border: int) -> int:
        return (m[0] + border) * (m[1] + border) * m[2]

    out, previous = [], (*next(iter(shapes.values()))[:2], 3)  # the RGB input
    for name, shape in shapes.items():
        if name in layers_lib.CONV_NAMES:
            kind = "winograd" if model.uses_winograd(name, conv) else "direct"
            written = grow if kind == "winograd" else 0  # a direct one writes only the output
            out.append((kind, elements(previous, grow) + elements(shape, written)))
        previous = shape
    return out


def _check_counts(**counts: int) -> None:
    for name, value in counts.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise JaxcombineError(f"{name} must be an integer >= 1, got {value!r}")


def _per_start(shapes: dict[str, tuple[int, int, int]], conv: str, padded: bool) -> float:
    """Bytes one start's step holds: its stored activations and its costliest working set."""
    sets = working_sets(shapes, conv, padded)
    return 4 * (
        STORED_COPIES[conv] * sum(math.prod(s) for s in shapes.values())
        + max(WORKING_COPIES[conv, kind] * size for kind, size in sets)
    )


# --------------------------------------------------------------------------- the estimate


def estimate_bytes(
    layers: Sequence[str],
    height: int,
    width: int,
    starts: int,
    *,
    arch: str = "vgg19",
    conv: str = "xla",
    dtype: str = "float32",
    remat: bool = False,
    activation_targets: Sequence[str] | None = None,
    per_start_targets: bool = False,
    padding: str = "zeros",
) -> int:
    """Peak bytes of a run whose recipe taps ``layers``, at ``height`` × ``width`` pixels
    with ``starts`` starts side by side, on one device (pass the starts per device).

    ``activation_targets``: the layers matched by whole activation maps (a spatial
    statistic's: :func:`losses.spatial_layers`), whose targets grow with the image; default ``None``
    counts every tap (an upper bound). ``per_start_targets``: each start has its own
    targets (a batch of different jobs). Arithmetic only: nothing is allocated.
    """
    _check_counts(height=height, width=width, starts=starts)
    if dtype not in DTYPES:
        raise JaxcombineError(f"unknown dtype {dtype!r}; choose {', '.join(DTYPES)}")
    model.check_conv(conv, dtype)
    shapes = layers_lib.layer_shapes(layers, height, width, arch)
    padded = padding != "zeros"  # measured: 1-2 % more at 256 px (docs/reliability.md)
    per_start = max(_per_start(shapes, c, padded) for c in {"xla", conv})  # Winograd adds
    per_start *= REMAT[conv] if remat else 1.0
    per_start *= 1.0 if dtype == "float32" else REDUCED_PRECISION  # losses stay float32
    taps = layers_lib.check_layers(layers, arch)
    matched = taps if activation_targets is None else tuple(activation_targets)
    if not set(matched) <= set(taps):
        raise JaxcombineError(
            f"activation target {sorted(set(matched) - set(taps))[0]!r} is "
            f"not one of the layers {', '.join(taps)}"
        )
    targets = 4 * TARGET_COPIES * sum(math.prod(shapes[name]) for name in matched)
    fixed = (
        BASE[conv]
        + PER_CONV_LAYER * sum(n in layers_lib.CONV_NAMES for n in shapes)
        + WEIGHT_COPIES * weight_bytes(layers, arch=arch, conv=conv)
    )
    total = (
        fixed
        + IMAGE_BYTES_PER_PIXEL * height * width
        + targets * (starts if per_start_targets else 1)
        + starts * per_start
    )
    return int(MARGIN * total)


def estimate_features_bytes(
    layers: Sequence[str], height: int, width: int, *, arch: str = "vgg19"
) -> int:
    """Peak bytes of ``jaxcombine features`` writing ``layers`` of one ``height`` × ``width``
    image: a forward only (conv ``xla``, float32), so far less than a run needs."""
    _check_counts(height=height, width=width)
    shapes = layers_lib.layer_shapes(layers, height, width, arch)
    tapped = sum(math.prod(shapes[name]) for name in layers_lib.check_layers(layers, arch))
    working = max(size for _, size in working_sets(shapes, "xla"))
    total = (
        FEATURES_BASE
        + PER_CONV_LAYER * sum(n in layers_lib.CONV_NAMES for n in shapes)
        + WEIGHT_COPIES * weight_bytes(layers, arch=arch, conv="xla")
        + FEATURES_IMAGE_BYTES_PER_PIXEL * height * width
        + 4 * max(FORWARD_WORKING_COPIES * working + tapped, SAVED_TAP_COPIES * tapped)
    )
    return int(MARGIN * total)


# Computing the targets (a forward, no gradient, of the content and of every style at its
# ``style_scale``): XLA:CPU held this many copies of all the forward's activations, plus the
# runtime (measured: a style at 8x a 192 px output, gatys, 1536x1536: 4.14 GB peak with
# conv xla, 4.68 GB with Winograd, where the forward's activations total 3.0 GB).
TARGET_FORWARD_COPIES = {"xla": 1.3, "winograd": 1.5}
# Decoding an input file (content, style, mask, image start) at its own size: Pillow's
# decoded image, its float32 RGB copy, the resize's channels and the fitted crop, at the
# largest file's size at once (measured: a 36-megapixel greyscale mask 1.09 GB above the
# same run without it, 30 bytes per pixel); and each style's float32 RGB (12 bytes per
# pixel), kept while its targets are computed.
DECODE_BYTES_PER_PIXEL = 48.0
HELD_BYTES_PER_PIXEL = 12.0


def estimate_targets_bytes(
    layers: Sequence[str],
    sizes: Sequence[tuple[int, int]],
    *,
    arch: str = "vgg19",
    conv: str = "xla",
) -> int:
    """Peak bytes of computing a run's targets: one forward (no gradient) of each image of
    ``sizes`` ((height, width): the content, then every style at its ``style_scale``),
    every image's activations counted :data:`TARGET_FORWARD_COPIES` times (they are one
    compiled program and may be live together). Only a style much larger than the output
    makes this exceed :func:`estimate_bytes`."""
    if not sizes:
        raise JaxcombineError("no images to estimate")
    shapes = [layers_lib.layer_shapes(layers, h, w, arch) for h, w in sizes]
    activations = sum(math.prod(shape) for image in shapes for shape in image.values())
    total = (
        FEATURES_BASE
        + PER_CONV_LAYER * sum(name in layers_lib.CONV_NAMES for name in shapes[0])
        + WEIGHT_COPIES * weight_bytes(layers, arch=arch, conv=conv)
        + 4 * TARGET_FORWARD_COPIES[conv] * activations
    )
    return int(MARGIN * total)


# Hypercolumn terms (jaxcombine.stats.hypercolumns): not fitted to measured peaks but
# counted from their shapes. Per start, each term's sampled hypercolumns and its N×M
# matrices (cosine or colour distances, self-distances), each held as its value, its
# gradient and one temporary; once per run, the maps its targets keep (the style's, or
# the content's, every entry at its own grid) and a nearest-neighbour target's rows, plus
# the search that builds them (the candidates, and one chunk × candidates block).
SAMPLED_COPIES = 3


def hypercolumn_bytes(
    recipe: Any,
    height: int,
    width: int,
    starts: int,
    *,
    style_shapes: Sequence[tuple[int, int]] = (),
    arch: str = "vgg19",
) -> int:
    """Bytes a recipe's hypercolumn terms add to :func:`estimate_bytes`: their sampled
    matrices (N×N cosine matrices and the like) per start, and their targets once
    (``style_shapes``: each style's (height, width); default the output's)."""
    style_shapes = tuple(style_shapes) or ((height, width),)
    per_start, once, seen = 0.0, 0.0, set()
    for t in recipe.terms:
        hc = t.hypercolumn
        if hc is None:
            continue
        stat = base.get(t.statistic)
        depth = _hypercolumn_depth(hc, height, width, arch)
        n = _samples(hc, height, width)
        styles = turned_styles(style_shapes) if hc.rotations else style_shapes
        style_n = sum(_samples(hc, h, w) for h, w in styles)
        if t.source == "content":  # self-similarity: N×N for the output and the content
            per_start += 2 * (n * depth + n * n)
        elif stat.paired:  # the output's N hypercolumns against their N targets
            per_start += 2 * n * depth
        else:  # N output points against the styles' points
            per_start += (n + style_n) * depth + n * style_n + 2 * depth * depth
        key = losses.target_key(t)
        if key in seen:
            continue
        seen.add(key)
        if stat.paired:
            rows = _grid_points(hc, height, width)
            candidates = sum(_grid_points(hc, h, w) for h, w in styles)
            chunk = min(getattr(stat, "chunk", rows), rows)
            once += (2 * rows + candidates) * depth + chunk * candidates
        else:
            shapes = [(height, width)] if t.source == "content" else styles
            once += sum(_maps_size(hc, h, w, arch) for h, w in shapes)
    return int(MARGIN * 4 * (SAMPLED_COPIES * starts * per_start + TARGET_COPIES * once))


def turned_styles(style_shapes: Sequence[tuple[int, int]]) -> list[tuple[int, int]]:
    """Every style's (height, width) followed by its turns' (a ``rotations`` term's images)."""
    return [t for shape in style_shapes for t in hypercolumns.turned_shapes(shape)]


def _hypercolumn_depth(hc: Any, height: int, width: int, arch: str) -> int:
    shapes = layers_lib.layer_shapes(hc.taps, height, width, arch) if hc.taps else {}
    return sum(3 if name == "rgb" else shapes[name][-1] for name in hc.layers)


def _grid_points(hc: Any, height: int, width: int) -> int:
    return max(1, (height // hc.stride) * (width // hc.stride))


def _samples(hc: Any, height: int, width: int) -> int:
    return min(hc.samples, _grid_points(hc, height, width))


def _maps_size(hc: Any, height: int, width: int, arch: str) -> int:
    """Elements of one image's maps of ``hc``: every entry's map and the image."""
    shapes = layers_lib.layer_shapes(hc.taps, height, width, arch) if hc.taps else {}
    entries = sum(3 * height * width if n == "rgb" else math.prod(shapes[n]) for n in hc.layers)
    return entries + 3 * height * width


# Stages (the scales of a coarse-to-fine run, and a final pass): each after the first
# compiles its own programs (its targets and its chunk, at its shape), and the process's
# resident memory keeps part of every compile. Measured with a cold compile cache
# (docs/benchmarks.md, "A stage's programs"): over the same run at its last scale alone,
# 0.086-0.105 GB per further stage (gatys, 3 scales to 256 px and 4 to 512 px; nnst,
# 3 scales to 256 px).
STAGE_BYTES = 0.11e9


def stages_bytes(stages: int) -> int:
    """Bytes a run of ``stages`` stages holds beyond its costliest stage run alone."""
    return int(MARGIN * STAGE_BYTES * max(0, stages - 1))


# What each group a batch process ran before still holds once its programs are released
# (:func:`release_programs`): 12 gatys jobs of 12 sizes, one group each, peaked 19 MB a
# group above the largest run alone; kept, 64 MB (docs/benchmarks.md, "A batch's groups").
GROUP_BYTES = 0.03e9


def groups_bytes(earlier: int) -> int:
    """Bytes a batch process still holds of ``earlier`` groups' programs, released."""
    return int(MARGIN * GROUP_BYTES * max(0, earlier))


def release_programs() -> None:
    """Give back what finished runs left in this process: JAX's compiled programs and
    traces (``jax.clear_caches``), the objects that held them (a garbage collection),
    and the heap pages the C library keeps once they are freed (glibc's
    ``malloc_trim``, where the C library has it). A batch calls it before a group of
    another program than the last (``batch/runner._HeldPrograms``); the next run
    compiles its own."""
    jax.clear_caches()
    gc.collect()
    try:
        ctypes.CDLL(None).malloc_trim(0)
    except (AttributeError, OSError):  # not glibc: its heap stays as it is
        pass


def estimate_inputs_bytes(pixels: Sequence[int], styles: Sequence[int] = ()) -> int:
    """Bytes of decoding the input files: the largest of ``pixels`` (each file's decoded
    pixel count) at :data:`DECODE_BYTES_PER_PIXEL`, plus the ``styles``' full-size copies
    held while the targets are computed. Added to a run's estimate: a small output from a
    huge mask or style costs its decoding."""
    return int(
        MARGIN
        * (DECODE_BYTES_PER_PIXEL * max(pixels, default=0) + HELD_BYTES_PER_PIXEL * sum(styles))
    )


# --------------------------------------------------------------------------- the limit


def available_bytes(backend: str | None = None) -> int:
    """Bytes a run may use on ``backend`` (default: JAX's).

    An accelerator: its memory limit (``memory_stats()["bytes_limit"]`` of the first
    local device; the pool XLA allocates from). The CPU, or a device that reports no
    limit: the host's available memory (:func:`host_available_bytes`).
    """
    if backend != "cpu" and (backend or jax.default_backend()) != "cpu":
        stats = jax.local_devices(backend=backend)[0].memory_stats() or {}
        if "bytes_limit" in stats:
            return int(stats["bytes_limit"])
    return host_available_bytes()


def host_available_bytes(cgroup_root: str | os.PathLike = "/sys/fs/cgroup") -> int:
    """``MemAvailable`` from /proc/meminfo (what can be allocated without swapping), or
    where there is none the free pages (``os.sysconf``); capped by the room left under a
    container's memory limit (cgroup v2 or v1), which the OOM killer enforces."""
    avail = _meminfo_available()
    if avail is None:
        try:
            avail = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (ValueError, OSError, AttributeError):  # no such name on this system
            avail = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    room = _cgroup_room(Path(cgroup_root))
    return avail if room is None else min(avail, room)


def _meminfo_available(path: str = "/proc/meminfo") -> int | None:
    try:
        for line in Path(path).read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024  # kB
    except (OSError, ValueError, IndexError):
        pass
    return None


_NO_LIMIT = 2**60  # cgroup v1 writes "unlimited" as a number near 2**63


def _cgroup_room(root: Path) -> int | None:
    """Limit minus usage (less reclaimable file cache) of this cgroup; None if unlimited."""
    for limit_file, usage_file, cache_key in (
        ("memory.max", "memory.current", "inactive_file"),  # v2
        ("memory/memory.limit_in_bytes", "memory/memory.usage_in_bytes", "total_inactive_file"),
    ):  # v1
        try:
            limit_text = (root / limit_file).read_text().strip()
            if limit_text == "max" or int(limit_text) >= _NO_LIMIT:
                return None
            usage = int((root / usage_file).read_text())
        except (OSError, ValueError):
            continue
        stat = (root / limit_file).with_name("memory.stat")
        cache = 0
        try:
            for line in stat.read_text().splitlines():
                key, _, value = line.partition(" ")
                if key == cache_key:
                    cache = int(value)
        except (OSError, ValueError):
            pass
        return max(int(limit_text) - max(usage - cache, 0), 0)
    return None


# --------------------------------------------------------------------------- the check


def describe(
    layers: Sequence[str],
    height: int,
    width: int,
    starts: int,
    *,
    conv: str,
    recipe: str | None = None,
    arch: str = "vgg19",
) -> str:
    """What a run is, for :func:`check_fits`: ``1 start at 8192x8192, gatys to
    block5_conv1, conv winograd``."""
    deepest = layers_lib.check_layers(layers, arch)[-1]
    to = f"{recipe} to {deepest}" if recipe else f"to {deepest}"
    return f"{starts} start{'s' if starts != 1 else ''} at {width}x{height}, {to}, conv {conv}"


def remedies(conv: str = "xla", starts: int = 1, *, devices_help: bool = False) -> tuple[str, ...]:
    """What lowers a run's memory, for the message: a smaller size always; fewer starts
    when there are several; ``--conv xla`` instead of Winograd (which costs more at every
    measured size); more devices when starts are spread over separate memories
    (``devices_help``: accelerators, not the CPU's shared RAM)."""
    out = ["a smaller --size"]
    if starts > 1:
        out.append("fewer starts")
    if conv == "winograd":
        out.append("--conv xla")
    if devices_help and starts > 1:
        out.append("more devices")
    return tuple(out)


DEFAULT_REMEDIES = ("a smaller --size", "fewer starts")


def format_bytes(n: float) -> str:
    """``31.2 GB``: decimal units, as device vendors and ``free --si`` count."""
    if n >= 1e12:
        return f"{n / 1e12:,.1f} TB"
    return f"{n / 1e9:.1f} GB" if n >= 1e9 else f"{n / 1e6:.0f} MB"


def _use(options: Sequence[str]) -> str:
    options = list(options)
    return options[0] if len(options) == 1 else f"{', '.join(options[:-1])} or {options[-1]}"


def check_fits(
    estimate: int, limit: int, what: str, *, remedies: Sequence[str] = DEFAULT_REMEDIES
) -> None:
    """Raise a one-line :class:`JaxcombineError` if ``estimate`` bytes exceed ``limit``.

    ``what`` says what was estimated (:func:`describe`); ``remedies`` what would
    lower it (:func:`remedies`). The message ends by naming ``--max-memory``, the
    override for when the estimate (which errs high) is wrong for a machine.
    """
    if estimate <= limit:
        return
    what = " ".join(str(what).split())  # one line, whatever it was given
    raise JaxcombineError(
        f"needs about {format_bytes(estimate)} ({what}) but {format_bytes(limit)} is "
        f"available; use {_use(remedies)}, or --max-memory to override"
    )


@contextlib.contextmanager
def out_of_memory_as_error(
    what: str, *, remedies: Sequence[str] = DEFAULT_REMEDIES
) -> Iterator[None]:
    """Turn an allocator's failure inside the block into a one-line :class:`JaxcombineError`.

    Catches JAX's ``RESOURCE_EXHAUSTED`` / "Out of memory" runtime errors and
    numpy's ``MemoryError``; anything else passes through unchanged::

        with out_of_memory_as_error("1 start at 8192x8192"):
            outcome = driver.optimise(...)
    """
    try:
        yield
    except (jax.errors.JaxRuntimeError, MemoryError) as e:
        if not is_out_of_memory(e):
            raise
        text = str(e).strip()
        asked = re.search(r"allocat\w* (\d+) bytes", text)
        if asked:  # XLA: "RESOURCE_EXHAUSTED: Out of memory allocating 123 bytes."
            detail = f"allocating {format_bytes(int(asked.group(1)))} failed"
        else:  # numpy: "Unable to allocate 120. GiB for an array with shape …"
            detail = text.splitlines()[0] if text else "out of memory"
        what = " ".join(str(what).split())
        raise JaxcombineError(f"ran out of memory ({what}: {detail}); use {_use(remedies)}") from e


def is_out_of_memory(error: BaseException) -> bool:
    """Whether ``error`` is an allocator's out-of-memory failure: numpy's ``MemoryError``,
    or a JAX runtime error saying ``RESOURCE_EXHAUSTED`` or "Out of memory"."""
    if isinstance(error, MemoryError):
        return True
    text = str(error)
    return isinstance(error, jax.errors.JaxRuntimeError) and (
        "RESOURCE_EXHAUSTED" in text or "Out of memory" in text
    )


# Bytes per pixel of each start's image-sized arrays a tiled step holds (pixels, gradient,
# two Adam moments, the updated pixels and the kept copy, float32 RGB): an upper bound.
STATE_BYTES_PER_PIXEL = 8 * 3 * 4


def tiled_estimate_bytes(
    recipe: Any,
    height: int,
    width: int,
    starts: int,
    tile: int,
    *,
    arch: str = "vgg19",
    **kwargs: Any,
) -> int:
    """Peak bytes of a tiled run: :func:`estimate_bytes` of one window, plus the
    whole image's per-start arrays and activation-map targets (``kwargs``: its options)."""
    rows, cols = tiles.plan(height, width, tile, recipe.layers, arch)
    window = estimate_bytes(
        recipe.layers, rows.window, cols.window, starts, arch=arch, activation_targets=(), **kwargs
    )
    shapes = layers_lib.layer_shapes(recipe.layers, height, width, arch)
    maps = losses.spatial_layers(recipe)
    whole = (IMAGE_BYTES_PER_PIXEL + STATE_BYTES_PER_PIXEL * starts) * height * width
    whole += 4 * TARGET_COPIES * sum(math.prod(shapes[m]) for m in maps)
    return int(window + MARGIN * whole)
