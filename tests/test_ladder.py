"""The target ladder (``suites/ladder.py``): monotone rungs ending at the frozen target."""

from __future__ import annotations

import math

import pytest

from suites import get_suite, list_suites
from suites.ladder import FRACTIONS, ladder, ladder_scale


@pytest.mark.parametrize("mode", ["max", "min"])
def test_rungs_are_monotone_and_the_top_rung_is_the_target(mode: str) -> None:
    initial, target = (0.1, 0.9) if mode == "max" else (2.0, 0.5)
    rungs = ladder(initial, target, mode)
    values = [r.value for r in rungs]
    assert [r.fraction for r in rungs] == list(FRACTIONS) and values[-1] == target
    assert values == sorted(values, reverse=mode == "min")
    assert values[0] == pytest.approx(initial + 0.5 * (target - initial))
    # A metric that reaches a rung has reached every rung below it.
    for r in rungs:
        assert r.reached(r.value) and all(lower.reached(r.value) for lower in rungs if lower.fraction <= r.fraction)
    assert not rungs[0].reached(math.nan)


def test_a_loss_spanning_decades_gets_geometric_rungs() -> None:
    assert ladder_scale(200.0, 1e-8, "min") == "log" and ladder_scale(0.7, 0.12, "min") == "linear"
    rungs = ladder(200.0, 1e-8, "min")
    assert rungs[0].value == pytest.approx(math.sqrt(200.0 * 1e-8))
    assert rungs[1].value == pytest.approx(200.0**0.2 * 1e-8**0.8)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((0.9, 0.5, "max"), "already meets the target"),
        ((0.1, 0.9, "max", (0.5, 0.8)), "end at 1"),
        ((0.1, 0.9, "max", (0.8, 0.5, 1.0)), "must increase"),
    ],
)
def test_bad_ladders_are_refused(args: tuple, message: str) -> None:  # type: ignore[type-arg]
    with pytest.raises(ValueError, match=message):
        ladder(*args)


def test_every_ci_suite_has_a_ladder_from_its_calibration() -> None:
    for suite in list_suites("ci"):
        assert suite.target is not None and suite.calibration is not None
        rungs = suite.ladder
        assert len(rungs) == len(FRACTIONS) and rungs[-1].value == suite.target.value, suite.name
        assert suite.calibration.initial_value is not None
        assert not suite.target.reached({suite.val_metric: suite.calibration.initial_value})
    assert get_suite("tiny-ce").ladder == ()
