"""Sample-space (Woodbury) primitives of EF, iEF, SF and FNGD on PyTorch: the oracle plumbing.

The maths (the Gram and ``J^T w`` from the taps, the damped solve with its fallback, the
near-duplicate filter, ``gram_direction`` and ``woodbury_inverse_apply``) is written once in
``backends/sample_space.py``, and so is the choice of the oracle passes that give ``J``
(``OracleJacobians``: the taps of tapped layers, or the dense per-sample gradients where some
trainable parameter is not in a tapped layer). This module binds them to
:data:`backends.torch.ops.TORCH_OPS` and keeps the one framework-specific pass: the per-sample gradients of
sampled logit cotangents (:func:`per_sample_cotangent_grads`).

Torch-specific: :func:`damped_solve` decides between Cholesky and its eigendecomposition
fallback by reading ``cholesky_ex``'s status on the host (one synchronisation per solve), and
its ``fallback`` flag is a Python ``bool``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from torch import Tensor
from torch.func import grad as func_grad
from torch.func import vmap

from backends import sample_space as shared
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
from backends.torch.ops import TORCH_OPS

if TYPE_CHECKING:
    from backends.torch.oracle import TorchOracle

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

    ops = TORCH_OPS


class DenseJacobian(shared.DenseJacobian):
    """``J`` held explicitly (models with untapped trainable parameters)."""

    ops = TORCH_OPS


def damped_solve(k: Tensor, rhs: Tensor, shift: float | Tensor, keep: Tensor | None = None) -> DampedSolve:
    """``(K + shift I) x = rhs`` in float64 (``backends.sample_space.damped_solve``)."""
    return shared.damped_solve(TORCH_OPS, k, rhs, shift, keep)


def near_duplicate_keep(k: Tensor, threshold: float) -> Tensor:
    """The iEF code's near-duplicate filter (``backends.sample_space.near_duplicate_keep``)."""
    return shared.near_duplicate_keep(TORCH_OPS, k, threshold)


def per_sample_cotangent_grads(oracle: TorchOracle, cotangent: Tensor) -> Tensor:
    """Rows ``Jz_n^T R_n`` for logit cotangents ``R`` (``B x C``): per-sample gradients of
    ``sum_n R_n . z_n`` by one vectorised per-sample pass (counted as ``per_sample``)."""
    model = oracle.problem.fmodel

    def single(flat: Tensor, x: Tensor, r: Tensor) -> Tensor:
        return (model(flat, x.unsqueeze(0)).squeeze(0) * r).sum()

    oracle.problem.counters.add("per_sample")
    return vmap(func_grad(single), in_dims=(None, 0, 0))(
        oracle.params, oracle.batch.x, cotangent.to(oracle.params.dtype)
    )


#: ``J`` from this backend's oracle (``backends.sample_space.OracleJacobians``).
_JACOBIANS = shared.OracleJacobians(TapJacobian, DenseJacobian, per_sample_cotangent_grads)
true_jacobian = _JACOBIANS.true_jacobian
cotangent_jacobian = _JACOBIANS.cotangent_jacobian
