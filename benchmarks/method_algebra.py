"""Each method's dense linear algebra at a problem's sizes, timed as extra lanes of the step-cost rounds.

The step-cost floor (``benchmarks.pass_costs``) holds only the counted passes; what a method
computes on top of them is timed here by probe steppers that run **only** the method's shared
linear-algebra calls on inputs built once, outside the timed region, from a real batch and oracle
(``init``; the probe's ``step`` takes no oracle pass):

* ``ef`` / ``ief``: the ``B x B`` Gram from the taps, the float64 damped Cholesky solve
  (with the card's near-duplicate filter) and ``J^T x`` (``backends.sample_space.gram_direction``);
* ``sf``: the ``(1 + k) B`` square Gram of the true and sampled rows ``[J; J^]`` (its cross
  block gives ``J^ g``), the float64 ``kB x kB`` solve and ``[J; J^]^T w``
  (``backends.sample_space.sampled_fisher_from_stack``, ``k`` the card's label draws);
* ``egn``: the ``BC x BC`` Gram from the factor columns' taps, the float64 solve and
  ``Jt^T v`` (``backends.egn_gram.solve_taps``);
* ``kfac``: the preconditioner ``left @ X @ right`` per layer every step, and the float64
  Cholesky inverses of the damped factors on refresh steps (``backends.kfac_maths``), on
  factors of the problem's shapes; and the factor statistics on statistics steps: each layer's
  ``A = abar^T abar / (B T)`` and ``G = e^T e / (B T)`` from a real batch's taps and
  sampled-label cotangents, folded into the running averages (the backend's
  ``kfac_factors.layer_stats`` and its adapter's ``fold``, the step's own code).

:func:`probes_for` gives the lanes an adapter list needs and :func:`algebra_per_step` what one
adapter's step spends in them (K-FAC: ``precondition + inverses x refreshes per step + stats x
statistics steps per step``, the rates from the card's schedule). ``benchmarks.step_cost`` adds
them to its rounds and reports ``step / (floor + algebra)`` next to the passes-only efficiency::

    OMP_NUM_THREADS=1 python -m benchmarks.method_algebra --threads 1 [--backend torch jax]
                                                           [--problem digits-mlp digits-wide]
"""

from __future__ import annotations

import importlib
from typing import Any

import numpy as np

from backends import egn_gram, kfac_maths
from backends.methods import ef, egn, fngd, ief, kfac, sf

CARDS = {"ef": ef.CARD, "ief": ief.CARD, "sf": sf.CARD, "egn": egn.CARD, "kfac": kfac.CARD}


def _framework(problem: Any) -> str:
    return type(problem).__module__.split(".")[1]


def _ops(problem: Any) -> Any:
    """The array operations of the problem's framework (``backends.<framework>.ops``)."""
    framework = _framework(problem)
    return getattr(importlib.import_module(f"backends.{framework}.ops"), f"{framework.upper()}_OPS")


def _backend_module(problem: Any, name: str) -> Any:
    return importlib.import_module(f"backends.{_framework(problem)}.{name}")


def _constant(x: Any) -> Any:
    """``x`` cut from any autograd graph (torch); JAX arrays are values already."""
    return x.detach() if hasattr(x, "detach") else x


def _defaults(method: str) -> Any:
    return CARDS[method].Hyperparams()


def _spd(rng: np.random.Generator, dim: int) -> np.ndarray:
    m = rng.standard_normal((dim, 4 * dim)) / (4 * dim) ** 0.5
    return m @ m.T + 0.1 * np.eye(dim)


# --------------------------------------------------------------------------- sample-space methods


