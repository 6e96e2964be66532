"""What a study records as it runs, and how it resumes from what it recorded.

:class:`Recorder` accumulates the history (every step × start × loss component)
and, at every snapshot, the distances between each pair of starts: in pixels and
in each feature space of the recipe (:func:`pair_distances`). It writes them as
tidy tables (``history.csv``, ``distances.csv``; columns :data:`HISTORY_COLUMNS`,
:data:`DISTANCE_COLUMNS`) and keeps ``state.npz`` (pixels, optimiser state,
tables, the coarse-to-fine scale, the iterate average), each atomically, so a
killed study keeps what it did. :meth:`Recorder.load` refuses, in one line, a
state that another configuration, other images or other weights made.
"""

from __future__ import annotations

import io
import json
from functools import partial
from itertools import combinations
from pathlib import Path
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jaxcombine.engine import optimizers
from jaxcombine.errors import JaxcombineError
from jaxcombine.io import images, records
from jaxcombine.networks.forward import forward
from jaxcombine.options import layers as layers_lib
from jaxcombine.run import outputs
from jaxcombine.run import prepare as prepare_lib
from jaxcombine.stats import losses

HISTORY_COLUMNS = ("step", "size", "start", "term", "value", "weighted")
# Options a resumed study may change: how far it goes, and how the steps are chunked
# (not how far a coarse-to-fine study goes: its scales would begin at other steps).
RESUMABLE_CHANGES = ("steps", "chunk", "loop")
# Options that name files or starts. A resumed study compares what they stand for
# instead: the files' bytes (``file_sha256``), the recipe's terms and the starts' labels,
# so a study resumes wherever its files now lie (and a state saved by jaxcombine 0.1.0,
# whose identity held these paths, is read without them). The weights' path was never
# compared: the identity's ``weights`` is their fingerprint.
PATH_OPTIONS = ("content", "style", "style_masks", "style_regions", "recipe", "init")
DISTANCE_COLUMNS = ("step", "a", "b", "space", "value")


# --------------------------------------------------------------------------- distances


def feature_spaces(recipe) -> tuple[tuple[str, str, str], ...]:
    """(name, statistic, layer) of every distinct recipe statistic; name is the layer
    unless that layer carries several statistics (then ``layer:statistic``). Hypercolumn
    terms, which compare sampled positions of several layers, have no space here."""
    pairs = list(
        dict.fromkeys((t.statistic, t.layer) for t in recipe.terms if t.hypercolumn is None)
    )
    layers = [layer for _, layer in pairs]
    return tuple(
        (layer if layers.count(layer) == 1 else f"{layer}:{stat}", stat, layer)
        for stat, layer in pairs
    )


@partial(jax.jit, static_argnames=("spaces", "pairs"))
def _pair_distances(pixels, feats, *, spaces, pairs):
    """(1 + n_spaces, n_pairs): pixel distance, then each feature space's, for every pair."""
    ia = np.asarray([a for a, _ in pairs], np.int32)
    ib = np.asarray([b for _, b in pairs], np.int32)
    out = [jnp.mean(jnp.abs(pixels[ia] - pixels[ib]), axis=(1, 2, 3))]
    key = jax.random.key(0)  # swd: the same directions for every pair and snapshot
    for _, stat, layer in spaces:
        f = feats[layer]
        out.append(jax.vmap(lambda a, b: losses.distance(stat, a, b, key))(f[ia], f[ib]))
    return jnp.stack(out)


def pair_distances(problem, variables, pixels: np.ndarray) -> np.ndarray:
    """Distances between every pair of the k images ``pixels``: (1 + n_spaces, k(k-1)/2).
    Their features come from the shared compiled forward (:func:`forward`), through the
    problem's network (architecture, pooling, algorithm, dtype, padding)."""
    pairs = tuple(combinations(range(len(pixels)), 2))
    spaces = feature_spaces(problem.recipe)
    if not pairs:
        return np.zeros((1 + len(spaces), 0), np.float32)
    pixels = jnp.asarray(pixels)
    feats = forward(
        variables,
        pixels,
        arch=problem.arch,
        taps=layers_lib.check_layers(problem.recipe.layers, problem.arch),
        pooling=problem.pooling,
        conv=problem.conv,
        dtype=str(jnp.dtype(problem.dtype)),
        padding=problem.padding,
    )
    return np.asarray(_pair_distances(pixels, feats, spaces=spaces, pairs=pairs))


