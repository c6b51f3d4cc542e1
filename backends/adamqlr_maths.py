"""AdamQLR's framework-neutral maths: the one-dimensional quadratic model along Adam's direction,
the step size it selects, and the damping adaptation (Clarke & Hernández-Lobato 2024, Alg. 1;
the update rule and its mapping to the paper's code are in ``backends.methods.adamqlr``).

Along the ascent-signed direction ``d`` with gradient ``g``, curvature term ``q = d^T C d`` and
damping ``lam``::

    s = -(g^T d) / (q + lam ||d||^2)        (|.| of the denominator with ``saddle_free``)
    s = clip(s, -lr_clipping, lr_clipping)  (optional)
    theta' = theta + s d
    M = 1/2 s^2 (q + lam ||d||^2) + s g^T d (lam included; no |.|, as the code)

and ``rho = (L(theta') - L(theta)) / M`` drives the Levenberg-Marquardt update of ``lam``
(:func:`backends.damping.lm_update`, :func:`backends.methods.adamqlr.lm_rule`). Scalars are 0-d
float64 arrays; written once on the array operations of :class:`backends.array_ops.ArrayOps`.
The backends keep Adam's moments (optax in JAX), the passes that give ``q`` (a JVP, or
forward-over-reverse for the Hessian) and the loss at ``theta'``.
"""

from __future__ import annotations

from typing import NamedTuple

from backends import damping as lm
from backends.array_ops import Array, ArrayOps
from backends.methods.adamqlr import AdamQLRHyperparams, lm_rule


class QuadraticStep(NamedTuple):
    """The model along ``d`` and the step it selects (all 0-d float64)."""

    #: The step coefficient ``s`` (``theta + s d``; the reported ``lr`` is ``-s``).
    s: Array
    #: ``q = d^T C d``.
    curvature: Array
    #: ``g^T d``.
    grad_dot_direction: Array
    #: ``q + lam ||d||^2``.
    damped_curvature: Array


def quadratic_step(
    ops: ArrayOps, hp: AdamQLRHyperparams, curvature: Array, g: Array, d: Array, lam: Array
) -> QuadraticStep:
    """The step coefficient minimising the damped model along ``d`` (see the module docstring)."""
    f64 = ops.float64
    q = ops.astype(curvature, f64)
    gd = ops.astype(g @ d, f64)
    damped = q + lam * ops.astype(d @ d, f64)
    # The code's saddle-free option takes |.| in the step only, not in the model change.
    s = -gd / (ops.abs(damped) if hp.saddle_free else damped)
    if hp.lr_clipping is not None:
        s = ops.clip(s, -hp.lr_clipping, hp.lr_clipping)
    return QuadraticStep(s, q, gd, damped)


def update(ops: ArrayOps, params: Array, step: QuadraticStep, d: Array) -> Array:
    """``theta + s d`` in the parameters' dtype."""
    return params + ops.astype(step.s, params.dtype) * d


def adapt_damping(
    ops: ArrayOps, hp: AdamQLRHyperparams, lam: Array, step: QuadraticStep, loss: Array, new_loss: Array
) -> tuple[Array, Array, Array]:
    """``(rho, lambda', M)``: the model change of the step, the reduction ratio and the
    Levenberg-Marquardt update (a NaN ``rho`` leaves ``lambda`` unchanged, as the code)."""
    f64 = ops.float64
    model_change = lm.quadratic_value_1d(step.s, step.grad_dot_direction, step.damped_curvature)
    rho = lm.reduction_ratio(ops.astype(loss, f64), ops.astype(new_loss, f64), model_change, where=ops.where)
    return rho, lm.lm_update(lam, rho, lm_rule(hp), where=ops.where), model_change
