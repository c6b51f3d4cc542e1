"""Exact iEF on PyTorch; the update rule, references and defaults are in ``backends.methods.ief``.

As EF (``backends.torch.optimizers.ef``) with the per-sample targets ``s_n = ||r_n||^2`` from
the closed-form logit gradients (no extra pass): one forward with taps, one backward, the Gram
from the taps, one float64 ``B x B`` solve, ``J^T x`` from the taps.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor

from backends.methods import ief
from backends.spec import Batch, Problem, adapter_class
from backends.torch.optimizers._gram_step import ScheduledState, gram_method_direction, gram_method_step, init_state


class IEF(adapter_class(ief.CARD, "torch")):  # type: ignore[misc]
    def init(self, problem: Problem, hparams: ief.IEFHyperparams) -> ScheduledState:
        return init_state(problem, hparams)

    def direction(self, problem: Problem, params: Tensor, state: ScheduledState, batch: Batch[Tensor]) -> Tensor:
        return gram_method_direction(problem, params, batch, state.hparams, ief_targets=True)[1].direction

    def step(
        self, problem: Problem, params: Tensor, state: ScheduledState, batch: Batch[Tensor]
    ) -> tuple[Tensor, ScheduledState, dict[str, Any]]:
        return gram_method_step(problem, params, state, batch, ief_targets=True)


ADAPTER = IEF
