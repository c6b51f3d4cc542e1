"""K-FAC on JAX; the update rule, presets and references are in ``backends.methods.kfac``.

The same algorithm, hyperparameters, statistics and pass counts as the torch adapter
(``backends/torch/optimizers/kfac.py``; parity is tested), written as one jitted function:

* the state has a fixed structure from ``init``: zero factors and inverses of their final
  shapes, a zero previous update, the step counter and lambda as arrays;
* the factor statistics (every ``stats_update_period`` steps, under ``lax.switch`` when that
  is above 1), the factor average weight, the inverse refresh (``t < warm-up or t % T3 == 0``) and the LM
  interval (``(t + 1) % T1 == 0``) are functions of the traced step counter; refreshes and LM
  steps run under ``lax.cond`` / ``lax.switch``, whose passes are booked only when taken
  (``backends.jax.control_flow``);
* the quadratic model needs one JVP on the first step (no previous update yet) and two,
  vectorised into one pass, afterwards: a switch on the step counter picks the variant;
* scalars (lambda, rho, the model coefficients) are computed in float64 like the torch twin's
  0-d float64 tensors; the state and the statistics are stored in the problem's dtype (a float32
  run keeps every floating array float32, ``tests/test_jax_oracle.py``), so such a run rounds
  lambda to float32 between steps where the torch twin keeps float64; parity is float64.

Per step: one forward with taps serves the loss, the gradient (one backward), the layer inputs
and the output-gradient factor (one more backward with sampled-label cotangents; ``C`` for the
exact estimator, vectorised into one); Cholesky inverses only on refresh steps; the LM step
adds one forward every ``T1`` steps.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from backends import kfac_maths
from backends.jax import kfac_factors as kf
from backends.jax.batched_passes import output_tangents, tap_grads_many
from backends.jax.control_flow import counted_switch
from backends.jax.ops import JAX_OPS
from backends.jax.output_hessian import apply_factor, factor_columns
from backends.methods import kfac
from backends.spec import Batch, Oracle, Problem, adapter_class

Array = jax.Array
F64 = jnp.float64


class KFACState(NamedTuple):
    hparams: kfac.KFACHyperparams
    #: Steps taken, int32 (factor estimates folded in: ``kfac.estimate_count``).
    steps: Array
    #: Moving averages of the factors, one per tapped layer (zeros before the first step).
    factors: tuple[kf.LayerStats, ...]
    #: Damped inverses from the last refresh (zeros before the first step).
    inverses: tuple[kf.LayerInverse, ...]
    #: The previous update ``delta`` (zeros before the first step).
    velocity: Array
    #: Current lambda (problem dtype; the step computes with it in float64).
    damping: Array


# --------------------------------------------------------------------------- schedules (traced step)


def ema_weight(k: Array, hp: kfac.KFACHyperparams) -> Array:
    """``backends.methods.kfac.ema_weight`` for a traced 1-based estimate count ``k`` (float64)."""
    ema = hp.curvature_ema
    kf64 = jnp.asarray(k, F64)
    if hp.ema_mode == "paper":
        return jnp.maximum(1.0 / kf64, 1.0 - ema)
    if ema == 0.0:
        return jnp.ones((), F64)
    return (1.0 - ema) / (1.0 - ema**kf64)


def refresh_inverses(t: Array, hp: kfac.KFACHyperparams) -> Array:
    """``backends.methods.kfac.refresh_inverses`` for a traced 0-based step ``t``."""
    return (t < hp.inverse_warmup_steps) | (t % hp.inverse_update_period == 0)


# --------------------------------------------------------------------------- factors


def batch_factors(problem: Problem, oracle: Oracle, batch: Batch[Array], estimator: str) -> list[kf.LayerStats]:
    """This batch's ``A_i``, ``G_i`` for every tapped layer (see ``backends.jax.kfac_factors``)."""
    inputs = oracle.tap_inputs()
    if estimator == "fisher_exact":
        # One (vectorised) backward pass per column of the output-Hessian factor.
        grads = tap_grads_many(problem, oracle, factor_columns(problem.likelihood, oracle.logits))
        return kf.layer_stats(problem.layout, inputs, grads)
    if estimator == "fisher_gradients":
        cotangent = oracle.sampled_logit_grads(1)[0]
    else:  # curvature_prop: E[S v v^T S^T] = Q for Rademacher v from the batch noise
        signs = jnp.where(batch.noise[0] < 0.5, -1.0, 1.0).astype(oracle.logits.dtype)
        cotangent = apply_factor(problem.likelihood, oracle.logits, signs)
    grads = [e[None] for e in oracle.tap_grads_for(cotangent)]
    return kf.layer_stats(problem.layout, inputs, grads)


def fold(previous: tuple[kf.LayerStats, ...], new: list[kf.LayerStats], weight: Array) -> tuple[kf.LayerStats, ...]:
    """``(1 - weight) previous + weight new``, factor by factor (``weight = 1`` replaces)."""
    out = []
    for old, cur in zip(previous, new, strict=True):
        w = weight.astype(cur.A.dtype)
        out.append(kf.LayerStats(old.A + w * (cur.A - old.A), old.G + w * (cur.G - old.G)))
    return tuple(out)


def locations(problem: Problem) -> list[int]:
    return [kf.layer_locations(problem.layout, layer) for layer in problem.layout.tapped]


# --------------------------------------------------------------------------- the quadratic model