def sample_space_inputs(method: str, problem: Any, params: Any, batch: Any) -> tuple[Any, ...]:
    """What EF/iEF/SF's algebra reads, from the passes their step takes on ``batch``:
    ``(tap inputs, tap cotangents, vector)``; the vector is EF's ``1`` or iEF's ``||r_n||^2``
    (SF: none, its ``g`` comes from the true-label rows); SF's cotangents stack the true
    labels' and its label draws' (draw-major, the true labels first)."""
    hp = _defaults(method)
    oracle = problem.oracle(params, batch, taps=True)
    if method == "sf":
        stacked = oracle.logit_grads_with_samples(hp.samples)
        per_draw = [oracle.tap_grads_for(stacked[i]) for i in range(1 + hp.samples)]
        ops = _ops(problem)
        cotangents = [ops.concat([d[k] for d in per_draw]) for k in range(len(problem.layout.tapped))]
        vector = None
    else:
        r = oracle.logit_grads()
        cotangents = oracle.tap_grads_for(r)
        vector = (r * r).sum(-1) if method == "ief" else _ops(problem).ones_like(r[:, 0])
    inputs = tuple(_constant(a) for a in oracle.tap_inputs())
    return inputs, tuple(_constant(e) for e in cotangents), _constant(vector)


def sample_space_algebra(method: str, problem: Any, inputs: Any) -> Any:
    """The method's linear algebra on :func:`sample_space_inputs`: EF/iEF's direction
    ``J^T (K + B lambda I)^{-1} t``, SF's ``(F^ + lambda I)^{-1} g`` (the card's defaults)."""
    hp = _defaults(method)
    space = _backend_module(problem, "sample_space")
    taps, cotangents, vector = inputs
    draws = 1 + hp.samples if method == "sf" else 1  # static: the true labels and the card's label draws
    jac = space.TapJacobian(problem.layout, list(taps), list(cotangents), draws=draws)
    if method == "sf":
        return space.sampled_fisher_from_stack(jac, int(taps[0].shape[0]), hp.damping).x
    return space.gram_direction(jac, vector, hp.damping, hp.dedup_threshold).direction


def egn_inputs(problem: Any, params: Any, batch: Any) -> tuple[Any, ...]:
    """What EGN's algebra reads: ``(tap inputs, factor-column tap cotangents (C, B, out), s, lambda)``."""
    hp = _defaults("egn")
    ops = _ops(problem)
    oracle = problem.oracle(params, batch, taps=True)
    z, r = oracle.logits, oracle.logit_grads()
    S, s = egn_gram.output_factor(ops, problem.likelihood, z, r, hp.q_jitter)
    tap_grads_many = _backend_module(problem, "batched_passes").tap_grads_many
    cotangents = tap_grads_many(problem, oracle, egn_gram.factor_columns(ops, S, z))
    lam = ops.asarray(hp.damping, ops.float64, s)
    inputs = tuple(_constant(a) for a in oracle.tap_inputs())
    return inputs, tuple(_constant(e) for e in cotangents), _constant(s.reshape(-1)), lam


def egn_algebra(problem: Any, inputs: Any) -> Any:
    """EGN's ``BC x BC`` Gram, float64 solve and ``Jt^T v`` (``backends.egn_gram.solve_taps``)."""
    taps, cotangents, s, lam = inputs
    return egn_gram.solve_taps(_ops(problem), problem.layout, list(taps), list(cotangents), s, lam).d


class MethodProbe:
    """A step that runs one method's linear algebra on inputs built at ``init`` from the
    problem's first batch at its initial parameters, and returns the parameters unchanged."""

    def __init__(self, method: str) -> None:
        self.method = method
        self.name = f"algebra:{method}"

    def init(self, problem: Any, hparams: Any) -> Any:
        batch = problem.device_batch(0)
        if self.method == "egn":
            return egn_inputs(problem, problem.params0, batch)
        return sample_space_inputs(self.method, problem, problem.params0, batch)

    def step(self, problem: Any, params: Any, state: Any, batch: Any) -> tuple[Any, Any, dict[str, Any]]:
        egn_method = self.method == "egn"
        out = egn_algebra(problem, state) if egn_method else sample_space_algebra(self.method, problem, state)
        return params, state, {"probe": out.sum()}


# --------------------------------------------------------------------------- K-FAC


