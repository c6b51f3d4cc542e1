"""The methods' linear-algebra probes (``benchmarks/method_algebra.py``): no oracle pass in the
timed step, the same numbers as the method's own step on that batch, and the arithmetic of the
algebra-inclusive efficiency. Timing figures belong in the benchmark, not here."""

from __future__ import annotations

import math
from dataclasses import asdict

import numpy as np
import pytest

from backends.torch.optimizers import fngd as torch_fngd
from benchmarks import method_algebra, step_cost, step_cost_table
from harness import registry
from suites import get_suite

METHODS = ("ef", "ief", "sf", "egn")


@pytest.mark.parametrize("backend", ["torch", pytest.param("jax", marks=pytest.mark.slow)])  # jax: 8 compiles
@pytest.mark.parametrize("method", METHODS)
def test_probe_takes_no_pass_and_computes_the_steps_direction(backend: str, method: str) -> None:
    module = registry.backend_module(backend)
    problem = module.build_problem(get_suite("tiny-ce"), seed=0, dtype="float64", device="cpu")
    probe = method_algebra.MethodProbe(method)
    inputs = probe.init(problem, None)  # the passes happen here, outside the timed step
    step = problem.make_step(probe)
    before = problem.counters.snapshot()
    params, _, stats = step(problem.params0, inputs, problem.device_batch(3))
    assert problem.counters.snapshot() == before  # linear algebra only: no oracle pass
    np.testing.assert_array_equal(problem.to_numpy(params), problem.to_numpy(problem.params0))
    # The adapter's own direction on the probe's batch (the first) at the initial parameters.
    adapter = registry.adapters(backend)[method]()
    state = adapter.init(problem, adapter.resolve(None, None))
    want = problem.to_numpy(problem.make_direction(adapter)(problem.params0, state, problem.device_batch(0)))
    if method == "egn":
        got = problem.to_numpy(method_algebra.egn_algebra(problem, inputs))
    else:
        got = problem.to_numpy(method_algebra.sample_space_algebra(method, problem, inputs))
    np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-12)
    assert float(stats["probe"]) == pytest.approx(float(want.sum()), rel=1e-9, abs=1e-12)


@pytest.mark.parametrize("backend", ["torch", pytest.param("jax", marks=pytest.mark.slow)])  # jax: 3 compiles
def test_kfac_stats_probe_takes_no_pass_and_folds_the_steps_factors(backend: str) -> None:
    module = registry.backend_module(backend)
    problem = module.build_problem(get_suite("tiny-ce"), seed=0, dtype="float64", device="cpu")
    probe = method_algebra.KFACStatsProbe()
    inputs = probe.init(problem, None)  # the passes (taps, sampled-label backward) happen here
    step = problem.make_step(probe)
    before = problem.counters.snapshot()
    params, _, stats = step(problem.params0, inputs, problem.device_batch(3))
    assert problem.counters.snapshot() == before  # linear algebra only: no oracle pass
    np.testing.assert_array_equal(problem.to_numpy(params), problem.to_numpy(problem.params0))
    want = sum(float(st.A.sum() + st.G.sum()) for st in method_algebra.kfac_stats_update(problem, inputs))
    assert float(stats["probe"]) == pytest.approx(want, rel=1e-12)
    # The adapter's own second step: batch 1's factors at the first step's parameters, folded
    # into the first step's averages with the weight of the 2nd estimate (1/2, the paper's EMA).
    adapter = registry.adapters(backend)["kfac"]()
    state = adapter.init(problem, adapter.resolve(None, None))
    params1, state1, _ = adapter.step(problem, problem.params0, state, problem.device_batch(0))
    _, state2, _ = adapter.step(problem, params1, state1, problem.device_batch(1))
    probe_state = method_algebra.kfac_stats_inputs(problem, params1, problem.device_batch(1), state1.factors, k=2)
    assert probe_state[3] == 0.5
    got = method_algebra.kfac_stats_update(problem, probe_state)
    assert len(got) == len(state2.factors) == 2
    for mine, step_factors in zip(got, state2.factors, strict=True):
        np.testing.assert_allclose(problem.to_numpy(mine.A), problem.to_numpy(step_factors.A), rtol=1e-12)
        np.testing.assert_allclose(problem.to_numpy(mine.G), problem.to_numpy(step_factors.G), rtol=1e-12)
    # The lane's factors have the layers' shapes: 13-16-3 with biases.
    assert [(st.A.shape[0], st.G.shape[0]) for st in got] == [(14, 16), (17, 3)]


