#!/usr/bin/env bash
# The CPU figures of docs/benchmarks.md, re-runnable on any machine:
#   pip install -e '.[bench]'   # torch + pastiche 1.6.0, for the side-by-side comparison
#   scripts/bench_cpu.sh [OUT]  # default OUT: bench-cpu/
# 1. ours (loop forms × conv algorithms) against pastiche at 296×222, Adam, Gatys layers, one process;
# 2. every conv layer timed alone at 296×222 (scripts/conv_layers.py: where the time goes);
# 3. 1 vs 3 vs 8 vmapped starts at 128²;
# 4. peak RSS against size for the CPU default (winograd, scan), one process per point;
# 5. the same with conv xla, with and without --remat.
set -euo pipefail
OUT=${1:-bench-cpu}
PY=${PYTHON:-python}
mkdir -p "$OUT"
export JAX_PLATFORMS=cpu

# A 296×222 (4:3) crop of the bundled photo, the size pastiche is compared at.
CONTENT="$OUT/content_296x222.png"
"$PY" "$(dirname "$0")/content_296x222.py" "$CONTENT"

"$PY" -m jaxcombine bench --sizes 296 --content "$CONTENT" --loop step,unroll,scan \
    --conv xla,winograd --steps 3 --repeats 5 --compare-pastiche --out "$OUT/pastiche"
"$PY" "$(dirname "$0")/conv_layers.py" --width 296 --height 222 > "$OUT/conv_layers.md"
"$PY" -m jaxcombine bench --sizes 128 --inits 1,3,8 --loop scan --conv winograd --steps 3 \
    --repeats 3 --out "$OUT/inits"
for size in 256 512 1024; do
    "$PY" -m jaxcombine bench --sizes "$size" --loop scan --conv winograd --steps 1 --repeats 1 \
        --out "$OUT/memory-$size-winograd"
done
for size in 128 256 512 1024; do
    for remat in no-remat remat; do
        "$PY" -m jaxcombine bench --sizes "$size" --loop step --conv xla --steps 1 --repeats 1 \
            "--$remat" --out "$OUT/memory-$size-$remat"
    done
done

# 6. Whole processes, as a user runs them (start-up, weights, compile, 30 steps, writing the
#    image), ours and pastiche's own CLI in turn, three times each; wall seconds and peak RSS.
STYLE=$("$PY" -c "from jaxcombine.io import images; print(images.STYLE)")
for i in 1 2 3; do
    JAXCOMBINE_COMPILE_CACHE=off /usr/bin/time -f "ours wall %e s, peak %M KiB" \
        "$PY" -m jaxcombine run --content "$CONTENT" --size 296 --steps 30 --init content \
        --quiet --out "$OUT/run" 2>> "$OUT/processes.txt"
    /usr/bin/time -f "pastiche wall %e s, peak %M KiB" pastiche --optimizer adam --num-steps 30 \
        --size 296 --style-size 296 --content "$CONTENT" --styles "$STYLE" \
        --output "$OUT/pastiche.png" --no-verbose 2>> "$OUT/processes.txt"
done
