"""The methods' linear-algebra probes (``benchmarks/method_algebra.py``): no oracle pass in the
timed step, the same numbers as the method's own step on that batch, and the arithmetic of the
algebra-inclusive efficiency. Timing figures belong in the benchmark, not here."""

from __future__ import annotations

import math
from dataclasses import asdict

import numpy as np
import pytest

from benchmarks import method_algebra, step_cost
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
    lanes = method_algebra.probes_for(["sgd", "ef", "sf", "kfac", "kfac:amortised", "adamw"])
    assert sorted(lanes) == ["algebra:ef", "algebra:kfac-inverses", "algebra:kfac-precondition", "algebra:sf"]
    medians = {"algebra:ef": 0.002, "algebra:kfac-precondition": 0.001, "algebra:kfac-inverses": 0.010}
    assert method_algebra.algebra_per_step("ef", medians, 100, 10) == 0.002
    # K-FAC defaults refresh 5 times in timed steps 10..109: 0.001 + 0.010 * 0.05.
    assert method_algebra.algebra_per_step("kfac", medians, 100, 10) == pytest.approx(0.0015)
    assert math.isnan(method_algebra.algebra_per_step("sgd", medians, 100, 10))  # no probe
    assert math.isnan(method_algebra.algebra_per_step("sf", medians, 100, 10))  # lane missing
    assert math.isnan(method_algebra.algebra_per_step("ef:exact", medians, 100, 10))  # presets not probed
    assert method_algebra.efficiency_with_algebra(0.006, 0.002, 0.001) == pytest.approx(2.0)
    assert math.isnan(method_algebra.efficiency_with_algebra(0.006, 0.002, float("nan")))


def test_stored_rows_carry_the_algebra_in_the_passes_field() -> None:
    cost = step_cost.Cost("torch", "digits-mlp", "ef", 10, *[0.004] * 5, {"forward": 1.0})
    cost.algebra_s, cost.efficiency_algebra = 0.001, 1.6
    row = step_cost._stored_row(asdict(cost))
    assert row["passes"] == {"forward": 1.0, "algebra_s": 0.001, "efficiency_algebra": 1.6}
    plain = step_cost._stored_row(
        asdict(step_cost.Cost("torch", "digits-mlp", "sgd", 10, *[0.004] * 5, {"forward": 1.0}))
    )
    assert plain["passes"] == {"forward": 1.0}
