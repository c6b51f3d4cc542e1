"""K-FAC on PyTorch; the update rule, presets and references are in ``backends.methods.kfac``.

Per step: one forward with taps serves the loss, the gradient (one backward), the layer inputs
and the output-gradient factor (one more backward with sampled-label cotangents; ``C`` for the
exact estimator); factor products ``O(B (k^2 + out^2))`` per layer (the sampled-label backward and
the products only every ``stats_update_period`` steps; off those steps the forward records no
taps); inverses only on refresh steps (Cholesky of the damped factors); the preconditioner is two
small matrix products per layer; the quadratic model costs one JVP (two once there is a previous
update: ``J delta_prev``, known before the step, is carried by the graph forward itself, one
forward-mode pass, ``TorchOracle.carry_tangent``); the LM step adds one forward every ``T1``
steps. The model's inner products are array operations; what is built from them (the 2x2
solve, the model change, rho, the damping update) is scalar arithmetic in float64: NumPy
scalars on the host in an eager CPU step (``HOST_SCALAR_OPS``: the same IEEE double operations
without a torch dispatch each, docs/profiling.md "K-FAC (torch)"), 0-d float64 tensors on CUDA
and under ``torch.compile``. The state keeps lambda as a 0-d float64 tensor.
"""

from __future__ import annotations

import contextlib
import math
from typing import Any, NamedTuple

import numpy as np
import torch
from torch import Tensor

from backends import kfac_maths
from backends.methods import kfac
from backends.spec import Batch, Oracle, Problem, adapter_class
from backends.torch import kfac_factors as kf
from backends.torch.batched_passes import output_tangents, tap_grads_many
from backends.torch.ops import HOST_SCALAR_OPS, TORCH_OPS, scalar_ops
from backends.torch.output_hessian import apply_factor, factor_columns


class KFACState(NamedTuple):
    hparams: kfac.KFACHyperparams
    #: Steps taken (factor estimates folded in: ``kfac.estimate_count``).
    steps: int
    #: Moving averages of the factors, one per tapped layer (None before the first step).
    factors: tuple[kf.LayerStats, ...] | None
    #: Damped inverses from the last refresh (None before the first step).
    inverses: tuple[kf.LayerInverse, ...] | None
    #: The previous update ``delta`` (None before the first step).
    velocity: Tensor | None
    #: Current lambda, a 0-d float64 tensor.
    damping: Tensor


def batch_factors(problem: Problem, oracle: Oracle, batch: Batch[Tensor], estimator: str) -> list[kf.LayerStats]:
    """This batch's ``A_i``, ``G_i`` for every tapped layer (see ``backends.torch.kfac_factors``)."""
    inputs = oracle.tap_inputs()
    if estimator == "fisher_gradients":
        cotangents = [oracle.sampled_logit_grad()]  # sampled_logit_grads(1)[0] in fewer operators
    elif estimator == "fisher_exact":
        # One (vectorised) backward pass per column of the output-Hessian factor.
        per_layer = tap_grads_many(problem, oracle, torch.stack(factor_columns(problem.likelihood, oracle.logits)))
        grads = [[g[j] for g in per_layer] for j in range(per_layer[0].shape[0])]
        return kf.layer_stats(problem.layout, inputs, grads)
    else:  # curvature_prop: E[S v v^T S^T] = Q for Rademacher v from the batch noise
        signs = torch.where(batch.noise[0] < 0.5, -1.0, 1.0).to(oracle.logits.dtype)
        cotangents = [apply_factor(problem.likelihood, oracle.logits, signs)]
    grads = [oracle.tap_grads_for(c) for c in cotangents]
    return kf.layer_stats(problem.layout, inputs, grads)


def fold(
    previous: tuple[kf.LayerStats, ...] | None, new: list[kf.LayerStats], weight: float
) -> tuple[kf.LayerStats, ...]:
    """``(1 - weight) previous + weight new``, factor by factor."""
    if previous is None:
        return tuple(new)
    return tuple(
        kf.LayerStats(torch.lerp(old.A, cur.A, weight), torch.lerp(old.G, cur.G, weight), cur.locations)
        for old, cur in zip(previous, new, strict=True)
    )


def host_terms(terms: kfac_maths.ModelTerms) -> kfac_maths.ModelTerms:
    """The model's inner products read to the host as NumPy ``float64`` in one transfer (the
    exact float64 values of the float32 results, as ``.to(float64)`` gives them)."""
    return kfac_maths.ModelTerms(*map(np.float64, torch.stack(list(terms)).tolist()))


def host_update(w1: Any, w2: Any, p: Tensor, velocity: Tensor | None) -> Tensor:
    """``kfac_maths.update`` with host coefficients passed as Python floats: the multiply rounds
    them to ``p``'s dtype as the 0-d tensors ``HOST_SCALAR_OPS.astype`` builds would hold them
    (one rounding of the same double, then the same products), without building those tensors."""
    delta = float(w1) * p
    if velocity is not None:
        delta += float(w2) * velocity  # in place on the fresh product: the same sum, one buffer fewer
    return delta