def input_files(prep: prepare_lib.Prepared) -> dict[str, str]:
    """Every file a study's run reads, by role: content, styles, style masks, the recipe
    file and the masks it names, and image starts."""
    config = prep.config
    files = {"content": config.content or str(images.CONTENT)}
    for i, path in enumerate(config.style or (str(images.STYLE),)):
        files[f"style {i + 1}"] = path
    for i, path in enumerate(config.style_masks or ()):
        files[f"style mask {i + 1}"] = path
    for i, path in enumerate(config.style_regions or ()):
        files[f"style region {i + 1}"] = path
    if config.recipe and Path(config.recipe).is_file():
        files["recipe"] = str(config.recipe)
    for i, path in enumerate(prep.recipe.masks):
        files[f"recipe mask {i + 1}"] = path
    for init in prep.inits:
        if init.path is not None:
            files[f"start {init.label}"] = init.path
    return files


# --------------------------------------------------------------------------- tidy tables


def tidy_history(
    hist: np.ndarray,
    weights: np.ndarray,
    starts: Sequence[str],
    terms: Sequence[str],
    sizes: np.ndarray,
) -> dict[str, np.ndarray]:
    """(T, k, c) unweighted components → tidy columns, ``total`` last for each step × start;
    ``weights``: (k, c), or (T, k, c) each step's own (a per-scale content weight);
    ``sizes`` (T,): the size (longest side, px) each step optimised at."""
    t, k, c = hist.shape
    weighted = hist * np.broadcast_to(weights, hist.shape)
    total = weighted.sum(-1, keepdims=True)
    return {
        "step": np.repeat(np.arange(1, t + 1), k * (c + 1)),
        "size": np.repeat(np.asarray(sizes, int), k * (c + 1)),
        "start": np.tile(np.repeat(np.asarray(starts, object), c + 1), t),
        "term": np.tile(np.asarray([*terms, "total"], object), t * k),
        "value": np.concatenate([hist, total], -1).ravel(),
        "weighted": np.concatenate([weighted, total], -1).ravel(),
    }


def tidy_distances(
    steps: Sequence[int], dists: np.ndarray, starts: Sequence[str], spaces: Sequence[str]
) -> dict[str, np.ndarray]:
    """(n_snaps, n_spaces, n_pairs) → tidy columns ordered step, pair, space."""
    pairs = list(combinations(starts, 2))
    n, s, p = len(steps), len(spaces), len(pairs)
    a = np.asarray([x for x, _ in pairs] or [""], object)[:p]
    b = np.asarray([y for _, y in pairs] or [""], object)[:p]
    return {
        "step": np.repeat(np.asarray(steps, int), p * s),
        "a": np.tile(np.repeat(a, s), n),
        "b": np.tile(np.repeat(b, s), n),
        "space": np.tile(np.asarray(spaces, object), n * p),
        "value": np.asarray(dists, np.float64).transpose(0, 2, 1).ravel(),
    }


def _is_array(params: Any) -> bool:
    """Whether the parameters are the pixels themselves (not a pyramid's levels)."""
    return len(jax.tree.leaves(params)) == 1 and not isinstance(params, (tuple, list))


def _named(prefix: str, tree: Any) -> dict[str, np.ndarray]:
    """Every leaf of ``tree`` by its path: ``{prefix}{keystr}`` (resumable by name)."""
    return {
        f"{prefix}{jax.tree_util.keystr(p)}": np.asarray(a)
        for p, a in jax.tree_util.tree_flatten_with_path(tree)[0]
    }


def _by_name(data: dict, prefix: str, like: Any) -> Any:
    """The tree shaped as ``like`` from ``data``'s leaves named by :func:`_named`, or None
    when one is missing or of another shape."""
    names = [jax.tree_util.keystr(p) for p, _ in jax.tree_util.tree_flatten_with_path(like)[0]]
    if any(
        f"{prefix}{n}" not in data or data[f"{prefix}{n}"].shape != leaf.shape
        for n, leaf in zip(names, jax.tree.leaves(like))
    ):
        return None
    return jax.tree.unflatten(jax.tree.structure(like), [data[f"{prefix}{n}"] for n in names])