def test_probe_systems_have_the_methods_sizes() -> None:
    module = registry.backend_module("torch")
    problem = module.build_problem(get_suite("tiny-ce"), seed=0, dtype="float64", device="cpu")
    batch = problem.device_batch(0)
    B, C = int(batch.x.shape[0]), 3
    samples = method_algebra.CARDS["sf"].Hyperparams().samples
    for method, rows in (("ef", B), ("sf", (1 + samples) * B)):  # SF: the true-label rows, then the draws
        _, cotangents, _ = method_algebra.sample_space_inputs(method, problem, problem.params0, batch)
        assert [int(e.shape[0]) for e in cotangents] == [rows] * len(problem.layout.tapped)
    _, cotangents, s, lam = method_algebra.egn_inputs(problem, problem.params0, batch)
    assert tuple(cotangents[0].shape[:2]) == (C, B) and tuple(s.shape) == (B * C,)  # the B*C system
    assert float(lam) == method_algebra.CARDS["egn"].Hyperparams().damping


def test_probes_for_and_algebra_per_step_arithmetic() -> None:
    lanes = method_algebra.probes_for(["ef", "sf", "kfac", "kfac:amortised"])
    kfac_lanes = ["algebra:kfac-inverses", "algebra:kfac-precondition", "algebra:kfac-stats"]
    assert sorted(lanes) == ["algebra:ef", *kfac_lanes, "algebra:null", "algebra:sf"]
    medians = {
        "algebra:ef": 0.002,
        "algebra:kfac-precondition": 0.001,
        "algebra:kfac-inverses": 0.010,
        "algebra:kfac-stats": 0.0004,
    }
    assert method_algebra.algebra_per_step("ef", medians, 100, 10) == 0.002
    # K-FAC defaults refresh 5 times in timed steps 10..109 and take statistics every step:
    # 0.001 + 0.010 * 0.05 + 0.0004; the amortised preset's statistics every 10th step
    # (t = 10, 20, ..., 100: 10 of 100).
    assert method_algebra.algebra_per_step("kfac", medians, 100, 10) == pytest.approx(0.0019)
    assert method_algebra.algebra_per_step("kfac:amortised", medians, 100, 10) == pytest.approx(0.00154)
    assert method_algebra.stats_per_step("amortised", 100, 10) == pytest.approx(0.1)
    assert math.isnan(method_algebra.algebra_per_step("egn", medians, 100, 10))  # no lane measured
    assert math.isnan(method_algebra.algebra_per_step("sf", medians, 100, 10))  # lane missing
    assert math.isnan(method_algebra.algebra_per_step("ef:exact", medians, 100, 10))  # presets not probed
    assert method_algebra.efficiency_with_algebra(0.006, 0.002, 0.001) == pytest.approx(2.0)
    assert math.isnan(method_algebra.efficiency_with_algebra(0.006, 0.002, float("nan")))


def test_stored_rows_carry_the_algebra_in_the_passes_field() -> None:
    cost = step_cost.Cost("torch", "digits-mlp", "ef", 10, *[0.004] * 5, {"forward": 1.0})
    cost.algebra_s, cost.efficiency_algebra = 0.001, 1.6
    cost.algebra_after_pass_s, cost.efficiency_after_pass = 0.002, 1.3
    row = step_cost_table._stored_row(asdict(cost))
    assert row["passes"] == {
        "forward": 1.0,
        "algebra_s": 0.001,
        "efficiency_algebra": 1.6,
        "algebra_after_pass_s": 0.002,
        "efficiency_after_pass": 1.3,
    }
    plain = step_cost_table._stored_row(
        asdict(step_cost.Cost("torch", "digits-mlp", "sgd", 10, *[0.004] * 5, {"forward": 1.0}))
    )
    assert plain["passes"] == {"forward": 1.0}


