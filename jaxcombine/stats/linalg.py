"""Symmetric eigen-solves and SVDs that cannot deadlock XLA:CPU.

Why this module exists: jaxlib runs a *batched* LAPACK call (``eigh``, ``svd`` of a
stack of matrices, which is what ``vmap`` over starts or styles makes) by handing
the matrices to XLA:CPU's intra-op thread pool and blocking the calling pool thread
until they are done (``jax::ParallelBatchMap``). When as many batched calls run at
once as the pool has threads (a program with two independent ``w2`` terms on a
2-core machine: two styles under their masks, or one program per forced host
device), every pool thread waits for work that no free thread is left to run, and
the program never returns (native stacks: both pool threads in
``lapack_ssyevd_ffi`` → ``ParallelBatchMap`` → ``BlockingCounter::Wait``). A hung
program ignores even SIGTERM. The same re-entrancy is described for XLA's Eigen
pool in PyAutoLabs/PyAutoFit#1530.

The fix here is to never issue a batched call on the CPU: under ``vmap`` these
functions run one matrix at a time there (a ``custom_vmap`` whose rule is a
``lax.map``), and a single matrix runs inline on the calling thread. Measured on
this 2-core CPU it is also faster than the batched call (docs/benchmarks.md). On
GPUs and TPUs the batched call stays: their solvers batch well and block no host
thread pool. Reverse-mode autodiff does not pass through ``custom_vmap``, so the one
differentiated use, :func:`sum_sqrt_eigenvalues`, carries its own VJP.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp


def _one_at_a_time_on_cpu(fn):
    """``fn`` of one matrix; under ``vmap`` on the CPU a ``lax.map`` of single-matrix calls
    (nested ``vmap``s recurse into the same rule), elsewhere the usual batched call (GPU
    solvers batch well, and their batching does not block a host pool)."""
    wrapped = jax.custom_batching.custom_vmap(fn)

    @wrapped.def_vmap
    def rule(axis_size, in_batched, matrix):
        del axis_size
        if jax.default_backend() == "cpu":
            out = jax.lax.map(wrapped, matrix)
        else:
            out = jax.vmap(fn)(matrix)
        return out, jax.tree.map(lambda _: in_batched[0], out)

    return functools.wraps(fn)(wrapped)


@_one_at_a_time_on_cpu
def eigh(matrix: jax.Array) -> tuple[jax.Array, jax.Array]:
    """``jnp.linalg.eigh`` of one symmetric matrix (batched: see the module docstring)."""
    return jnp.linalg.eigh(matrix)


@_one_at_a_time_on_cpu
def svd(matrix: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Thin ``jnp.linalg.svd`` of one matrix (batched: see the module docstring)."""
    return jnp.linalg.svd(matrix, full_matrices=False)


@functools.partial(jax.custom_vjp, nondiff_argnums=(1,))
def sum_sqrt_eigenvalues(matrix: jax.Array, floor: float) -> jax.Array:
    """Σ √λ over the eigenvalues λ of the PSD ``matrix`` above ``floor``·λmax (those
    below count as 0: they are rounding noise, and √λ near 0 would give them an
    unbounded gradient). This is tr(M^½) with M's noise floor removed."""
    return _sum_sqrt_forward(matrix, floor)[0]


def _sum_sqrt_forward(matrix, floor):
    lam, vec = eigh(matrix)
    keep = lam > floor * jnp.max(lam)
    roots = jnp.where(keep, jnp.sqrt(jnp.where(keep, lam, 1.0)), 0.0)
    return jnp.sum(roots), (vec, keep, roots)


def _sum_sqrt_backward(floor, residuals, cotangent):
    # dλᵢ/dM = vᵢvᵢᵀ, so d(Σ√λᵢ)/dM = V diag(1/(2√λᵢ)) Vᵀ over the kept eigenvalues
    # (what JAX's own eigvalsh derivative gives, without its batched eigh).
    vec, keep, roots = residuals
    scale = jnp.where(keep, 0.5 / jnp.where(keep, roots, 1.0), 0.0)
    return (cotangent * (vec * scale[None]) @ vec.T,)


sum_sqrt_eigenvalues.defvjp(_sum_sqrt_forward, _sum_sqrt_backward)
