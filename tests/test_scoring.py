"""Scoring on synthetic results: time-to-target medians, performance profiles, the AlgoPerf score.

Reference values are worked out by hand in the comments (τ_max = 4: a suite solved at ratio r
contributes (4 - r) / 3 to the integral, divided by the number of suites).
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from leaderboard import scoring

INF = math.inf


def table(rows: dict[str, list[float]], suites: list[str]) -> pd.DataFrame:
    return pd.DataFrame.from_dict(rows, orient="index", columns=suites, dtype=float)


# --------------------------------------------------------------------------- time-to-target


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ([3.0, 1.0, 2.0], 2.0),
        ([1.0, None, 3.0], 3.0),  # one miss of three: the median is the slower success
        ([1.0, None, None], INF),  # two misses of three: a miss
        ([1.0, INF], INF),  # even count, one miss: the mean of the middle pair is infinite
        ([1.0, 2.0, 3.0, 4.0], 2.5),
        ([float("nan"), 5.0, 7.0], 7.0),  # NaN is a miss, like None
        ([], INF),
        ([0.0], 0.0),
    ],
)
def test_median_to_target_counts_misses_as_infinite(values: list[float | None], expected: float) -> None:
    assert scoring.median_to_target(values) == expected


def test_to_target_table_takes_medians_per_optimizer_and_suite_and_fills_missing_cells() -> None:
    rows = pd.DataFrame(
        {
            "optimizer": ["a", "a", "a", "b", "b", "b", "a"],
            "suite": ["s1", "s1", "s1", "s1", "s1", "s1", "s2"],
            "ttt": [1.0, 2.0, 9.0, np.nan, np.nan, 3.0, 4.0],
        }
    )
    t = scoring.to_target_table(rows, "ttt")
    assert t.loc["a", "s1"] == 2.0
    assert t.loc["b", "s1"] == INF  # diverged twice of three
    assert t.loc["a", "s2"] == 4.0
    assert t.loc["b", "s2"] == INF  # never ran: counts as a miss


def test_groupby_median_with_infinite_misses_equals_median_to_target() -> None:
    # The nightly history aggregates with pandas' groupby median; it must agree exactly.
    rng = np.random.default_rng(0)
    values = rng.uniform(0, 10, 200)
    values[rng.uniform(size=200) < 0.4] = np.nan
    groups = rng.integers(0, 40, 200)
    frame = pd.DataFrame({"g": groups, "v": values})
    by_pandas = frame.assign(v=frame["v"].fillna(INF)).groupby("g")["v"].median()
    by_scoring = frame.groupby("g")["v"].agg(lambda s: scoring.median_to_target(s.tolist()))
    pd.testing.assert_series_equal(by_pandas, by_scoring, check_names=False)


# --------------------------------------------------------------------------- ratios and profiles


def test_performance_ratios_divide_by_the_best_and_keep_misses_infinite() -> None:
    t = table({"a": [2.0, INF, 5.0], "b": [1.0, 3.0, np.nan], "c": [4.0, 6.0, INF]}, ["s1", "s2", "s3"])
    r = scoring.performance_ratios(t)
    assert r.loc["a"].tolist() == [2.0, INF, 1.0]
    assert r.loc["b"].tolist() == [1.0, 1.0, INF]
    assert r.loc["c"].tolist() == [4.0, 2.0, INF]


def test_ties_share_ratio_one() -> None:
    t = table({"a": [2.0], "b": [2.0], "c": [3.0]}, ["s"])
    r = scoring.performance_ratios(t)
    assert r["s"].tolist() == [1.0, 1.0, 1.5]
    s = scoring.profile_score(r)
    assert s["a"] == s["b"] == 1.0
    assert s["c"] == pytest.approx((4 - 1.5) / 3)


def test_a_suite_nobody_solved_gives_everyone_infinity_and_zero_credit() -> None:
    t = table({"a": [1.0, INF], "b": [2.0, INF]}, ["s1", "s2"])
    r = scoring.performance_ratios(t)
    assert np.isinf(r["s2"]).all()
    s = scoring.profile_score(r)
    assert s["a"] == pytest.approx(0.5)  # full credit on one suite of two
    assert s["b"] == pytest.approx((4 - 2) / 3 / 2)


def test_target_met_at_initialisation_is_a_time_of_zero() -> None:
    t = table({"a": [0.0], "b": [1.0], "c": [0.0]}, ["s"])
    r = scoring.performance_ratios(t)
    assert r["s"].tolist() == [1.0, INF, 1.0]


def test_profile_counts_suites_within_tau() -> None:
    r = table({"a": [1.0, 2.0, INF, 3.5]}, ["s1", "s2", "s3", "s4"])
    rho = scoring.performance_profile(r, [1.0, 1.99, 2.0, 3.5, 4.0, 100.0])
    assert rho.loc["a"].tolist() == [0.25, 0.25, 0.5, 0.75, 0.75, 0.75]


def test_score_is_the_exact_integral_of_the_profile() -> None:
    # r = (1, 2, inf): contributions (3, 2, 0) / 3 over three suites -> 5/9.
    r = table({"a": [1.0, 2.0, INF]}, ["s1", "s2", "s3"])
    assert scoring.profile_score(r)["a"] == pytest.approx(5 / 9, abs=1e-15)
    taus = np.linspace(1.0, 4.0, 30_001)
    rho = scoring.performance_profile(r, taus).loc["a"].to_numpy()
    assert np.trapezoid(rho, taus) / 3.0 == pytest.approx(5 / 9, abs=1e-4)


def test_ratios_beyond_tau_max_get_no_credit() -> None:
    r = table({"a": [1.0, 4.0, 4.5]}, ["s1", "s2", "s3"])
    assert scoring.profile_score(r)["a"] == pytest.approx(1 / 3)


def test_score_rejects_a_degenerate_tau_max() -> None:
    with pytest.raises(ValueError):
        scoring.profile_score(table({"a": [1.0]}, ["s"]), tau_max=1.0)


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.lists(st.one_of(st.floats(0.01, 100.0), st.just(INF)), min_size=3, max_size=3),
        min_size=1,
        max_size=5,
    )
)
def test_exact_score_matches_algoperf_trapezoid_integration(times: list[list[float]]) -> None:
    t = pd.DataFrame(times, index=[f"o{i}" for i in range(len(times))], columns=["s1", "s2", "s3"])
    r = scoring.performance_ratios(t)
    exact = scoring.profile_score(r)
    taus = np.linspace(1.0, scoring.TAU_MAX, 20_001)
    rho = scoring.performance_profile(r, taus).to_numpy()
    numeric = np.trapezoid(rho, taus, axis=1) / (scoring.TAU_MAX - 1.0)
    # A step of height 1/3 sampled on a grid of spacing 1.5e-4 errs by at most that much.
    np.testing.assert_allclose(exact.to_numpy(), numeric, atol=2e-4)
    assert ((exact >= 0) & (exact <= 1)).all()


@settings(max_examples=40, deadline=None)
@given(st.lists(st.floats(0.1, 10.0), min_size=2, max_size=6), st.integers(0, 5), st.floats(0.05, 1.0))
def test_getting_faster_never_lowers_ones_score(times: list[float], who: int, factor: float) -> None:
    who = who % len(times)
    t = pd.DataFrame({"s": times}, index=[f"o{i}" for i in range(len(times))])
    before = scoring.profile_score(scoring.performance_ratios(t)).iloc[who]
    faster = t.copy()
    faster.iloc[who, 0] *= factor
    after = scoring.profile_score(scoring.performance_ratios(faster)).iloc[who]
    assert after >= before - 1e-12


# --------------------------------------------------------------------------- the score table


def test_score_table_with_failures_ties_and_a_steps_variant() -> None:
    # Three suites; "ief" diverged on s1 (median miss), "adamw" missed s2, "sgd" alone ran s3.
    times = table({"sgd": [2.2, 3.0, 5.0], "adamw": [1.1, INF, INF], "ief": [INF, 1.5, INF]}, ["s1", "s2", "s3"])
    steps = table({"sgd": [220, 300, 500], "adamw": [220, INF, INF], "ief": [INF, 100, INF]}, ["s1", "s2", "s3"])
    out = scoring.score_table(times, steps)
    # sgd: ratios (2, 2, 1) -> (2/3 + 2/3 + 1) / 3 = 7/9; adamw: (1, inf, inf) -> 1/3; ief: 1/3.
    assert out.loc["sgd", "score_time"] == pytest.approx(7 / 9)
    assert out.loc["adamw", "score_time"] == pytest.approx(1 / 3)
    assert out.loc["ief", "score_time"] == pytest.approx(1 / 3)
    # Steps: sgd ties adamw on s1 (ratio 1) and is 3x ief on s2 -> (1 + 1/3 + 1) / 3 = 7/9.
    assert out.loc["sgd", "score_steps"] == pytest.approx(7 / 9)
    assert out.loc["ief", "score_steps"] == pytest.approx(1 / 3)
    assert out["reached"].to_dict() == {"sgd": 3, "adamw": 1, "ief": 1}
    assert (out["suites"] == 3).all()
    # Best first; equal scores by name.
    assert list(out.index) == ["sgd", "adamw", "ief"]


def test_a_single_optimizer_scores_the_fraction_of_suites_it_solved() -> None:
    out = scoring.score_table(table({"only": [3.0, INF, 7.0, 1.0]}, ["a", "b", "c", "d"]))
    assert out.loc["only", "score_time"] == pytest.approx(0.75)
    assert out.loc["only", "reached"] == 3
    assert np.isnan(out.loc["only", "score_steps"])


def test_no_suites_gives_no_score() -> None:
    out = scoring.score_table(pd.DataFrame(index=pd.Index(["a"], name="optimizer"), dtype=float))
    assert np.isnan(out.loc["a", "score_time"])
    assert out.loc["a", "suites"] == 0


def test_profile_curve_points_are_the_vertices_of_rho() -> None:
    r = table({"a": [1.0, 2.5, INF], "b": [1.5, 1.0, 5.0]}, ["s1", "s2", "s3"])
    points = scoring.profile_curve_points(r)
    taus, rho = points["a"]
    assert taus.tolist() == [1.0, 1.0, 2.5, 4.0]
    assert rho.tolist() == pytest.approx([1 / 3, 1 / 3, 2 / 3, 2 / 3])
    direct = scoring.performance_profile(r, taus).loc["a"].to_numpy()
    np.testing.assert_allclose(rho, direct)
    taus_b, rho_b = points["b"]
    assert taus_b.tolist() == [1.0, 1.0, 1.5, 4.0]  # ratio 5 lies beyond tau_max
    assert rho_b[-1] == pytest.approx(2 / 3)


@pytest.mark.parametrize("t", [0.0, 0.5, 1.0, 3.0, INF, float("nan")])
@pytest.mark.parametrize("best", [0.0, 0.5, 1.0, INF])
def test_the_scalar_ratio_agrees_with_the_table_version(t: float, best: float) -> None:
    if not math.isnan(t) and t < best:
        best = t  # "best" is the minimum of its column
    r = scoring.performance_ratios(table({"best": [best], "x": [t]}, ["s"])).loc["x", "s"]
    assert scoring.ratio_to_best(t, best) == r
