"""A/B of the transformation network's output layer: ``lax.conv`` against ``conv_by_taps``.

    python scripts/output_conv_ab.py [SIZE]

Traces the width-32, 5-block network's forward twice, once as it is (the output 9x9 conv
by :func:`jaxcombine.train.network.conv_by_taps`) and once with that layer's convolution
swapped back to ``lax.conv_general_dilated``; times both interleaved (compile excluded,
``block_until_ready``, median of 5) on one SIZE x SIZE image and prints the ratio. Only the
ratio means anything on a machine other sessions load.
"""

import statistics
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from jaxcombine.train import network


def main() -> None:
    size = int(sys.argv[1]) if len(sys.argv) > 1 else 512
    net = network.TransformNet(width=32, res_blocks=5)
    params = network.init(net, jax.random.key(0))
    x = jnp.asarray(np.random.default_rng(0).uniform(0, 255, (1, size, size, 3)), jnp.float32)
    after = jax.jit(lambda p, x: network.forward(net, p, x)).lower(params, x).compile()
    by_taps = network._conv_by_taps
    network._conv_by_taps = lambda lhs, rhs, strides, padding, **kw: lax.conv_general_dilated(
        lhs, rhs, strides, padding, **kw
    )
    try:
        before = jax.jit(lambda p, x: network.forward(net, p, x)).lower(params, x).compile()
    finally:
        network._conv_by_taps = by_taps
    diff = np.abs(np.asarray(after(params, x)) - np.asarray(before(params, x))).max()
    print(f"{size}x{size}: max |taps - lax.conv| = {diff:.2g} grey levels")
    times: dict[str, list[float]] = {"lax.conv": [], "by taps": []}
    for _ in range(5):
        for name, program in (("lax.conv", before), ("by taps", after)):
            t = time.perf_counter()
            jax.block_until_ready(program(params, x))
            times[name].append(time.perf_counter() - t)
    for name, ts in times.items():
        print(f"{name}: median {1e3 * statistics.median(ts):.0f} ms, min {1e3 * min(ts):.0f} ms")
    ratio = statistics.median(times["lax.conv"]) / statistics.median(times["by taps"])
    print(f"ratio lax.conv / by taps (medians): {ratio:.2f}")


if __name__ == "__main__":
    main()
