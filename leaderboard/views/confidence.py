"""How sure a board is: score intervals, ties, per-cell significance, FLOPs and the target ladder.

Computed from the seeds behind each scored entry of a board (the newest run per seed of the
chosen configuration), with the rules of :mod:`leaderboard.uncertainty` and
:mod:`leaderboard.ladder`; :func:`board_confidence` is merged into the board's page model.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from leaderboard import uncertainty
from leaderboard.data import SiteData
from leaderboard.ladder import ladder_rows, ladder_scores
from suites import get_suite
from suites.ladder import Rung
from suites.registry import UnknownSuiteError

SCORE_COLUMNS = ("time", "steps", "flops")


def seed_rows(data: SiteData, chosen: pd.DataFrame, suites: Sequence[str]) -> pd.DataFrame:
    """One row per (optimizer, suite, seed) of the scored entries: ``time``, ``steps`` and
    ``flops`` to target (NaN for a miss; ``flops`` NaN also where the run recorded no FLOPs)."""
    columns = ["id", "optimizer", "suite", "seed", "time", "steps", "flops", "flops_per_step"]
    if chosen.empty or data.runs.empty:
        return pd.DataFrame(columns=columns)
    runs = data.runs.set_index("id", drop=False)
    records = []
    for entry in chosen.itertuples(index=False):
        if entry.suite not in suites:
            continue
        for run_id in entry.run_ids:
            if run_id not in runs.index:
                continue
            run = runs.loc[run_id]
            steps = float(run["stt"]) if pd.notna(run["stt"]) else math.nan
            time = float(run["ttt"]) if pd.notna(run["ttt"]) else math.nan
            fps = run.get("flops_per_step")
            fps = float(fps) if fps is not None and pd.notna(fps) else math.nan
            records.append((int(run_id), entry.optimizer, entry.suite, run["seed"], time, steps, fps * steps, fps))
    return pd.DataFrame.from_records(records, columns=columns)


def _ladder(data: SiteData, rows: pd.DataFrame) -> list[dict[str, Any]]:
    if rows.empty:
        return []
    rungs: dict[str, tuple[Rung, ...]] = {}
    for suite in rows["suite"].unique():
        try:
            rungs[str(suite)] = get_suite(str(suite)).ladder
        except UnknownSuiteError:
            rungs[str(suite)] = ()
    ids = [int(i) for i in rows["id"]]
    series = data.series_for(ids)
    metric = {s: (data.suites[s].val_metric if s in data.suites else "val_accuracy") for s in rungs}
    by_run = {int(r.id): series.get(int(r.id), metric[str(r.suite)]) for r in rows.itertuples(index=False)}
    runs = rows[["id", "optimizer", "suite"]].assign(scored=True)
    table = ladder_scores(ladder_rows(runs, by_run, rungs))
    out = []
    for (label, fraction), g in table.groupby(["rung", "fraction"], sort=False):
        out.append(
            {
                "rung": label,
                "fraction": float(fraction),
                "scores": {r.optimizer: (float(r.score_time), float(r.score_steps)) for r in g.itertuples(index=False)},
            }
        )
    return sorted(out, key=lambda r: r["fraction"])


def board_confidence(data: SiteData, chosen: pd.DataFrame, suites: Sequence[str]) -> dict[str, Any]:
    """Intervals per score column, ranks with ties, per-cell significance, the ladder.

    Returns ``intervals`` (column -> DataFrame score/low/high by optimizer), ``ranks`` (by the
    time score's intervals), ``tied`` (optimizer -> the optimizers it is tied with), ``cells``
    ((optimizer, suite) -> p-value against the cell's best and whether it is significant),
    ``fastest`` (suite -> whether its fastest is significant), ``min_seeds`` and
    ``flops_measured`` (every reached run recorded its FLOPs), and ``ladder``.
    """
    rows = seed_rows(data, chosen, suites)
    out: dict[str, Any] = {"intervals": {}, "ranks": {}, "tied": {}, "cells": {}, "fastest": {}, "ladder": []}
    out["min_seeds"] = int(rows.groupby(["optimizer", "suite"]).size().min()) if len(rows) else 0
    reached = rows[np.isfinite(rows["steps"].astype(float))] if len(rows) else rows
    out["flops_measured"] = bool(len(reached)) and bool(np.isfinite(reached["flops_per_step"].astype(float)).all())
    if rows.empty:
        return out
    for column in SCORE_COLUMNS:
        if column == "flops" and not out["flops_measured"]:
            continue
        out["intervals"][column] = uncertainty.bootstrap_scores(rows, column)
    time = out["intervals"]["time"]
    out["ranks"] = uncertainty.interval_ranks(time).to_dict()
    out["tied"] = {str(name): uncertainty.tied_with(time, str(name)) for name in time.index}
    table = uncertainty.significance_against_best(rows, "time")
    for r in table.itertuples(index=False):
        out["cells"][(r.optimizer, r.suite)] = {
            "best": r.best,
            "p_value": None if math.isnan(r.p_value) else float(r.p_value),
            "significant": bool(r.significant),
            "testable": bool(r.testable),
        }
    out["fastest"] = {str(k): bool(v) for k, v in uncertainty.fastest_is_significant(table).items()}
    out["ladder"] = _ladder(data, rows)
    return out
