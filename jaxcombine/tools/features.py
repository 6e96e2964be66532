"""``jaxcombine features``: VGG activations of one image, written to an .npz."""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Sequence

import numpy as np

from jaxcombine.errors import JaxcombineError
from jaxcombine.io import folders, images, records
from jaxcombine.networks import model
from jaxcombine.networks import weights as weights_lib
from jaxcombine.networks.forward import forward
from jaxcombine.options import layers as layers_lib
from jaxcombine.run import memory


def extract(
    image_rgb: np.ndarray,
    layers: Sequence[str],
    *,
    model_name: str = "vgg19",
    pooling: str = "max",
    weights: str | os.PathLike | None = None,
) -> dict[str, np.ndarray]:
    """Activations (H, W, C) float32 of ``layers`` for one RGB 0–255 image (H, W, 3)."""
    taps = layers_lib.check_layers(list(layers), model_name)
    layers_lib.check_size(*image_rgb.shape[:2], taps, model_name)
    w = weights_lib.load(model_name, weights)
    variables = model.variables(model.trim(w.arrays, taps, model_name))
    acts = forward(variables, image_rgb[None], arch=model_name, taps=taps, pooling=pooling)
    return {name: np.asarray(acts[name][0], dtype=np.float32) for name in taps}


def extract_features(
    image: str | os.PathLike,
    *,
    layers: Sequence[str],
    out: str | os.PathLike,
    model: str = "vgg19",
    pooling: str = "max",
    size: int | None = None,
    weights: str | os.PathLike | None = None,
    max_memory: float | None = None,
) -> dict[str, tuple[int, ...]]:
    """Write the activations of ``layers`` for ``image`` to ``out`` (.npz) plus ``out``.json.

    Refused in one line, before the image is decoded at ``size``, when the estimated
    peak exceeds ``max_memory`` GB (default: the memory available).

    ``out`` and its record are checked before any work and written together or not at all.
    Returns ``{layer: shape}``. With ``size=None`` the image is used at its own size.
    """
    out = Path(out)
    if out.suffix.lower() == ".json":
        raise JaxcombineError(f"{out} is where the record goes; name the features file .npz")
    folders.check_output_files(out, out.with_suffix(".json"))
    taps = layers_lib.check_layers(list(layers), model)  # ``model``: the architecture's name
    h, w = images.output_size(image, size=size)
    memory.check_fits(
        memory.estimate_features_bytes(taps, h, w, arch=model),
        int(max_memory * 1e9) if max_memory else memory.available_bytes(),
        f"features of {w}x{h} to {taps[-1]}",
        remedies=("a smaller --size",),
    )  # before the image is decoded at size
    with memory.out_of_memory_as_error(f"features of {w}x{h}", remedies=("a smaller --size",)):
        rgb = images.read(image, size=size)
        acts = extract(rgb, layers, model_name=model, pooling=pooling, weights=weights)
    buf = io.BytesIO()
    np.savez(buf, **acts)
    w = weights_lib.load(model, weights)
    config = {
        "command": "features",
        "image": str(Path(image).resolve()),
        "layers": list(acts),
        "model": model,
        "pooling": pooling,
        "size": size,
        "input_shape": list(rgb.shape),
    }
    record = records.record(config, weights=w)
    records.atomic_write_all(
        {out: buf.getvalue(), out.with_suffix(".json"): records.json_text(record)}
    )
    return {k: v.shape for k, v in acts.items()}
