"""How sure a score and a rank are: bootstrap intervals, ties, and significance over seeds.

The board's scores (:mod:`leaderboard.scoring`) are functions of medians over seeds. With the
handful of seeds a benchmark can afford, a rank can flip when one seed is redrawn, so every
score carries an interval and every "fastest" a test:

* **Bootstrap interval of a score** (percentile bootstrap, Efron & Tibshirani 1993, ch. 13):
  each optimizer × suite cell resamples its own seeds with replacement (as many as it has),
  the medians, the performance ratios and the integrated score are recomputed; the interval is
  the ``(1 - level) / 2`` and ``(1 + level) / 2`` quantiles of the replicates. Resampling per
  cell keeps each cell's seed count, so a cell with one seed contributes no spread of its own.
  The generator is seeded, so a site built twice from the same runs shows the same interval.
* **Ties**: two optimizers whose intervals overlap are tied. An optimizer's displayed rank is one
  plus the number of optimizers whose whole interval lies above its own (competition ranking;
  AlgoPerf ranks by score only and leaves this to the reader).
* **Significance of "fastest" in one cell**: a one-sided permutation test (Good 2005, ch. 3) of
  the cell's best optimizer against each other one, on time-to-target over seeds, misses as
  ``+inf``. The statistic is the difference of mean ranks (a Mann-Whitney form, which handles
  the infinite misses); with few seeds the test enumerates every relabelling exactly. With
  ``n`` seeds on each side the smallest attainable p-value is ``1 / C(2n, n)``: 1/6 with two
  seeds, 1/20 with three, so fewer than :data:`MIN_SEEDS_FOR_SIGNIFICANCE` seeds can never show
  a significant rank and the board says so instead of testing.

Everything here is pure: numbers in, numbers out, no database and no site.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from leaderboard.scoring import INF, TAU_MAX

#: Bootstrap replicates per interval (a 95 % percentile interval is stable to about 0.01 at 1000).
N_RESAMPLES = 1000
#: Confidence level of every interval on the board.
LEVEL = 0.95
#: Significance level of the per-cell permutation test.
ALPHA = 0.05
#: Below this many seeds per side no permutation test can reach ``ALPHA``; the board says so.
MIN_SEEDS_FOR_SIGNIFICANCE = 3
#: Above this many relabellings the permutation test samples instead of enumerating.
EXACT_LIMIT = 20_000
#: The seed of every bootstrap and sampled permutation on the board (reproducible sites).
RNG_SEED = 0


def _as_misses(values: Sequence[float | None]) -> np.ndarray:
    a = np.array([INF if v is None else float(v) for v in values], dtype=float)
    a[np.isnan(a)] = INF
    return a


def _scores_from_medians(medians: np.ndarray, tau_max: float) -> np.ndarray:
    """Integrated profile scores for stacked tables ``(..., optimizers, suites)`` of medians.

    The same rule as :func:`leaderboard.scoring.performance_ratios` and
    :func:`~leaderboard.scoring.profile_score`, vectorised over the leading replicate axis.
    """
    n_suites = medians.shape[-1]
    if n_suites == 0:
        return np.full(medians.shape[:-1], np.nan)
    best = medians.min(axis=-2, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        r = medians / best
    r = np.where(np.isnan(r), INF, r)
    r = np.where((best == 0.0) & (medians == 0.0), 1.0, r)
    r = np.where(np.isfinite(medians), r, INF)
    r = np.maximum(r, 1.0)
    contrib = np.where(np.isfinite(r), np.clip(tau_max - r, 0.0, None), 0.0)
    return contrib.sum(axis=-1) / n_suites / (tau_max - 1.0)


def bootstrap_scores(
    rows: pd.DataFrame,
    value: str,
    *,
    optimizer: str = "optimizer",
    suite: str = "suite",
    n_resamples: int = N_RESAMPLES,
    level: float = LEVEL,
    tau_max: float = TAU_MAX,
    seed: int = RNG_SEED,
) -> pd.DataFrame:
    """Per optimizer: ``score`` (from all seeds), ``low`` and ``high`` (the bootstrap interval).

    ``rows`` has one row per scored run (columns ``optimizer``, ``suite`` and ``value``, NaN for
    a miss), as :func:`leaderboard.scoring.to_target_table` takes. A cell without rows is a miss
    in every replicate. Rows are optimizers sorted by name.
    """
    if not 0.0 < level < 1.0:
        raise ValueError("level must be in (0, 1)")
    if rows.empty:
        return pd.DataFrame(columns=["score", "low", "high"], dtype=float)
    names = sorted(rows[optimizer].unique(), key=str)
    suites = sorted(rows[suite].unique(), key=str)
    cells = {key: _as_misses(list(group[value])) for key, group in rows.groupby([optimizer, suite], sort=False)}
    rng = np.random.default_rng(seed)
    point = np.full((len(names), len(suites)), INF)
    replicates = np.full((n_resamples, len(names), len(suites)), INF)
    for i, name in enumerate(names):
        for j, s in enumerate(suites):
            seeds = cells.get((name, s))
            if seeds is None or seeds.size == 0:
                continue
            point[i, j] = float(np.median(seeds))
            draws = rng.integers(0, seeds.size, size=(n_resamples, seeds.size))
            replicates[:, i, j] = np.median(seeds[draws], axis=1)
    scores = _scores_from_medians(point, tau_max)
    boot = _scores_from_medians(replicates, tau_max)
    low, high = np.quantile(boot, [(1.0 - level) / 2.0, (1.0 + level) / 2.0], axis=0)
    out = pd.DataFrame({"score": scores, "low": low, "high": high}, index=pd.Index(names, name=optimizer))
    # The point estimate lies in its interval by construction of a percentile bootstrap only
    # approximately; widen to include it so that a reader never sees a score outside its bounds.
    out["low"] = np.minimum(out["low"], out["score"])
    out["high"] = np.maximum(out["high"], out["score"])
    return out


def interval_ranks(intervals: pd.DataFrame) -> pd.Series:
    """Competition rank with ties by overlap: ``1 + #{others whose low > my high}``.

    ``intervals`` has columns ``score``, ``low``, ``high`` (higher is better). Two optimizers
    whose intervals overlap never rank apart on their own account; an optimizer ranks below
    another only when that one's whole interval lies above its own. NaN scores rank last.
    """
    low = intervals["low"].to_numpy(dtype=float)
    high = intervals["high"].to_numpy(dtype=float)
    finite = np.isfinite(low) & np.isfinite(high)
    above = (low[None, :] > high[:, None]) & finite[None, :] & finite[:, None]
    ranks = 1 + above.sum(axis=1)
    ranks = np.where(finite, ranks, int(finite.sum()) + 1)
    return pd.Series(ranks.astype(int), index=intervals.index, name="rank")


def tied_with(intervals: pd.DataFrame, name: str) -> list[str]:
    """The optimizers whose interval overlaps ``name``'s (itself excluded)."""
    lo, hi = float(intervals.at[name, "low"]), float(intervals.at[name, "high"])
    out = []
    for other, row in intervals.iterrows():
        if other != name and float(row["low"]) <= hi and float(row["high"]) >= lo:
            out.append(str(other))
    return out


