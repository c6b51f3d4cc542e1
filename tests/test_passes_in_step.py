"""benchmarks/passes_in_step.py: the time a torch step spends inside its own passes."""

from __future__ import annotations

import time

import pytest
import torch

from backends.torch import batched_passes, oracle
from benchmarks import passes_in_step
from harness import registry
from suites import get_suite


def _problem():  # type: ignore[no-untyped-def]
    module = registry.backend_module("torch")
    return module.build_problem(get_suite("tiny-ce"), seed=0, dtype="float64", device="cpu")


class _CountsOutside:
    """A broken adapter: a gradient through the oracle, and one backward it counts itself."""

    def init(self, problem, hparams):  # type: ignore[no-untyped-def]
        return None

    def step(self, problem, params, state, batch):  # type: ignore[no-untyped-def]
        g = problem.oracle(params, batch).grad()
        time.sleep(0.002)  # not a pass: outside the clock
        problem.counters.add("backward")
        return params - 0.1 * g, state, {}


def test_an_instrumented_step_times_its_passes_and_leaves_the_oracle_as_it_was() -> None:
    problem = _problem()
    originals = (oracle.TorchOracle.reverse, oracle.TorchOracle._forward, batched_passes.tap_grads_many)
    instrumentation = passes_in_step.Instrumentation()
    sgd = registry.adapters("torch")["sgd"]()
    lane = passes_in_step.InstrumentedAdapter(sgd, sgd.resolve(None, None), instrumentation)
    broken = passes_in_step.InstrumentedAdapter(_CountsOutside(), None, instrumentation)
    with instrumentation.installed():
        assert oracle.TorchOracle.reverse is not originals[0]
        params, state = problem.params0, lane.init(problem, None)
        for i in range(3):
            start = time.perf_counter()
            params, state, stats = lane.step(problem, params, state, problem.device_batch(i))
            assert 0 < lane.inside[-1] < time.perf_counter() - start
        broken.step(problem, problem.params0, None, problem.device_batch(0))
        # Outside an instrumented step a timed entry point calls through and times nothing.
        problem.oracle(problem.params0, problem.device_batch(0)).grad()
    assert (oracle.TorchOracle.reverse, oracle.TorchOracle._forward, batched_passes.tap_grads_many) == originals
    assert "add" not in vars(problem.counters)  # the counters' own method again
    assert lane.untimed == 0 and len(lane.inside) == 3
    assert broken.untimed == 1  # the pass counted outside every entry point is flagged
    assert broken.inside[-1] < 0.002  # the sleep is not a pass
    # The instrumented steps are the adapter's own: the same parameters as three plain steps.
    plain, plain_state = problem.params0, sgd.init(problem, sgd.resolve(None, None))
    for i in range(3):
        plain, plain_state, _ = sgd.step(problem, plain, plain_state, problem.device_batch(i))
    assert torch.equal(params, plain) and float(stats["loss"]) > 0


def test_rows_report_the_rest_of_the_instrumented_step() -> None:
    row = passes_in_step.Row("digits-mlp", "sgd", 0.5e-3, 0.4e-3, 0.02e-3, 0.52e-3, 0.38e-3, 0)
    assert row.rest_s == pytest.approx(0.14e-3)
    table = passes_in_step.format_rows([row])
    assert "| digits-mlp | sgd | 0.500 ms | 0.520 ms | 0.400 ms | 0.380 ms | 0.95 | 0.140 ms | 0.020 ms | 0 |" in table
