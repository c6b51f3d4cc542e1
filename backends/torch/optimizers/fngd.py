"""FNGD on PyTorch; the update rule, references, choices and defaults are in ``backends.methods.fngd``.

Solve steps (the first ``solve_epochs`` epochs): one forward with taps, one backward, the
per-layer (or total) Gram from the taps, one batched float64 ``B x B`` solve per block,
``E_l^T diag(c_l) A_bar_l`` from the taps. Later steps: a table lookup and one forward and one
backward; with shared coefficients the backward is that of the reweighted loss
``sum_n c_n l_n`` (no taps: exactly SGD's passes).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np
import torch
from torch import Tensor

from backends.methods import fngd
from backends.spec import Batch, Problem, adapter_class
from backends.torch import sample_space


class FNGDState(NamedTuple):
    """``table``: stored coefficients, ``(n_train, G)`` (``indexing="sample"``) or
    ``(steps_per_epoch, B, G)`` (``"iteration"``), NaN where none was stored; ``coef_sum``,
    ``coef_count``: running sum and count of stored coefficients per block (the fill value
    for samples never seen while solving); ``filled``: the NaNs of ``table`` have been replaced
    by that fill value (done once, at the first step after the solve epochs);
    ``solve_count``: ``B x B`` systems solved so far."""

    hparams: fngd.FNGDHyperparams
    step: int
    steps_per_epoch: int
    table: Tensor
    coef_sum: Tensor
    coef_count: int
    filled: bool
    solve_count: int
    momentum_buffer: Tensor | None


class _Direction(NamedTuple):
    loss: Tensor
    direction: Tensor
    coefficients: Tensor  # (G, B)
    solve: sample_space.DampedSolve | None


def _num_blocks(problem: Problem, hp: fngd.FNGDHyperparams) -> int:
    return 1 if hp.coefficients == "shared" else len(sample_space.block_spans(problem.layout))


def _solving(state: FNGDState) -> bool:
    return state.step < state.hparams.solve_epochs * state.steps_per_epoch


def _filled_table(state: FNGDState) -> Tensor:
    """The table with never-stored entries set to their block's mean stored coefficient."""
    fill = state.coef_sum / max(state.coef_count, 1)
    return torch.where(torch.isnan(state.table), fill, state.table)


def lookup(state: FNGDState, batch: Batch[Tensor]) -> Tensor:
    """Stored coefficients of the batch, ``(G, B)``."""
    table = state.table if state.filled else _filled_table(state)
    if state.hparams.indexing == "iteration":
        return table[state.step % state.steps_per_epoch].T
    return table.index_select(0, batch.index).T


def _direction(problem: Problem, params: Tensor, state: FNGDState, batch: Batch[Tensor]) -> _Direction:
    hp = state.hparams
    shared = hp.coefficients == "shared"
    if not _solving(state):
        c = lookup(state, batch)
        if shared:
            oracle = problem.oracle(params, batch)
            return _Direction(oracle.loss(), oracle.weighted_grad(c[0]), c, None)
        oracle = problem.oracle(params, batch, taps=sample_space.uses_taps(problem.layout))
        jac = sample_space.true_jacobian(oracle)
        return _Direction(oracle.loss(), jac.rmatvec_groups(c), c, None)
    oracle = problem.oracle(params, batch, taps=sample_space.uses_taps(problem.layout))
    d, sol = solved_direction(hp, sample_space.true_jacobian(oracle), params)
    return _Direction(oracle.loss(), d, sol.x, sol)


def solved_direction(hp: fngd.FNGDHyperparams, jac: Any, params: Tensor) -> tuple[Tensor, sample_space.DampedSolve]:
    """Solve steps, after the passes: ``c_l = (K_l + B lambda I)^{-1} 1`` (one batched float64
    solve) and ``d = sum_l J_l^T c_l``."""
    shared = hp.coefficients == "shared"
    grams = jac.gram().unsqueeze(0) if shared else jac.group_grams()
    ones = torch.ones(grams.shape[:2], dtype=params.dtype, device=params.device)
    sol = sample_space.damped_solve(grams, ones, jac.rows * hp.damping)
    return (jac.rmatvec(sol.x[0]) if shared else jac.rmatvec_groups(sol.x)), sol


