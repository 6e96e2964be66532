"""What a run reads: its recipe and the header of every input file, checked without JAX.

:func:`read` is the plan's first step (:func:`jaxcombine.run.plan.make`). It imports
neither JAX nor Flax, so the command line calls it before it starts JAX: a mistyped path,
recipe or init, an unreadable image or mask is one line in a few hundred milliseconds
instead of after JAX's start-up (about a second of CPU)::

    got = read(RunConfig(style=("missing.png",)))   # JaxcombineError: image not found: ...

Each file's header is read once, through the guarded reader (:func:`images.header_size`:
existence, decompression bombs, ``--max-pixels``); the plan takes the sizes from here.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from jaxcombine.errors import JaxcombineError
from jaxcombine.io import images
from jaxcombine.options import recipe as recipe_lib
from jaxcombine.options.config import START_WORDS, Init, RunConfig


@dataclasses.dataclass(frozen=True)
class Inputs:
    """The settled configuration (recipe's ``[run]`` table applied), its recipe, its
    starts, and (path, height, width) of every image file it reads, content first."""

    config: RunConfig
    recipe: recipe_lib.Recipe
    from_recipe: tuple[str, ...]
    inits: tuple[Init, ...]
    content: str
    files: tuple[tuple[str, int, int], ...]

    @property
    def size(self) -> tuple[int, int]:
        """(height, width) of the content image."""
        return self.files[0][1], self.files[0][2]

    @property
    def pixels(self) -> tuple[tuple[str, int], ...]:
        """(path, pixels) of every file, for the memory estimate."""
        return tuple((path, h * w) for path, h, w in self.files)


def load_recipe(config: RunConfig) -> recipe_lib.Recipe:
    """The config's recipe with its overrides (``tv_weight``, ``preserve_color``), checked
    against the config's network (else the one the recipe suggests)."""
    rec = recipe_lib.load(config.recipe, config.model)
    if config.tv_weight is not None:
        rec = rec.replace(tv_weight=config.tv_weight)
    if config.preserve_color is not None:
        rec = rec.replace(preserve_color=config.preserve_color)
    return rec


def read(config: RunConfig, recipe: recipe_lib.Recipe | None = None) -> Inputs:
    """The inputs of ``config`` (already valid), every file checked by its header.

    ``recipe``: already loaded (:func:`load_recipe`). One-line errors name what each file
    is for: ``image not found``, ``style mask not found``, ``bad init``, ..."""
    rec = load_recipe(config) if recipe is None else recipe
    config, from_recipe = config.settle(rec.run)
    inits = tuple(config.inits(rec.init))
    content = str(config.content or images.CONTENT)
    roles = [
        *(("image", p) for p in config.style or (str(images.STYLE),)),
        *(("style mask", p) for p in config.style_masks or ()),
        *(("style region", p) for p in config.style_regions or ()),
        *(("mask", p) for p in rec.masks),
        *(("init", i.path) for i in inits if i.kind == "file"),
    ]
    files = [(content, *images.header_size(content, max_pixels=config.max_pixels))]
    seen = {content}
    for role, path in roles:
        path = str(path)
        if not Path(path).exists():
            if role == "init":
                raise JaxcombineError(
                    f"bad init {path!r}: no such file; use {START_WORDS} or an image path"
                )
            raise JaxcombineError(f"{role} not found: {path}")
        if path not in seen:
            seen.add(path)
            files.append((path, *images.header_size(path, max_pixels=config.max_pixels)))
    return Inputs(config, rec, tuple(from_recipe), inits, content, tuple(files))
