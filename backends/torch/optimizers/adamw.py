"""AdamW on PyTorch; the update rule and references are in ``backends.methods.adamw``."""

from __future__ import annotations

from typing import Any, NamedTuple

import torch
from torch import Tensor
from torch.optim.adamw import adamw as torch_adamw  # torch.optim.AdamW's functional form

from backends.methods import adamw
from backends.spec import Batch, Problem, adapter_class


class AdamWState(NamedTuple):
    hparams: adamw.AdamWHyperparams
    count: int
    mu: Tensor
    nu: Tensor


def _moments(hp: adamw.AdamWHyperparams, state: AdamWState, g: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """New moments and the bias-corrected Adam direction ``m^ / (sqrt(v^) + eps)``."""
    t = state.count + 1
    mu = torch.lerp(state.mu, g, 1.0 - hp.b1)
    nu = state.nu.mul(hp.b2).addcmul_(g, g, value=1.0 - hp.b2)
    direction = (mu / (1.0 - hp.b1**t)) / (nu.div(1.0 - hp.b2**t).sqrt_().add_(hp.eps))
    return mu, nu, direction


def update(hp: adamw.AdamWHyperparams, params: Tensor, state: AdamWState, g: Tensor) -> tuple[Tensor, AdamWState]:
    """``(theta_{t+1}, state_{t+1})`` from the gradient ``g``: the moments and the decoupled
    update of ``backends.methods.adamw``, without passes.

    Eager: ``torch.optim.AdamW``'s own fused kernel (its functional form
    ``torch.optim.adamw.adamw(..., fused=True)``) on copies of the parameters and moments (the
    adapter's state stays immutable): one pass over the four vectors where the formula below
    runs eleven elementwise operators, each reading and writing a parameter-sized vector
    (docs/profiling.md, "Optimizer updates"). Under ``torch.compile`` the formula, which
    Inductor fuses itself. Both are ``torch.optim.AdamW``'s update; they differ from each
    other in the last bits of rounding only."""
    if torch.compiler.is_compiling():
        mu, nu, direction = _moments(hp, state, g)
        new = params * (1.0 - hp.lr * hp.weight_decay) - hp.lr * direction
        return new, AdamWState(hp, state.count + 1, mu, nu)
    new, mu, nu = params.clone(), state.mu.clone(), state.nu.clone()
    step = torch.tensor(float(state.count), dtype=torch.float32, device=params.device)  # the kernel adds 1
    torch_adamw(
        [new],
        [g],
        [mu],
        [nu],
        [],
        [step],
        fused=True,
        amsgrad=False,
        beta1=hp.b1,
        beta2=hp.b2,
        lr=hp.lr,
        weight_decay=hp.weight_decay,
        eps=hp.eps,
        maximize=False,
    )
    return new, AdamWState(hp, state.count + 1, mu, nu)


class AdamW(adapter_class(adamw.CARD, "torch")):  # type: ignore[misc]
    def init(self, problem: Problem, hparams: adamw.AdamWHyperparams) -> AdamWState:
        zeros = torch.zeros(problem.num_params, dtype=problem.dtype, device=problem.device)
        return AdamWState(hparams, 0, zeros, zeros.clone())

    def direction(self, problem: Problem, params: Tensor, state: AdamWState, batch: Batch[Tensor]) -> Tensor:
        return _moments(state.hparams, state, problem.oracle(params, batch).grad())[2]

    def step(
        self, problem: Problem, params: Tensor, state: AdamWState, batch: Batch[Tensor]
    ) -> tuple[Tensor, AdamWState, dict[str, Any]]:
        hp = state.hparams
        loss, g = problem.oracle(params, batch).loss_and_grad()
        new, new_state = update(hp, params, state, g)
        return new, new_state, {"loss": loss, "lr": hp.lr}


ADAPTER = AdamW