def _mean_ranks(pooled: np.ndarray, first: np.ndarray) -> float:
    """Mean rank of the ``first`` group minus mean rank of the rest (ties share ranks)."""
    order = pd.Series(pooled).rank(method="average").to_numpy()
    return float(order[first].mean() - order[~first].mean())


@dataclass(frozen=True)
class PermutationResult:
    """One-sided test that ``a`` is faster (smaller time-to-target) than ``b``."""

    p_value: float
    statistic: float
    exact: bool
    n_a: int
    n_b: int

    @property
    def testable(self) -> bool:
        """Enough seeds on both sides for the smallest attainable p-value to reach ``ALPHA``."""
        return min(self.n_a, self.n_b) >= MIN_SEEDS_FOR_SIGNIFICANCE

    def significant(self, alpha: float = ALPHA) -> bool:
        return self.testable and self.p_value <= alpha


def permutation_test(
    a: Sequence[float | None],
    b: Sequence[float | None],
    *,
    n_permutations: int = 10_000,
    seed: int = RNG_SEED,
) -> PermutationResult:
    """One-sided permutation test that ``a``'s times-to-target are smaller than ``b``'s.

    Misses (``None``, NaN, ``inf``) rank above every finite time. The statistic is the mean rank
    of ``b`` minus that of ``a`` (large when ``a`` is faster); the p-value is the fraction of
    relabellings of the pooled seeds whose statistic is at least the observed one, the observed
    labelling included (so it is never 0). Exact over all ``C(n_a + n_b, n_a)`` labellings up to
    :data:`EXACT_LIMIT`, else ``n_permutations`` random ones.
    """
    xa, xb = _as_misses(a), _as_misses(b)
    if xa.size == 0 or xb.size == 0:
        return PermutationResult(1.0, 0.0, True, int(xa.size), int(xb.size))
    pooled = np.concatenate([xa, xb])
    n = pooled.size
    is_b = np.zeros(n, dtype=bool)
    is_b[xa.size :] = True
    observed = _mean_ranks(pooled, is_b)
    n_labellings = math.comb(n, xb.size)
    if n_labellings <= EXACT_LIMIT:
        hits = 0
        for chosen in itertools.combinations(range(n), xb.size):
            mask = np.zeros(n, dtype=bool)
            mask[list(chosen)] = True
            hits += _mean_ranks(pooled, mask) >= observed - 1e-12
        return PermutationResult(hits / n_labellings, observed, True, int(xa.size), int(xb.size))
    rng = np.random.default_rng(seed)
    hits = 1  # the observed labelling
    for _ in range(n_permutations):
        mask = np.zeros(n, dtype=bool)
        mask[rng.choice(n, size=xb.size, replace=False)] = True
        hits += _mean_ranks(pooled, mask) >= observed - 1e-12
    return PermutationResult(hits / (n_permutations + 1), observed, False, int(xa.size), int(xb.size))