UPDATE_LANES = ("sgd", "adamw", "adamqlr", "fngd-solve", "fngd-reuse")


@pytest.mark.parametrize("backend", ["torch", pytest.param("jax", marks=pytest.mark.slow)])  # jax: 10 compiles
@pytest.mark.parametrize("lane", UPDATE_LANES)
def test_update_probe_takes_no_pass_and_computes_the_steps_update(backend: str, lane: str) -> None:
    module = registry.backend_module(backend)
    problem = module.build_problem(get_suite("tiny-ce"), seed=0, dtype="float64", device="cpu")
    method, _, phase = lane.partition("-")
    probe = method_algebra.UpdateProbe(method, phase or None)
    assert probe.name == f"algebra:{lane}"
    inputs = probe.init(problem, None)  # the passes happen here, outside the timed step
    step = problem.make_step(probe)
    batch = problem.device_batch(0)
    before = problem.counters.snapshot()
    params, _, stats = step(problem.params0, inputs, batch)
    assert problem.counters.snapshot() == before  # the update only: no oracle pass
    assert stats == {}  # nothing computed beyond the update
    # The adapter's own step from the same state on the batch the answers were recorded on.
    adapter = registry.adapters(backend)[method]()
    state = (
        method_algebra.fngd_state(problem, phase)
        if method == "fngd"
        else adapter.init(problem, adapter.resolve(None, None))
    )
    want = problem.to_numpy(adapter.step(problem, problem.params0, state, batch)[0])
    got = problem.to_numpy(params)
    assert not np.array_equal(want, problem.to_numpy(problem.params0))  # the step moves the parameters
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-15)


def test_fngd_probe_states_are_in_their_phase_with_the_first_batch_cached() -> None:
    module = registry.backend_module("torch")
    problem = module.build_problem(get_suite("tiny-ce"), seed=0, dtype="float64", device="cpu")
    solve, reuse = (method_algebra.fngd_state(problem, phase) for phase in ("solve", "reuse"))
    assert torch_fngd._solving(solve) and not torch_fngd._solving(reuse)
    assert reuse.filled and not np.isnan(reuse.table.numpy()).any()  # cached: no solve, no fill
    index = problem.device_batch(0).index
    np.testing.assert_array_equal(reuse.table[index].numpy(), solve.table[index].numpy())  # batch 0 was solved


def test_update_lanes_and_their_per_step_figures() -> None:
    lanes = method_algebra.probes_for(["sgd", "adamw", "adamqlr", "fngd", "fngd:shared"])
    assert sorted(lanes) == [
        "algebra:adamqlr",
        "algebra:adamw",
        "algebra:fngd-reuse",
        "algebra:fngd-solve",
        "algebra:null",
        "algebra:sgd",
    ]
    assert method_algebra.probes_for(["fngd:shared"]) != {} and method_algebra.probes_for(["other"]) == {}
    medians = {"algebra:sgd": 1e-5, "algebra:adamqlr": 3e-5, "algebra:fngd-solve": 4e-4, "algebra:fngd-reuse": 1e-4}
    assert method_algebra.algebra_per_step("sgd", medians, 100, 10) == 1e-5
    assert method_algebra.algebra_per_step("adamqlr", medians, 100, 10) == 3e-5
    assert math.isnan(method_algebra.algebra_per_step("adamw", medians, 100, 10))  # lane missing
    # FNGD: the solve lane for the timed steps that solve, the reuse lane for the others.
    assert method_algebra.algebra_per_step("fngd", medians, 100, 10, 0.25) == pytest.approx(0.25 * 4e-4 + 0.75 * 1e-4)
    assert math.isnan(method_algebra.algebra_per_step("fngd", medians, 100, 10))  # fraction unknown
    assert math.isnan(method_algebra.algebra_per_step("fngd:shared", medians, 100, 10, 0.0))  # presets not probed
    problem = registry.backend_module("torch").build_problem(get_suite("digits-mlp"), seed=0, device="cpu")
    per_epoch = problem.n_train // problem.batch_size  # FNGD solves in its first epoch (the default)
    assert method_algebra.solve_steps_per_step(problem, 60, 10) == pytest.approx((per_epoch - 10) / 60)
    assert method_algebra.solve_steps_per_step(problem, 60, per_epoch) == 0.0


