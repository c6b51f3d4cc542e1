"""Exact SF on JAX; the update rule, references and defaults are in ``backends.methods.sf``.

One forward with taps, one reverse pass to the taps for the true labels and one per label draw
(no parameter gradient), the Gram of the stacked rows ``[J; J^]`` (its cross block gives
``J^ g``), one float64 ``kB x kB`` solve, and ``[J; J^]^T w`` from the taps, which holds ``g``
(``backends.sample_space.sampled_fisher_from_stack``); jitted whole. The labels come from the
batch noise (``oracle.logit_grads_with_samples``), so they are the torch backend's labels.
"""

from __future__ import annotations

from typing import Any

import jax

from backends.jax import sample_space
from backends.jax.optimizers._gram_step import ScheduledState, init_state, scheduled_update
from backends.methods import sf
from backends.spec import Batch, Problem, adapter_class


def sf_direction(
    problem: Problem, params: jax.Array, batch: Batch[jax.Array], hp: sf.SFHyperparams
) -> tuple[jax.Array, sample_space.WoodburyApply]:
    """Mean loss and ``(F^ + lambda I)^{-1} g`` (Woodbury, iEF paper Eqn 49)."""
    oracle = problem.oracle(params, batch, taps=sample_space.uses_taps(problem.layout))
    return oracle.loss(), sample_space.sampled_fisher_apply(oracle, hp.samples, hp.damping)


class SF(adapter_class(sf.CARD, "jax")):  # type: ignore[misc]
    def init(self, problem: Problem, hparams: sf.SFHyperparams) -> ScheduledState:
        return init_state(problem, hparams)

    def direction(
        self, problem: Problem, params: jax.Array, state: ScheduledState, batch: Batch[jax.Array]
    ) -> jax.Array:
        return sf_direction(problem, params, batch, state.hparams)[1].x

    def step(
        self, problem: Problem, params: jax.Array, state: ScheduledState, batch: Batch[jax.Array]
    ) -> tuple[jax.Array, ScheduledState, dict[str, Any]]:
        hp = state.hparams
        loss, res = sf_direction(problem, params, batch, hp)
        new, new_state, stats = scheduled_update(params, res.x, state)
        stats.update(loss=loss, damping=hp.damping, solve_residual=res.solve.residual.astype(params.dtype))
        return new, new_state, stats


ADAPTER = SF
