"""Per-sample square-root factors of the output Hessian, ``Q_n = S_n S_n^T`` (PyTorch).

* ``mse``: ``Q_n = I``, ``S_n = I``.
* ``softmax_ce``: ``Q_n = diag(p) - p p^T = S_n S_n^T`` with ``S_n = diag(sqrt p) - p sqrt(p)^T``
  (``S S^T = diag(p) - 2 p p^T + p (sum p) p^T``). Column ``c`` of ``S_n`` is
  ``sqrt(p_c) (e_c - p)``. ``S_n`` is singular like ``Q_n``; ``S_n (r / sqrt p) = r - p sum_c r_c = r``
  for every ``r`` in ``range(Q_n) = 1^perp``, e.g. the logit gradient ``p - onehot(y)``.

This ``S`` is kfac-jax's Fisher factor of the categorical loss
(``CategoricalLogitsNegativeLogProbLoss.multiply_fisher_factor``: ``sqrt(p) v - p (sqrt(p) . v)``).
Used by EGN (the symmetric output-space solve) and K-FAC (the exact estimate of the
output-gradient factor sums over the columns, ``sum_c S[:, c] S[:, c]^T = Q``, as curvlinops'
type-2 Fisher does with its own square root; curvature propagation uses ``E[S v v^T S^T] = Q``
for Rademacher ``v``).
"""

from __future__ import annotations

import torch
from torch import Tensor


def hessian_factor(likelihood: str, logits: Tensor, dtype: torch.dtype | None = None) -> Tensor | None:
    """``S`` of shape ``(B, C, C)`` with ``Q_n = S_n S_n^T``, or ``None`` for the identity (MSE)."""
    if likelihood != "softmax_ce":
        return None
    p = torch.softmax(logits.to(dtype or logits.dtype), dim=-1)
    sq = p.sqrt()
    return torch.diag_embed(sq) - p.unsqueeze(-1) * sq.unsqueeze(-2)


def factor_columns(likelihood: str, logits: Tensor) -> list[Tensor]:
    """The ``C`` columns ``S[:, :, c]`` (each ``(B, C)``) as logit cotangents; ``sum_c col col^T = Q``."""
    S = hessian_factor(likelihood, logits)
    B, C = logits.shape
    if S is None:
        eye = torch.eye(C, dtype=logits.dtype, device=logits.device)
        return [eye[c].expand(B, C) for c in range(C)]
    return [S[:, :, c] for c in range(C)]


def apply_factor(likelihood: str, logits: Tensor, v: Tensor) -> Tensor:
    """``S_n v_n`` for every sample (``v`` shaped like the logits)."""
    S = hessian_factor(likelihood, logits)
    return v if S is None else torch.einsum("nck,nk->nc", S, v.to(S.dtype))
