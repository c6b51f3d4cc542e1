"""What the EF, iEF and SF adapters share: the step-counter state, the scheduled update, and
the Gram-solve step of EF and iEF (which differ only in the per-sample targets).

Not an adapter (the registry imports only the modules named in ``BUILTIN_METHODS``).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np
import torch
from torch import Tensor

from backends import schedules
from backends.spec import Batch, Problem
from backends.torch import sample_space
from backends.torch.ops import TORCH_OPS


class ScheduledState(NamedTuple):
    """``hparams``; ``step``: steps taken; ``total_steps``: the run's step budget at ``init``."""

    hparams: Any
    step: int
    total_steps: int


def init_state(problem: Problem, hparams: Any) -> ScheduledState:
    return ScheduledState(hparams, 0, int(problem.step_budget))


def scheduled_update(
    params: Tensor, direction: Tensor, state: ScheduledState
) -> tuple[Tensor, ScheduledState, dict[str, Any]]:
    """``theta - s d`` with ``s`` from ``backends.schedules`` (normalised / linear decay).

    Returns the new parameters, the advanced state and the stats ``lr`` (``s``, so that
    ``step_along_direction`` holds), ``lr_schedule`` (``lr_t``), ``direction_norm`` and
    ``update_norm``.
    """
    if sample_space.host_readable(direction):
        new, stats = host_scheduled_update(state.hparams, params, direction, state.step, state.total_steps)
    else:
        new, stats = schedules.scheduled_update(
            TORCH_OPS, state.hparams, params, direction, state.step, state.total_steps
        )
    return new, state._replace(step=state.step + 1), stats


def host_scheduled_update(
    hp: Any, params: Tensor, direction: Tensor, step: int, total_steps: int
) -> tuple[Tensor, dict[str, Any]]:
    """``schedules.scheduled_update`` with its scalar arithmetic on the host (an eager step on a
    CPU device): the same IEEE operations in the direction's dtype and in the order torch runs
    them on 0-d tensors (``lr / t`` is ``reciprocal(t) * lr`` there), so the same bits, without
    four 0-d dispatches. The statistics are NumPy scalars instead of 0-d tensors."""
    dtype = np.float32 if direction.dtype == torch.float32 else np.float64
    lr_t = schedules.scheduled_lr(hp.lr, hp.lr_decay, step, total_steps)
    norm = dtype(torch.linalg.vector_norm(direction).item())
    # Normalised: s = lr_t / (||d|| + eps), rounded as torch rounds it; else s = lr_t.
    size = (dtype(1.0) / (norm + dtype(schedules.NORMALISE_EPS))) * dtype(lr_t) if hp.normalise_update else lr_t
    stats = {"lr": size, "lr_schedule": lr_t, "direction_norm": norm, "update_norm": dtype(size) * norm}
    return params - direction * float(size), stats


def gram_method_direction(
    problem: Problem, params: Tensor, batch: Batch[Tensor], hp: Any, *, ief_targets: bool
) -> tuple[Tensor, sample_space.GramDirection]:
    """Mean loss and ``J^T (K + B lambda I)^{-1} t`` with ``t = 1`` (EF, iEF paper Eqn 5) or
    ``t_n = ||r_n||^2`` (iEF, Eqn 8). Passes: one forward (taps), one backward."""
    oracle = problem.oracle(params, batch, taps=sample_space.uses_taps(problem.layout))
    loss = oracle.loss()
    jac = sample_space.true_jacobian(oracle)
    if ief_targets:
        rhs = oracle.logit_grads().pow(2).sum(dim=-1)
    else:
        rhs = torch.ones(jac.rows, dtype=params.dtype, device=params.device)
    return loss, sample_space.gram_direction(jac, rhs, hp.damping, hp.dedup_threshold)


def gram_method_step(
    problem: Problem, params: Tensor, state: ScheduledState, batch: Batch[Tensor], *, ief_targets: bool
) -> tuple[Tensor, ScheduledState, dict[str, Any]]:
    """One EF/iEF step: :func:`gram_method_direction` then :func:`scheduled_update`."""
    hp = state.hparams
    loss, res = gram_method_direction(problem, params, batch, hp, ief_targets=ief_targets)
    new, new_state, stats = scheduled_update(params, res.direction, state)
    stats.update(
        loss=loss,
        damping=hp.damping,
        solve_residual=res.solve.residual,
        target_residual=res.target_residual,
        kept_samples=res.kept,
    )
    return new, new_state, stats