class Recorder:
    """Accumulates history and snapshot distances; writes them (atomically) at each snapshot."""

    def __init__(self, out: Path, prep: prepare_lib.Prepared, labels, lrs, loss_weights):
        self.out, self.prep, self.labels = out, prep, labels
        self.lrs, self.loss_weights = lrs, loss_weights
        self.spaces = ("pixel",) + tuple(name for name, _, _ in feature_spaces(prep.problem.recipe))
        self.hist = np.zeros((0, len(labels), len(prep.problem.recipe.labels)), np.float32)
        self.sizes = np.zeros(0, int)  # per history row: the size optimised at
        self.row_stage = np.zeros(0, int)  # per history row: its coarse-to-fine scale
        # (scales, c): what multiplies each loss weight at each scale (content factors)
        self.factors = np.asarray([prep.plan.loss_factors(s) for s in prep.plan.scales])
        self.stage = 0  # the coarse-to-fine scale the saved pixels belong to
        self.snap_steps: list[int] = []
        self.dists: list[np.ndarray] = []
        self.step = 0

    # -- state -------------------------------------------------------------------------

    def identity(self) -> dict[str, Any]:
        """What a resumed study must share with the one that saved its state: the whole
        configuration except :data:`RESUMABLE_CHANGES` and the paths of
        :data:`PATH_OPTIONS`, the starts, the recipe as loaded (terms,
        weights, masks), the bytes of every file the run reads (:func:`input_files`) and
        the weights' fingerprint."""
        config = records.to_json(self.prep.config)
        resumable = RESUMABLE_CHANGES if not self.prep.config.multi_stage else ("chunk", "loop")
        return {
            **{k: v for k, v in config.items() if k not in resumable + PATH_OPTIONS},
            "starts": list(self.labels),
            "recipe_terms": {  # what the recipe does, a preset's included; not its words
                k: v
                for k, v in records.to_json(self.prep.recipe.to_dict()).items()
                if k != "description"
            },
            "file_sha256": {
                role: records.file_sha256(path) for role, path in input_files(self.prep).items()
            },
            "weights": self.prep.weights.fingerprint,
        }

    def load(self) -> tuple[np.ndarray, Any, Any, np.ndarray | None]:
        """Restore from ``state.npz`` after checking it belongs to this study; returns
        (pixels, params, opt_state, iterate average or None) and sets ``step`` and ``stage``.
        Refuses, in one line, a state made by another configuration, other images or
        other weights, and a file that is not such a state."""
        path = self.out / "state.npz"
        if not path.exists():
            raise JaxcombineError(f"nothing to resume: {path} does not exist")
        try:
            with np.load(path, allow_pickle=False) as z:
                data = dict(z)
            saved = json.loads(str(data["identity"]))
            pixels, step, stage = data["pixels"], int(data["step"]), int(data["stage"])
        except Exception as e:  # noqa: BLE001  corrupt, truncated, foreign: all one answer
            raise JaxcombineError(
                f"cannot resume {self.out}: {path.name} is not a readable "
                f"jaxcombine study state ({type(e).__name__})"
            ) from None
        saved = {k: v for k, v in saved.items() if k not in PATH_OPTIONS}
        mine = self.identity()
        differ = sorted(k for k in set(saved) | set(mine) if saved.get(k) != mine.get(k))
        if differ:
            files = saved.get("file_sha256") or {}
            changed = [
                f"{role} {path}"
                for role, path in input_files(self.prep).items()
                if files.get(role) != mine["file_sha256"][role]
            ]
            what = ", ".join(k for k in differ if k != "file_sha256")
            if changed:
                what = ", ".join(filter(None, [what, f"files ({'; '.join(changed)})"]))
            raise JaxcombineError(
                f"cannot resume {self.out}: it was made with other {what}; "
                "its history would no longer match: use the same options and files or another --out"
            )
        fresh = self.prep.initial_state(pixels, lr=self.lrs, loss_weights=self.loss_weights)
        opt_state = _by_name(data, "opt", fresh.opt_state)
        params = pixels if _is_array(fresh.params) else _by_name(data, "params", fresh.params)
        if opt_state is None or params is None:
            raise JaxcombineError(
                f"cannot resume {self.out}: its optimiser state does not fit this optimiser"
            )
        # the schedule's length follows this call's --steps; the rest is as saved
        opt_state = jax.tree.map(
            lambda old, new: (
                old._replace(total_steps=new.total_steps)
                if isinstance(old, optimizers.LearningRate)
                else old
            ),
            opt_state,
            fresh.opt_state,
            is_leaf=lambda n: isinstance(n, optimizers.LearningRate),
        )
        self.step, self.stage = step, stage
        self.hist, self.sizes = data["history"], data["sizes"]
        self.row_stage = data["row_stage"]
        self.snap_steps = data["snap_steps"].tolist()
        self.dists = list(data["distances"])
        return pixels, params, opt_state, data["average"] if "average" in data else None

    def save_state(
        self, pixels: np.ndarray, params: Any, opt_state: Any, average: Any = None
    ) -> None:
        """``state.npz``: pixels, tables, the optimiser state and (a pyramid's levels) the
        parameters by name, the scale, the iterate average (when kept) and the identity."""
        leaves = _named("opt", opt_state)
        if not _is_array(params):  # pixels are the parameters: saved once, as pixels
            leaves.update(_named("params", params))
        if average is not None:
            leaves["average"] = np.asarray(average, np.float32)
        buf = io.BytesIO()
        np.savez(
            buf,
            step=self.step,
            stage=self.stage,
            sizes=self.sizes,
            row_stage=self.row_stage,
            pixels=np.asarray(pixels, np.float32),
            labels=np.asarray(self.labels),
            history=self.hist,
            snap_steps=np.asarray(self.snap_steps, int),
            distances=np.asarray(self.dists, np.float32).reshape(
                len(self.snap_steps), len(self.spaces), -1
            ),
            identity=np.asarray(json.dumps(self.identity(), sort_keys=True)),
            **leaves,
        )
        records.atomic_write_bytes(self.out / "state.npz", buf.getvalue())

    # -- recording ---------------------------------------------------------------------

    def add_steps(self, comps: np.ndarray, size: int, stage: int = 0) -> None:
        self.hist = np.concatenate([self.hist, comps.astype(np.float32)])
        self.sizes = np.concatenate([self.sizes, np.full(len(comps), size, int)])
        self.row_stage = np.concatenate([self.row_stage, np.full(len(comps), stage, int)])
        self.step += len(comps)

    def snapshot(
        self, pixels: np.ndarray, params: Any = None, opt_state: Any = None, average: Any = None
    ) -> None:
        """Distances, snapshot images, tables and (with ``params`` and ``opt_state``) the
        resumable state."""
        if self.snap_steps and self.snap_steps[-1] == self.step:
            return
        self.snap_steps.append(self.step)
        self.dists.append(pair_distances(self.prep.problem, self.prep.variables, pixels))
        for lab, px in zip(self.labels, self.prep.finish(pixels)):
            images.write(outputs.snapshot_path(self.out, lab, self.step), px)
        self.write_tables()
        if opt_state is not None:
            self.save_state(pixels, params, opt_state, average)

    def weights(self) -> np.ndarray:
        """(steps, k, c) each history row's loss weights: the run's, times its scale's
        factors (a per-scale content weight)."""
        if self.loss_weights is not None:
            base = np.asarray(self.loss_weights, np.float32)
        else:
            base = np.tile(self.prep.loss_weights, (len(self.labels), 1))
        return base[None] * self.factors[self.row_stage][:, None, :]

    def history_table(self) -> dict[str, np.ndarray]:
        return tidy_history(
            self.hist, self.weights(), self.labels, self.prep.problem.recipe.labels, self.sizes
        )

    def distance_table(self) -> dict[str, np.ndarray]:
        d = np.asarray(self.dists, np.float32).reshape(len(self.snap_steps), len(self.spaces), -1)
        return tidy_distances(self.snap_steps, d, self.labels, self.spaces)

    def write_tables(self) -> None:
        records.atomic_write_text(self.out / "history.csv", outputs.csv_text(self.history_table()))
        records.atomic_write_text(
            self.out / "distances.csv", outputs.csv_text(self.distance_table())
        )
