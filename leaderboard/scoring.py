"""Scoring: time-to-target, performance profiles and the integrated score (AlgoPerf).

The protocol follows AlgoPerf's scoring rules (Dahl et al., 2023, "Benchmarking Neural Network
Training Algorithms", §4.5; ``scoring/performance_profile.py`` of mlcommons/algorithmic-efficiency)
with seeds in the role of AlgoPerf's studies:

* **time-to-target** of optimizer *s* on suite *w*: ``t_{s,w} = median over seeds`` of the
  steady-state time at which the seed's run first met the suite's target; a seed that missed
  (budget spent, diverged, out of memory, error ...) counts as ``+inf``, so the median is
  finite only when more than half of the seeds reached the target (with an even number of
  seeds, the upper median must be finite too);
* **performance ratio** ``r_{s,w} = t_{s,w} / min_{s'} t_{s',w}`` (1 for the fastest; ``+inf``
  for a miss, for a suite nobody solved, or for a suite the optimizer did not run);
* **performance profile** ``rho_s(tau) = |{w : r_{s,w} <= tau}| / |W|``, the fraction of suites
  solved within a factor ``tau`` of the fastest;
* **score** ``B_s = 1 / (tau_max - 1) * integral_1^{tau_max} rho_s(tau) dtau`` with
  ``tau_max = 4``, in [0, 1]. Because ``rho_s`` is a step function the integral is exact:
  ``B_s = 1/|W| * sum_w max(0, tau_max - r_{s,w}) / (tau_max - 1)``. AlgoPerf integrates a
  sampled profile with the trapezoid rule; the two agree to the grid resolution (tested).

The steps-to-target variant uses the step count instead of the time: it ranks optimizer quality
independent of kernel engineering (the modded-nanogpt "optimization track" idea), while the
time score ranks what a user waits for.

Everything here is pure: pandas in, pandas out, no database and no site.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import pandas as pd

from db.statuses import FAILED_STATUSES

#: Upper end of the performance-profile integral (AlgoPerf: ``max_tau = 4``).
TAU_MAX = 4.0
INF = math.inf


def median_to_target(values: Iterable[float | None]) -> float:
    """Median over seeds of time (or steps) to target; ``None``/NaN (a miss) counts as ``+inf``.

    No seeds at all is a miss as well.
    """
    a = np.array([INF if v is None else float(v) for v in values], dtype=float)
    if a.size == 0:
        return INF
    a[np.isnan(a)] = INF
    # np.median averages the two middle values, so one infinite middle value makes it infinite.
    return float(np.median(a))


def to_target_table(
    rows: pd.DataFrame, value: str, *, optimizer: str = "optimizer", suite: str = "suite"
) -> pd.DataFrame:
    """Optimizer × suite table of :func:`median_to_target` over the rows (one row per seed).

    ``rows`` holds one row per scored run with columns ``optimizer``, ``suite`` and ``value``
    (NaN for a run that missed). Cells of (optimizer, suite) pairs without rows are ``+inf``.
    """
    if rows.empty:
        return pd.DataFrame(dtype=float)
    grouped = rows.groupby([optimizer, suite], sort=True)[value].agg(median_to_target)
    table = grouped.unstack(suite)
    return table.astype(float).fillna(INF)


def performance_ratios(table: pd.DataFrame) -> pd.DataFrame:
    """``r_{s,w} = t_{s,w} / min_s t_{s,w}`` for a table of optimizers (rows) × suites (columns).

    Misses (``inf`` or NaN) give ``inf``; so does every optimizer on a suite nobody solved. A
    best time of exactly 0 (the target held at initialisation) gives ratio 1 to every optimizer
    at 0 and ``inf`` to the others.
    """
    t = table.astype(float).fillna(INF)
    if t.empty:
        return t
    best = t.min(axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        r = t.to_numpy() / best.to_numpy()[None, :]
    values = t.to_numpy()
    r[np.isnan(r)] = INF  # inf/inf (nobody solved) and 0/0 are handled here and below
    zero_best = (best.to_numpy() == 0.0)[None, :] & (values == 0.0)
    r[zero_best] = 1.0
    r[~np.isfinite(values)] = INF
    return pd.DataFrame(r, index=t.index, columns=t.columns)


def ratio_to_best(t: float, best: float) -> float:
    """One cell of :func:`performance_ratios`: ``t / best`` with the same conventions."""
    t = INF if t is None or math.isnan(t) else float(t)
    best = INF if best is None or math.isnan(best) else float(best)
    if not math.isfinite(t) or not math.isfinite(best):
        return INF
    if best == 0.0:
        return 1.0 if t == 0.0 else INF
    return t / best


def performance_profile(ratios: pd.DataFrame, taus: Iterable[float]) -> pd.DataFrame:
    """``rho_s(tau)``: fraction of suites with ``r_{s,w} <= tau``; rows optimizers, columns taus."""
    taus = np.asarray(list(taus), dtype=float)
    n = ratios.shape[1]
    if n == 0:
        return pd.DataFrame(np.zeros((len(ratios.index), taus.size)), index=ratios.index, columns=taus)
    r = ratios.to_numpy(dtype=float)
    rho = (r[:, :, None] <= taus[None, None, :]).sum(axis=1) / n
    return pd.DataFrame(rho, index=ratios.index, columns=taus)


def profile_score(ratios: pd.DataFrame, tau_max: float = TAU_MAX) -> pd.Series:
    """Integrated, normalised performance profile ``B_s`` in [0, 1] (exact integral).

    ``B_s = 1/(tau_max - 1) * integral_1^{tau_max} rho_s(tau) dtau``; a suite with ratio ``r``
    contributes ``max(0, tau_max - r) / (tau_max - 1) / |W|``. With no suites the score is NaN.
    """
    if tau_max <= 1.0:
        raise ValueError("tau_max must be > 1")
    n = ratios.shape[1]
    if n == 0:
        return pd.Series(np.nan, index=ratios.index, dtype=float)
    r = np.maximum(ratios.to_numpy(dtype=float), 1.0)
    contrib = np.where(np.isfinite(r), np.clip(tau_max - r, 0.0, None), 0.0)
    return pd.Series(contrib.sum(axis=1) / n / (tau_max - 1.0), index=ratios.index, dtype=float)


def score_table(
    time_table: pd.DataFrame, steps_table: pd.DataFrame | None = None, tau_max: float = TAU_MAX
) -> pd.DataFrame:
    """Per optimizer: ``score_time``, ``score_steps``, ``reached`` (suites with a finite median
    time) and ``suites`` (|W|), sorted by time score (best first), then name.

    Both tables must have the same rows (optimizers) and columns (suites); see
    :func:`to_target_table`.
    """
    time_ratios = performance_ratios(time_table)
    out = pd.DataFrame(index=time_table.index)
    out["score_time"] = profile_score(time_ratios, tau_max)
    if steps_table is not None:
        steps_table = steps_table.reindex(index=time_table.index, columns=time_table.columns).fillna(INF)
        out["score_steps"] = profile_score(performance_ratios(steps_table), tau_max)
    else:
        out["score_steps"] = np.nan
    out["reached"] = np.isfinite(time_table.to_numpy(dtype=float)).sum(axis=1).astype(int)
    out["suites"] = int(time_table.shape[1])
    order = sorted(out.index, key=lambda name: (-_finite_or(out.at[name, "score_time"], -1.0), str(name)))
    out = out.loc[order]
    out.index.name = "optimizer"
    return out


def _finite_or(value: float, default: float) -> float:
    return float(value) if np.isfinite(value) else default


def profile_curve_points(ratios: pd.DataFrame, tau_max: float = TAU_MAX) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Exact step-function vertices of ``rho_s`` on [1, tau_max], for plotting without a grid."""
    out: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    n = ratios.shape[1]
    for name, row in ratios.iterrows():
        r = np.sort(np.maximum(row.to_numpy(dtype=float), 1.0))
        r = r[np.isfinite(r) & (r <= tau_max)]
        taus = np.concatenate([[1.0], r, [tau_max]])
        rho = np.array([(r <= t).sum() / n if n else 0.0 for t in taus])
        out[str(name)] = (taus, rho)
    return out


