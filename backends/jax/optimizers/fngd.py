"""FNGD on JAX; the update rule, references, choices and defaults are in ``backends.methods.fngd``.

Solve steps (the first ``solve_epochs`` epochs): one forward with taps, one backward, the
per-layer (or total) Gram from the taps, one batched float64 ``B x B`` solve per block,
``E_l^T diag(c_l) A_bar_l`` from the taps. Later steps: a table lookup and one forward and one
backward; with shared coefficients the backward is that of the reweighted loss
``sum_n c_n l_n`` (no taps: exactly SGD's passes).

The step is jitted whole, so "solving or reusing" is a traced predicate
(``step < solve_epochs * steps_per_epoch``) and the two paths are the branches of one
``lax.cond``: one compiled step serves the whole run, and after the solve epochs only the
lookup branch executes (no Gram, no solve). Each branch books its own passes
(``Counters.capture`` + ``add_scaled``), as the torch adapter counts the path it takes.

Differences of representation from the torch adapter (``backends/torch/optimizers/fngd.py``),
none in the numbers:

* the coefficient table is a fixed-shape array from ``init`` on, with a ``seen`` mask where
  torch marks never-stored entries with NaN and replaces them once, at the first step after
  the solve epochs; the lookup here applies the same fill value (the running mean of the
  stored coefficients of each block, constant once the solve epochs are over) with a
  ``where`` on the looked-up rows, so the table itself never needs a second pass;
* the store is ``table.at[index].set(...)`` of the solved rows on solve steps and of the rows
  already there on reuse steps (a fixed-shape scatter either way);
* the momentum buffer starts at zero (``mu * 0 + u_1 = u_1`` exactly: torch's ``b_1 = u_1``);
* ``stats["solve_residual"]`` is reported on every step (one compiled step has one set of
  stats), NaN on steps that solve nothing; torch reports it on solve steps only. The store
  keeps NaN as "no value".
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from backends.jax import sample_space
from backends.jax.static import StaticInt
from backends.methods import fngd
from backends.spec import Batch, Problem, adapter_class

Array = jax.Array


class FNGDState(NamedTuple):
    """``table``: stored coefficients, ``(n_train, G)`` (``indexing="sample"``) or
    ``(steps_per_epoch, B, G)`` (``"iteration"``); ``seen``: which rows of ``table`` hold stored
    coefficients (``(n_train,)`` or ``(steps_per_epoch,)``); ``coef_sum``, ``coef_count``:
    running sum and count of stored coefficients per block (the fill value for samples never
    seen while solving); ``solve_count``: ``B x B`` systems solved so far; ``momentum_buffer``:
    the heavy-ball buffer (zeros before the first step)."""

    hparams: fngd.FNGDHyperparams
    step: Array
    steps_per_epoch: StaticInt
    table: Array
    seen: Array
    coef_sum: Array
    coef_count: Array
    solve_count: Array
    momentum_buffer: Array


class _Direction(NamedTuple):
    loss: Array
    direction: Array
    coefficients: Array  # (G, B)
    solve_residual: Array  # float64; NaN where nothing was solved


def _num_blocks(problem: Problem, hp: fngd.FNGDHyperparams) -> int:
    return 1 if hp.coefficients == "shared" else len(sample_space.block_spans(problem.layout))


def _solving(state: FNGDState) -> Array:
    """Traced predicate: this step solves for (and stores) coefficients."""
    return state.step < state.hparams.solve_epochs * int(state.steps_per_epoch)


def lookup(state: FNGDState, batch: Batch[Array]) -> Array:
    """Stored coefficients of the batch, ``(G, B)``; never-stored entries get their block's mean
    stored coefficient."""
    fill = state.coef_sum / jnp.maximum(state.coef_count, 1).astype(state.coef_sum.dtype)
    if state.hparams.indexing == "iteration":
        position = state.step % int(state.steps_per_epoch)
        rows, seen = state.table[position], state.seen[position]
    else:
        rows, seen = state.table[batch.index], state.seen[batch.index][:, None]
    return jnp.where(seen, rows, fill).T


def _solve_direction(problem: Problem, params: Array, batch: Batch[Array], hp: fngd.FNGDHyperparams) -> _Direction:
    """Solve steps: ``c_l = (K_l + B lambda I)^{-1} 1`` and ``d = sum_l J_l^T c_l``."""
    oracle = problem.oracle(params, batch, taps=sample_space.uses_taps(problem.layout))
    d, sol = solved_direction(hp, sample_space.true_jacobian(oracle), params)
    return _Direction(oracle.loss(), d, sol.x, sol.residual)


def solved_direction(hp: fngd.FNGDHyperparams, jac: Any, params: Array) -> tuple[Array, Any]:
    """Solve steps, after the passes: ``c_l = (K_l + B lambda I)^{-1} 1`` (one batched float64
    solve) and ``d = sum_l J_l^T c_l``."""
    shared = hp.coefficients == "shared"
    grams = jac.gram()[None] if shared else jac.group_grams()
    ones = jnp.ones(grams.shape[:2], dtype=params.dtype)
    sol = sample_space.damped_solve(grams, ones, jac.rows * hp.damping)
    return (jac.rmatvec(sol.x[0]) if shared else jac.rmatvec_groups(sol.x)), sol


def heavy_ball(hp: fngd.FNGDHyperparams, params: Array, d: Array, buf: Array) -> tuple[Array, Array]:
    """``(u_t, b_t)``: the SGD base's update ``u = d + wd theta`` through the heavy-ball buffer."""
    u = d + hp.weight_decay * params if hp.weight_decay else d
    if hp.momentum:
        buf = hp.momentum * buf + u
        u = buf
    return u, buf


