"""Winograd F(4×4, 3×3) convolution against XLA's direct convolution."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxcombine.io import images
from jaxcombine.networks import model, winograd

DIMS = ("NHWC", "HWIO", "NHWC")


def _direct(x, kernel):
    flat = x.reshape(-1, *x.shape[-3:])
    y = jax.lax.conv_general_dilated(
        flat, kernel, (1, 1), "SAME", dimension_numbers=DIMS, precision="highest"
    )
    return y.reshape(*x.shape[:-1], kernel.shape[-1])


def _close(got, want, rtol_of_max=2e-5):
    got, want = np.asarray(got), np.asarray(want)
    assert got.shape == want.shape
    assert np.abs(got - want).max() <= rtol_of_max * np.abs(want).max()


# Sides that are and are not multiples of the 4×4 output tile, a 1×1 image, extra batch dims.
@pytest.mark.parametrize("shape", [(1, 8, 12, 5), (2, 7, 9, 3), (1, 1, 1, 4), (3, 2, 6, 5, 8)])
def test_forward_and_input_gradient_match_direct(shape):
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.normal(size=shape), jnp.float32)
    kernel = jnp.asarray(rng.normal(size=(3, 3, shape[-1], 6)), jnp.float32)
    u = winograd.kernels(kernel)
    conv = jax.jit(lambda x: winograd.conv3x3(x, u["fwd"], u["bwd"]))
    _close(conv(x), _direct(x, kernel))
    cotangent = jnp.asarray(rng.normal(size=(*shape[:-1], 6)), jnp.float32)
    _close(
        jax.vjp(conv, x)[1](cotangent)[0], jax.vjp(lambda x: _direct(x, kernel), x)[1](cotangent)[0]
    )
    _close(jax.vmap(conv)(x), _direct(x, kernel))  # batching rule of the custom VJP


def _numpy_valid(x, kernel):
    """A stride-1 'VALID' 3×3 convolution in float64, as the sum over the 9 taps."""
    x, kernel = np.asarray(x, np.float64), np.asarray(kernel, np.float64)
    h, w = x.shape[1] - 2, x.shape[2] - 2
    return sum(
        np.einsum("bhwc,co->bhwo", x[:, i : i + h, j : j + w], kernel[i, j])
        for i in range(3)
        for j in range(3)
    )


# Outputs that are and are not multiples of the 4×4 tile, and a single output pixel.
@pytest.mark.parametrize("shape", [(2, 10, 14, 5), (1, 9, 11, 3), (1, 3, 3, 4)])
def test_valid_form_matches_numpy_and_differentiates_in_both_arguments(shape):
    """The form the transform network uses: an input padded already, a kernel that is a
    parameter (transformed inside the program, so gradients reach it)."""
    rng = np.random.default_rng(1)
    x = jnp.asarray(rng.normal(size=shape), jnp.float32)
    kernel = jnp.asarray(rng.normal(size=(3, 3, shape[-1], 6)), jnp.float32)
    conv = jax.jit(winograd.conv3x3_valid)
    _close(conv(x, kernel), _numpy_valid(x, kernel))

    def direct(x, kernel):
        return jax.lax.conv_general_dilated(
            x, kernel, (1, 1), "VALID", dimension_numbers=DIMS, precision="highest"
        )

    cotangent = jnp.asarray(rng.normal(size=(shape[0], shape[1] - 2, shape[2] - 2, 6)))
    got = jax.vjp(conv, x, kernel)[1](cotangent.astype(jnp.float32))
    want = jax.vjp(direct, x, kernel)[1](cotangent.astype(jnp.float32))
    for g, w in zip(got, want):  # the input's gradient, then the kernel's
        _close(g, w)


@pytest.mark.slow
def test_vgg_input_gradient_matches_direct(vgg19):
    """The gradient the optimisation follows, through every Winograd layer, on a real photo."""
    photo = jnp.asarray(images.read(images.CONTENT, size=48))
    taps = ("block1_conv1", "block3_conv1", "block5_conv1")
    arrays = model.trim(vgg19.arrays, taps)

    def grad(conv):
        variables = model.variables(arrays, conv)
        net = model.VGG(taps=taps, conv=conv)
        loss = lambda x: sum(jnp.mean(f**2) for f in net.apply(variables, x).values())  # noqa: E731
        return jax.jit(jax.grad(loss))(photo[None])

    assert model.uses_winograd("block5_conv1", "winograd") and not model.uses_winograd(
        "block1_conv2", "winograd"
    )
    _close(grad("winograd"), grad("xla"), rtol_of_max=1e-4)


def test_winograd_needs_float32_and_its_kernels(vgg19):
    with pytest.raises(model.JaxcombineError, match="needs float32"):
        model.check_conv("winograd", jnp.bfloat16)
    with pytest.raises(model.JaxcombineError, match="unknown conv 'fft'"):
        model.check_conv("fft")
    variables = model.variables(model.trim(vgg19.arrays, ["block2_conv1"]))  # no transforms
    with pytest.raises(model.JaxcombineError, match="conv='winograd' needs the variables"):
        model.VGG(taps=("block2_conv1",), conv="winograd").apply(variables, jnp.zeros((1, 8, 8, 3)))
    assert (
        model.default_conv("cpu") == "winograd" and model.default_conv("cpu", "bfloat16") == "xla"
    )
    assert model.default_conv("gpu") == "xla"
    from jaxcombine.engine import program

    assert (
        program.default_loop("cpu", "winograd") == "scan"
        and program.default_loop("cpu", "xla") == "step"
    )
