"""EF, iEF, SF and FNGD's sample-space maths (``backends/sample_space.py``) bound to PyTorch.

Everything but one pass is shared and re-exported here: :func:`per_sample_cotangent_grads`
(``torch.func.vmap`` of ``grad``) is the dense fallback's ``J`` for sampled cotangents. The
shared :func:`damped_solve` reads ``cholesky_ex``'s status on the host here (one
synchronisation per solve) and its ``fallback`` flag is a Python ``bool``.

On a CPU device in an eager step, the near-duplicate filter of ``gram_direction`` (EF's and
iEF's default) runs the shared formula on a NumPy view of the ``B x B`` Gram
(:func:`near_duplicate_mask`): about 25 operations on a ``32 x 32`` matrix, each a torch
dispatch of 2-4 µs against well under one in NumPy, with the same IEEE operations in the same
order, so the same mask; when it keeps every sample the solve skips its masks, which would
change nothing (docs/profiling.md, "EF and iEF (torch)").
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import torch
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


class HostFilterOps:
    """The operations :func:`backends.sample_space.near_duplicate_keep` uses, on NumPy arrays
    (IEEE double, as torch's CPU kernels: elementwise ops are correctly rounded, the sort is
    stable)."""

    float64 = np.float64

    @staticmethod
    def astype(x: np.ndarray, dtype: Any) -> np.ndarray:
        return x.astype(dtype)

    @staticmethod
    def sqrt(x: np.ndarray) -> np.ndarray:
        return np.sqrt(x)

    @staticmethod
    def maximum(x: np.ndarray, floor: float) -> np.ndarray:
        return np.maximum(x, floor)

    @staticmethod
    def diagonal(x: np.ndarray) -> np.ndarray:
        return np.diagonal(x, axis1=-2, axis2=-1)

    @staticmethod
    def where(cond: np.ndarray, x: Any, y: Any) -> np.ndarray:
        return np.where(cond, x, y)

    @staticmethod
    def abs(x: np.ndarray) -> np.ndarray:
        return np.abs(x)

    @staticmethod
    def argsort(x: np.ndarray) -> np.ndarray:
        return np.argsort(x, axis=-1, kind="stable")

    @staticmethod
    def any(x: np.ndarray, axis: int | None = None) -> np.ndarray:
        return np.any(x, axis=axis)


HOST_FILTER_OPS = HostFilterOps()


def host_readable(k: Tensor) -> bool:
    """A float32/float64 CPU tensor in an eager step (not CUDA, ``torch.compile`` or a
    ``torch.func`` transform): NumPy can read it in place."""
    return (
        k.device.type == "cpu"
        and k.dtype in (torch.float32, torch.float64)
        and not torch.compiler.is_compiling()
        and not torch._C._functorch.is_functorch_wrapped_tensor(k)
    )


def host_near_duplicate_keep(k: Tensor, threshold: float) -> Tensor:
    """:func:`backends.sample_space.near_duplicate_keep` of ``k``: on its NumPy view on the host
    (the same mask, without a torch dispatch per operation), else on torch."""
    if not host_readable(k):
        return shared.near_duplicate_keep(TORCH_OPS, k, threshold)
    return torch.from_numpy(shared.near_duplicate_keep(HOST_FILTER_OPS, k.detach().numpy(), threshold))


def near_duplicate_mask(k: Tensor, threshold: float) -> Tensor | None:
    """The Jacobians' filter in ``gram_direction``: :func:`host_near_duplicate_keep`, or None when
    it ran on the host and keeps every sample (the usual case: the solve then skips its masks,
    which would change nothing)."""
    keep = host_near_duplicate_keep(k, threshold)
    return None if host_readable(k) and keep.numpy().all() else keep


_BOUND = shared.SampleSpace(TORCH_OPS, per_sample_cotangent_grads, __name__, near_duplicate_mask)
TapJacobian, DenseJacobian = _BOUND.tap_jacobian, _BOUND.dense_jacobian
damped_solve, near_duplicate_keep = _BOUND.damped_solve, _BOUND.near_duplicate_keep
true_jacobian, cotangent_jacobian = _BOUND.true_jacobian, _BOUND.cotangent_jacobian
sampled_fisher_apply = _BOUND.sampled_fisher_apply
