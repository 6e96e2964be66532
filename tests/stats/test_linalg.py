"""Eigen-solves that cannot deadlock XLA:CPU (jaxcombine.stats.linalg), and the runs that used to."""

import json
import os
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import recipe_files
from cli_run import cpu_env, host_devices
from PIL import Image
from recipe_files import term

from jaxcombine.stats import linalg

PAINTING = Path(__file__).parents[2] / "jaxcombine" / "data" / "starry_night.jpg"
W2_SHALLOW = {
    "terms": [
        term("style", ["block1_conv1", "block2_conv1"], "w2"),
        term("content", "block2_conv1"),
    ]
}


def test_sum_sqrt_eigenvalues_matches_eigvalsh_value_and_gradient():
    a = jnp.asarray(np.random.default_rng(0).normal(size=(3, 20, 8)).astype(np.float32))

    def ours(x):
        return linalg.sum_sqrt_eigenvalues(x.T @ x, 1e-8)

    def reference(x):
        return jnp.sum(jnp.sqrt(jnp.linalg.eigvalsh(x.T @ x)))  # all eigenvalues well above 0

    # Two eigen-solves of one float32 matrix (ours one at a time, the reference batched)
    # may differ by LAPACK's error, about ε·m·λmax per eigenvalue: √λ by that over 2√λ, the
    # gradient A V Λ^-½ Vᵀ through eigenvectors turned by up to ε·m·λmax/gap. Derived from
    # the matrices in float64, not tuned to one CPU (issue 20, item 13).
    eps = float(np.finfo(np.float32).eps)
    lam = np.linalg.eigvalsh(np.einsum("bpc,bpd->bcd", *(np.asarray(a, np.float64),) * 2))
    noise = eps * lam.shape[-1] * lam.max(axis=-1, keepdims=True)  # (3, 1)
    value_err = np.sum(noise / (2 * np.sqrt(lam)), axis=-1)
    gap = np.min(np.diff(lam, axis=-1), axis=-1)
    grad_err = np.max(noise[:, 0] / gap / np.sqrt(lam[:, 0])) * np.abs(a).max() * lam.shape[-1]
    value, want = jax.jit(jax.vmap(ours))(a), jax.jit(jax.vmap(reference))(a)
    assert np.all(np.abs(value - want) <= 2 * value_err), (value - want, value_err)
    assert np.all(value_err < 1e-5 * want)  # a tight check still
    grad = lambda f: jax.jit(jax.grad(lambda x: jax.vmap(f)(x).sum()))(a)  # noqa: E731
    grads = grad(ours)
    np.testing.assert_allclose(grads, grad(reference), atol=2 * grad_err)
    assert np.abs(grads).max() > 0.01 and grad_err < 1e-2 * np.abs(grads).max()


def test_eigenvalues_below_the_floor_give_no_value_and_no_gradient():
    vec = np.linalg.qr(np.random.default_rng(1).normal(size=(4, 4)))[0].astype(np.float32)
    m = jnp.asarray(vec @ np.diag([4.0, 1.0, 1e-12, 0.0]).astype(np.float32) @ vec.T)
    value, grad = jax.value_and_grad(lambda x: linalg.sum_sqrt_eigenvalues(x, 1e-8))(m)
    assert abs(float(value) - 3.0) < 1e-5
    assert np.isfinite(np.asarray(grad)).all()
    np.testing.assert_allclose(
        vec.T @ np.asarray(grad) @ vec, np.diag([0.25, 0.5, 0, 0]), atol=1e-5
    )


def lapack_shapes(fn, stack) -> list[str]:
    """The operand type of every LAPACK call in ``fn``'s lowered program."""
    text = jax.jit(fn).lower(stack).as_text()
    return [
        line.split("(tensor<")[1].split(">")[0] for line in text.splitlines() if "lapack_" in line
    ]


def test_vmapped_solves_never_issue_a_batched_lapack_call_on_the_cpu():
    """A batched eigh/svd blocks an XLA:CPU pool thread on work queued to the same pool
    (the deadlock this module avoids): under vmap, nested too, only single matrices
    reach LAPACK."""
    stack = jnp.ones((3, 6, 6), jnp.float32)
    for fn in (linalg.eigh, linalg.svd, jax.grad(lambda m: linalg.sum_sqrt_eigenvalues(m, 1e-8))):
        assert lapack_shapes(jax.vmap(fn), stack) == ["6x6xf32"], fn
    assert lapack_shapes(jax.vmap(jax.vmap(linalg.eigh)), jnp.ones((2, 3, 6, 6))) == ["6x6xf32"]


def test_other_backends_keep_the_batched_call(monkeypatch):
    """GPU solvers batch well and block no host pool: there the batch stays one call."""
    monkeypatch.setattr(jax, "default_backend", lambda: "gpu")
    assert lapack_shapes(jax.vmap(linalg.eigh), jnp.ones((3, 6, 6))) == ["3x6x6xf32"]


@pytest.mark.slow
def test_w2_under_two_style_masks_with_starts_over_two_devices_finishes(tmp_path):
    """Hung before jaxcombine.stats.linalg on a 2-core machine: two styles, each under its mask,
    with a w2 recipe, two vmapped starts per device (a rolled loop: auto), two host devices.
    Pinned to two cores, where XLA:CPU's pool has two threads, on any machine. Two w2
    layers are enough: before, this hung as the w2 preset did. The configuration (devices,
    cores, starts, styles, masks, size, steps, chunk) is the one that hung: keep it as is."""
    recipe_files.write(tmp_path / "w2.toml", W2_SHALLOW)
    half = np.zeros((32, 32), np.uint8)
    half[:, 16:] = 255
    Image.fromarray(half).save(tmp_path / "right.png")
    Image.fromarray(255 - half).save(tmp_path / "left.png")
    texture = np.random.default_rng(2).integers(0, 256, (48, 48, 3), dtype=np.uint8)
    Image.fromarray(texture).save(tmp_path / "noise.png")
    cores = sorted(os.sched_getaffinity(0))[:2]
    env = cpu_env(**host_devices(2))
    pinned = (
        "import os, runpy, sys; os.sched_setaffinity(0, {cores}); sys.argv[0] = 'jaxcombine'; "
        "runpy.run_module('jaxcombine', run_name='__main__')"
    ).format(cores=cores)
    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            pinned,
            "run",
            "--recipe",
            tmp_path / "w2.toml",
            "--size",
            "32",
            "--steps",
            "4",
            "--chunk",
            "2",
            "--init",
            "content,noise,noise:1,style",
            "--style",
            PAINTING,
            "--style",
            tmp_path / "noise.png",
            "--style-mask",
            tmp_path / "left.png",
            "--style-mask",
            tmp_path / "right.png",
            "--out",
            tmp_path / "out",
            "--quiet",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert len(list((tmp_path / "out").glob("*.png"))) == 4
    record = json.loads((tmp_path / "out" / "content.json").read_text())
    assert record["loop"] == "scan" and len(record["environment"]["devices"]) == 2