class KFACProbe:
    """A step that runs one piece of K-FAC's linear algebra and returns the parameters unchanged."""

    def __init__(self, piece: str) -> None:
        self.name = f"algebra:kfac-{piece}"
        self.piece = piece

    def init(self, problem: Any, hparams: Any) -> Any:
        rng = np.random.default_rng(0)
        factors = []
        for layer in problem.layout.tapped:
            out_dim = layer.weight.shape[0]
            dim_a = layer.weight.size // out_dim + (1 if layer.bias is not None else 0)
            factors.append((problem.from_numpy(_spd(rng, dim_a)), problem.from_numpy(_spd(rng, out_dim))))
        ops = _ops(problem)
        damping = ops.asarray(0.1, ops.float64, factors[0][0])
        inverses = tuple(kfac_maths.layer_inverse(ops, A, G, damping, 1) for A, G in factors)
        return (tuple(factors), inverses, damping)

    def step(self, problem: Any, params: Any, state: Any, batch: Any) -> tuple[Any, Any, dict[str, Any]]:
        ops = _ops(problem)
        factors, inverses, damping = state
        if self.piece == "precondition":
            out = kfac_maths.precondition(ops, problem.layout, inverses, params, 1.0)
            return params, state, {"probe": out.sum()}
        fresh = [kfac_maths.layer_inverse(ops, A, G, damping, 1) for A, G in factors]
        return params, state, {"probe": sum(inv.left.sum() + inv.right.sum() for inv in fresh)}


def kfac_stats_inputs(problem: Any, params: Any, batch: Any, previous: Any = None, k: int = 2) -> tuple[Any, ...]:
    """What K-FAC's statistics read on a statistics step of the card's defaults (sampled-label
    Fisher), from the passes its step takes on ``batch`` at ``params``: ``(tap inputs,
    sampled-label tap cotangents, the averages to fold into, the weight of the ``k``-th
    estimate)``. ``previous=None``: this batch's own factors stand in for the average."""
    hp = _defaults("kfac")
    oracle = problem.oracle(params, batch, taps=True)
    inputs = tuple(_constant(a) for a in oracle.tap_inputs())
    grads = tuple(_constant(e) for e in oracle.tap_grads_for(oracle.sampled_logit_grads(1)[0]))
    if previous is None:
        previous = _kfac_batch_stats(problem, inputs, grads)
    return inputs, grads, tuple(previous), kfac.ema_weight(k, hp)


def _kfac_batch_stats(problem: Any, inputs: Any, grads: Any) -> list[Any]:
    """This batch's factors (``backends.<framework>.kfac_factors.layer_stats``; its cotangent
    passes are ``[pass][layer]`` in torch and ``[layer]`` stacked over passes in JAX)."""
    kf = _backend_module(problem, "kfac_factors")
    if _framework(problem) == "jax":
        return kf.layer_stats(problem.layout, list(inputs), [e[None] for e in grads])
    return kf.layer_stats(problem.layout, list(inputs), [list(grads)])


def kfac_stats_update(problem: Any, state: Any) -> tuple[Any, ...]:
    """One statistics step's factor update on :func:`kfac_stats_inputs`: this batch's ``A_i``,
    ``G_i`` and their fold into the averages, ``(1 - w) F + w F_new`` (the adapter's ``fold``)."""
    inputs, grads, previous, weight = state
    new = _kfac_batch_stats(problem, inputs, grads)
    fold = _backend_module(problem, "optimizers.kfac").fold
    if _framework(problem) == "jax":
        weight = _ops(problem).asarray(weight, _ops(problem).float64, new[0].A)
    return fold(previous, new, weight)


def stats_per_step(preset: str | None, rounds: int, warmup: int) -> float:
    """Statistics steps per timed step of a K-FAC configuration (the card's schedule)."""
    hp = kfac.CARD.Hyperparams(**kfac.CARD.presets.get(preset or "", {}))
    return sum(kfac.update_stats(t, hp) for t in range(warmup, warmup + rounds)) / rounds


class KFACStatsProbe:
    """A step that runs K-FAC's factor statistics (:func:`kfac_stats_update`) on inputs built at
    ``init`` from the problem's first batch at its initial parameters."""

    name = "algebra:kfac-stats"

    def init(self, problem: Any, hparams: Any) -> Any:
        return kfac_stats_inputs(problem, problem.params0, problem.device_batch(0))

    def step(self, problem: Any, params: Any, state: Any, batch: Any) -> tuple[Any, Any, dict[str, Any]]:
        folded = kfac_stats_update(problem, state)
        return params, state, {"probe": sum(st.A.sum() + st.G.sum() for st in folded)}


