"""The torch-against-JAX table of the step-cost benchmark (benchmarks/backend_gap.py)."""

from __future__ import annotations

import math

import pytest

from benchmarks import backend_gap
from benchmarks.step_cost_table import Cost


def _cost(backend: str, adapter: str, median: float, floor: float, algebra: float, status: str = "ok") -> Cost:
    return Cost(backend, "digits-mlp", adapter, 10, median, median, median, 0.0, 1.0, {}, status, floor, 1.0, algebra)


def test_gap_and_bound_are_torch_over_jax_and_each_row_gets_its_verdict() -> None:
    costs = [
        _cost("torch", "sgd", 0.50e-3, 0.36e-3, 0.02e-3),  # passes alone 1.73x JAX: the framework's
        _cost("torch", "ef", 1.00e-3, 0.36e-3, 0.10e-3),  # passes + algebra 0.92x JAX: the adapter's
        _cost("torch", "sf", 1.00e-3, 0.40e-3, 0.30e-3),  # passes 0.8x JAX, with the algebra 1.4x
        _cost("torch", "egn", 3.00e-3, 1.00e-3, math.nan),  # no algebra lane: the floor alone; met
        _cost("torch", "ief", 1.00e-3, 0.60e-3, 0.30e-3, status="error"),  # failed on torch: no row
        _cost("jax", "sgd", 0.20e-3, 0.15e-3, 0.01e-3),
        _cost("jax", "ef", 0.50e-3, 0.30e-3, 0.05e-3),
        _cost("jax", "egn", 3.00e-3, 1.00e-3, 0.5e-3),
        _cost("jax", "sf", 0.50e-3, 0.30e-3, 0.05e-3),
        _cost("jax", "ief", 0.50e-3, 0.30e-3, 0.05e-3),
        _cost("jax", "kfac", 1.00e-3, 0.50e-3, 0.10e-3),  # measured on JAX only: no row
    ]
    rows = {r.adapter: r for r in backend_gap.gaps(costs)}
    assert list(rows) == ["sgd", "ef", "sf", "egn"]
    assert rows["sgd"].gap == pytest.approx(2.5)
    assert rows["sgd"].bound == pytest.approx(0.38 / 0.20)
    assert rows["sgd"].passes == pytest.approx(0.36 / 0.20)
    assert rows["sgd"].verdict == "passes"
    assert rows["ef"].gap == pytest.approx(2.0)
    assert rows["ef"].bound == pytest.approx(0.46 / 0.50)
    assert rows["ef"].verdict == "adapter"
    assert rows["sf"].passes == pytest.approx(0.8) and rows["sf"].bound == pytest.approx(1.4)
    assert rows["sf"].verdict == "algebra"
    assert rows["egn"].bound == pytest.approx(1.0 / 3.0)
    assert rows["egn"].verdict == "met"
    table = backend_gap.format_gaps(list(rows.values()))
    assert "| digits-mlp | sgd | 0.500 ms | 0.200 ms | 2.50 | 1.80 | 1.90 | passes |" in table


def test_the_goal_is_inclusive() -> None:
    assert backend_gap.verdict(1.2, 5.0, 5.0) == "met"
    assert backend_gap.verdict(1.21, 1.0, 1.2) == "adapter"
    assert backend_gap.verdict(1.21, 1.2, 1.21) == "algebra"
    assert backend_gap.verdict(1.21, 1.21, 1.21) == "passes"
