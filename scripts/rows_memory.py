"""Per-device memory of one rows-sharded step, for 1, 2, 4 ... fake CPU devices.

Each device count runs in its own process (the count is fixed when JAX starts):
the chunk program of one start of ``--recipe`` at ``--size``² is compiled with the
state placed as ``driver.optimise(shard="rows")`` places it, and XLA's own
``memory_analysis()`` of the compiled (per-device, SPMD-partitioned) program is
printed: temporaries, arguments (weights, targets, state) and outputs, in MB.

    JAXCOMBINE_WEIGHTS_DIR=weights python scripts/rows_memory.py --size 512 --devices 1,2,4
"""

import argparse
import json
import os
import subprocess
import sys

WORKER = r"""
import json, sys
import jax, jax.numpy as jnp, numpy as np
from jaxcombine.engine import program
from jaxcombine.stats import losses
from jaxcombine.networks import model
from jaxcombine.options import recipe as R
from jaxcombine.engine import layout
from jaxcombine.networks import weights
size, recipe, conv = int(sys.argv[1]), sys.argv[2], sys.argv[3]
rec = R.load(recipe)
prob = program.Problem(recipe=rec.structure(), conv=conv)
var = model.variables(model.trim(weights.load("vgg19").arrays, rec.layers), conv)
img = np.random.default_rng(0).uniform(0, 255, (size, size, 3)).astype(np.float32)
targets = jax.jit(program.compute_targets, static_argnames="problem")(
    prob, var, jnp.asarray(img), jnp.asarray(img[None, ::-1]))
state = program.init_state(prob, img[None], lr=4.0, steps=1)
state, targets, _ = layout.Layout("rows", len(jax.devices()), 1).place(state, targets,
    activation_keys=[losses.target_key(t) for t in prob.recipe.terms if t.statistic == "activations"])
c = program._rolled_chunk.lower(prob, var, targets, state, jnp.int32(1), capacity=1).compile()
m = c.memory_analysis()
print(json.dumps({"devices": len(jax.devices()), "temp": m.temp_size_in_bytes,
                  "args": m.argument_size_in_bytes, "out": m.output_size_in_bytes,
                  "alias": m.alias_size_in_bytes}))
"""


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", type=int, default=512)
    p.add_argument("--recipe", default="gatys")
    p.add_argument("--conv", default="winograd")
    p.add_argument("--devices", default="1,2,4")
    a = p.parse_args()
    print("| devices | temporaries MB | arguments MB | outputs MB | temporaries × devices MB |")
    print("|---|---|---|---|---|")
    for n in (int(d) for d in a.devices.split(",")):
        env = {**os.environ, "XLA_FLAGS": f"--xla_force_host_platform_device_count={n}"}
        out = subprocess.run(
            [sys.executable, "-c", WORKER, str(a.size), a.recipe, a.conv],
            env=env,
            capture_output=True,
            text=True,
            check=True,
        )
        r = json.loads(out.stdout.strip().splitlines()[-1])
        print(
            f"| {n} | {r['temp'] / 1e6:.1f} | {r['args'] / 1e6:.1f} | {r['out'] / 1e6:.1f} "
            f"| {n * r['temp'] / 1e6:.1f} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
