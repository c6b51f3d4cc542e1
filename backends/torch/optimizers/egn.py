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

from backends import blocks, egn_gram
from backends import damping as lm
from backends.methods import egn
from backends.spec import Batch, Oracle, Problem, adapter_class
from backends.torch.batched_passes import tap_grads_many
from backends.torch.ops import TORCH_OPS
from backends.torch.output_hessian import hessian_factor
from backends.torch.sample_space import damped_solve


class EGNState(NamedTuple):
    hparams: egn.EGNHyperparams
    steps: int
    #: Un-corrected momentum ``m_t`` (None when momentum is off).
    momentum: Tensor | None
    #: Last accepted step size (the line search's ``alpha_prev``).
    step_size: float
    #: Current lambda, a 0-d float64 tensor.
    damping: Tensor


class Solve(NamedTuple):
    """The output-space solve: ``d = sum_n Jz_n^T w_n`` with ``w_n = S_n v_n``."""

    d: Tensor
    #: ``s`` and ``v`` (``B*C``, float64) for the closed forms of ``g^T d`` and ``d^T G d``.
    s: Tensor
    v: Tensor


def output_factor(likelihood: str, logits: Tensor, r: Tensor, jitter: float) -> tuple[Tensor | None, Tensor]:
    """``(S, s)`` with ``Q_n = S_n S_n^T`` and ``S_n s_n = r_n`` (float64); ``S = None`` means identity.

    Cross-entropy, ``jitter = 0``: ``S_n = diag(sqrt p) - p sqrt(p)^T``, ``s_n = r_n / sqrt(p)``
    (exact since ``r_n`` is in ``range(Q_n)``). ``jitter > 0``: ``S_n = chol(Q_n + jitter I)``,
    ``s_n = S_n^{-1} r_n`` (somax v1.0).
    """
    r64 = r.to(torch.float64)
    if likelihood != "softmax_ce":
        return None, r64
    p = torch.softmax(logits.to(torch.float64), dim=-1)
    if jitter == 0.0:
        S = hessian_factor(likelihood, logits, torch.float64)
        assert S is not None
        return S, r64 / p.sqrt()
    C = p.shape[-1]
    Q = torch.diag_embed(p) - p.unsqueeze(-1) * p.unsqueeze(-2)
    L = torch.linalg.cholesky(Q + jitter * torch.eye(C, dtype=p.dtype, device=p.device))
    return L, torch.linalg.solve_triangular(L, r64.unsqueeze(-1), upper=False).squeeze(-1)


def taps_gram_applicable(problem: Problem) -> bool:
    """Every trainable parameter sits in a Linear layer fed 2-D inputs (``backends.blocks``)."""
    return blocks.linear_on_vectors_only(problem.layout)


def _solve(gram: Tensor, s: Tensor, batch_size: int, lam: Tensor) -> Tensor:
    """``v = (K + B lam I)^{-1} s`` in float64: Cholesky, with the sample-space solve's
    nearest-PSD eigen fallback. The cross-entropy factor has a null column per sample, so ``K``
    has ``B`` exact zero eigenvalues that a Gram accumulated in float32 can push below a tiny
    ``B lam``; the fallback clamps them at zero (exact: ``s`` has no component there)."""
    return damped_solve(gram, s, batch_size * lam).x


def egn_solve(problem: Problem, oracle: Oracle, hp: egn.EGNHyperparams, lam: Tensor, mode: str) -> Solve:
    """The exact damped Gauss-Newton direction ``(G + lam I)^{-1} g`` on the oracle's batch."""
    z, r = oracle.logits, oracle.logit_grads()
    B, C = z.shape
    S, s = output_factor(problem.likelihood, z, r, hp.q_jitter)
    if mode == "taps":
        # Jt Jt^T and Jt^T v from the taps (backends.egn_gram): no per-sample Jacobian, no extra pass.
        a = oracle.tap_inputs()
        if S is None:
            columns = torch.eye(C, dtype=z.dtype, device=z.device).unsqueeze(1).expand(C, B, C)
        else:
            columns = S.permute(2, 0, 1).to(z.dtype)
        E = tap_grads_many(problem, oracle, columns)  # per layer (C, B, out)
        gram, abars = egn_gram.tap_gram(TORCH_OPS, problem.layout, a, E)
        v = _solve(gram.to(torch.float64), s.reshape(-1), B, lam)
        d = egn_gram.tap_direction(TORCH_OPS, problem.layout, E, abars, v.reshape(B, C).to(z.dtype))
        return Solve(d, s.reshape(-1), v)
    Jt = egn_gram.dense_rows(TORCH_OPS, S, oracle.output_jacobian())  # (B C, P), working dtype
    v = _solve((Jt @ Jt.T).to(torch.float64), s.reshape(-1), B, lam)
    return Solve(Jt.T @ v.to(Jt.dtype), s.reshape(-1), v)


def _mode(problem: Problem, hp: egn.EGNHyperparams) -> str:
    if hp.gram == "auto":
        return "taps" if taps_gram_applicable(problem) else "dense"
    if hp.gram == "taps" and not taps_gram_applicable(problem):
        raise ValueError("egn: gram='taps' needs every parameter in a Linear layer with 2-D inputs")
    return hp.gram


class EGN(adapter_class(egn.CARD, "torch")):  # type: ignore[misc]
    def init(self, problem: Problem, hparams: egn.EGNHyperparams) -> EGNState:
        lam = torch.tensor(hparams.damping, dtype=torch.float64, device=problem.device)
        return EGNState(hparams, 0, None, hparams.lr, lam)

    def _direction(
        self, problem: Problem, params: Tensor, state: EGNState, batch: Batch[Tensor]
    ) -> tuple[Any, Solve, Tensor, Tensor | None]:
        hp = state.hparams
        mode = _mode(problem, hp)
        oracle = problem.oracle(params, batch, taps=mode == "taps")
        sol = egn_solve(problem, oracle, hp, state.damping, mode)
        if hp.momentum == 0.0:
            return oracle, sol, sol.d, None
        prev = torch.zeros_like(sol.d) if state.momentum is None else state.momentum
        m = torch.lerp(prev, sol.d, 1.0 - hp.momentum)
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
        B = oracle.batch_size
        need_gd = hp.line_search or hp.adaptive_damping
        if need_gd:
            if m is None:
                # g = Jt^T s / B and d = Jt^T v with Jt Jt^T v = s - B lam v.
                gd = (sol.s @ sol.s) / B - lam * (sol.s @ sol.v)
            else:
                gd = torch.dot(oracle.grad(), d).to(torch.float64)

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
            # Without momentum d = Jt^T v, so d^T G d = |Jt Jt^T v|^2 / B = |s - B lam v|^2 / B.
            dGd = (sol.s - B * lam * sol.v).square().sum() / B if m is None else oracle.ggn_quad(d).to(torch.float64)
            model_change = -alpha * gd + 0.5 * alpha * alpha * dGd
            rho = lm.reduction_ratio(
                loss.to(torch.float64), new_loss.to(torch.float64), model_change, where=torch.where
            )
            new_lam = lm.lm_update(lam, rho, egn.lm_rule(hp), where=torch.where)
            stats.update(rho=rho, model_change=model_change)
        if need_gd:
            stats["grad_dot_direction"] = gd
        new_state = EGNState(hp, state.steps + 1, m, float(alpha), new_lam)
        return new_params, new_state, stats


ADAPTER = EGN