# ---------------------------------------------------------------------------------- tuning
#
# The tuned track (harness/tuning.py) picks one configuration per (suite, optimizer, backend)
# study from its trials, with the rule below; the site ranks a study's trials with the same
# function, so what the harness chose and what the site shows cannot disagree. The rule lives
# here because it is pure and the leaderboard must not import the harness.

#: Statuses of a trial whose configuration is never chosen (a run one would not ship).
TRIAL_FAILED_STATUSES: frozenset[str] = FAILED_STATUSES


@dataclass(frozen=True)
class TrialResult:
    """What selection needs of one tuning trial (its stored run)."""

    trial: int
    status: str
    time_to_target_s: float | None = None
    steps_to_target: float | None = None
    best_val_metric: float | None = None
    config: str = ""


def trial_tier(t: TrialResult) -> int:
    """0: reached the target; 1: finished without reaching it, with a finite validation metric;
    2: failed (a status in :data:`TRIAL_FAILED_STATUSES`) or no finite validation metric."""
    if t.status in TRIAL_FAILED_STATUSES:
        return 2
    if t.steps_to_target is not None and not _nan(t.steps_to_target):
        return 0
    if t.best_val_metric is None or not math.isfinite(float(t.best_val_metric)):
        return 2
    return 1


def _nan(v: float | None) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v))


