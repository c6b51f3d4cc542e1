"""Sample-space (Woodbury) primitives of EF, iEF, SF and FNGD on PyTorch: the oracle plumbing.

The maths (the Gram and ``J^T w`` from the taps, the damped solve with its fallback, the
near-duplicate filter, ``gram_direction`` and ``woodbury_inverse_apply``) is written once in
``backends/sample_space.py``; this module binds it to :data:`backends.torch.ops.TORCH_OPS` and
says which passes of the oracle give ``J``: the taps of tapped layers (one reverse pass), or,
where some trainable parameter is not in a tapped layer, the dense per-sample gradients
(``oracle.per_sample_grads()`` for the true labels, a vectorised per-sample VJP for sampled
cotangents).

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


def true_jacobian(oracle: TorchOracle, *, with_grad: bool = False) -> SampleJacobian:
    """``J`` for the true labels.

    From the taps when :func:`uses_taps` (the oracle must have been created with
    ``taps=True``): ``with_grad=True`` takes them from the reverse pass that also gives
    ``oracle.grad()`` (for callers that need both); otherwise from a reverse pass of the logit
    gradients for the taps alone (``tap_grads_for``: the parameter-gradient products are
    skipped, so this pass costs less than SGD's backward). Else the dense per-sample gradients
    (one per-sample pass).
    """
    layout = oracle.problem.layout
    if uses_taps(layout):
        cotangents = oracle.tap_grads() if with_grad else oracle.tap_grads_for(oracle.logit_grads())
        return TapJacobian(layout, oracle.tap_inputs(), cotangents)
    return DenseJacobian(layout, oracle.per_sample_grads())


def cotangent_jacobian(oracle: TorchOracle, cotangents: Tensor) -> SampleJacobian:
    """``J`` for logit cotangents ``(D, B, C)`` (e.g. SF's sampled-label gradients), rows
    draw-major: one reverse pass per draw through the oracle's forward (taps), else one
    per-sample pass per draw."""
    layout = oracle.problem.layout
    draws = int(cotangents.shape[0])
    if uses_taps(layout):
        per_draw = [oracle.tap_grads_for(cotangents[i]) for i in range(draws)]
        stacked = [TORCH_OPS.concat([d[k] for d in per_draw]) for k in range(len(layout.tapped))]
        return TapJacobian(layout, oracle.tap_inputs(), stacked, draws=draws)
    rows = TORCH_OPS.concat([per_sample_cotangent_grads(oracle, cotangents[i]) for i in range(draws)])
    return DenseJacobian(layout, rows)
