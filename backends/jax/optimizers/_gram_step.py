"""What the JAX EF, iEF and SF adapters share: the step-counter state, the scheduled update, and
the Gram-solve step of EF and iEF (which differ only in the per-sample targets).

The counterpart of ``backends/torch/optimizers/_gram_step.py``; the schedule itself is the
backend-neutral ``backends.schedules``. Not an adapter (the registry imports only the modules
named in ``BUILTIN_METHODS``).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from backends import schedules
from backends.jax import sample_space
from backends.jax.ops import JAX_OPS
from backends.jax.static import StaticInt
from backends.spec import Batch, Problem

Array = jax.Array


class ScheduledState(NamedTuple):
    """``hparams``; ``step``: steps taken (int32 array, traced); ``total_steps``: the run's step
    budget at ``init`` (static: the linear schedule's horizon is a constant of the compiled step)."""

    hparams: Any
    step: Array
    total_steps: StaticInt


def init_state(problem: Problem, hparams: Any) -> ScheduledState:
    return ScheduledState(hparams, jnp.zeros((), dtype=jnp.int32), StaticInt(int(problem.step_budget)))


def scheduled_update(
    params: Array, direction: Array, state: ScheduledState
) -> tuple[Array, ScheduledState, dict[str, Any]]:
    """``theta - s d`` with ``s`` from ``backends.schedules`` (normalised / linear decay).

    Returns the new parameters, the advanced state and the stats ``lr`` (``s``, so that
    ``step_along_direction`` holds), ``lr_schedule`` (``lr_t``), ``direction_norm`` and
    ``update_norm``. The step counter enters the schedule in the parameters' dtype, so a
    float32 run stays float32.
    """
    step = state.step.astype(params.dtype)
    new, stats = schedules.scheduled_update(JAX_OPS, state.hparams, params, direction, step, int(state.total_steps))
    return new, state._replace(step=state.step + 1), stats


def gram_method_direction(
    problem: Problem, params: Array, batch: Batch[Array], hp: Any, *, ief_targets: bool
) -> tuple[Array, sample_space.GramDirection]:
    """Mean loss and ``J^T (K + B lambda I)^{-1} t`` with ``t = 1`` (EF, iEF paper Eqn 5) or
    ``t_n = ||r_n||^2`` (iEF, Eqn 8). Passes: one forward (taps), one backward."""
    oracle = problem.oracle(params, batch, taps=sample_space.uses_taps(problem.layout))
    loss = oracle.loss()
    jac = sample_space.true_jacobian(oracle)
    rhs = jnp.sum(oracle.logit_grads() ** 2, axis=-1) if ief_targets else jnp.ones(jac.rows, dtype=params.dtype)
    return loss, sample_space.gram_direction(jac, rhs, hp.damping, hp.dedup_threshold)


def gram_method_step(
    problem: Problem, params: Array, state: ScheduledState, batch: Batch[Array], *, ief_targets: bool
) -> tuple[Array, ScheduledState, dict[str, Any]]:
    """One EF/iEF step: :func:`gram_method_direction` then :func:`scheduled_update`."""
    hp = state.hparams
    loss, res = gram_method_direction(problem, params, batch, hp, ief_targets=ief_targets)
    new, new_state, stats = scheduled_update(params, res.direction, state)
    stats.update(
        loss=loss,
        damping=hp.damping,
        solve_residual=res.solve.residual.astype(params.dtype),
        target_residual=res.target_residual,
        kept_samples=res.kept,
    )
    return new, new_state, stats
