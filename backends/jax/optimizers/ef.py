"""Exact EF on JAX; the update rule, references and defaults are in ``backends.methods.ef``.

One forward with taps, the true-label backward, the per-sample Gram ``K`` from the taps
(``backends.jax.sample_space``), one float64 ``B x B`` solve, ``J^T x`` from the taps; the
whole step is jitted by ``problem.make_step``.
"""

from __future__ import annotations

from typing import Any

import jax

from backends.jax.optimizers._gram_step import ScheduledState, gram_method_direction, gram_method_step, init_state
from backends.methods import ef
from backends.spec import Batch, Problem, adapter_class


class EF(adapter_class(ef.CARD, "jax")):  # type: ignore[misc]
    def init(self, problem: Problem, hparams: ef.EFHyperparams) -> ScheduledState:
        return init_state(problem, hparams)

    def direction(
        self, problem: Problem, params: jax.Array, state: ScheduledState, batch: Batch[jax.Array]
    ) -> jax.Array:
        return gram_method_direction(problem, params, batch, state.hparams, ief_targets=False)[1].direction

    def step(
        self, problem: Problem, params: jax.Array, state: ScheduledState, batch: Batch[jax.Array]
    ) -> tuple[jax.Array, ScheduledState, dict[str, Any]]:
        return gram_method_step(problem, params, state, batch, ief_targets=False)


ADAPTER = EF
