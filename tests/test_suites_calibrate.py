"""``ngbench calibrate``: the AlgoPerf-style target procedure in miniature (harness/calibrate.py)."""

from __future__ import annotations

import math
import statistics

import pytest
from typer.testing import CliRunner

from harness.calibrate import calibrate, calibration_steps, round_toward_easier
from harness.cli import app, main
from suites import get_suite, list_suites
from suites.spec import CALIBRATION_FRACTION


@pytest.mark.parametrize(
    ("value", "mode", "expected"),
    [
        (0.96935, "max", 0.969),
        (0.96935, "min", 0.97),
        (0.97, "max", 0.97),
        (0.12345, "min", 0.124),
        (1.15259e-08, "min", 1.16e-08),
        (0.123, "min", 0.123),
        (12.3456, "max", 12.3),
    ],
)
def test_targets_round_toward_the_easier_side(value: float, mode: str, expected: float) -> None:
    out = round_toward_easier(value, mode)
    assert math.isclose(out, expected, rel_tol=1e-12)
    assert (out <= value) if mode == "max" else (out >= value)


def test_calibration_runs_three_quarters_of_the_budget() -> None:
    suite = get_suite("digits-cnn")
    assert CALIBRATION_FRACTION == 0.75
    assert calibration_steps(suite) == round(0.75 * suite.budget.steps)


def test_grid_median_and_best_configuration() -> None:
    report = calibrate("tiny-ce", lrs=[1e-3, 0.1], seeds=2, steps=30)
    assert report.steps == 30 and report.seeds == 2 and report.mode == "max"
    assert [c.hparams["lr"] for c in report.configs] == [1e-3, 0.1]
    for c in report.configs:
        assert len(c.runs) == 2 and {r.spec.seed for r in c.runs} == {0, 1}
        assert all(r.steps == 30 and r.spec.stop_at_target is False for r in c.runs)
        assert c.median("max") == statistics.median(c.values)
    # lr 0.1 learns wine in 30 steps, lr 1e-3 barely moves: the grid must pick 0.1.
    assert report.best.hparams["lr"] == 0.1
    assert report.target_value == round_toward_easier(report.best.median("max"), "max")
    assert 'target=Target("val_accuracy", ' in report.target_line()
    line = report.calibration_line()
    assert 'optimizer="adamw"' in line and '("lr", 0.1)' in line and "seeds=2, steps=30" in line
    # The ladder's foot: the median over the best configuration's seeds of the step-0 metric.
    initial = statistics.median(float(r.series("val_accuracy")[2][0]) for r in report.best.runs)
    assert report.initial_value() == round(initial, 6) and f"initial_value={round(initial, 6)!r}" in line


def test_cli_prints_the_target_and_the_evidence() -> None:
    result = CliRunner().invoke(app, ["calibrate", "tiny-mse", "--lrs", "0.01,0.1", "--seeds", "1", "--steps", "10"])
    assert result.exit_code == 0, result.output
    assert 'target=Target("val_loss", ' in result.output and 'mode="min"' in result.output
    assert "calibration=Calibration(" in result.output and "lr=0.1" in result.output


def test_bad_calibration_input_is_one_clear_error() -> None:
    assert main(["calibrate", "no-such-suite"]) == 2
    assert main(["calibrate", "tiny-ce", "--lrs", "fast"]) == 2


def test_every_ci_suite_states_its_protocol() -> None:
    """Version, target on the val metric, budget, eval cadence, description, paper and the
    calibration evidence behind the target."""
    suites = list_suites("ci")
    assert {s.name for s in suites} >= {
        "rosenbrock", "digits-cnn", "digits-mlp", "breast-cancer-logreg", "concrete-mlp", "diabetes-mlp",
        "mnist1d-mlp", "minilm-lora",
    }  # fmt: skip
    for s in suites:
        assert s.version >= 1 and s.description and s.paper and s.source, s.name
        assert s.target is not None and s.target.metric == s.val_metric, s.name
        assert s.budget.steps > 0 and s.budget.time_s is not None and 0 < s.eval_every <= s.budget.steps, s.name
        cal = s.calibration
        assert cal is not None and cal.seeds >= 3, s.name
        assert cal.steps == calibration_steps(s), s.name
        assert s.target.value == round_toward_easier(cal.median, s.target.mode), s.name
