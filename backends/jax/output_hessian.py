"""Per-sample square-root factors of the output Hessian, ``Q_n = S_n S_n^T`` (JAX).

The same factors as ``backends/torch/output_hessian.py``:

* ``mse``: ``Q_n = I``, ``S_n = I``;
* ``softmax_ce``: ``S_n = diag(sqrt p) - p sqrt(p)^T`` (column ``c`` is ``sqrt(p_c) (e_c - p)``),
  so ``S_n S_n^T = diag(p) - p p^T``; ``S_n (r / sqrt p) = r`` for every ``r`` in
  ``range(Q_n) = 1^perp``. This is kfac-jax's Fisher factor of the categorical loss
  (``CategoricalLogitsNegativeLogProbLoss.multiply_fisher_factor``).

Used by K-FAC (the exact factor estimator sums over the ``C`` columns; curvature propagation
uses ``E[S v v^T S^T] = Q`` for Rademacher ``v``) and EGN (the symmetric output-space solve).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

Array = jax.Array


def hessian_factor(likelihood: str, logits: Array, dtype: jnp.dtype | None = None) -> Array | None:
    """``S`` of shape ``(B, C, C)`` with ``Q_n = S_n S_n^T``, or ``None`` for the identity (MSE)."""
    if likelihood != "softmax_ce":
        return None
    p = jax.nn.softmax(logits.astype(dtype or logits.dtype), axis=-1)
    sq = jnp.sqrt(p)
    return jax.vmap(jnp.diag)(sq) - p[:, :, None] * sq[:, None, :]


def factor_columns(likelihood: str, logits: Array) -> Array:
    """The ``C`` columns ``S[:, :, c]`` stacked as logit cotangents ``(C, B, C)``; ``sum_c col col^T = Q``."""
    S = hessian_factor(likelihood, logits)
    B, C = logits.shape
    if S is None:
        return jnp.broadcast_to(jnp.eye(C, dtype=logits.dtype)[:, None, :], (C, B, C))
    return jnp.transpose(S, (2, 0, 1))


def apply_factor(likelihood: str, logits: Array, v: Array) -> Array:
    """``S_n v_n`` for every sample (``v`` shaped like the logits)."""
    S = hessian_factor(likelihood, logits)
    return v if S is None else jnp.einsum("nck,nk->nc", S, v.astype(S.dtype))