def heavy_ball(hp: fngd.FNGDHyperparams, params: Tensor, d: Tensor, buf: Tensor | None) -> tuple[Tensor, Tensor | None]:
    """``(u_t, b_t)``: the SGD base's update ``u = d + wd theta`` through the heavy-ball buffer."""
    u = d + hp.weight_decay * params if hp.weight_decay else d
    if hp.momentum:
        buf = u.clone() if buf is None else buf.mul(hp.momentum).add_(u)
        u = buf
    return u, buf


def _times_lr(lr: float, norm: Tensor) -> Any:
    """``lr * norm`` (0-d). On a CPU device in an eager step, on the host: torch multiplies a
    0-d tensor by a Python number in the tensor's dtype, as NumPy does here (the same bits),
    without a dispatch; the statistic is then a NumPy scalar (as the scheduled update's)."""
    if not sample_space.host_readable(norm):
        return lr * norm
    dtype = np.float32 if norm.dtype == torch.float32 else np.float64
    return dtype(lr) * dtype(norm.item())


def _store(state: FNGDState, batch: Batch[Tensor], c: Tensor) -> FNGDState:
    rows = c.T.to(state.table.dtype)
    if state.hparams.indexing == "iteration":
        table = state.table.index_copy(
            0, torch.tensor([state.step % state.steps_per_epoch], device=state.table.device), rows.unsqueeze(0)
        )
    else:
        table = state.table.index_copy(0, batch.index, rows)
    return state._replace(
        table=table,
        coef_sum=state.coef_sum + rows.sum(dim=0),
        coef_count=state.coef_count + rows.shape[0],
        solve_count=state.solve_count + c.shape[0],
    )


class FNGD(adapter_class(fngd.CARD, "torch")):  # type: ignore[misc]
    def init(self, problem: Problem, hparams: fngd.FNGDHyperparams) -> FNGDState:
        blocks = _num_blocks(problem, hparams)
        per_epoch = problem.n_train // problem.batch_size
        shape = (problem.n_train, blocks) if hparams.indexing == "sample" else (per_epoch, problem.batch_size, blocks)
        table = torch.full(shape, float("nan"), dtype=problem.dtype, device=problem.device)
        zeros = torch.zeros(blocks, dtype=problem.dtype, device=problem.device)
        return FNGDState(hparams, 0, per_epoch, table, zeros, 0, False, 0, None)

    def direction(self, problem: Problem, params: Tensor, state: FNGDState, batch: Batch[Tensor]) -> Tensor:
        return _direction(problem, params, state, batch).direction

    def step(
        self, problem: Problem, params: Tensor, state: FNGDState, batch: Batch[Tensor]
    ) -> tuple[Tensor, FNGDState, dict[str, Any]]:
        hp = state.hparams
        res = _direction(problem, params, state, batch)
        stats: dict[str, Any] = {"loss": res.loss, "lr": hp.lr, "damping": hp.damping}
        new_state = state
        if res.solve is None and not state.filled:
            new_state = state._replace(table=_filled_table(state), filled=True)
        # NaN on steps that reuse stored coefficients: the same stats on every step (as in JAX).
        stats["solve_residual"] = float("nan")
        if res.solve is not None:
            new_state = _store(state, batch, res.coefficients)
            stats["solve_residual"] = res.solve.residual
        stats["solves"] = new_state.solve_count - state.solve_count
        stats["solve_count"] = new_state.solve_count
        u, buf = heavy_ball(hp, params, res.direction, state.momentum_buffer)
        stats["direction_norm"] = torch.linalg.vector_norm(res.direction)
        stats["update_norm"] = _times_lr(hp.lr, torch.linalg.vector_norm(u))
        new_state = new_state._replace(step=state.step + 1, momentum_buffer=buf)
        return params - hp.lr * u, new_state, stats


ADAPTER = FNGD