def test_lanes_are_net_of_a_step_calls_own_cost() -> None:
    medians = {"algebra:null": 5e-5, "algebra:sgd": 8e-5, "algebra:ef": 4e-5, "probe:other": 1e-3}
    net = method_algebra.net_of_call(medians)
    assert net["algebra:sgd"] == pytest.approx(3e-5)
    assert net["algebra:ef"] == 0.0  # noise below the null lane is clipped, never negative
    assert net["algebra:null"] == 5e-5 and net["probe:other"] == 1e-3  # other lanes as measured
    assert method_algebra.net_of_call({"algebra:sgd": 8e-5}) == {"algebra:sgd": 8e-5}  # no null lane
    module = registry.backend_module("torch")
    problem = module.build_problem(get_suite("tiny-ce"), seed=0, dtype="float64", device="cpu")
    null = method_algebra.NullProbe()
    before = problem.counters.snapshot()
    params, state, stats = problem.make_step(null)(problem.params0, null.init(problem, None), problem.device_batch(0))
    np.testing.assert_array_equal(problem.to_numpy(params), problem.to_numpy(problem.params0))
    assert state is None and stats == {}
    assert problem.counters.snapshot() == before


def test_lanes_after_a_pass_take_one_gradient_and_are_net_of_the_null_lane_after_it() -> None:
    medians = {
        "after-pass:algebra:null": 4e-4,
        "after-pass:algebra:sgd": 5e-4,
        "after-pass:algebra:ef": 3.9e-4,
        "algebra:sgd": 1e-5,
        "probe:gradient": 3.5e-4,
    }
    assert method_algebra.net_of_pass(medians) == pytest.approx({"algebra:sgd": 1e-4, "algebra:ef": 0.0})
    assert method_algebra.net_of_pass({"after-pass:algebra:sgd": 5e-4}) == {}  # no null lane after a pass
    lanes = method_algebra.after_pass(method_algebra.probes_for(["sgd"]))
    assert set(lanes) == {"after-pass:algebra:sgd", "after-pass:algebra:null"}
    module = registry.backend_module("torch")
    problem = module.build_problem(get_suite("tiny-ce"), seed=0, dtype="float64", device="cpu")
    lane = lanes["after-pass:algebra:sgd"]
    state = lane.init(problem, None)
    before = problem.counters.snapshot()
    batch = problem.device_batch(0)
    params, _, stats = problem.make_step(lane)(problem.params0, state, batch)
    after = problem.counters.snapshot()
    assert {k: after[k] - before[k] for k in after} == {
        "forward": 1,
        "backward": 1,
        "jvp": 0,
        "vjp": 0,
        "per_sample": 0,
    }
    # The wrapped lane's update ran as it does alone, and the gradient's sum is among the stats.
    alone, _, _ = problem.make_step(lane.lane)(problem.params0, lane.lane.init(problem, None), batch)
    np.testing.assert_array_equal(problem.to_numpy(params), problem.to_numpy(alone))
    gradient = problem.oracle(problem.params0, batch).grad()
    assert float(stats["gradient"]) == pytest.approx(float(gradient.sum()), rel=1e-12)
