"""SINGD on PyTorch: ``singd.optim.optimizer.SINGD`` (singd 0.0.5) on the problem's ``nn.Module``.

The method and defaults are in ``ngbench_reference.singd.card``. SINGD is not a ``torch.optim``
optimizer of tensors: it hooks the model's ``nn.Linear`` / ``nn.Conv2d`` modules and reads the
layer inputs and output gradients of the forward and backward the training loop runs. So the
adapter keeps one ``nn.Module`` per run (the model hook: ``problem.module_from_flat``) in a
move-only state, like ``wrap_torch_optimizer``'s; each ``step`` copies the incoming flat
parameters into the module, runs forward and backward on the batch (counted), steps SINGD and the
SGD on the other parameters, and returns the module's parameters as a new flat vector.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from singd.optim.optimizer import SINGD
from torch import Tensor, nn

from backends.spec import Batch, LiveOptimizers, wrap_torch_optimizer
from ngbench_reference.singd.card import CARD

Array = Tensor


def singd_modules(module: nn.Module) -> list[nn.Module]:
    """The modules SINGD preconditions (its ``SUPPORTED_MODULES``), in module order."""
    return [m for m in module.modules() if isinstance(m, SINGD.SUPPORTED_MODULES)]


def mean_loss(likelihood: str, z: Tensor, y: Tensor) -> Tensor:
    """ngbench's mean batch loss: cross-entropy, or ``mean_n 0.5 ||z_n - y_n||^2``."""
    if likelihood == "softmax_ce":
        return nn.functional.cross_entropy(z, y)
    return 0.5 * ((z - y) ** 2).sum(dim=-1).mean()


class _SingdLive(LiveOptimizers):
    """One run's module, SINGD on its Linear/Conv2d parameters and SGD on the rest."""

    def __init__(self, problem: Any, hp: Any) -> None:
        self.likelihood = problem.likelihood
        self.module = problem.module_from_flat(problem.params0)
        self.params = [p for p in self.module.parameters() if p.requires_grad]  # the flat vector's order
        hooked = {id(p) for m in singd_modules(self.module) for p in m.parameters() if p.requires_grad}
        ours = [p for p in self.params if id(p) in hooked]
        rest = [p for p in self.params if id(p) not in hooked]
        structures = (hp.structure, hp.structure)
        self.optimizers: list[torch.optim.Optimizer] = []
        if ours:
            self.optimizers.append(
                SINGD(
                    self.module,
                    params=ours,
                    lr=hp.lr,
                    momentum=hp.momentum,
                    damping=hp.damping,
                    alpha1=hp.alpha1,
                    weight_decay=hp.weight_decay,
                    T=hp.T,
                    loss_average="batch",
                    lr_cov=hp.lr_cov,
                    structures=structures,
                    kfac_like=hp.kfac_like,
                    warn_unsupported=False,
                )
            )
        if rest:  # SINGD's update with K = C = I
            self.optimizers.append(torch.optim.SGD(rest, lr=hp.lr, momentum=hp.momentum, weight_decay=hp.weight_decay))
        self.steps = 0

    def run_batch(self, params: Tensor, batch: Batch[Tensor]) -> tuple[Tensor, Tensor]:
        """One SINGD step from ``params`` on ``batch``: ``(new flat parameters, loss at params)``."""
        with torch.no_grad():  # in place: SINGD finds its parameters by storage address
            offset = 0
            for p in self.params:
                p.copy_(params[offset : offset + p.numel()].view_as(p))
                offset += p.numel()
        for opt in self.optimizers:
            opt.zero_grad(set_to_none=True)
        loss = mean_loss(self.likelihood, self.module(batch.x), batch.y)
        loss.backward()
        for opt in self.optimizers:
            opt.step()
        self.steps += 1
        with torch.no_grad():
            return nn.utils.parameters_to_vector(self.params).clone(), loss.detach()


class Singd(wrap_torch_optimizer(SINGD, card=CARD)):  # type: ignore[misc]
    """``singd.optim.optimizer.SINGD`` (singd 0.0.5) through the torch model hook."""

    def build_live(self, problem: Any, hp: Any) -> Any:
        return _SingdLive(problem, hp)

    def step(
        self, problem: Any, params: Tensor, state: Any, batch: Batch[Tensor]
    ) -> tuple[Tensor, Any, dict[str, Any]]:
        live = self.take_live(problem, state)
        new, loss = live.run_batch(params, batch)
        problem.counters.add("forward", 1)  # through the module, not the oracle: booked here
        problem.counters.add("backward", 1)
        return new, type(state)(state.hparams, type(state.slot)(live)), {"loss": loss, "lr": state.hparams.lr}

    def direction(self, problem: Any, params: Tensor, state: Any, batch: Batch[Tensor]) -> Tensor:
        """``(params - new) / lr`` of one step on a copy of the state (untimed): SINGD's update per unit step."""
        live = self.take_live(problem, copy.deepcopy(state))
        new, _ = live.run_batch(params, batch)
        return (params - new) / state.hparams.lr
