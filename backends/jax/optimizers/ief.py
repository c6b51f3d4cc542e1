"""Exact iEF on JAX; the update rule, references and defaults are in ``backends.methods.ief``.

As EF (``backends.jax.optimizers.ef``) with the per-sample targets ``s_n = ||r_n||^2`` from
the closed-form logit gradients (no extra pass): one forward with taps, one backward, the Gram
from the taps, one float64 ``B x B`` solve, ``J^T x`` from the taps; jitted whole.
"""

from __future__ import annotations

from typing import Any

import jax

from backends.jax.optimizers._gram_step import ScheduledState, gram_method_direction, gram_method_step, init_state
from backends.methods import ief
from backends.spec import Batch, Problem, adapter_class


class IEF(adapter_class(ief.CARD, "jax")):  # type: ignore[misc]
    def init(self, problem: Problem, hparams: ief.IEFHyperparams) -> ScheduledState:
        return init_state(problem, hparams)

    def direction(
        self, problem: Problem, params: jax.Array, state: ScheduledState, batch: Batch[jax.Array]
    ) -> jax.Array:
        return gram_method_direction(problem, params, batch, state.hparams, ief_targets=True)[1].direction

    def step(
        self, problem: Problem, params: jax.Array, state: ScheduledState, batch: Batch[jax.Array]
    ) -> tuple[jax.Array, ScheduledState, dict[str, Any]]:
        return gram_method_step(problem, params, state, batch, ief_targets=True)


ADAPTER = IEF
