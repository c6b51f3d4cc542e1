"""Sample-space (Woodbury) primitives of EF, iEF, SF and FNGD on JAX: the oracle plumbing.

The maths (the Gram and ``J^T w`` from the taps, the damped solve with its fallback, the
near-duplicate filter, ``gram_direction`` and ``woodbury_inverse_apply``) is written once in
``backends/sample_space.py``, and so is the choice of the oracle passes that give ``J``
(``SampleSpace``: the taps of tapped layers, or the dense per-sample gradients where some
trainable parameter is not in a tapped layer). This module binds them to
:data:`backends.jax.ops.JAX_OPS` and keeps the one framework-specific pass: the per-sample gradients of
sampled logit cotangents (:func:`per_sample_cotangent_grads`).

JAX-specific: :func:`damped_solve` chooses between Cholesky and its eigendecomposition fallback
with a ``lax.cond`` on "any NaN in the factor" (no host synchronisation; the fallback only runs
where a factorisation failed), and its ``fallback`` flag is a 0-d bool array.
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