def refreshes_per_step(preset: str | None, rounds: int, warmup: int, overrides: dict[str, Any] | None = None) -> float:
    """Inverse refreshes per timed step of a K-FAC configuration (the card's schedule)."""
    hp = kfac.CARD.Hyperparams(**{**kfac.CARD.presets.get(preset or "", {}), **(overrides or {})})
    return sum(kfac.refresh_inverses(t, hp) for t in range(warmup, warmup + rounds)) / rounds


# --------------------------------------------------------------------------- optimizer updates


#: Methods whose probe is their own update after the passes (the backend module's code, on
#: answers recorded at ``init``); FNGD has one lane per phase (solve, reuse).
UPDATE_METHODS = ("sgd", "adamw", "adamqlr", "fngd")


def _optimizer(problem: Any, method: str) -> Any:
    """The backend module of ``method``'s adapter (``backends.<framework>.optimizers.<method>``)."""
    return _backend_module(problem, f"optimizers.{method}")


def fngd_state(problem: Any, phase: str) -> Any:
    """FNGD's adapter state after one real solve step on the first batch at the initial
    parameters: still solving (``phase="solve"``), or moved past the solve epochs with its
    coefficients cached (``"reuse"``; torch's table filled once, as its first reuse step does)."""
    module = _optimizer(problem, "fngd")
    adapter = module.ADAPTER()
    state0 = adapter.init(problem, adapter.resolve(None, None))
    _, state, _ = adapter.step(problem, problem.params0, state0, problem.device_batch(0))
    if phase == "solve":
        return state._replace(step=state0.step)
    hp = state.hparams
    past = hp.solve_epochs * int(state.steps_per_epoch)
    if hasattr(state, "filled"):  # torch: the filled table, as after its first reuse step
        return state._replace(step=past, table=module._filled_table(state), filled=True)
    return state._replace(step=_ops(problem).asarray(past, state.step.dtype, state.step))


class UpdateProbe:
    """A step that runs what ``method``'s step computes after its passes, on the answers of
    those passes recorded at ``init`` (the first batch, the initial parameters):

    * ``sgd``, ``adamw``: the backend module's ``update`` (torch: the adapter's own tensor
      update; JAX: optax's ``update`` and ``apply_updates``) from the gradient ``g``;
    * ``adamqlr``: ``quadratic_model_step`` (Adam's moments and direction, the step size from
      the recorded ``d^T G d``, the update, the LM damping update from the recorded loss at the
      new parameters: the adapter's step with its JVP and second forward replaced by answers);
    * ``fngd-solve``: ``solved_direction`` (the per-layer Grams, the batched float64 solve,
      ``sum_l J_l^T c_l``) and the heavy-ball update; ``fngd-reuse``: the cached coefficients'
      ``lookup``, ``sum_l J_l^T c_l`` from the recorded taps and the heavy-ball update.

    The step returns the updated parameters and optimizer state, as the adapter does (the
    recorded answers stay fixed; FNGD's phase does not advance), and no statistics: the new
    parameters are an output, so XLA computes them, and nothing is added to the work."""

    def __init__(self, method: str, phase: str | None = None) -> None:
        self.method = method
        self.phase = phase
        self.name = f"algebra:{method}" + (f"-{phase}" if phase else "")

    def init(self, problem: Any, hparams: Any) -> Any:
        params, batch = problem.params0, problem.device_batch(0)
        module = _optimizer(problem, self.method)
        adapter = module.ADAPTER()
        hp = self.hparams = adapter.resolve(None, None)
        if self.method == "fngd":
            state = fngd_state(problem, self.phase or "reuse")
            oracle = problem.oracle(params, batch, taps=True)
            taps = tuple(_constant(a) for a in oracle.tap_inputs())
            cotangents = tuple(_constant(e) for e in oracle.tap_grads_for(oracle.logit_grads()))
            return state, (taps, cotangents)
        loss, g = (_constant(a) for a in problem.oracle(params, batch).loss_and_grad())
        state = adapter.init(problem, hp)
        if self.method == "sgd":
            return (state.momentum_buffer if hasattr(state, "momentum_buffer") else state.opt_state), g
        if self.method == "adamw":
            return (state if hasattr(state, "mu") else state.opt_state), g
        # AdamQLR: the curvature along the step's own d and the loss where the step lands.
        q = _constant(problem.oracle(params, batch).ggn_quad(adapter.direction(problem, params, state, batch)))
        new_params, _, _ = adapter.step(problem, params, state, batch)
        new_loss = _constant(problem.oracle(_constant(new_params), batch).loss_value())
        return state, (loss, g, q, new_loss)

    def step(self, problem: Any, params: Any, state: Any, batch: Any) -> tuple[Any, Any, dict[str, Any]]:
        module = _optimizer(problem, self.method)
        opt_state, answers = state
        if self.method == "adamqlr":
            loss, g, q, new_loss = answers
            torch_args = (problem,) if _framework(problem) == "torch" else ()  # its scalars' ops depend on the device
            new, opt_state, _ = module.quadratic_model_step(
                *torch_args, params, opt_state, loss, g, lambda d: q, lambda p: new_loss
            )
        elif self.method == "fngd":
            new, opt_state = self._fngd(problem, module, params, opt_state, batch, answers)
        else:
            new, opt_state = module.update(self.hparams, params, opt_state, answers)
        return new, (opt_state, answers), {}

    def _fngd(self, problem: Any, module: Any, params: Any, state: Any, batch: Any, taps: Any) -> tuple[Any, Any]:
        hp = state.hparams
        jac = _backend_module(problem, "sample_space").TapJacobian(problem.layout, list(taps[0]), list(taps[1]))
        if self.phase == "solve":
            d = module.solved_direction(hp, jac, params)[0]
        else:
            d = jac.rmatvec_groups(module.lookup(state, batch))
        u, buf = module.heavy_ball(hp, params, d, state.momentum_buffer)
        return params - hp.lr * u, state._replace(momentum_buffer=buf)


