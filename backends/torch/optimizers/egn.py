"""EGN on PyTorch; the update rule, the exact symmetric solve and references are in ``backends.methods.egn``.

Per step: one forward, then either the dense output Jacobian (``vmap(jacrev)``, the ``dense``
Gram) or ``C`` reverse passes (vectorised into one) for the Linear-layer taps (the ``taps``
Gram); the Gram in the working dtype, its ``BC x BC`` Cholesky solve in float64; ``Jt^T v`` as a
matrix product (per layer for ``taps``). ``g^T d`` and ``d^T G d`` come from the solve itself
(``d = Jt^T v``, ``Jt Jt^T v = s - B lam v``); only with momentum do they cost a backward / a
JVP. The line search costs one forward per trial.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import torch
from torch import Tensor

from backends import egn_gram
from backends.methods import egn
from backends.spec import Batch, Problem, adapter_class
from backends.torch.batched_passes import tap_grads_many
from backends.torch.ops import TORCH_OPS


class EGNState(NamedTuple):
    hparams: egn.EGNHyperparams
    steps: int
    #: Un-corrected momentum ``m_t`` (None when momentum is off).
    momentum: Tensor | None
    #: Last accepted step size (the line search's ``alpha_prev``).
    step_size: float
    #: Current lambda, a 0-d float64 tensor.
    damping: Tensor


def taps_gram_applicable(problem: Problem) -> bool:
    """Every trainable parameter sits in a Linear layer fed 2-D inputs (``backends.blocks``)."""
    return egn_gram.taps_applicable(problem.layout)


class EGN(adapter_class(egn.CARD, "torch")):  # type: ignore[misc]
    def init(self, problem: Problem, hparams: egn.EGNHyperparams) -> EGNState:
        lam = torch.tensor(hparams.damping, dtype=torch.float64, device=problem.device)
        return EGNState(hparams, 0, None, hparams.lr, lam)

    def _direction(
        self, problem: Problem, params: Tensor, state: EGNState, batch: Batch[Tensor]
    ) -> tuple[Any, egn_gram.Solve, Tensor, Tensor | None]:
        hp = state.hparams
        mode = egn_gram.gram_mode(problem.layout, hp)
        oracle = problem.oracle(params, batch, taps=mode == "taps")
        sol = egn_gram.egn_solve(TORCH_OPS, problem, oracle, hp, state.damping, mode, tap_grads_many)
        if hp.momentum == 0.0:
            return oracle, sol, sol.d, None
        prev = torch.zeros_like(sol.d) if state.momentum is None else state.momentum
        m = TORCH_OPS.lerp(prev, sol.d, 1.0 - hp.momentum)
        return oracle, sol, m / (1.0 - hp.momentum ** (state.steps + 1)), m

    def direction(self, problem: Problem, params: Tensor, state: EGNState, batch: Batch[Tensor]) -> Tensor:
        return self._direction(problem, params, state, batch)[2]

    def step(
        self, problem: Problem, params: Tensor, state: EGNState, batch: Batch[Tensor]
    ) -> tuple[Tensor, EGNState, dict[str, Any]]:
        hp = state.hparams
        lam = state.damping
        oracle, sol, d, m = self._direction(problem, params, state, batch)
        loss = oracle.loss()
        need_gd = hp.line_search or hp.adaptive_damping
        if need_gd:
            gd = egn_gram.step_grad_dot(TORCH_OPS, oracle, sol, m, d, lam)

        stats: dict[str, Any] = {"loss": loss, "damping": lam}
        new_loss: Tensor | None = None
        if hp.line_search:
            alpha = egn.initial_step_size(hp, state.step_size)
            f0, gd_f = float(loss), float(gd)
            eps = torch.finfo(loss.dtype).eps
            trials = 0
            while True:
                candidate = params - alpha * d
                new_loss = problem.oracle(candidate, batch).loss_value()
                trials += 1
                if egn.armijo_accepts(f0, float(new_loss), alpha, gd_f, hp.armijo_c, eps) or trials > hp.ls_max_steps:
                    break
                alpha = min(alpha * hp.ls_decrease, hp.lr)
            new_params = candidate
            stats["line_search_steps"] = trials - 1
        else:
            alpha = hp.lr
            new_params = params - alpha * d
        stats["lr"] = alpha

        new_lam = lam
        if hp.adaptive_damping:
            if new_loss is None:
                new_loss = problem.oracle(new_params, batch).loss_value()
            losses = (loss, new_loss)
            rho, new_lam, model_change = egn_gram.step_damping(TORCH_OPS, hp, oracle, sol, m, d, lam, losses, alpha, gd)
            stats.update(rho=rho, model_change=model_change)
        if need_gd:
            stats["grad_dot_direction"] = gd
        new_state = EGNState(hp, state.steps + 1, m, float(alpha), new_lam)
        return new_params, new_state, stats


ADAPTER = EGN
