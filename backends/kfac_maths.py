"""K-FAC's framework-neutral pieces: factored Tikhonov damping, applying a layer's inverse, and
where ``vec(Wb)`` sits in the canonical flat layout.

The factor statistics and the per-layer inverses built from them are in each backend's
``kfac_factors`` module (``backends/torch/kfac_factors.py``, ``backends/jax/kfac_factors.py``),
whose docstring states the conventions (Martens & Grosse 2015, Sec. 3 and 6.3; Grosse &
Martens 2016, Sec. 3.1; kfac-jax's normalisation); what is written once lives here, on the
array operations of :class:`backends.array_ops.ArrayOps`.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from backends.array_ops import Array, ArrayOps
from backends.layout import TappedLayer


def pi_damped_factors(ops: ArrayOps, A: Array, G: Array, identity_weight: Array) -> tuple[Array, Array]:
    """``(A + c pi I, G + (c / pi) I)`` with ``c = sqrt(identity_weight)`` (Martens & Grosse 2015,
    Sec. 6.3), ``pi = sqrt((tr A / dim A) / (tr G / dim G))`` (kfac-jax's "avg_diag" norm).

    When a trace vanishes both become ``c I`` (kfac-jax's zero case).
    """
    norm_a = ops.sum(ops.diagonal(A)) / A.shape[0]
    norm_g = ops.sum(ops.diagonal(G)) / G.shape[0]
    ok = (norm_a > 0) & (norm_g > 0)
    pi = ops.sqrt(ops.where(ok, norm_a, 1.0) / ops.where(ok, norm_g, 1.0))
    c = ops.sqrt(identity_weight)
    eye_a = ops.eye(A.shape[0], A.dtype, A)
    eye_g = ops.eye(G.shape[0], G.dtype, G)
    A_hat = ops.where(ok, A + (c * pi) * eye_a, c * eye_a)
    G_hat = ops.where(ok, G + (c / pi) * eye_g, c * eye_g)
    return A_hat, G_hat


def exact_eigen_scale(ops: ArrayOps, s_g: Array, s_a: Array, locations: float, weight: Array) -> Array:
    """``1 / (T (s_G s_A^T + weight))`` elementwise with ``weight = gamma^2 / T``, i.e.
    ``1 / (T s_G s_A^T + gamma^2)``: the exact damped inverse of ``T (G kron A) + gamma^2 I`` in
    the factors' eigenbases (kfac-jax ``use_exact_inverses``), eigenvalues clamped at 0."""
    return 1.0 / (locations * (ops.maximum(s_g, 0.0)[:, None] * ops.maximum(s_a, 0.0)[None, :] + weight))


def apply_inverse(inv: Any, X: Array) -> Array:
    """A layer's inverse (``LayerInverse``: ``left``, ``right``, ``eigen_scale``) applied to
    ``X = [W, b]`` (``out x (k+1)``): ``left X right`` (factored), or ``left ((left^T X right) *
    eigen_scale) right^T`` (exact, ``left = U_G``, ``right = U_A``)."""
    if inv.eigen_scale is None:
        return inv.left @ X @ inv.right
    return inv.left @ ((inv.left.T @ X @ inv.right) * inv.eigen_scale) @ inv.right.T


def canonical_index(layer: TappedLayer) -> np.ndarray:
    """Positions (relative to the layer's first parameter) of ``vec_row_major(Wb)`` entries in the
    flat layout (``W`` row-major, then ``b``)."""
    out_dim = layer.weight.shape[0]
    k = layer.weight.size // out_dim
    cols = k + (1 if layer.bias is not None else 0)
    o, i = np.meshgrid(np.arange(out_dim), np.arange(cols), indexing="ij")
    bias_offset = layer.bias.offset if layer.bias is not None else 0
    idx = np.where(i < k, layer.weight.offset + o * k + i, bias_offset + o)
    return (idx - layer.weight.offset).reshape(-1)
