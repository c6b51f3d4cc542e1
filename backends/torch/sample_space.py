"""EF, iEF, SF and FNGD's sample-space maths (``backends/sample_space.py``) bound to PyTorch.

Everything but one pass is shared and re-exported here: :func:`per_sample_cotangent_grads`
(``torch.func.vmap`` of ``grad``) is the dense fallback's ``J`` for sampled cotangents. The
shared :func:`damped_solve` reads ``cholesky_ex``'s status on the host here (one
synchronisation per solve) and its ``fallback`` flag is a Python ``bool``.
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
sampled_fisher_apply = _BOUND.sampled_fisher_apply