class NullProbe:
    """A step that does nothing (returns its parameters and state): what calling a prepared step
    through the timed region costs by itself (Python call and fences in torch; a jitted
    call's dispatch and fence in JAX). A method's step pays it once, inside its passes' floor;
    each algebra lane pays it again, so :func:`net_of_call` takes it off the lanes' medians."""

    name = "algebra:null"

    def init(self, problem: Any, hparams: Any) -> None:
        return None

    def step(self, problem: Any, params: Any, state: Any, batch: Any) -> tuple[Any, Any, dict[str, Any]]:
        return params, state, {}


def net_of_call(medians: dict[str, float]) -> dict[str, float]:
    """The algebra lanes' medians less the null lane's (clipped at 0): the algebra without the
    cost of a second call of a step (:class:`NullProbe`); unchanged without a null lane."""
    null = medians.get(NullProbe.name)
    if null is None:
        return dict(medians)
    return {
        name: max(0.0, t - null) if name.startswith("algebra:") and name != NullProbe.name else t
        for name, t in medians.items()
    }


class AfterPass:
    """An algebra lane run where a step runs its algebra: after a pass. Each step asks the
    oracle for the gradient at the lane's parameters and batch (one forward and one backward),
    then runs the wrapped lane's step, and returns the gradient's sum among its statistics (so
    XLA keeps it). Timed alone, in a loop of its own, a small update runs with the caches and
    branch predictors full of itself; after a backward pass the same operators cost 1.0-4x more
    on the small torch models here (docs/measurement.md, "What a floor of probes leaves out").
    The lane's algebra after a pass is its median less the wrapped null lane's (a gradient and
    nothing else): :func:`net_of_pass`."""

    PREFIX = "after-pass:"

    def __init__(self, lane: Any) -> None:
        self.lane = lane
        self.name = self.PREFIX + lane.name

    def init(self, problem: Any, hparams: Any) -> Any:
        return self.lane.init(problem, hparams)

    def step(self, problem: Any, params: Any, state: Any, batch: Any) -> tuple[Any, Any, dict[str, Any]]:
        g = problem.oracle(params, batch).grad()
        params, state, stats = self.lane.step(problem, params, state, batch)
        return params, state, {**stats, "gradient": g.sum()}


