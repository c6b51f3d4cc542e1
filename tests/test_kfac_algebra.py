"""K-FAC's linear-algebra probes (``benchmarks/kfac_algebra.py``): what they compute and how often
the schedule pays for an inverse refresh. Timing figures belong in the benchmark, not here."""

from __future__ import annotations

import numpy as np
import pytest

from backends import kfac_maths
from benchmarks import kfac_algebra
from harness import registry
from suites import get_suite


def test_refreshes_per_step_follow_the_card_schedules() -> None:
    # Defaults: T3 = 20, so timed steps 10..109 refresh at 20, 40, 60, 80, 100.
    assert kfac_algebra.refreshes_per_step(None, rounds=100, warmup=10) == pytest.approx(0.05)
    # With a 100-step period only t = 100; from t = 0, the 3 warm-up refreshes and t = 0.
    assert kfac_algebra.refreshes_per_step("amortised", rounds=100, warmup=10) == pytest.approx(0.05)
    hp = {"inverse_update_period": 100}
    assert kfac_algebra.refreshes_per_step(None, rounds=100, warmup=10, overrides=hp) == pytest.approx(0.01)
    assert kfac_algebra.refreshes_per_step(None, rounds=10, warmup=0, overrides=hp) == pytest.approx(0.3)


@pytest.mark.parametrize("backend", ["torch", pytest.param("jax", marks=pytest.mark.slow)])  # jax: two compiles
def test_algebra_probes_precondition_and_invert_without_a_pass(backend: str) -> None:
    module = registry.backend_module(backend)
    problem = module.build_problem(get_suite("tiny-ce"), seed=0, dtype="float64", device="cpu")
    for piece in ("precondition", "inverses"):
        probe = kfac_algebra.KFACProbe(piece)
        state = probe.init(problem, None)
        step = problem.make_step(probe)
        before = problem.counters.snapshot()
        params, _, stats = step(problem.params0, state, problem.device_batch(0))
        assert problem.counters.snapshot() == before  # linear algebra only: no oracle pass
        np.testing.assert_array_equal(problem.to_numpy(params), problem.to_numpy(problem.params0))
        factors, inverses, damping = state
        ops = kfac_algebra._ops(problem)
        if piece == "precondition":
            want = kfac_maths.precondition(ops, problem.layout, inverses, problem.params0, 1.0).sum()
        else:
            fresh = [kfac_maths.layer_inverse(ops, A, G, damping, 1) for A, G in factors]
            want = sum(inv.left.sum() + inv.right.sum() for inv in fresh)
        assert float(stats["probe"]) == pytest.approx(float(want), rel=1e-10)
    # The probes' factors have the problem's shapes: 13-16-3 with biases.
    dims = [(A.shape[0], G.shape[0]) for A, G in state[0]]
    assert dims == [(14, 16), (17, 3)]
