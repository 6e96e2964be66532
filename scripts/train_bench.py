"""Feed-forward timings: ``stylize`` per image after compilation, and a training step's FLOPs.

    python scripts/train_bench.py NET_FOLDER [--sizes 512,1024] [--conv xla,winograd] [--repeats 5]

Times one forward of the trained network in NET_FOLDER per size and per algorithm of its 3x3
convolutions (``stylize --conv``; batch 1, compile excluded, ``block_until_ready``; the
algorithms' repeats interleaved, the median of ``--repeats``) and prints XLA's FLOP count of
the forward (a direct convolution's: Winograd's own count is lower) and of a training step at
that folder's configuration (batch, crop).
"""

import argparse
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np

from jaxcombine.networks import model
from jaxcombine.options.config import TrainConfig
from jaxcombine.train import objective, photos, stylize, trainer


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("net")
    ap.add_argument("--sizes", default="512")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--conv", default="auto", help="comma-separated: auto, xla, winograd")
    ap.add_argument("--step-flops", action="store_true", help="also a training step's FLOPs")
    args = ap.parse_args()
    trained = stylize.load(args.net)  # read once; each algorithm is the same network
    nets = {conv: trained.net.clone(conv=model.conv_for(conv)) for conv in args.conv.split(",")}
    params = stylize._select(trained.params, 0)
    print(
        f"device: {jax.devices()[0].device_kind}, net width {trained.net.width}, "
        f"{trained.net.res_blocks} residual blocks"
    )
    reference = next(iter(nets))  # the other outputs are compared with this one's
    for size in map(int, args.sizes.split(",")):
        x = jnp.asarray(np.random.default_rng(0).uniform(0, 255, (1, size, size, 3)), jnp.float32)
        index = jnp.zeros((1,), jnp.int32)
        first, times, outputs = {}, {conv: [] for conv in nets}, {}
        for conv, net in nets.items():
            start = time.perf_counter()
            outputs[conv] = np.asarray(stylize._forward(net, params, x, index))
            first[conv] = time.perf_counter() - start
        for _ in range(args.repeats):  # interleaved: a slower minute slows every algorithm
            for conv, net in nets.items():
                start = time.perf_counter()
                jax.block_until_ready(stylize._forward(net, params, x, index))
                times[conv].append(time.perf_counter() - start)
        direct = trained.net.clone(conv="xla")  # FLOPs counted as direct convolutions
        flops = stylize._forward.lower(direct, params, x, index).compile().cost_analysis()
        flops = flops.get("flops", float("nan")) if isinstance(flops, dict) else float("nan")
        for conv, net in nets.items():
            print(
                f"stylize {size}x{size} conv {net.conv}: "
                f"{1e3 * statistics.median(times[conv]):.0f} ms/image "
                f"(min {1e3 * min(times[conv]):.0f}, first call {first[conv]:.1f} s), "
                f"{flops / 1e9:.1f} GFLOP direct, max |diff| to {reference} "
                f"{np.abs(outputs[conv] - outputs[reference]).max():.4f} grey levels"
            )
    if args.step_flops:
        config = TrainConfig(**trained.meta["config"])
        tr = trainer.prepare(config, warn=lambda line: None)
        state = objective.init_state(tr.objective.net, 0, tr.nets, config.lr)
        batch = photos.batch(tr.photos.train, 0, 0, size=config.batch, crop=config.crop, zoom=1.0)
        lowered = objective.step.lower(
            tr.objective, state, tr.variables, tr.targets, batch,
            np.zeros((config.batch,), np.int32), trainer.losses.weights(tr.recipe),
            objective.step_key(0, 0),
        )  # fmt: skip
        cost = lowered.compile().cost_analysis()
        cost = cost.get("flops", float("nan")) if isinstance(cost, dict) else float("nan")
        print(
            f"training step (batch {config.batch}, {config.crop}px, {tr.nets} net(s)): "
            f"{cost / 1e9:.1f} GFLOP"
        )


if __name__ == "__main__":
    main()
