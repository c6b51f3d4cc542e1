"""The step-cost benchmark: the run loop's timed region, the pass-kind probes, floor and efficiency.

Timing figures belong in the benchmark, not here: these tests check the arithmetic (the floor
solved from probes with known costs), what each probe asks the oracle (read from the counters),
and that the run loop and the benchmark time a step through one function.
"""

from __future__ import annotations

import math
import sys
import time

import numpy as np
import pytest

import harness.runner
import harness.timing
from benchmarks import method_algebra, pass_costs, step_cost
from harness import registry
from harness.runner import RunSpec, execute
from harness.timing import TimedStep
from suites import get_suite


def test_pass_costs_recovers_known_costs_from_probe_times() -> None:
    true = {"forward": 0.3, "backward": 0.7, "jvp": 0.5, "vjp": 0.6, "per_sample": 4.0}
    counts = {
        "probe:forward": {"forward": 1},
        "probe:gradient": {"forward": 1, "backward": 1},
        "probe:jvp": {"jvp": 1},
        "probe:vjp": {"forward": 1, "vjp": 1},
        "probe:per_sample": {"per_sample": 1},
    }
    times = {p: sum(n * true[k] for k, n in c.items()) for p, c in counts.items()}
    got = pass_costs.pass_costs(counts, times)
    assert got == pytest.approx(true, rel=1e-12)
    # An adapter with one forward, two backwards and two JVPs (K-FAC's shape of step):
    assert pass_costs.floor({"forward": 1, "backward": 2, "jvp": 2}, got) == pytest.approx(0.3 + 1.4 + 1.0)


def test_floor_is_nan_for_a_counted_kind_without_a_probe_and_ignores_zero_counts() -> None:
    costs = {"forward": 1.0, "backward": 2.0}
    assert pass_costs.floor({"forward": 1, "backward": 1, "jvp": 0}, costs) == 3.0
    assert math.isnan(pass_costs.floor({"forward": 1, "per_sample": 1}, costs))


def test_negative_least_squares_costs_are_clipped_to_zero() -> None:
    # Noise can make a difference of two probe times negative; a cost is never below zero.
    got = pass_costs.pass_costs(
        {"probe:forward": {"forward": 1}, "probe:gradient": {"forward": 1, "backward": 1}},
        {"probe:forward": 2.0, "probe:gradient": 1.5},
    )
    assert got == {"forward": 2.0, "backward": 0.0}


@pytest.mark.parametrize("backend", ["torch", "jax"])
def test_each_probe_asks_the_oracle_what_its_name_says(backend: str) -> None:
    module = registry.backend_module(backend)
    problem = module.build_problem(get_suite("digits-mlp"), seed=0, dtype="float32", device="cpu")
    expected = {
        "forward": {"forward": 1},
        "gradient": {"forward": 1, "backward": 1},
        "jvp": {"jvp": 1},
        "vjp": {"forward": 1, "vjp": 1},
        "per_sample": {"per_sample": 1},
    }
    for query, passes in expected.items():
        probe = pass_costs.Probe(query)
        step = problem.make_step(probe)
        before = problem.counters.snapshot()
        params, _, stats = step(problem.params0, probe.init(problem, None), problem.device_batch(0))
        after = problem.counters.snapshot()
        assert {k: after[k] - before.get(k, 0) for k in after if after[k] != before.get(k, 0)} == passes, query
        assert np.isfinite(float(stats["probe"]))
        assert np.array_equal(np.asarray(params), np.asarray(problem.params0))  # parameters unchanged


