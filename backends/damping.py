"""Levenberg–Marquardt damping and damped quadratic models, shared by K-FAC, AdamQLR and EGN.

Backend-neutral: every function is plain arithmetic on scalars plus an explicit ``where``
(``torch.where``, ``jnp.where``, or :func:`py_where` for Python floats), so the torch and
JAX adapters run the same rule on 0-d device arrays without a host sync, and tests run it on
floats.

Conventions (mean-loss, docs/conventions.md): the local model of the change of the objective ``h`` for
an update ``delta`` is

    M(delta) = g^T delta + 1/2 delta^T (C + lam I) delta

with ``C`` the curvature (GGN/Fisher or Hessian) of the mean batch loss and ``lam`` the
Tikhonov damping. The reduction ratio is ``rho = (h(theta + delta) - h(theta)) / M(delta)``;
the Levenberg–Marquardt rule (Moré 1978; Martens 2010, Sec. 4.1; Martens & Grosse 2015,
Sec. 6.5) multiplies ``lam`` by ``decrease < 1`` when ``rho > 3/4`` (the model is trusted),
by ``increase > 1`` when ``rho < 1/4``, and clips it to ``[min_damping, max_damping]``.
A NaN ``rho`` (a non-finite new loss, or a zero model change) raises the damping, as kfac-jax
does (``nan_to_num(rho, nan=-100)``), unless ``nan_rho="keep"`` (AdamQLR's code, whose
``jnp.where`` comparisons leave ``lam`` unchanged on NaN).

Methods differ in whether ``lam`` enters ``M`` for ``rho``: K-FAC's paper and AdamQLR include it,
kfac-jax excludes it by default (``include_damping_in_quad_change=False``), EGN's code excludes
it. Callers pass the matrix they mean.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, Literal, NamedTuple

Where = Callable[[Any, Any, Any], Any]


def py_where(cond: Any, x: Any, y: Any) -> Any:
    """``where`` for Python scalars (``x if cond else y``)."""
    return x if cond else y


def _isnan(x: Any) -> Any:
    # NaN is the only value unequal to itself; works for floats, torch and jnp scalars alike.
    return x != x


class LMRule(NamedTuple):
    """Constants of the Levenberg–Marquardt damping rule.

    ``decrease`` multiplies the damping when ``rho > upper``; ``increase`` when ``rho < lower``.
    kfac-jax: ``decrease = decay ** interval``, ``increase = 1 / decrease``; K-FAC paper:
    ``decay = 19/20``; AdamQLR: ``omega_dec``, ``omega_inc``.
    """

    decrease: float
    increase: float
    lower: float = 0.25
    upper: float = 0.75
    min_damping: float = 0.0
    max_damping: float = math.inf
    nan_rho: Literal["increase", "keep"] = "increase"


def reduction_ratio(old_loss: Any, new_loss: Any, model_change: Any, *, where: Where = py_where) -> Any:
    """``rho = (new_loss - old_loss) / model_change``; NaN when ``model_change == 0``."""
    zero = model_change == 0
    safe = where(zero, 1.0, model_change)
    return where(zero, math.nan, (new_loss - old_loss) / safe)


def lm_update(damping: Any, rho: Any, rule: LMRule, *, where: Where = py_where) -> Any:
    """The damping after one Levenberg–Marquardt adaptation with reduction ratio ``rho``."""
    nan_value = -100.0 if rule.nan_rho == "increase" else 0.5 * (rule.lower + rule.upper)
    r = where(_isnan(rho), nan_value, rho)
    new = where(r > rule.upper, damping * rule.decrease, where(r < rule.lower, damping * rule.increase, damping))
    return clip(new, rule.min_damping, rule.max_damping, where=where)


def clip(x: Any, low: float, high: float, *, where: Where = py_where) -> Any:
    """``min(max(x, low), high)`` with ``where``."""
    x = where(x < low, low, x)
    return where(x > high, high, x)


# --------------------------------------------------------------------------- quadratic models


def quadratic_step_1d(
    grad_dot_dir: Any, curvature: Any, dir_sq_norm: Any, damping: Any, *, where: Where = py_where
) -> tuple[Any, Any]:
    """Minimiser ``s`` of ``M(s d) = s g^T d + 1/2 s^2 (d^T C d + lam ||d||^2)`` and ``M(s d)``.

    ``s = -g^T d / (d^T C d + lam ||d||^2)`` (AdamQLR, Clarke & Hernández-Lobato 2024, Alg. 1;
    K-FAC's first step, Martens & Grosse 2015, Sec. 6.4). Returns ``(0, 0)`` when the damped
    curvature term is zero (``d = 0``).
    """
    denom = curvature + damping * dir_sq_norm
    zero = denom == 0
    s = where(zero, 0.0, -grad_dot_dir / where(zero, 1.0, denom))
    return s, quadratic_value_1d(s, grad_dot_dir, denom)


def quadratic_value_1d(s: Any, grad_dot_dir: Any, damped_curvature: Any) -> Any:
    """``M(s d) = s g^T d + 1/2 s^2 (d^T (C + lam I) d)`` given the damped curvature term."""
    return 0.5 * s * s * damped_curvature + s * grad_dot_dir


class Quadratic2D(NamedTuple):
    """``M(w) = 1/2 w^T A w + w^T b`` over ``span{v1, v2}`` with ``w = (w1, w2)``.

    ``A = V^T (C + lam I) V`` and ``b = V^T g`` for ``V = [v1, v2]`` (K-FAC, Martens & Grosse
    2015, Sec. 7: ``v1`` the proposal, ``v2`` the previous update).
    """

    a11: Any
    a12: Any
    a22: Any
    b1: Any
    b2: Any

    def value(self, w1: Any, w2: Any) -> Any:
        return 0.5 * (self.a11 * w1 * w1 + 2.0 * self.a12 * w1 * w2 + self.a22 * w2 * w2) + self.b1 * w1 + self.b2 * w2


#: ``det(A) <= COLLINEAR_RTOL * a11 * a22`` (``sin^2`` of the angle between ``v1`` and ``v2`` in
#: the ``A`` metric below 1e-6, about 0.06 degrees) counts as collinear in :func:`solve_quadratic_2d`.
COLLINEAR_RTOL = 1e-6


def solve_quadratic_2d(
    model: Quadratic2D, *, fixed1: Any = None, fixed2: Any = None, where: Where = py_where
) -> tuple[Any, Any]:
    """Minimiser ``w = -A^{-1} b`` of a positive-definite 2x2 quadratic model, optionally with one
    or both coefficients fixed (kfac-jax ``_solve_quad_model``: the free one minimises ``M`` given
    the other).

    When the second vector is zero (``a12 = a22 = 0``, K-FAC's first step, where the previous
    update is zero) the free solution is the 1-D one, ``w1 = -b1 / a11``, ``w2 = 0``, as kfac-jax's
    ``psd_solve_maybe_zero_last_idx``; a zero curvature term gives a zero coefficient.
    """
    a11, a12, a22, b1, b2 = model
    if fixed1 is not None and fixed2 is not None:
        return fixed1, fixed2
    if fixed1 is not None:
        return fixed1, _safe_ratio(-(b2 + a12 * fixed1), a22, where)
    if fixed2 is not None:
        return _safe_ratio(-(b1 + a12 * fixed2), a11, where), fixed2
    det = a11 * a22 - a12 * a12
    # v2 = 0 (first step) or v1, v2 (numerically) collinear: the span is one-dimensional and its
    # minimiser is the 1-D one along v1. Near convergence in float32 the 2x2 system is singular to
    # rounding, where the 2-D formula returns inf/nan coefficients.
    one_d = where(det > COLLINEAR_RTOL * a11 * a22, where(a22 == 0, a12 == 0, False), True)
    det_safe = where(one_d, 1.0, det)
    w1_2d = (a12 * b2 - a22 * b1) / det_safe
    w2_2d = (a12 * b1 - a11 * b2) / det_safe
    return where(one_d, _safe_ratio(-b1, a11, where), w1_2d), where(one_d, 0.0, w2_2d)


def _safe_ratio(num: Any, den: Any, where: Where) -> Any:
    """``num / den``, and 0 where ``den == 0``."""
    zero = den == 0
    return where(zero, 0.0, num / where(zero, 1.0, den))
