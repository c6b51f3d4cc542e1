"""EGN's output-space maths, framework-neutral: the output Hessian's factor, the Gram of the
factored Jacobian, the damped solve and the direction it gives, the closed forms of ``g^T d`` and
``d^T G d``, and the damping adaptation (Exact Gauss-Newton, docs/methods.md "EGN").

With ``Q_n = S_n S_n^T`` (the output Hessian's factor, :func:`output_factor`), row ``(n, k)``
of ``Jt`` is the flat gradient of ``S_n[:, k] . z_n``. EGN solves ``(Jt Jt^T + B lam I) v = s``
(``B C x B C``) and steps along ``d = Jt^T v``. Two ways to ``Jt Jt^T`` and ``Jt^T v``, written
once here on the array operations of :class:`backends.array_ops.ArrayOps`:

* taps (every parameter in a Linear layer on vectors): per layer, row ``(n, k)`` is
  ``e_nk abar_n^T`` with ``e_nk`` the tap cotangent of logit cotangent ``S[:, :, k]``, so
  ``Jt Jt^T = sum_layers (E E^T) * (Abar Abar^T)`` and ``Jt^T v`` is, per layer,
  ``(sum_k v_nk e_nk)^T Abar``: no per-sample Jacobian (:func:`tap_gram`, :func:`tap_direction`);
* dense: ``Jt = S^T Jz`` from the output Jacobian (:func:`dense_rows`).

The Gram stays in the working dtype (docs/methods.md, "Where the speed is"); only the solve runs
in float64 (``backends.sample_space.damped_solve``). The backends keep the passes that give the
taps, the output Jacobian and the trial losses, and the line search's control flow.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

from backends import blocks
from backends import damping as lm
from backends.array_ops import Array, ArrayOps
from backends.layout import ParamLayout
from backends.methods.egn import EGNHyperparams, lm_rule
from backends.sample_space import damped_solve
from backends.spec import Oracle, Problem

#: ``tap_grads_many(problem, oracle, cotangents)``: the tap cotangents of ``k`` logit cotangents
#: ``(k, B, C)`` in one vectorised reverse pass, per tapped layer ``(k, B, ...)`` (each backend's
#: ``batched_passes``).
TapGradsMany = Callable[[Problem, Oracle, Array], list[Array]]


class Solve(NamedTuple):
    """The output-space solve: ``d = sum_n Jz_n^T w_n`` with ``w_n = S_n v_n``."""

    d: Array
    #: ``s`` and ``v`` (``B*C``, float64) for the closed forms of ``g^T d`` and ``d^T G d``.
    s: Array
    v: Array


# --------------------------------------------------------------------------- the output factor


def output_factor(ops: ArrayOps, likelihood: str, logits: Array, r: Array, jitter: float) -> tuple[Array | None, Array]:
    """``(S, s)`` with ``Q_n = S_n S_n^T`` and ``S_n s_n = r_n`` (float64); ``S = None`` means identity.

    Cross-entropy, ``jitter = 0``: ``S_n = diag(sqrt p) - p sqrt(p)^T``, ``s_n = r_n / sqrt(p)``
    (exact since ``r_n`` is in ``range(Q_n)``). ``jitter > 0``: ``S_n = chol(Q_n + jitter I)``,
    ``s_n = S_n^{-1} r_n`` (somax v1.0).
    """
    f64 = ops.float64
    r64 = ops.astype(r, f64)
    if likelihood != "softmax_ce":
        return None, r64
    p = ops.softmax(ops.astype(logits, f64), axis=-1)
    eye = ops.eye(p.shape[-1], f64, p)
    if jitter == 0.0:
        sq = ops.sqrt(p)
        return eye * sq[:, None, :] - p[:, :, None] * sq[:, None, :], r64 / sq
    Q = eye * p[:, None, :] - p[:, :, None] * p[:, None, :]
    L, _ = ops.cholesky(Q + jitter * eye)
    return L, ops.solve_lower(L, r64)


def factor_columns(ops: ArrayOps, S: Array | None, logits: Array) -> Array:
    """The ``C`` columns ``S[:, :, k]`` as logit cotangents ``(C, B, C)`` in the logits' dtype
    (``S = None``: the identity's)."""
    B, C = logits.shape
    if S is None:
        return ops.tile(ops.eye(C, logits.dtype, logits)[:, None, :], (1, B, 1))
    return ops.astype(ops.einsum("nck->knc", S), logits.dtype)


def taps_applicable(layout: ParamLayout) -> bool:
    """Every trainable parameter sits in a Linear layer fed 2-D inputs (``backends.blocks``)."""
    return blocks.linear_on_vectors_only(layout)


def gram_mode(layout: ParamLayout, hp: EGNHyperparams) -> str:
    """``"taps"`` or ``"dense"``: the hyperparameter, ``auto`` resolved by :func:`taps_applicable`."""
    if hp.gram == "auto":
        return "taps" if taps_applicable(layout) else "dense"
    if hp.gram == "taps" and not taps_applicable(layout):
        raise ValueError("egn: gram='taps' needs every parameter in a Linear layer with 2-D inputs")
    return str(hp.gram)


# --------------------------------------------------------------------------- Gram and direction


def tap_gram(
    ops: ArrayOps, layout: ParamLayout, inputs: Sequence[Array], cotangents: Sequence[Array]
) -> tuple[Array, list[Array]]:
    """``(Jt Jt^T, abars)``: the ``(B C, B C)`` Gram in the working dtype and each layer's inputs
    with the bias column, ``abar = [a, 1]`` (``(B, d_in (+1))``). ``inputs[i]``: layer ``i``'s
    ``a`` ``(B, d_in)``; ``cotangents[i]``: its ``e`` for the ``C`` factor columns, ``(C, B, out)``."""
    gram = None
    abars = []
    for layer, a, e in zip(layout.tapped, inputs, cotangents, strict=True):
        C, B = e.shape[0], e.shape[1]
        rows = ops.einsum("kbo->bko", e).reshape(B * C, -1)
        abar = a if layer.bias is None else ops.concat([a, ops.ones_like(a[:, :1])], axis=1)
        abars.append(abar)
        term = (rows @ rows.T).reshape(B, C, B, C) * (abar @ abar.T).reshape(B, 1, B, 1)
        gram = term if gram is None else gram + term
    assert gram is not None, "EGN's tap Gram needs at least one tapped layer"
    return gram.reshape(gram.shape[0] * gram.shape[1], -1), abars


def tap_direction(
    ops: ArrayOps, layout: ParamLayout, cotangents: Sequence[Array], abars: Sequence[Array], v: Array
) -> Array:
    """``d = Jt^T v`` (flat, canonical order) for ``v`` reshaped ``(B, C)`` in the working dtype:
    per layer ``[W, b] = (sum_k v_nk e_nk)^T Abar``. Every trainable parameter must be tapped."""
    pieces: dict[str, Array] = {}
    for layer, e, abar in zip(layout.tapped, cotangents, abars, strict=True):
        M = ops.einsum("knl,nk->nl", e, v).T @ abar
        k = layer.weight.size // layer.weight.shape[0]
        pieces[layer.weight.name] = M[:, :k].reshape(-1)
        if layer.bias is not None:
            pieces[layer.bias.name] = M[:, k]
    return ops.concat([pieces[b.name] for b in layout.blocks])


def dense_rows(ops: ArrayOps, S: Array | None, Jz: Array) -> Array:
    """``Jt`` (``B C x P``) from the output Jacobian ``Jz`` (``(B, C, P)``) and the factor ``S``
    (``(B, C, C)``; ``None`` is the identity, e.g. mean squared error)."""
    B, C = Jz.shape[0], Jz.shape[1]
    Jt = Jz if S is None else ops.einsum("nck,ncp->nkp", ops.astype(S, Jz.dtype), Jz)
    return Jt.reshape(B * C, -1)


# --------------------------------------------------------------------------- the solve


def _solve(ops: ArrayOps, gram: Array, s: Array, batch_size: int, lam: Array) -> Array:
    """``v = (K + B lam I)^{-1} s`` in float64: Cholesky, with the sample-space solve's
    nearest-PSD eigen fallback. The cross-entropy factor has a null column per sample, so ``K``
    has ``B`` exact zero eigenvalues that a Gram accumulated in float32 can push below a tiny
    ``B lam``; the fallback clamps them at zero (exact: ``s`` has no component there)."""
    return damped_solve(ops, ops.astype(gram, ops.float64), s, batch_size * lam).x


def solve_taps(
    ops: ArrayOps, layout: ParamLayout, inputs: Sequence[Array], cotangents: Sequence[Array], s: Array, lam: Array
) -> Solve:
    """The damped direction from the taps: :func:`tap_gram`, the solve, :func:`tap_direction`.
    ``cotangents[i]``: layer ``i``'s ``e`` for the factor columns ``(C, B, out)``; ``s``: flat ``(B C,)``."""
    C, B = cotangents[0].shape[0], cotangents[0].shape[1]
    gram, abars = tap_gram(ops, layout, inputs, cotangents)
    v = _solve(ops, gram, s, B, lam)
    d = tap_direction(ops, layout, cotangents, abars, ops.astype(v.reshape(B, C), cotangents[0].dtype))
    return Solve(d, s, v)


def solve_dense(ops: ArrayOps, S: Array | None, Jz: Array, s: Array, lam: Array) -> Solve:
    """The damped direction from the output Jacobian ``Jz`` (``(B, C, P)``): ``Jt`` by
    :func:`dense_rows`, its Gram in the working dtype, the solve, ``d = Jt^T v``."""
    Jt = dense_rows(ops, S, Jz)
    v = _solve(ops, Jt @ Jt.T, s, Jz.shape[0], lam)
    return Solve(Jt.T @ ops.astype(v, Jt.dtype), s, v)


def egn_solve(
    ops: ArrayOps,
    problem: Problem,
    oracle: Oracle,
    hp: EGNHyperparams,
    lam: Array,
    mode: str,
    tap_grads_many: TapGradsMany,
) -> Solve:
    """The exact damped Gauss-Newton direction ``(G + lam I)^{-1} g`` on the oracle's batch.

    ``mode`` (:func:`gram_mode`): ``"taps"`` forms ``Jt Jt^T`` and ``Jt^T v`` from the taps of
    the ``C`` factor columns (one vectorised reverse pass, ``tap_grads_many``; the oracle must
    record taps); ``"dense"`` from the output Jacobian (``oracle.output_jacobian()``).
    """
    z, r = oracle.logits, oracle.logit_grads()
    S, s = output_factor(ops, problem.likelihood, z, r, hp.q_jitter)
    if mode == "taps":
        cotangents = tap_grads_many(problem, oracle, factor_columns(ops, S, z))  # per layer (C, B, out)
        return solve_taps(ops, problem.layout, oracle.tap_inputs(), cotangents, s.reshape(-1), lam)
    return solve_dense(ops, S, oracle.output_jacobian(), s.reshape(-1), lam)


# --------------------------------------------------------------------------- the step's scalars


def grad_dot_direction(sol: Solve, batch_size: int, lam: Array) -> Array:
    """``g^T d`` without a pass: ``g = Jt^T s / B`` and ``d = Jt^T v`` with ``Jt Jt^T v = s - B lam v``,
    so ``g^T d = s^T s / B - lam s^T v`` (no momentum: ``d`` is the solve's direction)."""
    return (sol.s @ sol.s) / batch_size - lam * (sol.s @ sol.v)


def ggn_quad(ops: ArrayOps, sol: Solve, batch_size: int, lam: Array) -> Array:
    """``d^T G d = |Jt Jt^T v|^2 / B = |s - B lam v|^2 / B`` without a pass (no momentum)."""
    residual = sol.s - batch_size * lam * sol.v
    return ops.sum(residual * residual) / batch_size


def adapt_damping(
    ops: ArrayOps, hp: EGNHyperparams, lam: Array, loss: Array, new_loss: Array, alpha: Any, gd: Array, dGd: Array
) -> tuple[Array, Array, Array]:
    """``(rho, lambda', M)``: the model change ``M = -alpha g^T d + 1/2 alpha^2 d^T G d`` of the
    step ``-alpha d`` (``lambda`` excluded, as EGN's code), the reduction ratio and the
    Levenberg-Marquardt update (:func:`backends.damping.lm_update`)."""
    f64 = ops.float64
    model_change = -alpha * gd + 0.5 * alpha * alpha * dGd
    rho = lm.reduction_ratio(ops.astype(loss, f64), ops.astype(new_loss, f64), model_change, where=ops.where)
    return rho, lm.lm_update(lam, rho, lm_rule(hp), where=ops.where), model_change


def step_grad_dot(ops: ArrayOps, oracle: Oracle, sol: Solve, momentum: Array | None, d: Array, lam: Array) -> Array:
    """``g^T d`` in float64: from the solve without momentum (:func:`grad_dot_direction`, no
    pass), else ``oracle.grad() . d`` (one backward)."""
    if momentum is None:
        return grad_dot_direction(sol, oracle.batch_size, lam)
    return ops.astype(oracle.grad() @ d, ops.float64)


def step_damping(
    ops: ArrayOps,
    hp: EGNHyperparams,
    oracle: Oracle,
    sol: Solve,
    momentum: Array | None,
    d: Array,
    lam: Array,
    losses: tuple[Array, Array],
    alpha: Any,
    gd: Array,
) -> tuple[Array, Array, Array]:
    """``(rho, lambda', M)`` after the step ``-alpha d`` (:func:`adapt_damping`), ``losses`` the
    batch loss before and after it. ``d^T G d`` without momentum from the solve (``d = Jt^T v``,
    so ``|Jt Jt^T v|^2 / B = |s - B lam v|^2 / B``, :func:`ggn_quad`), else by a JVP."""
    if momentum is None:
        dGd = ggn_quad(ops, sol, oracle.batch_size, lam)
    else:
        dGd = ops.astype(oracle.ggn_quad(d), ops.float64)
    return adapt_damping(ops, hp, lam, losses[0], losses[1], alpha, gd, dGd)
