"""The shared sample-space maths of ``backends/sample_space.py`` on JAX arrays (``JAX_OPS``).

Run inside a jitted step; what is JAX's own is the per-sample pass of sampled cotangents
(:func:`per_sample_cotangent_grads`, ``jax.vmap`` of ``jax.grad``) and, in the shared
:func:`damped_solve`, a ``lax.cond`` on NaNs in the Cholesky factor (no host synchronisation;
``fallback`` is a 0-d bool array). Pass counts and conventions match the torch module.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import jax
import jax.numpy as jnp

from backends import sample_space as shared
from backends.jax.ops import JAX_OPS
from backends.sample_space import *  # noqa: F403  (the shared maths, re-exported under this backend)

if TYPE_CHECKING:
    from backends.jax.oracle import JaxOracle

Array = jax.Array


def per_sample_cotangent_grads(oracle: JaxOracle, cotangent: Array) -> Array:
    """Rows ``Jz_n^T R_n`` for logit cotangents ``R`` (``B x C``): per-sample gradients of
    ``sum_n R_n . z_n`` by one vectorised per-sample pass (counted as ``per_sample``)."""
    problem = oracle.problem

    def single(flat: Array, x: Array, r: Array) -> Array:
        return jnp.sum(problem.apply(flat, x[None])[0] * r)

    problem.counters.add("per_sample")
    r = jax.lax.stop_gradient(cotangent).astype(oracle.params.dtype)
    return jax.vmap(jax.grad(single), in_axes=(None, 0, 0))(oracle.params, oracle.batch.x, r)


_BOUND = shared.SampleSpace(JAX_OPS, per_sample_cotangent_grads, __name__)
TapJacobian, DenseJacobian = _BOUND.tap_jacobian, _BOUND.dense_jacobian
damped_solve, near_duplicate_keep = _BOUND.damped_solve, _BOUND.near_duplicate_keep
true_jacobian, cotangent_jacobian = _BOUND.true_jacobian, _BOUND.cotangent_jacobian
sampled_fisher_apply = _BOUND.sampled_fisher_apply
