"""Scores at every rung of a suite's target ladder (``suites/ladder.py``).

A run's time to a rung is the step-clock time of its first evaluation whose validation metric
meets the rung, read from its stored metric series (a run that stopped at the target has met
every lower rung by then). Times to successive rungs are non-decreasing by construction. Each
rung is then scored exactly like the final target (:mod:`leaderboard.scoring`): median over
seeds, ratio to the fastest, integrated profile; the official score stays the top rung's.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pandas as pd

from leaderboard.scoring import score_table, to_target_table
from suites.ladder import Rung


def times_to_rungs(
    steps: Sequence[float], times: Sequence[float], values: Sequence[float], rungs: Sequence[Rung]
) -> list[tuple[float, float]]:
    """Per rung ``(steps, seconds)`` of the first evaluation that meets it; ``(nan, nan)`` if none.

    ``steps``, ``times`` and ``values`` are one run's evaluation series in step order.
    """
    out = []
    for rung in rungs:
        hit = (math.nan, math.nan)
        for s, t, v in zip(steps, times, values, strict=True):
            if v is not None and rung.reached(float(v)):
                hit = (float(s), float(t))
                break
        out.append(hit)
    return out


def ladder_rows(runs: pd.DataFrame, series: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]],
                rungs: dict[str, Sequence[Rung]]) -> pd.DataFrame:  # fmt: skip
    """One row per (run, rung): ``optimizer``, ``suite``, ``rung`` (its label), ``fraction``,
    ``steps_to_rung`` and ``time_to_rung`` (NaN for a miss).

    ``runs`` has columns ``id``, ``optimizer``, ``suite`` and ``scored`` (bool: whether the run
    counts on the board, e.g. a failed run counts as a miss, a protocol deviation not at all);
    ``series`` maps a run id to its validation series; ``rungs`` maps a suite to its ladder.
    """
    records = []
    for run in runs.itertuples(index=False):
        ladder = rungs.get(run.suite, ())
        if not ladder or not bool(run.scored):
            continue
        steps, times, values = series.get(int(run.id), (np.array([]), np.array([]), np.array([])))
        for rung, (s, t) in zip(ladder, times_to_rungs(steps, times, values, ladder), strict=True):
            records.append((run.optimizer, run.suite, rung.label, rung.fraction, s, t))
    columns = ["optimizer", "suite", "rung", "fraction", "steps_to_rung", "time_to_rung"]
    return pd.DataFrame.from_records(records, columns=columns)


def ladder_scores(rows: pd.DataFrame) -> pd.DataFrame:
    """Per (optimizer, rung): ``score_time`` and ``score_steps`` over the suites, one rung at a time.

    ``rows`` as :func:`ladder_rows` returns. Rungs are ordered by fraction; every optimizer that
    appears on any rung appears on every rung (a cell without runs is a miss).
    """
    if rows.empty:
        return pd.DataFrame(columns=["optimizer", "rung", "fraction", "score_time", "score_steps"])
    names = sorted(rows["optimizer"].unique(), key=str)
    suites = sorted(rows["suite"].unique(), key=str)
    out = []
    for (fraction, label), group in rows.groupby(["fraction", "rung"], sort=True):
        time = to_target_table(group, "time_to_rung").reindex(index=names, columns=suites).fillna(math.inf)
        steps = to_target_table(group, "steps_to_rung").reindex(index=names, columns=suites).fillna(math.inf)
        table = score_table(time, steps)
        for name in names:
            out.append(
                (name, label, fraction, float(table.at[name, "score_time"]), float(table.at[name, "score_steps"]))
            )
    return pd.DataFrame.from_records(out, columns=["optimizer", "rung", "fraction", "score_time", "score_steps"])
