"""Sample-space (Woodbury) primitives of EF, iEF, SF and FNGD on JAX: the oracle plumbing.

The maths (the Gram and ``J^T w`` from the taps, the damped solve with its fallback, the
near-duplicate filter, ``gram_direction`` and ``woodbury_inverse_apply``) is written once in
``backends/sample_space.py``; this module binds it to :data:`backends.jax.ops.JAX_OPS` (pure
``jax.numpy``, run inside a jitted step) and says which passes of the oracle give ``J``: the
taps of tapped layers (one reverse pass), or, where some trainable parameter is not in a
tapped layer, the dense per-sample gradients (``oracle.per_sample_grads()`` for the true
labels, a vectorised per-sample VJP for sampled cotangents). Same operations, conventions and
pass counts as ``backends/torch/sample_space.py``.

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
from backends.sample_space import (
    DampedSolve,
    GramDirection,
    SampleJacobian,
    WoodburyApply,
    block_spans,
    gram_direction,
    positions_gram_path,
    uses_taps,
    woodbury_inverse_apply,
)

if TYPE_CHECKING:
    from backends.jax.oracle import JaxOracle

Array = jax.Array

__all__ = [
    "DampedSolve",
    "DenseJacobian",
    "GramDirection",
    "SampleJacobian",
    "TapJacobian",
    "WoodburyApply",
    "block_spans",
    "cotangent_jacobian",
    "damped_solve",
    "gram_direction",
    "near_duplicate_keep",
    "per_sample_cotangent_grads",
    "positions_gram_path",
    "true_jacobian",
    "uses_taps",
    "woodbury_inverse_apply",
]


class TapJacobian(shared.TapJacobian):
    """``J`` of an all-tapped model from its taps (``backends.sample_space.TapJacobian``)."""

    ops = JAX_OPS


class DenseJacobian(shared.DenseJacobian):
    """``J`` held explicitly (models with untapped trainable parameters)."""

    ops = JAX_OPS


def damped_solve(k: Array, rhs: Array, shift: float | Array, keep: Array | None = None) -> DampedSolve:
    """``(K + shift I) x = rhs`` in float64 (``backends.sample_space.damped_solve``)."""
    return shared.damped_solve(JAX_OPS, k, rhs, shift, keep)


def near_duplicate_keep(k: Array, threshold: float) -> Array:
    """The iEF code's near-duplicate filter (``backends.sample_space.near_duplicate_keep``)."""
    return shared.near_duplicate_keep(JAX_OPS, k, threshold)


def per_sample_cotangent_grads(oracle: JaxOracle, cotangent: Array) -> Array:
    """Rows ``Jz_n^T R_n`` for logit cotangents ``R`` (``B x C``): per-sample gradients of
    ``sum_n R_n . z_n`` by one vectorised per-sample pass (counted as ``per_sample``)."""
    problem = oracle.problem

    def single(flat: Array, x: Array, r: Array) -> Array:
        return jnp.sum(problem.apply(flat, x[None])[0] * r)

    problem.counters.add("per_sample")
    r = jax.lax.stop_gradient(cotangent).astype(oracle.params.dtype)
    return jax.vmap(jax.grad(single), in_axes=(None, 0, 0))(oracle.params, oracle.batch.x, r)


def true_jacobian(oracle: JaxOracle, *, with_grad: bool = False) -> SampleJacobian:
    """``J`` for the true labels.

    From the taps when :func:`uses_taps` (the oracle must have been created with
    ``taps=True``): ``with_grad=True`` takes them from the reverse pass that also gives
    ``oracle.grad()`` (for callers that need both); otherwise from a reverse pass of the logit
    gradients for the taps alone (``tap_grads_for``; under ``jit`` XLA drops the unused
    parameter-gradient products). Else the dense per-sample gradients (one per-sample pass).
    """
    layout = oracle.problem.layout
    if uses_taps(layout):
        cotangents = oracle.tap_grads() if with_grad else oracle.tap_grads_for(oracle.logit_grads())
        return TapJacobian(layout, oracle.tap_inputs(), cotangents)
    return DenseJacobian(layout, oracle.per_sample_grads())


def cotangent_jacobian(oracle: JaxOracle, cotangents: Array) -> SampleJacobian:
    """``J`` for logit cotangents ``(D, B, C)`` (e.g. SF's sampled-label gradients), rows
    draw-major: one reverse pass per draw through the oracle's forward (taps), else one
    per-sample pass per draw."""
    layout = oracle.problem.layout
    draws = int(cotangents.shape[0])
    if uses_taps(layout):
        per_draw = [oracle.tap_grads_for(cotangents[i]) for i in range(draws)]
        stacked = [JAX_OPS.concat([d[k] for d in per_draw]) for k in range(len(layout.tapped))]
        return TapJacobian(layout, oracle.tap_inputs(), stacked, draws=draws)
    rows = JAX_OPS.concat([per_sample_cotangent_grads(oracle, cotangents[i]) for i in range(draws)])
    return DenseJacobian(layout, rows)