def _reuse_direction(problem: Problem, params: Array, state: FNGDState, batch: Batch[Array]) -> _Direction:
    """Later steps: ``d = sum_l J_l^T c_l`` with the stored ``c_l``; no Gram, no solve."""
    c = lookup(state, batch)
    nan = jnp.full((), jnp.nan, dtype=jnp.float64)
    if state.hparams.coefficients == "shared":
        oracle = problem.oracle(params, batch)
        return _Direction(oracle.loss(), oracle.weighted_grad(c[0]), c, nan)
    oracle = problem.oracle(params, batch, taps=sample_space.uses_taps(problem.layout))
    jac = sample_space.true_jacobian(oracle)
    return _Direction(oracle.loss(), jac.rmatvec_groups(c), c, nan)


def _direction(problem: Problem, params: Array, state: FNGDState, batch: Batch[Array]) -> tuple[_Direction, Array]:
    """The direction of this step and the traced ``solving`` predicate (``lax.cond``: only the
    taken branch runs; its passes are booked by the predicate)."""
    solving = _solving(state)
    captured: dict[str, dict[str, int]] = {}

    def solve() -> _Direction:
        with problem.counters.capture() as captured["solve"]:
            return _solve_direction(problem, params, batch, state.hparams)

    def reuse() -> _Direction:
        with problem.counters.capture() as captured["reuse"]:
            return _reuse_direction(problem, params, state, batch)

    res = jax.lax.cond(solving, solve, reuse)
    solve_passes, reuse_passes = captured.get("solve", {}), captured.get("reuse", {})
    if solve_passes == reuse_passes:
        # The usual case (one forward, one backward either way): a trace-time count, so the
        # compiled step returns no traced counts.
        problem.counters.add_scaled(solve_passes, 1)
    else:  # e.g. the dense fallback: per-sample passes while solving only
        taken = solving.astype(jnp.int64)
        problem.counters.add_scaled(solve_passes, taken)
        problem.counters.add_scaled(reuse_passes, 1 - taken)
    return res, solving


def _store(state: FNGDState, batch: Batch[Array], c: Array, solving: Array) -> FNGDState:
    """Write the solved coefficients under the batch's keys (solve steps); a no-op otherwise."""
    rows = c.T.astype(state.table.dtype)  # (B, G)
    if state.hparams.indexing == "iteration":
        key: Array = state.step % int(state.steps_per_epoch)
        new_rows = jnp.where(solving, rows, state.table[key])
    else:
        key = batch.index
        new_rows = jnp.where(solving, rows, state.table[key])
    groups = c.shape[0]
    return state._replace(
        table=state.table.at[key].set(new_rows),
        seen=state.seen.at[key].set(state.seen[key] | solving),
        coef_sum=state.coef_sum + jnp.where(solving, rows.sum(axis=0), jnp.zeros_like(state.coef_sum)),
        coef_count=state.coef_count + jnp.where(solving, rows.shape[0], 0).astype(state.coef_count.dtype),
        solve_count=state.solve_count + jnp.where(solving, groups, 0).astype(state.solve_count.dtype),
    )


class FNGD(adapter_class(fngd.CARD, "jax")):  # type: ignore[misc]
    def init(self, problem: Problem, hparams: fngd.FNGDHyperparams) -> FNGDState:
        blocks = _num_blocks(problem, hparams)
        per_epoch = problem.n_train // problem.batch_size
        if hparams.indexing == "sample":
            table = jnp.zeros((problem.n_train, blocks), dtype=problem.dtype)
            seen = jnp.zeros(problem.n_train, dtype=bool)
        else:
            table = jnp.zeros((per_epoch, problem.batch_size, blocks), dtype=problem.dtype)
            seen = jnp.zeros(per_epoch, dtype=bool)
        return FNGDState(
            hparams,
            jnp.zeros((), dtype=jnp.int32),
            StaticInt(per_epoch),
            table,
            seen,
            jnp.zeros(blocks, dtype=problem.dtype),
            jnp.zeros((), dtype=jnp.int32),
            jnp.zeros((), dtype=jnp.int32),
            jnp.zeros_like(problem.params0),
        )

    def direction(self, problem: Problem, params: Array, state: FNGDState, batch: Batch[Array]) -> Array:
        return _direction(problem, params, state, batch)[0].direction

    def step(
        self, problem: Problem, params: Array, state: FNGDState, batch: Batch[Array]
    ) -> tuple[Array, FNGDState, dict[str, Any]]:
        hp = state.hparams
        res, solving = _direction(problem, params, state, batch)
        new_state = _store(state, batch, res.coefficients, solving)
        u, buf = heavy_ball(hp, params, res.direction, state.momentum_buffer)
        stats: dict[str, Any] = {
            "loss": res.loss,
            "lr": hp.lr,
            "damping": hp.damping,
            "solve_residual": res.solve_residual.astype(params.dtype),
            "solves": new_state.solve_count - state.solve_count,
            "solve_count": new_state.solve_count,
            "direction_norm": jnp.linalg.norm(res.direction),
            "update_norm": hp.lr * jnp.linalg.norm(u),
        }
        new_state = new_state._replace(step=state.step + 1, momentum_buffer=buf)
        return params - hp.lr * u, new_state, stats


ADAPTER = FNGD
