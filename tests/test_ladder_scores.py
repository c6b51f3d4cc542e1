"""Scores along the target ladder (``leaderboard/ladder.py``) on synthetic series."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from leaderboard.ladder import ladder_rows, ladder_scores, times_to_rungs
from suites.ladder import ladder

RUNGS = ladder(0.1, 0.9, "max")  # 0.5, 0.74, 0.86, 0.9


def test_times_to_rungs_are_the_first_hits_and_non_decreasing() -> None:
    steps, times, values = [0, 10, 20, 30], [0.0, 1.0, 2.0, 3.0], [0.1, 0.6, 0.87, 0.8]
    hits = times_to_rungs(steps, times, values, RUNGS)
    assert hits[:3] == [(10.0, 1.0), (20.0, 2.0), (20.0, 2.0)]
    assert math.isnan(hits[3][0]) and math.isnan(hits[3][1])
    finite = [t for _, t in hits if math.isfinite(t)]
    assert finite == sorted(finite)


def test_a_board_where_everyone_misses_the_target_still_ranks_the_lower_rungs() -> None:
    runs = pd.DataFrame(
        {"id": [1, 2, 3, 4], "optimizer": ["fast", "fast", "slow", "slow"], "suite": ["s"] * 4, "scored": [True] * 4}
    )
    grid = np.array([0, 10, 20, 30])
    series = {
        1: (grid, grid / 10.0, np.array([0.1, 0.6, 0.8, 0.85])),
        2: (grid, grid / 10.0, np.array([0.1, 0.55, 0.8, 0.85])),
        3: (grid, grid / 10.0, np.array([0.1, 0.2, 0.55, 0.7])),
        4: (grid, grid / 10.0, np.array([0.1, 0.3, 0.6, 0.7])),
    }
    rows = ladder_rows(runs, series, {"s": RUNGS})
    assert len(rows) == 4 * len(RUNGS)
    scores = ladder_scores(rows).set_index(["rung", "optimizer"])
    # 50 %: fast at 1 s, slow at 2 s: ratio 2 -> (4 - 2) / 3.
    assert scores.loc[("50%", "fast"), "score_time"] == 1.0
    assert scores.loc[("50%", "slow"), "score_time"] == pytest.approx(2 / 3)
    # 80 %: only fast reaches it; 100 %: nobody, every score 0.
    assert scores.loc[("80%", "fast"), "score_time"] == 1.0 and scores.loc[("80%", "slow"), "score_time"] == 0.0
    assert (scores.xs("100%", level="rung")["score_time"] == 0.0).all()


def test_unscored_runs_and_suites_without_a_ladder_are_left_out() -> None:
    runs = pd.DataFrame({"id": [1, 2], "optimizer": ["a", "a"], "suite": ["s", "t"], "scored": [False, True]})
    series = {
        1: (np.array([0]), np.array([0.0]), np.array([0.95])),
        2: (np.array([0]), np.array([0.0]), np.array([1.0])),
    }
    assert ladder_rows(runs, series, {"s": RUNGS}).empty
    assert ladder_scores(ladder_rows(runs, series, {"s": RUNGS})).empty
