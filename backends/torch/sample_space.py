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

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor
from torch.func import grad as func_grad
from torch.func import vmap

from backends import layer_kinds
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


def _plain_linear(jac: shared.TapJacobian) -> bool:
    """Every tapped layer is a Linear on vectors (the base kind; 2-D inputs and cotangents, no
    positions): where the paths below apply, on the raw taps (their factors are the same
    arrays, with the draws split off). Decided once per Jacobian."""
    plain = jac.__dict__.get("_plain_linear")
    if plain is None:
        plain = jac.__dict__["_plain_linear"] = all(
            type(kind) is layer_kinds.LayerKind and a.ndim == 2 and e.ndim == 2
            for kind, a, e in zip(jac.kinds, jac.inputs, jac.cotangents, strict=True)
        )
    return plain


def _linear_rmatvec(jac: shared.TapJacobian, weights: Sequence[Tensor]) -> Tensor:
    """``[vec(E_l^T diag(w_l) A_l), E_l^T w_l]_l`` for Linear layers on vectors, ``weights[l]``
    already shaped to broadcast (``(B, 1)`` against the raw ``e`` for one draw, ``(D, B, 1)``
    against ``e`` as ``(D, B, d_out)`` for ``D``): the layer kind's ``rmatvec`` with its
    operators (one draw: ``e * w[:, None]``, the kind's ``(e * w[None, :, None])[0]``; the
    draws' sum is the kind's), without its per-layer reshapes (docs/profiling.md, "SF (PyTorch)")."""
    draws = jac.draws
    parts: list[Tensor] = []
    for layer, a, e, w in zip(jac.layout.tapped, jac.inputs, jac.cotangents, weights, strict=True):
        ew = e * w if draws == 1 else (e.view(draws, -1, e.shape[-1]) * w).sum(dim=0)
        parts.append((ew.T @ a).view(-1))
        if layer.bias is not None:
            parts.append(ew.sum(dim=0))
    return torch.cat(parts)


def tap_gram_rows(jac: shared.TapJacobian, start: int) -> Tensor:
    """Rows ``start:`` of ``K`` (:meth:`backends.sample_space.TapJacobian.gram_rows`): for
    Linear layers on vectors the kind's ``gram_rows`` with its operators (``A A^T + 1`` added
    in place, the layers' sum accumulated in place: the same roundings) on the raw taps, in
    fewer steps."""
    batch = jac.rows // jac.draws
    if start % batch or not _plain_linear(jac):
        return shared.TapJacobian.gram_rows(jac, start)
    draws = jac.draws
    kept = draws - start // batch
    k: Tensor | None = None
    for layer, a, e in zip(jac.layout.tapped, jac.inputs, jac.cotangents, strict=True):
        aa = a @ a.T
        if layer.bias is not None:
            aa.add_(1.0)
        rows = e[start:] if start else e
        if draws == 1:
            g = (rows @ rows.T).mul_(aa)
        else:
            g = (rows @ e.T).view(kept, batch, draws, batch).mul_(aa.unsqueeze(1))
        k = g if k is None else k.add_(g)
    assert k is not None
    return k.view(kept * batch, draws * batch)


def tap_rmatvec(jac: shared.TapJacobian, w: Tensor) -> Tensor:
    """``J^T w`` (:meth:`backends.sample_space.TapJacobian.rmatvec`)."""
    if not _plain_linear(jac):
        return shared.TapJacobian.rmatvec(jac, w)
    shaped = w.unsqueeze(1) if jac.draws == 1 else w.view(jac.draws, -1, 1)  # once for every layer
    return _linear_rmatvec(jac, [shaped] * len(jac.factors))


def tap_rmatvec_groups(jac: shared.TapJacobian, w: Tensor) -> Tensor:
    """``[J_l^T w_l]_l`` (:meth:`backends.sample_space.TapJacobian.rmatvec_groups`)."""
    if not _plain_linear(jac):
        return shared.TapJacobian.rmatvec_groups(jac, w)
    shaped = w.unsqueeze(-1) if jac.draws == 1 else w.view(w.shape[0], jac.draws, -1, 1)
    return _linear_rmatvec(jac, shaped.unbind(0))


_TINY64 = float(torch.finfo(torch.float64).tiny)


def damped_solve(k: Tensor, rhs: Tensor, shift: float | Tensor, keep: Tensor | None = None) -> shared.DampedSolve:
    """:func:`backends.sample_space.damped_solve` where Cholesky succeeds, with its operators
    in its order (the same bits) and fewer of them: the diagonal shift added in place to the
    float64 copy of ``k`` (no second copy where ``k`` is float32), the factor's solution kept as
    a column for the residual's product (no re-expansion). With a mask, a per-system shift, or
    a failed factorisation (then solved again there, down its fallback), the shared function."""
    if keep is not None or not isinstance(shift, (int, float)):
        return shared.damped_solve(TORCH_OPS, k, rhs, shift, keep)
    k64 = k.to(torch.float64)
    damped = k64.clone() if k64 is k else k64  # ``k`` itself (float64) stays as it is
    damped.diagonal(dim1=-2, dim2=-1).add_(float(shift))
    chol, info = torch.linalg.cholesky_ex(damped)
    if info.any() if info.ndim else info:
        return shared.damped_solve(TORCH_OPS, k, rhs, shift, keep)
    b64 = rhs.to(torch.float64)
    x = torch.cholesky_solve(b64.unsqueeze(-1), chol)
    resid = torch.linalg.vector_norm((damped @ x).squeeze(-1) - b64, dim=-1)
    ratio = resid / torch.linalg.vector_norm(b64, dim=-1).clamp_min(_TINY64)
    worst = ratio if ratio.ndim == 0 else ratio.reshape(-1).amax(dim=0)
    return shared.DampedSolve(x.squeeze(-1).to(k.dtype), worst, False)


_BOUND = shared.SampleSpace(
    TORCH_OPS,
    per_sample_cotangent_grads,
    __name__,
    near_duplicate_mask,
    {"gram_rows": tap_gram_rows, "rmatvec": tap_rmatvec, "rmatvec_groups": tap_rmatvec_groups},
    damped_solve,
)
TapJacobian, DenseJacobian = _BOUND.tap_jacobian, _BOUND.dense_jacobian
near_duplicate_keep = _BOUND.near_duplicate_keep
true_jacobian, cotangent_jacobian = _BOUND.true_jacobian, _BOUND.cotangent_jacobian
sampled_fisher_apply = _BOUND.sampled_fisher_apply
