"""FLOPs per step as the frameworks count them: the analytic count of an MLP's forward and
backward, more for methods with extra passes, stored with the run, never in the timed region."""

from __future__ import annotations

import pytest

from db import queries
from db.store import open_store
from harness import api

#: digits-mlp: MLP 64-128-128-10, batch 32. Forward: 2 B (64*128 + 128*128 + 128*10); backward:
#: the same for the weight gradients plus 2 B (128*128 + 128*10) for the input gradients of the
#: second and third layers (the first layer's input gradient is not needed).
B = 32
FORWARD = 2 * B * (64 * 128 + 128 * 128 + 128 * 10)
ANALYTIC_SGD = FORWARD + FORWARD + 2 * B * (128 * 128 + 128 * 10)


def total_passes(passes: dict[str, float]) -> float:
    return sum(passes.values())


@pytest.mark.parametrize("backend", ["torch", "jax"])
def test_sgd_flops_match_the_analytic_count_and_extra_passes_cost_more(backend: str, tmp_db: str) -> None:
    assert ANALYTIC_SGD == 4_440_064
    runs = {
        name: api.run("digits-mlp", name, backend=backend, steps=3, device="cpu", db=tmp_db)
        for name in ("sgd", "sf", "egn")
    }
    sgd = runs["sgd"].flops_per_step
    assert sgd == pytest.approx(ANALYTIC_SGD, rel=0.2)
    for name in ("sf", "egn"):
        extra_backward = runs[name].passes_per_step["backward"] - runs["sgd"].passes_per_step["backward"]
        assert extra_backward >= 1
        # A backward pass costs at least half of a forward+backward: a conservative lower bound.
        assert runs[name].flops_per_step >= sgd * (1 + 0.5 * extra_backward), name
    frame = queries.runs_frame(open_store(tmp_db))
    assert sorted(frame["flops_per_step"].round()) == sorted(round(r.flops_per_step) for r in runs.values())


def test_the_count_is_outside_the_loop() -> None:
    """The torch count executes one extra step after the loop on a throwaway state: the run's
    passes per step are the loop's alone (one forward and one backward for SGD, not 6/5)."""
    result = api.run("tiny-ce", "sgd", steps=5, device="cpu")
    assert result.passes_per_step["forward"] == 1.0 and result.passes_per_step["backward"] == 1.0
    assert result.flops_per_step is not None and result.flops_per_step > 0


def test_a_model_without_matrix_products_counts_zero_not_missing() -> None:
    """Rosenbrock has no matrix product: torch's counter gives 0, a count (the FLOPs board needs
    every reached run counted), not a missing figure."""
    assert api.run("rosenbrock", "sgd", steps=2, device="cpu").flops_per_step == 0.0
