"""K-FAC's framework-neutral maths: damped inverses of the Kronecker factors, the
block-diagonal preconditioner, the two-dimensional quadratic model and the damping adaptation.

The factor statistics ``A``, ``G`` are collected per backend (``backends/torch/kfac_factors.py``,
``backends/jax/kfac_factors.py``, whose docstring states the conventions: Martens & Grosse 2015,
Sec. 3 and 6.3; Grosse & Martens 2016, Sec. 3.1; kfac-jax's normalisation). Everything built from
them is written once here, on the array operations of :class:`backends.array_ops.ArrayOps`:

* :func:`layer_inverse`: ``(T (G kron A) + gamma^2 I)^{-1}`` of one block, factored with pi
  (Sec. 6.3) or exact in the factors' eigenbases; inverses in float64, stored in the factors'
  dtype;
* :func:`precondition`: the block-diagonal inverse applied to a flat vector (untapped entries
  scaled);
* :func:`quadratic_step`: ``(alpha, mu)`` minimising the exact quadratic model over
  ``span{p, delta_prev}`` from the JVP tangents (Sec. 7; kfac-jax ``_solve_quad_model``), and
  :func:`adapt_damping`: ``rho`` and the Levenberg-Marquardt update of ``lambda`` (Sec. 6.5).

Scalars (lambda, rho, the model's coefficients) are 0-d float64 arrays. What stays per backend
is the oracle plumbing (which passes give the taps and the tangents) and the control flow
(``lax.cond``/``lax.switch`` under ``jit``, Python branches in torch).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np

from backends import damping as lm
from backends import layer_kinds
from backends.array_ops import Array, ArrayOps
from backends.layout import ParamLayout, TappedLayer
from backends.methods.kfac import KFACHyperparams, lm_rule


class LayerInverse(NamedTuple):
    """How to apply ``(T G kron A + gamma^2 I)^{-1}`` to ``X = grad Wb``.

    Factored (``eigen_scale is None``): ``left @ X @ right`` with ``left, right`` the inverses of the
    damped factors (``1/T`` folded into ``left``). Exact: ``left @ ((left^T X right) * eigen_scale)
    @ right^T`` with ``left = U_G``, ``right = U_A``.
    """

    left: Array
    right: Array
    eigen_scale: Array | None = None


# --------------------------------------------------------------------------- damping and inverses


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


def spd_inverse(ops: ArrayOps, M: Array) -> Array:
    """Inverse of a symmetric positive-definite matrix by Cholesky, in float64, symmetrised first."""
    M64 = ops.astype(M, ops.float64)
    return ops.astype(ops.spd_inverse(0.5 * (M64 + M64.T)), M.dtype)


def layer_inverse(ops: ArrayOps, A: Array, G: Array, damping: Any, locations: int, form: str = "pi") -> LayerInverse:
    """The damped inverse of one block ``T (G kron A) + damping I`` (``form="pi"``: factored
    Tikhonov, :func:`pi_damped_factors` at ``c = sqrt(damping / T)``; ``"exact"``:
    :func:`exact_eigen_scale` in the eigenbases of ``A`` and ``G``). Computed in float64, returned in
    the factors' dtype."""
    T = float(locations)
    weight = ops.asarray(damping, ops.float64, A) / T
    dtype = A.dtype
    A64, G64 = ops.astype(A, ops.float64), ops.astype(G, ops.float64)
    if form == "pi":
        A_hat, G_hat = pi_damped_factors(ops, A64, G64, weight)
        return LayerInverse(ops.astype(spd_inverse(ops, G_hat) / T, dtype), ops.astype(spd_inverse(ops, A_hat), dtype))
    s_a, U_a = ops.eigh(A64)
    s_g, U_g = ops.eigh(G64)
    scale = exact_eigen_scale(ops, s_g, s_a, T, weight)
    return LayerInverse(ops.astype(U_g, dtype), ops.astype(U_a, dtype), ops.astype(scale, dtype))


