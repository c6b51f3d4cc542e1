"""AdamQLR on JAX; the update rule, presets and references are in ``backends.methods.adamqlr``.

The same algorithm, hyperparameters, statistics and pass counts as the torch adapter
(``backends/torch/optimizers/adamqlr.py``; parity is tested), jitted whole. The direction is
``optax.scale_by_adam`` (bias-corrected ``m^ / (sqrt(v^) + eps)``), the base transformation of
the paper's own code. Per step: one forward and backward (loss, gradient), one JVP for
``d^T G d`` (the Hessian variant: one forward-over-reverse pass, booked as a JVP and a backward),
and one forward at the new parameters for ``rho`` when the damping adapts. Scalars are computed
in float64 as the torch twin's 0-d float64 tensors; lambda and the statistics are stored in the
problem's dtype (float32 runs round lambda between steps; the torch twin keeps float64).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from backends import adamqlr_maths
from backends.jax import likelihoods
from backends.jax.ops import JAX_OPS
from backends.methods import adamqlr
from backends.spec import Batch, adapter_class

if TYPE_CHECKING:
    from backends.jax.problem import JaxProblem

Array = jax.Array
F64 = jnp.float64


class AdamQLRState(NamedTuple):
    hparams: adamqlr.AdamQLRHyperparams
    #: optax's ``ScaleByAdamState``: ``count`` (the step counter), ``mu``, ``nu``.
    adam: optax.ScaleByAdamState
    #: Current lambda.
    damping: Array


def adam(hp: adamqlr.AdamQLRHyperparams) -> optax.GradientTransformation:
    """The Adam direction ``m^ / (sqrt(v^) + eps)`` (ascent-signed, no learning rate)."""
    return optax.scale_by_adam(b1=hp.b1, b2=hp.b2, eps=hp.eps)


def hessian_quadratic(problem: JaxProblem, params: Array, batch: Batch[Array], v: Array) -> Array:
    """``v^T H v`` for the Hessian ``H`` of the mean batch loss, by forward-over-reverse.

    The oracle has no Hessian-vector product; this is ``jax.jvp(jax.grad(L))``, booked as one
    JVP and one backward pass (as the torch twin).
    """

    def mean_loss(p: Array) -> Array:
        return jnp.mean(likelihoods.per_sample_loss(problem.likelihood, problem.apply(p, batch.x), batch.y))

    hv = jax.jvp(jax.grad(mean_loss), (params,), (v,))[1]
    problem.counters.add("jvp")
    problem.counters.add("backward")
    return jnp.dot(v, hv)


class AdamQLR(adapter_class(adamqlr.CARD, "jax")):  # type: ignore[misc]
    def init(self, problem: JaxProblem, hparams: adamqlr.AdamQLRHyperparams) -> AdamQLRState:
        return AdamQLRState(hparams, adam(hparams).init(problem.params0), jnp.asarray(hparams.damping, problem.dtype))

    def direction(self, problem: JaxProblem, params: Array, state: AdamQLRState, batch: Batch[Array]) -> Array:
        g = problem.oracle(params, batch).grad()
        return adam(state.hparams).update(g, state.adam)[0]

    def step(
        self, problem: JaxProblem, params: Array, state: AdamQLRState, batch: Batch[Array]
    ) -> tuple[Array, AdamQLRState, dict[str, Any]]:
        hp = state.hparams
        oracle = problem.oracle(params, batch)
        loss, g = oracle.loss_and_grad()
        if hp.curvature == "fisher":
            curvature: Callable[[Array], Array] = oracle.ggn_quad
        else:
            curvature = functools.partial(hessian_quadratic, problem, params, batch)
        return quadratic_model_step(params, state, loss, g, curvature, lambda new: problem.oracle(new, batch).loss())


def quadratic_model_step(
    params: Array,
    state: AdamQLRState,
    loss: Array,
    g: Array,
    curvature: Callable[[Array], Array],
    loss_at: Callable[[Array], Array],
) -> tuple[Array, AdamQLRState, dict[str, Any]]:
    """The step from the batch's loss and gradient: optax's Adam update and direction ``d``,
    the step size from ``q = curvature(d)``, the update, and (adaptive damping) the LM update
    of lambda from ``loss_at(theta + s d)``. The two callables are the step's only passes
    besides the gradient (``benchmarks/method_algebra.py`` times this function on recorded
    answers)."""
    hp = state.hparams
    dtype = params.dtype
    d, adam_state = adam(hp).update(g, state.adam)
    q = curvature(d)
    lam = state.damping.astype(F64)
    model = adamqlr_maths.quadratic_step(JAX_OPS, hp, q, g, d, lam)
    new_params = adamqlr_maths.update(JAX_OPS, params, model, d)

    stats: dict[str, Any] = {
        "loss": loss,
        "lr": (-model.s).astype(dtype),
        "damping": state.damping,
        "curvature": model.curvature.astype(dtype),
        "grad_dot_direction": model.grad_dot_direction.astype(dtype),
    }
    new_lam = lam
    if hp.adaptive_damping:
        new_loss = loss_at(new_params)
        rho, new_lam, model_change = adamqlr_maths.adapt_damping(JAX_OPS, hp, lam, model, loss, new_loss)
        stats.update(rho=rho.astype(dtype), model_change=model_change.astype(dtype))
    return new_params, AdamQLRState(hp, adam_state, jnp.asarray(new_lam, F64).astype(dtype)), stats


ADAPTER = AdamQLR