def significance_against_best(
    rows: pd.DataFrame, value: str, *, optimizer: str = "optimizer", suite: str = "suite", alpha: float = ALPHA
) -> pd.DataFrame:
    """Per suite cell: is its fastest optimizer significantly faster than each other one?

    Returns one row per (suite, optimizer) with ``median`` (over seeds, misses ``inf``),
    ``best`` (the cell's fastest by median), ``seeds``, ``p_value`` (the best against this
    optimizer; NaN for the best itself), ``testable`` and ``significant``. A suite whose best
    has a finite median and is significantly faster than every other optimizer is one where
    "fastest" can be said; :func:`fastest_is_significant` summarises that.
    """
    records = []
    for s, group in rows.groupby(suite, sort=True):
        per_opt = {name: _as_misses(list(g[value])) for name, g in group.groupby(optimizer, sort=True)}
        medians = {name: float(np.median(v)) for name, v in per_opt.items()}
        best = min(medians, key=lambda n: (medians[n], str(n)))
        for name, times in per_opt.items():
            if name == best:
                records.append((s, name, medians[name], best, times.size, math.nan, False, False))
                continue
            result = permutation_test(per_opt[best], times)
            records.append(
                (s, name, medians[name], best, times.size, result.p_value, result.testable, result.significant(alpha))
            )
    columns = [suite, optimizer, "median", "best", "seeds", "p_value", "testable", "significant"]
    return pd.DataFrame.from_records(records, columns=columns)


def fastest_is_significant(table: pd.DataFrame, *, suite: str = "suite") -> pd.Series:
    """Per suite: the best has a finite median and beats every other optimizer significantly."""
    out = {}
    for s, group in table.groupby(suite, sort=True):
        others = group[group["optimizer"] != group["best"].iloc[0]] if "optimizer" in group else group
        best_row = group[group["optimizer"] == group["best"].iloc[0]]
        finite = bool(np.isfinite(best_row["median"]).all())
        out[s] = finite and bool(len(others)) and bool(others["significant"].all())
    return pd.Series(out, name="fastest_significant", dtype=bool)