def apply_inverse(inv: Any, X: Array) -> Array:
    """A layer's inverse (``LayerInverse``: ``left``, ``right``, ``eigen_scale``) applied to
    ``X = [W, b]`` (``out x (k+1)``): ``left X right`` (factored), or ``left ((left^T X right) *
    eigen_scale) right^T`` (exact, ``left = U_G``, ``right = U_A``)."""
    if inv.eigen_scale is None:
        return inv.left @ X @ inv.right
    return inv.left @ ((inv.left.T @ X @ inv.right) * inv.eigen_scale) @ inv.right.T


# --------------------------------------------------------------------------- flat vectors


def layer_matrix(ops: ArrayOps, layer: TappedLayer, vec: Array) -> Array:
    """``[W, b]`` of ``layer`` in the flat vector ``vec`` as an ``out x (k+1)`` matrix."""
    out_dim = layer.weight.shape[0]
    W = vec[layer.weight.offset : layer.weight.stop].reshape(out_dim, -1)
    if layer.bias is None:
        return W
    return ops.concat([W, vec[layer.bias.offset : layer.bias.stop][:, None]], axis=1)


def flat_from_layers(
    ops: ArrayOps,
    layout: ParamLayout,
    matrices: Sequence[Array],
    vec: Array | None = None,
    untapped_scale: float | Array = 1.0,
) -> Array:
    """The flat vector whose tapped layers hold ``matrices[i]`` (``[W, b]``) and whose untapped
    entries are ``vec``'s times ``untapped_scale`` (``vec`` is needed only if there are any); the
    tapped and untapped blocks must tile the flat layout."""
    pieces: list[tuple[int, Array]] = []
    for layer, M in zip(layout.tapped, matrices, strict=True):
        k = layer.weight.size // layer.weight.shape[0]
        pieces.append((layer.weight.offset, M[:, :k].reshape(-1)))
        if layer.bias is not None:
            pieces.append((layer.bias.offset, M[:, k]))
    for blk in layout.untapped:
        assert vec is not None, "untapped parameters need the input vector"
        pieces.append((blk.offset, vec[blk.offset : blk.stop] * untapped_scale))
    return ops.concat([piece for _, piece in sorted(pieces, key=lambda item: item[0])])


def precondition(
    ops: ArrayOps,
    layout: ParamLayout,
    inverses: Sequence[LayerInverse],
    vec: Array,
    untapped_scale: float | Array = 1.0,
) -> Array:
    """The block-diagonal K-FAC inverse applied to a flat vector; untapped entries times
    ``untapped_scale``."""
    matrices = [
        apply_inverse(inv, layer_matrix(ops, layer, vec)) for layer, inv in zip(layout.tapped, inverses, strict=True)
    ]
    return flat_from_layers(ops, layout, matrices, vec, untapped_scale)


class Proposal(NamedTuple):
    """One step's proposal and what the rest of the step reuses."""

    #: The oracle of the batch (its taps, output Hessians and JVPs serve the quadratic model).
    oracle: Any
    loss: Array
    grad_h: Array
    #: The factor averages with this batch folded in (per backend: ``kfac_factors.LayerStats``).
    factors: tuple[Any, ...]
    inverses: tuple[LayerInverse, ...]
    #: ``p = Ft^{-1} grad h`` (ascent-signed).
    direction: Array


def proposal(
    ops: ArrayOps,
    hp: KFACHyperparams,
    layout: ParamLayout,
    inverses: Sequence[LayerInverse],
    g: Array,
    params: Array,
    identity_weight: Array,
) -> tuple[Array, Array]:
    """``(grad h, p)``: the gradient of ``h = L + eta/2 ||theta||^2`` and the proposal
    ``p = Ft^{-1} grad h`` (ascent-signed); untapped entries get ``1 / (lam + eta)``
    (``untapped="damped_identity"``) or 1."""
    grad_h = g + hp.l2_reg * params if hp.l2_reg else g
    untapped = ops.astype(1.0 / identity_weight, g.dtype) if damps_untapped(hp, layout) else 1.0
    return grad_h, precondition(ops, layout, inverses, grad_h, untapped)