def test_benchmark_reports_floor_and_efficiency_from_its_own_rounds() -> None:
    measured = step_cost.measure("torch", "digits-mlp", ["sgd", "sf"], rounds=4, warmup=1)
    assert set(measured.pass_costs) == set(pass_costs.PASS_KINDS)
    by_name = {c.adapter: c for c in measured.costs}
    assert set(by_name) == {"sgd", "sf"}  # probes are not adapters in the table
    for cost in by_name.values():
        assert cost.status == "ok"
        assert cost.floor_s == pytest.approx(pass_costs.floor(cost.passes, measured.pass_costs))
        assert cost.efficiency == pytest.approx(cost.median_s / cost.floor_s)
    assert by_name["sf"].passes["backward"] == 2 * by_name["sgd"].passes["backward"]  # SF's sampled-label pass
    extra = by_name["sf"].floor_s - by_name["sgd"].floor_s
    assert extra == pytest.approx(measured.pass_costs["backward"], abs=1e-12)  # the floor counts it once
    assert "| efficiency |" in step_cost.format_table(measured.costs)
    # SF's linear algebra ran as its own lane in the same rounds (benchmarks.method_algebra).
    net = method_algebra.net_of_call(measured.extra)  # less the null lane: a step call's own cost
    assert by_name["sf"].algebra_s == net["algebra:sf"] == measured.extra["algebra:sf"] - measured.extra["algebra:null"]
    assert by_name["sf"].algebra_s > 0
    assert by_name["sf"].efficiency_algebra == pytest.approx(
        by_name["sf"].median_s / (by_name["sf"].floor_s + by_name["sf"].algebra_s)
    )
    # The same lanes after a pass (method_algebra.AfterPass): less the null lane after a pass.
    after = measured.extra["after-pass:algebra:sf"] - measured.extra["after-pass:algebra:null"]
    assert by_name["sf"].algebra_after_pass_s == pytest.approx(max(0.0, after), abs=1e-15)
    assert by_name["sf"].efficiency_after_pass == pytest.approx(
        by_name["sf"].median_s / (by_name["sf"].floor_s + by_name["sf"].algebra_after_pass_s)
    )
    # SGD's parameter update is its lane (benchmarks.method_algebra.UpdateProbe).
    assert by_name["sgd"].algebra_s == net["algebra:sgd"]
    assert "| step / (floor + algebra): alone / after a pass |" in step_cost.format_table(measured.costs)


def test_the_run_loop_times_a_step_through_the_shared_timed_region(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []
    real = harness.runner.timed_step

    def fixed(problem, step_fn, params, state, batch):  # type: ignore[no-untyped-def]
        out = real(problem, step_fn, params, state, batch)
        calls.append(1)
        return TimedStep(out.params, out.state, out.stats, 0.25)

    monkeypatch.setattr(harness.runner, "timed_step", fixed)
    result = execute(RunSpec("tiny-ce", "sgd", device="cpu", steps=6, stop_at_target=False))
    assert result.status in ("budget_exhausted", "done", "target_reached")
    assert len(calls) == 6
    assert result.step_time_median_s == 0.25


def test_lanes_run_in_a_seeded_order_drawn_per_turn() -> None:
    lanes = [f"lane{i}" for i in range(12)]
    turns = [step_cost._shuffled(lanes, t) for t in range(11)]
    assert turns[0] == lanes and turns == [step_cost._shuffled(lanes, t) for t in range(11)]  # repeatable
    assert all(sorted(turn) == sorted(lanes) for turn in turns)  # every lane steps once a turn
    before = {lane: {turn[turn.index(lane) - 1] for turn in turns if turn.index(lane) > 0} for lane in lanes}
    assert min(len(others) for others in before.values()) >= 4  # no lane keeps one predecessor
    assert step_cost._shuffled([], 3) == []


def test_the_timed_region_reads_the_clock_it_is_given() -> None:
    class Problem:
        def block(self, *arrays: object) -> None:
            pass

    ticks = iter([10.0, 10.5])
    out = harness.timing.timed_step(Problem(), lambda p, s, b: (p, s, {}), 1, 2, 3, clock=lambda: next(ticks))
    assert (out.params, out.state, out.seconds) == (1, 2, 0.5)
    assert {"wall": time.perf_counter, "thread": time.thread_time} == step_cost.CLOCKS


@pytest.mark.parametrize(
    ("args", "reason"),
    [
        (["--backend", "jax", "--threads", "1"], "use it with --backend torch --threads 1"),
        (["--backend", "torch", "--threads", "2"], "use it with --backend torch --threads 1"),
        (["--backend", "torch", "--threads", "1", "--store"], "stored tables are wall-clock"),
    ],
)
def test_the_thread_clock_is_refused_where_it_would_miscount(
    args: list[str], reason: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(sys, "argv", ["step_cost", "--clock", "thread", "--adapter", "sgd", *args])
    monkeypatch.setattr(step_cost, "measure", lambda *a, **k: pytest.fail("measured"))
    with pytest.raises(SystemExit) as exc:
        step_cost.main()
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("ngbench: error: --clock thread") and reason in err and err.count("\n") == 1
