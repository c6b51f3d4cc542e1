"""Lion on PyTorch; the update rule and reference are in ``ngbench_lion.card``."""

from __future__ import annotations

from typing import Any, NamedTuple

import torch
from torch import Tensor

from backends.spec import Batch, adapter_class
from ngbench_lion.card import CARD, LionHyperparams


class LionState(NamedTuple):
    hparams: LionHyperparams
    momentum: Tensor


def lion_direction(hp: LionHyperparams, momentum: Tensor, g: Tensor, params: Tensor) -> Tensor:
    """``sign(b1 m + (1 - b1) g) + wd theta``."""
    d = torch.sign(hp.b1 * momentum + (1.0 - hp.b1) * g)
    return d + hp.weight_decay * params if hp.weight_decay else d


class Lion(adapter_class(CARD, "torch")):  # type: ignore[misc]
    def init(self, problem: Any, hparams: LionHyperparams) -> LionState:
        return LionState(hparams, torch.zeros(problem.num_params, dtype=problem.dtype, device=problem.device))

    def direction(self, problem: Any, params: Tensor, state: LionState, batch: Batch[Tensor]) -> Tensor:
        return lion_direction(state.hparams, state.momentum, problem.oracle(params, batch).grad(), params)

    def step(
        self, problem: Any, params: Tensor, state: LionState, batch: Batch[Tensor]
    ) -> tuple[Tensor, LionState, dict[str, Any]]:
        hp = state.hparams
        loss, g = problem.oracle(params, batch).loss_and_grad()
        d = lion_direction(hp, state.momentum, g, params)
        momentum = hp.b2 * state.momentum + (1.0 - hp.b2) * g
        return params - hp.lr * d, LionState(hp, momentum), {"loss": loss, "lr": hp.lr}