def damps_untapped(hp: KFACHyperparams, layout: ParamLayout) -> bool:
    """Whether :func:`proposal` reads ``identity_weight``: the untapped entries' damped scale,
    only when the layout has untapped parameters (none of the benchmark's MLPs has any)."""
    return hp.untapped == "damped_identity" and len(layout.untapped) > 0


# --------------------------------------------------------------------------- the quadratic model


class ModelTerms(NamedTuple):
    """The inner products behind the quadratic model over ``span{p, delta_prev}``:
    ``c_ij = (1/B) sum_n u_i^T Q_n u_j`` (GGN, ``u = Jz v``), ``d_ij = v_i^T v_j`` and
    ``b_i = grad h^T v_i`` with ``v_1 = p``, ``v_2 = delta_prev``; in the arrays' dtype."""

    c11: Array
    c12: Array
    c22: Array
    d11: Array
    d12: Array
    d22: Array
    b1: Array
    b2: Array


def output_inner(ops: ArrayOps, oracle: Any, u: Array, w: Array, q_w: Array | None = None) -> Array:
    """``(1/B) sum_n u_n^T Q_n w_n`` for output tangents ``u``, ``w`` (``(B, C)``) and the
    output Hessians ``Q_n`` of the oracle's batch (the tangents' dtype); ``q_w``: ``Q w`` if
    already applied."""
    q_w = oracle.output_hessian_apply(w) if q_w is None else q_w
    return ops.mean(ops.sum(u * q_w, axis=-1))


def model_terms(
    ops: ArrayOps, oracle: Any, tangents: Sequence[Array], p: Array, velocity: Array | None, grad_h: Array
) -> ModelTerms:
    """:class:`ModelTerms` from the output tangents ``[J p]`` or ``[J p, J delta_prev]``; the
    ``delta_prev`` terms are zero when ``velocity`` is None (the first step)."""
    u_p = tangents[0]
    c11, d11, b1 = output_inner(ops, oracle, u_p, u_p), p @ p, grad_h @ p
    if velocity is None:
        zero = ops.zeros_like(c11)
        return ModelTerms(c11, zero, zero, d11, zero, zero, b1, zero)
    u_v = tangents[1]
    q_v = oracle.output_hessian_apply(u_v)  # applied once for c12 and c22 (the same numbers)
    c12, c22 = output_inner(ops, oracle, u_p, u_v, q_v), output_inner(ops, oracle, u_v, u_v, q_v)
    return ModelTerms(c11, c12, c22, d11, p @ velocity, velocity @ velocity, b1, grad_h @ velocity)


def solve_model(ops: ArrayOps, hp: KFACHyperparams, terms: ModelTerms, lam: Any) -> tuple[Any, Any, Any]:
    """``(w1, w2, M(delta))`` for ``delta = w1 p + w2 delta_prev`` minimising

        M(delta) = grad h^T delta + 1/2 delta^T (C + (eta + lam) I) delta

    over ``span{p, delta_prev}`` (Sec. 7; ``C`` the exact GGN of the batch), from float64
    ``terms``: the 2x2 system ``A = [c_ij + (eta + lam) d_ij]``, ``b = [b_i]``. With
    ``adaptive_lr`` (``adaptive_momentum``) off, ``w1 = -lr`` (``w2 = momentum``) is fixed and
    the other coefficient minimises ``M`` given it (kfac-jax). ``M`` includes ``lam`` when
    ``include_damping_in_quad_change``. Scalar arithmetic only: ``ops`` may be a backend's
    array operations (0-d float64 arrays) or host scalars (``backends.torch.ops.HOST_SCALAR_OPS``).
    """
    f64 = ops.float64
    c11, c12, c22, d11, d12, d22, b1, b2 = terms
    eta = hp.l2_reg
    undamped = lm.Quadratic2D(c11 + eta * d11, c12 + eta * d12, c22 + eta * d22, b1, b2)
    damped = lm.Quadratic2D(undamped.a11 + lam * d11, undamped.a12 + lam * d12, undamped.a22 + lam * d22, b1, b2)
    w1, w2 = lm.solve_quadratic_2d(
        damped,
        fixed1=None if hp.adaptive_lr else -hp.lr,
        fixed2=None if hp.adaptive_momentum else hp.momentum,
        where=ops.where,
    )
    w1, w2 = ops.asarray(w1, f64, lam), ops.asarray(w2, f64, lam)
    model_change = (damped if hp.include_damping_in_quad_change else undamped).value(w1, w2)
    return w1, w2, ops.asarray(model_change, f64, lam)


