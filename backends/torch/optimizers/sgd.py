"""SGD with momentum on PyTorch; the update rule and references are in ``backends.methods.sgd``."""

from __future__ import annotations

from typing import Any, NamedTuple

from torch import Tensor

from backends.methods import sgd
from backends.spec import Batch, Problem, adapter_class


class SGDState(NamedTuple):
    hparams: sgd.SGDHyperparams
    momentum_buffer: Tensor | None


def update(hp: sgd.SGDHyperparams, params: Tensor, buf: Tensor | None, g: Tensor) -> tuple[Tensor, Tensor | None]:
    """``(theta_{t+1}, b_t)`` from the gradient ``g`` and the buffer ``b_{t-1}`` (``None`` before
    the first step): the parameter update of ``backends.methods.sgd``, without passes."""
    d = g + hp.weight_decay * params if hp.weight_decay else g
    if hp.momentum:
        buf = d.clone() if buf is None else buf.mul(hp.momentum).add_(d)
        d = d.add(buf, alpha=hp.momentum) if hp.nesterov else buf
    return params - hp.lr * d, buf


class SGD(adapter_class(sgd.CARD, "torch")):  # type: ignore[misc]
    def init(self, problem: Problem, hparams: sgd.SGDHyperparams) -> SGDState:
        return SGDState(hparams, None)

    def direction(self, problem: Problem, params: Tensor, state: SGDState, batch: Batch[Tensor]) -> Tensor:
        return problem.oracle(params, batch).grad()

    def step(
        self, problem: Problem, params: Tensor, state: SGDState, batch: Batch[Tensor]
    ) -> tuple[Tensor, SGDState, dict[str, Any]]:
        hp = state.hparams
        oracle = problem.oracle(params, batch)
        loss, g = oracle.loss_and_grad()
        new, buf = update(hp, params, state.momentum_buffer, g)
        return new, SGDState(hp, buf), {"loss": loss, "lr": hp.lr}


ADAPTER = SGD
