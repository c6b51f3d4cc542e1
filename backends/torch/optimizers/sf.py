"""Exact SF on PyTorch; the update rule, references and defaults are in ``backends.methods.sf``.

One forward with taps, one reverse pass to the taps for the true labels and one per label draw
(no parameter gradient), the Gram of the stacked rows ``[J; J^]`` (its cross block gives
``J^ g``), one float64 ``kB x kB`` solve, and ``[J; J^]^T w`` from the taps, which holds ``g``
(``backends.sample_space.sampled_fisher_from_stack``; docs/profiling.md, "SF (PyTorch)").
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from backends.methods import sf
from backends.spec import Batch, Problem, adapter_class
from backends.torch import sample_space
from backends.torch.optimizers._gram_step import ScheduledState, init_state, scheduled_update


def sf_direction(
    problem: Problem, params: Tensor, batch: Batch[Tensor], hp: sf.SFHyperparams
) -> tuple[Tensor, sample_space.WoodburyApply]:
    """Mean loss and ``(F^ + lambda I)^{-1} g`` (Woodbury, iEF paper Eqn 49)."""
    oracle = problem.oracle(params, batch, taps=sample_space.uses_taps(problem.layout))
    if torch.compiler.is_compiling():
        # Dynamo fails to trace a reverse pass to the taps alone that comes before one reaching
        # the parameters: compiled, the gradient's backward comes first (same passes, and the
        # same direction up to rounding).
        loss, g = oracle.loss_and_grad()
        jac = sample_space.cotangent_jacobian(oracle, oracle.sampled_logit_grads(hp.samples))
        return loss, sample_space.woodbury_inverse_apply(jac, g, hp.damping)
    return oracle.loss(), sample_space.sampled_fisher_apply(oracle, hp.samples, hp.damping)


class SF(adapter_class(sf.CARD, "torch")):  # type: ignore[misc]
    def init(self, problem: Problem, hparams: sf.SFHyperparams) -> ScheduledState:
        return init_state(problem, hparams)

    def direction(self, problem: Problem, params: Tensor, state: ScheduledState, batch: Batch[Tensor]) -> Tensor:
        return sf_direction(problem, params, batch, state.hparams)[1].x

    def step(
        self, problem: Problem, params: Tensor, state: ScheduledState, batch: Batch[Tensor]
    ) -> tuple[Tensor, ScheduledState, dict[str, Any]]:
        hp = state.hparams
        loss, res = sf_direction(problem, params, batch, hp)
        new, new_state, stats = scheduled_update(params, res.x, state)
        stats.update(loss=loss, damping=hp.damping, solve_residual=res.solve.residual)
        return new, new_state, stats


ADAPTER = SF