def _quadratic_step(
    problem: Problem, hp: kfac.KFACHyperparams, prop: kfac_maths.Proposal, lam: Array, vel: Array | None
) -> tuple[Array, Array, Array]:
    """``(w1, w2, M(delta))`` from the exact quadratic model over ``span{p, vel}`` (Sec. 7;
    ``backends.kfac_maths.quadratic_step``): the JVP tangents here, the maths there."""
    tangents = output_tangents(problem, prop.oracle, [prop.direction] if vel is None else [prop.direction, vel])
    return kfac_maths.quadratic_step(JAX_OPS, hp, prop.oracle, tangents, prop.direction, vel, prop.grad_h, lam)


# --------------------------------------------------------------------------- the adapter


class KFAC(adapter_class(kfac.CARD, "jax")):  # type: ignore[misc]
    def init(self, problem: Problem, hparams: kfac.KFACHyperparams) -> KFACState:
        dtype = problem.dtype
        return KFACState(
            hparams,
            jnp.zeros((), jnp.int32),
            kf.zero_stats(problem.layout, dtype),
            kf.zero_inverses(problem.layout, dtype, hparams.damping_form),
            jnp.zeros(problem.num_params, dtype),
            jnp.asarray(hparams.damping, dtype),
        )

    def _propose(self, problem: Problem, params: Array, state: KFACState, batch: Batch[Array]) -> kfac_maths.Proposal:
        hp = state.hparams
        oracle = problem.oracle(params, batch, taps=True)
        loss, g = oracle.loss_and_grad()

        def refresh_stats() -> tuple[kf.LayerStats, ...]:
            new = batch_factors(problem, oracle, batch, hp.estimator)
            return fold(state.factors, new, ema_weight(kfac.estimate_count(state.steps, hp), hp))

        if hp.stats_update_period == 1:
            factors = refresh_stats()
        else:  # amortised statistics: the sampled-label backward is booked only when it runs
            update = kfac.update_stats(state.steps, hp)  # type: ignore[arg-type]
            factors = counted_switch(problem.counters, update, [lambda: state.factors, refresh_stats])
        identity_weight = state.damping.astype(F64) + hp.l2_reg
        T = locations(problem)

        def invert() -> tuple[kf.LayerInverse, ...]:
            return tuple(kf.layer_inverse(st, identity_weight, t, hp.damping_form) for st, t in zip(factors, T))

        # The first step always refreshes: refresh_inverses(0) holds for every schedule.
        inverses = jax.lax.cond(refresh_inverses(state.steps, hp), invert, lambda: state.inverses)
        grad_h, p = kfac_maths.proposal(JAX_OPS, hp, problem.layout, inverses, g, params, identity_weight)
        return kfac_maths.Proposal(oracle, loss, grad_h, factors, inverses, p)

    def direction(self, problem: Problem, params: Array, state: KFACState, batch: Batch[Array]) -> Array:
        return self._propose(problem, params, state, batch).direction

    def step(
        self, problem: Problem, params: Array, state: KFACState, batch: Batch[Array]
    ) -> tuple[Array, KFACState, dict[str, Any]]:
        hp = state.hparams
        dtype = params.dtype
        lam = state.damping.astype(F64)
        prop = self._propose(problem, params, state, batch)
        # A zero momentum coefficient skips the velocity's JVP (as kfac-jax does).
        use_velocity = hp.adaptive_momentum or hp.momentum != 0.0
        vel = state.velocity if use_velocity else None
        # The card's rule on the traced counter: False when LM is off, else a traced bool.
        adapt = kfac.adapt_damping(state.steps, hp)  # type: ignore[arg-type]

        # Which variant of the model runs: none (fixed lr/momentum off LM steps), the model with
        # one JVP (no previous update yet), or with two. Only reachable variants are traced.
        need_model = hp.adaptive_lr or hp.adaptive_momentum or adapt
        variants: dict[str, Callable[[], tuple[Array, Array, Array]]] = {}
        if need_model is not True:
            variants["fixed"] = lambda: kfac_maths.fixed_step(JAX_OPS, hp, lam)
        if need_model is not False:
            variants["first"] = lambda: _quadratic_step(problem, hp, prop, lam, None)
            if use_velocity:
                variants["second"] = lambda: _quadratic_step(problem, hp, prop, lam, vel)
        names = list(variants)
        index: Any = 0
        if len(names) > 1:
            model: Any = names.index("first")
            if "second" in names:
                model = jnp.where(state.steps == 0, model, names.index("second"))
            index = jnp.where(need_model, model, names.index("fixed")) if "fixed" in names else model
        w1, w2, model_change = counted_switch(problem.counters, index, list(variants.values()))

        delta = kfac_maths.update(JAX_OPS, w1, w2, prop.direction, vel)  # vel is zero before the first step
        new_params = params + delta

        nan = jnp.asarray(math.nan, F64)
        rho, new_lam = nan, lam
        if hp.adaptive_damping:

            def adapt_lambda() -> tuple[Array, Array]:
                new_loss = problem.oracle(new_params, batch).loss()
                return kfac_maths.adapt_damping(JAX_OPS, hp, lam, prop.loss, new_loss, params, new_params, model_change)

            rho, new_lam = counted_switch(problem.counters, adapt, [lambda: (nan, lam), adapt_lambda])

        stats: dict[str, Any] = {
            "loss": prop.loss,
            "lr": (-w1).astype(dtype),
            "momentum": w2.astype(dtype),
            "damping": state.damping,
            "model_change": model_change.astype(dtype),
            "rho": jnp.asarray(rho, F64).astype(dtype),
        }
        new_state = KFACState(
            hp, state.steps + 1, prop.factors, prop.inverses, delta, jnp.asarray(new_lam, F64).astype(dtype)
        )
        return new_params, new_state, stats


ADAPTER = KFAC
