"""EGN on JAX; the update rule, the exact symmetric solve and references are in ``backends.methods.egn``.

The same algorithm, hyperparameters, statistics and pass counts as the torch adapter
(``backends/torch/optimizers/egn.py``; parity is tested), jitted whole:

* ``J J^T`` from the dense output Jacobian (``vmap(jacrev)``: its forward and ``C`` reverse passes) or, when every
  parameter sits in a 2-D-input Linear layer, from the layer taps of ``C`` reverse passes
  vectorised into one (``Jt Jt^T = sum_layers (E E^T) * (Abar Abar^T)``); the Gram in the working
  dtype, its ``BC x BC`` Cholesky solve in float64;
* the Armijo line search is a ``lax.while_loop`` (one forward per trial, booked per trip by
  ``backends.jax.control_flow.counted_while_loop``);
* the state has a fixed structure from ``init`` (the momentum buffer exists only when momentum
  is on, a static choice); lambda and the last step size are arrays in the problem's dtype
  (float32 runs round them between steps; the torch twin keeps float64), the step's scalars are
  computed in float64 as the torch twin's.

Without momentum ``g^T d`` and ``d^T G d`` come from the solve itself (``d = Jt^T v``,
``Jt Jt^T v = s - B lam v``); with momentum they cost a backward / a JVP.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from backends import egn_gram
from backends.jax.batched_passes import tap_grads_many
from backends.jax.control_flow import counted_while_loop
from backends.jax.ops import JAX_OPS
from backends.methods import egn
from backends.spec import Batch, Problem, adapter_class

Array = jax.Array
F64 = jnp.float64


class EGNState(NamedTuple):
    hparams: egn.EGNHyperparams
    #: Steps taken, int32.
    steps: Array
    #: Un-corrected momentum ``m_t`` (None when momentum is off).
    momentum: Array | None
    #: Last accepted step size (the line search's ``alpha_prev``).
    step_size: Array
    #: Current lambda.
    damping: Array


def initial_step_size(hp: egn.EGNHyperparams, previous: Array) -> Array:
    """``backends.methods.egn.initial_step_size`` for a traced ``alpha_prev`` (float64)."""
    return jnp.minimum(hp.ls_increase * jnp.asarray(previous, F64), hp.lr)


class EGN(adapter_class(egn.CARD, "jax")):  # type: ignore[misc]
    def init(self, problem: Problem, hparams: egn.EGNHyperparams) -> EGNState:
        dtype = problem.dtype
        momentum = jnp.zeros(problem.num_params, dtype) if hparams.momentum != 0.0 else None
        return EGNState(
            hparams,
            jnp.zeros((), jnp.int32),
            momentum,
            jnp.asarray(hparams.lr, dtype),
            jnp.asarray(hparams.damping, dtype),
        )

    def _direction(
        self, problem: Problem, params: Array, state: EGNState, batch: Batch[Array]
    ) -> tuple[Any, egn_gram.Solve, Array, Array | None]:
        hp = state.hparams
        mode = egn_gram.gram_mode(problem.layout, hp)
        oracle = problem.oracle(params, batch, taps=mode == "taps")
        sol = egn_gram.egn_solve(JAX_OPS, problem, oracle, hp, state.damping.astype(F64), mode, tap_grads_many)
        if hp.momentum == 0.0 or state.momentum is None:
            return oracle, sol, sol.d, None
        m = JAX_OPS.lerp(state.momentum, sol.d, 1.0 - hp.momentum)
        correction = (1.0 - hp.momentum ** (state.steps + 1).astype(F64)).astype(m.dtype)
        return oracle, sol, m / correction, m

    def direction(self, problem: Problem, params: Array, state: EGNState, batch: Batch[Array]) -> Array:
        return self._direction(problem, params, state, batch)[2]

    def step(
        self, problem: Problem, params: Array, state: EGNState, batch: Batch[Array]
    ) -> tuple[Array, EGNState, dict[str, Any]]:
        hp = state.hparams
        dtype = params.dtype
        lam = state.damping.astype(F64)
        oracle, sol, d, m = self._direction(problem, params, state, batch)
        loss = oracle.loss()
        need_gd = hp.line_search or hp.adaptive_damping
        gd = jnp.zeros((), F64)
        if need_gd:
            # Without momentum from the solve (g = Jt^T s / B, d = Jt^T v), else one backward.
            gd = egn_gram.step_grad_dot(JAX_OPS, oracle, sol, m, d, lam)

        stats: dict[str, Any] = {"loss": loss, "damping": state.damping}
        new_loss: Array | None = None
        alpha: Any
        if hp.line_search:
            f0 = loss.astype(F64)
            eps = float(jnp.finfo(loss.dtype).eps)

            def trial(carry: tuple[Array, Array, Array, Array]) -> tuple[Array, Array, Array, Array]:
                trials, alpha, _, _ = carry
                value = problem.oracle(params - alpha.astype(dtype) * d, batch).loss()
                trials = trials + 1
                # The card's rule is plain arithmetic: it runs on traced scalars as on floats.
                accept = egn.armijo_accepts(f0, value.astype(F64), alpha, gd, hp.armijo_c, eps)  # type: ignore[arg-type]
                done = accept | (trials > hp.ls_max_steps)
                return trials, jnp.where(done, alpha, jnp.minimum(alpha * hp.ls_decrease, hp.lr)), value, done

            init = (jnp.zeros((), jnp.int32), initial_step_size(hp, state.step_size), loss, jnp.asarray(False))
            trials, alpha, new_loss, _ = counted_while_loop(
                problem.counters, lambda c: ~c[3], trial, init, trips=lambda c: c[0]
            )
            new_params = params - alpha.astype(dtype) * d
            stats["line_search_steps"] = trials - 1
            stats["lr"] = alpha.astype(dtype)
        else:
            alpha = hp.lr
            new_params = params - alpha * d
            stats["lr"] = alpha

        new_lam = lam
        if hp.adaptive_damping:
            if new_loss is None:
                new_loss = problem.oracle(new_params, batch).loss()
            losses = (loss, new_loss)
            rho, new_lam, model_change = egn_gram.step_damping(JAX_OPS, hp, oracle, sol, m, d, lam, losses, alpha, gd)
            stats.update(rho=rho.astype(dtype), model_change=model_change.astype(dtype))
        if need_gd:
            stats["grad_dot_direction"] = gd.astype(dtype)
        new_state = EGNState(
            hp, state.steps + 1, m, jnp.asarray(alpha, F64).astype(dtype), jnp.asarray(new_lam, F64).astype(dtype)
        )
        return new_params, new_state, stats


ADAPTER = EGN
