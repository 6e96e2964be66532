"""A training's checkpoints: orbax's ``CheckpointManager`` in ``<out>/checkpoints``.

Each checkpoint is a step's folder holding the :class:`~jaxcombine.train.objective.State`
(saved by name, restored against the structure of a fresh one) and a JSON ``meta``: the
training's configuration, its recipe, the networks' shape and the parameters'
fingerprint (:func:`jaxcombine.train.network.fingerprint`), checked when read. Orbax
writes a checkpoint into a temporary folder and renames it once complete, so a ``kill -9``
leaves the previous checkpoint whole (its temporary folder is removed by the next
manager); the two latest are kept.

Why orbax: it is the ecosystem's checkpoint library, already installed with Flax, works
offline, saves a pytree by name with metadata and commits atomically.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jax

from jaxcombine.errors import JaxcombineError
from jaxcombine.train import network

FOLDER = "checkpoints"
KEEP = 2


def _ocp():
    import logging

    import orbax.checkpoint as ocp  # about 1 s to import: only where checkpoints are used

    # orbax reports every save and restore through absl at INFO and WARNING; the
    # command's own lines say what happened
    logging.getLogger("absl").setLevel(logging.ERROR)
    return ocp


class Checkpoints:
    """The checkpoints of the training folder ``out``."""

    def __init__(self, out: str | Path, *, read_only: bool = False):
        ocp = _ocp()
        self.folder = Path(out).resolve() / FOLDER
        if read_only and not self.folder.is_dir():
            raise JaxcombineError(f"{out} holds no trained network (no {FOLDER}/ folder)")
        options = ocp.CheckpointManagerOptions(
            max_to_keep=None if read_only else KEEP,
            save_interval_steps=0 if read_only else 1,
            enable_async_checkpointing=False,
            cleanup_tmp_directories=not read_only,
            create=not read_only,
            read_only=read_only,
        )
        self.manager = ocp.CheckpointManager(self.folder, options=options)

    def latest(self) -> int | None:
        """The step of the latest complete checkpoint, or None."""
        return self.manager.latest_step()

    def meta(self, step: int) -> dict:
        ocp = _ocp()
        return self.manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))[
            "meta"
        ]

    def save(self, step: int, state: Any, meta: dict) -> None:
        """Save ``state`` with ``meta`` (and the fingerprint of ``state.params``) at ``step``."""
        ocp = _ocp()
        meta = {**meta, "step": step, "fingerprint": network.fingerprint(state.params)}
        self.manager.save(
            step,
            args=ocp.args.Composite(
                state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta)
            ),
            force=True,
        )
        self.manager.wait_until_finished()

    def restore(self, step: int, like: Any) -> tuple[Any, dict]:
        """(state, meta) of checkpoint ``step``, shaped as ``like`` (a state or its
        ``jax.eval_shape``); its parameters must match the fingerprint saved with them."""
        ocp = _ocp()
        abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, like)
        got = self.manager.restore(
            step,
            args=ocp.args.Composite(
                state=ocp.args.StandardRestore(abstract), meta=ocp.args.JsonRestore()
            ),
        )
        state, meta = got["state"], got["meta"]
        if network.fingerprint(state.params) != meta.get("fingerprint"):
            raise JaxcombineError(
                f"checkpoint {self.folder / str(step)} is corrupt: its parameters do not "
                "match the fingerprint saved with them"
            )
        return type(like)(*state) if isinstance(like, tuple) else state, meta

    def close(self) -> None:
        self.manager.close()