def trial_rank_key(t: TrialResult, mode: str) -> tuple[float, ...]:
    """Sort key of a trial (smaller is better), the tuned track's selection rule.

    1. Trials that reached the suite's target, by time-to-target (the quantity the board
       scores; AlgoPerf picks the fastest trial), then steps-to-target, then the validation
       metric; a validation metric alone cannot rank them, since a run stops at the target.
    2. Trials that finished without reaching it, by their best validation metric (``mode``
       ``max`` or ``min``): the closest to the target first.
    3. Failed trials (diverged, out of memory, timed out, raised, crashed) and trials without a
       finite validation metric, whatever they reached before failing.

    Ties (equal keys) go to the lower trial index: the earlier quasi-random point.
    """
    tier = trial_tier(t)
    sign = -1.0 if mode == "max" else 1.0
    metric = sign * float(t.best_val_metric) if t.best_val_metric is not None else INF
    if not math.isfinite(metric):
        metric = INF
    if tier == 0:
        ttt = INF if _nan(t.time_to_target_s) else float(t.time_to_target_s)  # type: ignore[arg-type]
        stt = INF if _nan(t.steps_to_target) else float(t.steps_to_target)  # type: ignore[arg-type]
        return (0.0, ttt, stt, metric, float(t.trial))
    if tier == 1:
        return (1.0, metric, INF, INF, float(t.trial))
    return (2.0, INF, INF, INF, float(t.trial))


def rank_trials(trials: Iterable[TrialResult], mode: str) -> list[TrialResult]:
    """Trials best first (see :func:`trial_rank_key`)."""
    return sorted(trials, key=lambda t: trial_rank_key(t, mode))


def choose_trial(trials: Iterable[TrialResult], mode: str) -> TrialResult | None:
    """The chosen trial, or ``None`` when there is none to choose: no trials, or every trial
    failed. A study without a chosen configuration has no re-runs; it scores as a miss (``inf``)
    on every seed."""
    ranked = rank_trials(trials, mode)
    if not ranked or trial_tier(ranked[0]) == 2:
        return None
    return ranked[0]


def tunability_table(untuned: pd.DataFrame, tuned: pd.DataFrame, tau_max: float = TAU_MAX) -> pd.DataFrame:
    """Per optimizer: the untuned and tuned scores on one pooled scale, and the speed-up.

    ``untuned`` and ``tuned`` are optimizer × suite time-to-target tables of the same backend
    and device (:func:`to_target_table`; ``inf`` for a miss). Only the suites both tracks have a
    column for are used, and every optimizer of either table is kept (a missing cell is a miss).

    * ``score_untuned``, ``score_tuned``: :func:`profile_score` of each optimizer's untuned and
      tuned entry in ONE pooled performance profile whose reference on each suite is the fastest
      time of any optimizer on either track; so both are measured against the same yardstick and
      their difference is what tuning changed, not what the other optimizers did.
    * ``delta``: ``score_tuned - score_untuned`` (positive: tuning helped).
    * ``speedup``: geometric mean over the suites both tracks reached of
      ``t_untuned / t_tuned`` (above 1: tuned is faster); NaN when there is no such suite.
    * ``suites``, ``reached_untuned``, ``reached_tuned``, ``both_reached``.

    Sorted by ``delta`` (largest gain first), then name.
    """
    suites = [s for s in untuned.columns if s in set(tuned.columns)]
    names = list(dict.fromkeys([*untuned.index, *tuned.index]))
    columns = ["score_untuned", "score_tuned", "delta", "speedup", "suites", "reached_untuned", "reached_tuned"]
    if not names:
        out = pd.DataFrame(columns=[*columns, "both_reached"])
        out.index.name = "optimizer"
        return out
    u = untuned.reindex(index=names, columns=suites).astype(float).fillna(INF)
    t = tuned.reindex(index=names, columns=suites).astype(float).fillna(INF)
    pooled = pd.concat([u.rename(index=lambda n: ("untuned", n)), t.rename(index=lambda n: ("tuned", n))])
    scores = profile_score(performance_ratios(pooled), tau_max) if suites else pd.Series(np.nan, index=pooled.index)
    out = pd.DataFrame(index=pd.Index(names, name="optimizer"))
    out["score_untuned"] = [float(scores[("untuned", n)]) for n in names]
    out["score_tuned"] = [float(scores[("tuned", n)]) for n in names]
    out["delta"] = out["score_tuned"] - out["score_untuned"]
    uv, tv = u.to_numpy(dtype=float), t.to_numpy(dtype=float)
    both = np.isfinite(uv) & np.isfinite(tv) & (uv > 0) & (tv > 0)
    speedups = []
    for i in range(len(names)):
        mask = both[i]
        speedups.append(float(np.exp(np.mean(np.log(uv[i, mask] / tv[i, mask])))) if mask.any() else math.nan)
    out["speedup"] = speedups
    out["suites"] = len(suites)
    out["reached_untuned"] = np.isfinite(uv).sum(axis=1).astype(int)
    out["reached_tuned"] = np.isfinite(tv).sum(axis=1).astype(int)
    out["both_reached"] = both.sum(axis=1).astype(int)
    order = sorted(names, key=lambda n: (-_finite_or(out.at[n, "delta"], -INF), str(n)))
    return out.loc[order]