def _ieee(ops: Any) -> contextlib.AbstractContextManager[Any]:
    """0/0 is NaN without a warning on host scalars, as in torch (nothing to do for tensors)."""
    return np.errstate(divide="ignore", invalid="ignore") if ops is HOST_SCALAR_OPS else contextlib.nullcontext()


class KFAC(adapter_class(kfac.CARD, "torch")):  # type: ignore[misc]
    def init(self, problem: Problem, hparams: kfac.KFACHyperparams) -> KFACState:
        lam = torch.tensor(hparams.damping, dtype=torch.float64, device=problem.device)
        return KFACState(hparams, 0, None, None, None, lam)

    def _propose(
        self, problem: Problem, params: Tensor, state: KFACState, batch: Batch[Tensor], carry: Tensor | None = None
    ) -> kfac_maths.Proposal:
        hp = state.hparams
        stats_step = state.factors is None or kfac.update_stats(state.steps, hp)
        # Taps only where the statistics read them: an amortised step's forward and backward
        # are SGD's (the same loss and gradient; the taps record, they do not change values).
        oracle = problem.oracle(params, batch, taps=stats_step)
        if carry is not None:  # the model's J delta_prev from the graph forward itself
            oracle.carry_tangent(carry)
        loss, g = oracle.loss_and_grad()
        if stats_step:
            new = batch_factors(problem, oracle, batch, hp.estimator)
            factors = fold(state.factors, new, kfac.ema_weight(kfac.estimate_count(state.steps, hp), hp))
        else:
            factors = state.factors  # an amortised step: no sampled-label backward, no factor products
        refresh = state.inverses is None or kfac.refresh_inverses(state.steps, hp)
        # lam + eta as a 0-d tensor only where it is read: a refresh, or untapped entries' scale
        reads_weight = refresh or kfac_maths.damps_untapped(hp, problem.layout)
        identity_weight = state.damping + hp.l2_reg if reads_weight else None
        if refresh:
            inverses = tuple(kf.layer_inverse(st, identity_weight, hp.damping_form) for st in factors)
        else:
            inverses = state.inverses
        grad_h, p = kfac_maths.proposal(TORCH_OPS, hp, problem.layout, inverses, g, params, identity_weight)
        return kfac_maths.Proposal(oracle, loss, grad_h, factors, inverses, p)

    def direction(self, problem: Problem, params: Tensor, state: KFACState, batch: Batch[Tensor]) -> Tensor:
        return self._propose(problem, params, state, batch).direction

    def step(
        self, problem: Problem, params: Tensor, state: KFACState, batch: Batch[Tensor]
    ) -> tuple[Tensor, KFACState, dict[str, Any]]:
        hp = state.hparams
        ops = scalar_ops(problem.device)
        host = ops is HOST_SCALAR_OPS
        lam = ops.astype(state.damping, ops.float64) if host else state.damping
        vel = state.velocity
        if not hp.adaptive_momentum and hp.momentum == 0.0:
            vel = None  # a zero momentum coefficient: skip the velocity's JVP (as kfac-jax does)
        adapt = kfac.adapt_damping(state.steps, hp)
        model = hp.adaptive_lr or hp.adaptive_momentum or adapt
        prop = self._propose(problem, params, state, batch, vel if model else None)
        oracle, p, grad_h = prop.oracle, prop.direction, prop.grad_h

        with _ieee(ops):
            if model:
                # The exact quadratic model over span{p, vel} (Sec. 7): GGN terms by JVPs.
                tangents = output_tangents(problem, oracle, [p] if vel is None else [p, vel])
                terms = kfac_maths.model_terms(TORCH_OPS, oracle, tangents, p, vel, grad_h)
                terms = host_terms(terms) if host else kfac_maths.ModelTerms(*(t.double() for t in terms))
                w1, w2, model_change = kfac_maths.solve_model(ops, hp, terms, lam)
            else:
                w1, w2, model_change = kfac_maths.fixed_step(ops, hp, lam)
        delta = host_update(w1, w2, p, vel) if host else kfac_maths.update(ops, w1, w2, p, vel)
        new_params = params + delta

        stats: dict[str, Any] = {
            "loss": prop.loss,
            "lr": -w1,
            "momentum": w2,
            "damping": lam,
            "model_change": model_change,
            "rho": ops.asarray(math.nan, ops.float64, lam),
        }
        new_lam = state.damping
        if adapt:
            new_loss = problem.oracle(new_params, batch).loss_value()
            with _ieee(ops):
                rho, lam_out = kfac_maths.adapt_damping(
                    ops, hp, lam, prop.loss, new_loss, params, new_params, model_change
                )
            stats["rho"] = rho
            # The state keeps a 0-d float64 tensor on both paths.
            new_lam = torch.tensor(float(lam_out), dtype=torch.float64) if host else lam_out
        new_state = KFACState(hp, state.steps + 1, prop.factors, prop.inverses, delta, new_lam)
        return new_params, new_state, stats


ADAPTER = KFAC