def after_pass(lanes: dict[str, Any]) -> dict[str, Any]:
    """:class:`AfterPass` of every lane in ``lanes`` (the null lane included), by name."""
    return {AfterPass.PREFIX + name: AfterPass(lane) for name, lane in lanes.items()}


def net_of_pass(medians: dict[str, float]) -> dict[str, float]:
    """Each algebra lane's cost after a pass, keyed by the lane's own name: its
    :class:`AfterPass` lane's median less the null lane's after a pass (clipped at 0); empty
    without that null lane."""
    prefix = AfterPass.PREFIX
    null = medians.get(prefix + NullProbe.name)
    if null is None:
        return {}
    return {
        name[len(prefix) :]: max(0.0, t - null)
        for name, t in medians.items()
        if name.startswith(prefix + "algebra:") and name != prefix + NullProbe.name
    }


def solve_steps_per_step(problem: Any, rounds: int, warmup: int) -> float:
    """The fraction of timed steps (``warmup .. warmup + rounds - 1``) in which FNGD at its
    defaults solves for coefficients (its first ``solve_epochs`` epochs)."""
    hp = fngd.CARD.Hyperparams()
    solving = hp.solve_epochs * (problem.n_train // problem.batch_size)
    return sum(t < solving for t in range(warmup, warmup + rounds)) / rounds


# --------------------------------------------------------------------------- lanes and figures


def _probes(method: str) -> list[Any]:
    if method == "kfac":
        return [KFACProbe("precondition"), KFACProbe("inverses"), KFACStatsProbe()]
    if method == "fngd":
        return [UpdateProbe("fngd", "solve"), UpdateProbe("fngd", "reuse")]
    if method in UPDATE_METHODS:
        return [UpdateProbe(method)]
    return [MethodProbe(method)]


def probes_for(adapters: list[str]) -> dict[str, Any]:
    """The probe lanes (by name) for the methods among ``adapters`` (``name`` or ``name:preset``)."""
    out: dict[str, Any] = {}
    for name in adapters:
        method = name.partition(":")[0]
        if method in CARDS or method in UPDATE_METHODS:
            out.update({p.name: p for p in _probes(method)})
    return {**out, NullProbe.name: NullProbe()} if out else out


def algebra_per_step(
    adapter: str, medians: dict[str, float], rounds: int, warmup: int, solve_fraction: float | None = None
) -> float:
    """Seconds of linear algebra one step of ``adapter`` needs, from the probe lanes' medians
    (NaN without a probe: the method's algebra is not measured). FNGD:
    ``solve x solve_fraction + reuse x (1 - solve_fraction)``, the fraction of timed steps that
    solve (:func:`solve_steps_per_step`; NaN when not given)."""
    method, _, preset = adapter.partition(":")
    nan = float("nan")
    if method == "fngd" and not preset:
        f = nan if solve_fraction is None else solve_fraction
        return medians.get("algebra:fngd-solve", nan) * f + medians.get("algebra:fngd-reuse", nan) * (1 - f)
    if method in UPDATE_METHODS and not preset:
        return medians.get(f"algebra:{method}", nan)
    if method == "kfac":
        inverses = medians.get("algebra:kfac-inverses", nan) * refreshes_per_step(preset or None, rounds, warmup)
        stats = medians.get("algebra:kfac-stats", nan) * stats_per_step(preset or None, rounds, warmup)
        return medians.get("algebra:kfac-precondition", nan) + inverses + stats
    if method in CARDS and not preset:
        return medians.get(f"algebra:{method}", nan)
    return nan  # a preset may change the system's size (SF's draws) or filter: not probed


def efficiency_with_algebra(median_s: float, floor_s: float, algebra_s: float) -> float:
    """``step / (floor + algebra)``: 1 is a step that costs exactly its passes and its linear algebra."""
    total = floor_s + algebra_s
    return median_s / total if total > 0 else float("nan")


def main() -> None:
    from benchmarks import step_cost

    step_cost.main(
        description="Each method's linear algebra against its step and floor (step_cost with the algebra lanes).",
        default_adapters=["ef", "ief", "sf", "egn", "kfac", "kfac:amortised"],
    )


if __name__ == "__main__":
    main()
