"""Sample-space (Woodbury) primitives of EF, iEF, SF and FNGD on PyTorch: the oracle plumbing.

The maths (the Gram and ``J^T w`` from the taps, the damped solve with its fallback, the
near-duplicate filter, ``gram_direction`` and ``woodbury_inverse_apply``) is written once in
``backends/sample_space.py``, and so is the choice of the oracle passes that give ``J``
(``SampleSpace``: the taps of tapped layers, or the dense per-sample gradients where some
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
from backends.sample_space import *  # noqa: F403  (the shared maths, re-exported under this backend)
from backends.torch.ops import TORCH_OPS

if TYPE_CHECKING:
    from backends.torch.oracle import TorchOracle


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


_BOUND = shared.SampleSpace(TORCH_OPS, per_sample_cotangent_grads, __name__)
TapJacobian, DenseJacobian = _BOUND.tap_jacobian, _BOUND.dense_jacobian
damped_solve, near_duplicate_keep = _BOUND.damped_solve, _BOUND.near_duplicate_keep
true_jacobian, cotangent_jacobian = _BOUND.true_jacobian, _BOUND.cotangent_jacobian