def quadratic_step(
    ops: ArrayOps,
    hp: KFACHyperparams,
    oracle: Any,
    tangents: Sequence[Array],
    p: Array,
    velocity: Array | None,
    grad_h: Array,
    lam: Array,
) -> tuple[Array, Array, Array]:
    """``(w1, w2, M(delta))`` minimising the exact quadratic model over ``span{p, delta_prev}``
    (:func:`solve_model` on :func:`model_terms` cast to float64; ``velocity=None``: the first
    step, ``w2 = 0``). All float64."""
    terms = model_terms(ops, oracle, tangents, p, velocity, grad_h)
    return solve_model(ops, hp, ModelTerms(*(ops.astype(t, ops.float64) for t in terms)), lam)


def fixed_step(ops: ArrayOps, hp: KFACHyperparams, like: Array) -> tuple[Array, Array, Array]:
    """``(-lr, momentum, NaN)``: the coefficients off the model (fixed lr and momentum, no LM step)."""
    f64 = ops.float64
    return ops.asarray(-hp.lr, f64, like), ops.asarray(hp.momentum, f64, like), ops.asarray(math.nan, f64, like)


def update(ops: ArrayOps, w1: Array, w2: Array, p: Array, velocity: Array | None) -> Array:
    """``delta = w1 p + w2 delta_prev`` in the parameters' dtype (``velocity=None``: ``w1 p``)."""
    delta = ops.astype(w1, p.dtype) * p
    if velocity is not None:
        delta = delta + ops.astype(w2, p.dtype) * velocity
    return delta


def _dot(ops: ArrayOps, x: Array, y: Array) -> Array:
    return ops.astype(x @ y, ops.float64)


def adapt_damping(
    ops: ArrayOps,
    hp: KFACHyperparams,
    lam: Array,
    old_loss: Array,
    new_loss: Array,
    params: Array,
    new_params: Array,
    model_change: Array,
) -> tuple[Array, Array]:
    """``(rho, lambda')``: the reduction ratio of ``h = L + eta/2 ||theta||^2`` against the model
    change and the Levenberg-Marquardt update of ``lambda`` (Sec. 6.5, :func:`backends.damping.lm_update`)."""
    old_h, new_h = ops.astype(old_loss, ops.float64), ops.astype(new_loss, ops.float64)
    if hp.l2_reg:
        old_h = old_h + 0.5 * hp.l2_reg * _dot(ops, params, params)
        new_h = new_h + 0.5 * hp.l2_reg * _dot(ops, new_params, new_params)
    rho = lm.reduction_ratio(old_h, new_h, model_change, where=ops.where)
    return rho, lm.lm_update(lam, rho, lm_rule(hp), where=ops.where)


# --------------------------------------------------------------------------- dense references


def canonical_index(layer: TappedLayer) -> np.ndarray:
    """Positions (relative to the layer's first parameter) of ``vec_row_major(Wb)`` entries in the
    flat layout (``W`` row-major, then ``b``): the layer kind's flattening (``backends.layer_kinds``)."""
    return layer_kinds.rule(layer).canonical_index(layer)
