"""Bootstrap intervals, ties and permutation tests on synthetic results with known answers."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from leaderboard import scoring
from leaderboard import uncertainty as unc


def rows(table: dict[tuple[str, str], list[float]]) -> pd.DataFrame:
    return pd.DataFrame(
        [(opt, suite, t) for (opt, suite), times in table.items() for t in times],
        columns=["optimizer", "suite", "time"],
    )


def test_identical_seeds_give_a_zero_width_interval_at_the_board_score() -> None:
    data = rows({("a", "s1"): [2.0] * 5, ("b", "s1"): [3.0] * 5, ("a", "s2"): [4.0] * 5, ("b", "s2"): [1.0] * 5})
    out = unc.bootstrap_scores(data, "time", n_resamples=200)
    board = scoring.profile_score(scoring.performance_ratios(scoring.to_target_table(data, "time")))
    for name in ("a", "b"):
        assert out.at[name, "low"] == out.at[name, "high"] == pytest.approx(board[name])
        assert out.at[name, "score"] == pytest.approx(board[name])


def test_the_interval_contains_the_score_and_misses_are_handled() -> None:
    data = rows({("a", "s"): [1.0, 1.2, math.nan, 0.9, 1.1], ("b", "s"): [2.0, math.nan, math.nan, 1.5, 2.5]})
    out = unc.bootstrap_scores(data, "time", n_resamples=300)
    assert (out["low"] <= out["score"]).all() and (out["score"] <= out["high"]).all()
    assert out.at["a", "score"] == 1.0 and out.at["b", "high"] <= 1.0
    assert out.at["b", "low"] == 0.0  # some replicates draw a majority of misses: a miss scores 0


def test_the_bootstrap_is_reproducible() -> None:
    data = rows({("a", "s"): [1.0, 2.0, 3.0], ("b", "s"): [1.5, 2.5, 0.5]})
    pd.testing.assert_frame_equal(unc.bootstrap_scores(data, "time"), unc.bootstrap_scores(data, "time"))


def test_two_optimizers_from_one_distribution_are_tied_far_more_often_than_not() -> None:
    rng = np.random.default_rng(7)
    tied = 0
    trials = 40
    for _ in range(trials):
        table = {}
        for suite in ("s1", "s2", "s3"):
            for opt in ("a", "b"):
                table[(opt, suite)] = list(rng.lognormal(mean=0.0, sigma=0.3, size=5))
        out = unc.bootstrap_scores(rows(table), "time", n_resamples=200)
        ranks = unc.interval_ranks(out)
        tied += int(ranks["a"] == ranks["b"])
    assert tied >= 0.8 * trials, tied


def test_a_clear_winner_ranks_alone_and_overlap_means_a_shared_rank() -> None:
    intervals = pd.DataFrame(
        {"score": [0.9, 0.5, 0.45, 0.1], "low": [0.85, 0.4, 0.3, 0.0], "high": [0.95, 0.6, 0.5, 0.2]},
        index=["best", "mid1", "mid2", "last"],
    )
    assert unc.interval_ranks(intervals).to_dict() == {"best": 1, "mid1": 2, "mid2": 2, "last": 4}
    assert unc.tied_with(intervals, "mid1") == ["mid2"] and unc.tied_with(intervals, "best") == []


def test_a_ten_times_faster_winner_is_significant_with_five_seeds_and_not_with_two() -> None:
    five = unc.permutation_test([1.0, 1.1, 0.9, 1.2, 1.05], [10.0, 11.0, 9.0, 12.0, 10.5])
    assert five.exact and five.p_value == pytest.approx(1 / math.comb(10, 5)) and five.significant()
    two = unc.permutation_test([1.0, 1.1], [10.0, 11.0])
    assert two.p_value == pytest.approx(1 / 6) and not two.testable and not two.significant()
    # The test is one-sided: the slower one is never "significantly faster".
    assert unc.permutation_test([10.0, 11.0, 9.0, 12.0, 10.5], [1.0, 1.1, 0.9, 1.2, 1.05]).p_value == 1.0


def test_misses_rank_above_every_time_and_equal_samples_are_not_significant() -> None:
    res = unc.permutation_test([1.0, 2.0, 3.0, 4.0], [None, math.nan, math.inf, 5.0])
    assert res.p_value == pytest.approx(1 / math.comb(8, 4))
    same = unc.permutation_test([1.0, 2.0, 3.0], [1.0, 2.0, 3.0])
    assert same.p_value > 0.5 and not same.significant()


def test_large_samples_use_sampled_permutations() -> None:
    rng = np.random.default_rng(3)
    res = unc.permutation_test(list(rng.normal(0, 1, 12)), list(rng.normal(3, 1, 12)), n_permutations=2000)
    assert not res.exact and res.p_value < 0.01


def test_significance_against_the_cell_best() -> None:
    data = rows(
        {
            ("fast", "s1"): [1.0, 1.1, 0.9, 1.2, 1.05],
            ("slow", "s1"): [10.0, 11.0, 9.0, 12.0, 10.5],
            ("fast", "s2"): [1.0, 2.0],
            ("slow", "s2"): [10.0, 20.0],
        }
    )
    table = unc.significance_against_best(data, "time")
    s1 = table[(table.suite == "s1") & (table.optimizer == "slow")].iloc[0]
    assert s1.best == "fast" and s1.significant and s1.testable
    s2 = table[(table.suite == "s2") & (table.optimizer == "slow")].iloc[0]
    assert not s2.testable and not s2.significant
    assert unc.fastest_is_significant(table).to_dict() == {"s1": True, "s2": False}
