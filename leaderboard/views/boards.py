"""Page models of the boards, suites and optimizers: the score table, the suite × optimizer
matrix, per-suite entries and convergence curves, an optimizer's results."""

from __future__ import annotations

import math
import warnings
from typing import Any

import numpy as np
import pandas as pd

from db.statuses import FAILED_STATUSES
from leaderboard import scoring, uncertainty
from leaderboard.data import SiteData
from leaderboard.ranking import Board, board_table
from leaderboard.views.common import has_failure, optimizer_order, ratio_class, scorable_suites, status_text
from leaderboard.views.confidence import board_confidence


def board_scores(data: SiteData, board: Board) -> dict[str, Any]:
    """Score table, suite × optimizer matrix and profile points of one board."""
    chosen = board_table(data.entries, board.key)
    optimizers = [o for o in optimizer_order(data) if o in set(chosen["optimizer"])] if len(chosen) else []
    suites = [s for s in scorable_suites(data) if len(chosen) and s in set(chosen["suite"])]
    untargeted = sorted({s for s in (chosen["suite"] if len(chosen) else []) if s not in suites})
    alone = compared_only(chosen, suites, optimizers)
    optimizers = [o for o in optimizers if o not in alone]
    time_table = pd.DataFrame(scoring.INF, index=pd.Index(optimizers, name="optimizer"), columns=suites, dtype=float)
    steps_table = time_table.copy()
    by_cell = {}
    for row in chosen.itertuples(index=False):
        if row.suite in suites:
            time_table.loc[row.optimizer, row.suite] = row.ttt
            steps_table.loc[row.optimizer, row.suite] = row.stt
            by_cell[(row.optimizer, row.suite)] = row
    scores = scoring.score_table(time_table, steps_table) if optimizers else pd.DataFrame()
    ratios = scoring.performance_ratios(time_table) if optimizers else pd.DataFrame()
    step_ratios = scoring.performance_ratios(steps_table) if optimizers else pd.DataFrame()
    stale = (
        data.entries[
            data.entries["stale"]
            & (data.entries["track"] == board.track)
            & (data.entries["backend"] == board.backend)
            & (data.entries["hardware"] == board.hardware)
        ]
        if len(data.entries)
        else data.entries
    )
    stale_cells = {(r.optimizer, r.suite) for r in stale.itertuples(index=False)}
    stale_only = sorted({o for o, _ in stale_cells} - set(optimizers) - set(alone), key=str)
    confidence = board_confidence(data, chosen, suites) if optimizers else board_confidence(data, chosen.iloc[0:0], [])
    rows = []
    order = list(scores.index) if len(scores) else []
    for opt in order + alone + stale_only:
        cells: list[dict[str, Any]] = []
        for suite in suites:
            entry = by_cell.get((opt, suite))
            if entry is not None and opt in alone:  # shown, compared with nothing: no ratio
                cells.append(
                    {"suite": suite, "css": "none", "ratio": None, "ttt": entry.ttt, "status": "", "entry": None}
                )
                continue
            if entry is None:
                css = "stale" if (opt, suite) in stale_cells else "none"
                cells.append({"suite": suite, "css": css, "ratio": None, "ttt": None, "status": "", "entry": None})
                continue
            ratio = float(ratios.loc[opt, suite])
            test = confidence["cells"].get((opt, suite), {})
            cells.append(
                {
                    "suite": suite,
                    "css": ratio_class(ratio) + (" fail" if has_failure(entry.status_counts) else ""),
                    "ratio": ratio,
                    "ttt": entry.ttt,
                    "stt": entry.stt,
                    "step_ratio": float(step_ratios.loc[opt, suite]),
                    "status": status_text(entry.status_counts, entry.seeds),
                    "configs": int(entry.configs),
                    "seeds": int(entry.seeds),
                    "entry": entry,
                    "p_value": test.get("p_value"),
                    "significant": test.get("significant", False),
                    "is_best": test.get("best") == opt,
                    "best_significant": confidence["fastest"].get(suite, False),
                }
            )
        score = scores.loc[opt] if opt in scores.index else None
        bounds = {
            f"score_{column}_{side}": float(frame.at[opt, side]) if opt in frame.index else math.nan
            for column, frame in confidence["intervals"].items()
            for side in ("low", "high")
        }
        flops = confidence["intervals"].get("flops")
        rows.append(
            {
                "optimizer": opt,
                **bounds,
                "score_flops": float(flops.at[opt, "score"]) if flops is not None and opt in flops.index else math.nan,
                "rank": confidence["ranks"].get(opt),
                "tied": confidence["tied"].get(opt, []),
                "score_time": float(score["score_time"]) if score is not None else math.nan,
                "score_steps": float(score["score_steps"]) if score is not None else math.nan,
                "reached": int(score["reached"]) if score is not None else 0,
                "suites": len(suites),
                # suites with a current run of this optimizer: one it did not run counts as missed
                "ran": sum(1 for c in cells if c["entry"] is not None),
                "stale_only": score is None and opt not in alone,
                "not_compared": opt in alone,
                "failures": int(
                    sum(
                        n
                        for c in cells
                        if c["entry"] is not None
                        for s, n in c["entry"].status_counts.items()
                        if s in FAILED_STATUSES
                    )
                ),
                "cells": cells,
            }
        )
    points = {}
    if optimizers and suites:
        points = {
            "time": scoring.profile_curve_points(ratios),
            "steps": scoring.profile_curve_points(step_ratios),
        }
    return {
        "optimizers": optimizers,
        "suites": suites,
        "untargeted": untargeted,
        "alone": alone,
        "rows": rows,
        "profile_points": points,
        "time_table": time_table,
        "steps_table": steps_table,
        "scores": scores,
        "min_seeds": confidence["min_seeds"],
        "few_seeds": confidence["min_seeds"] < uncertainty.MIN_SEEDS_FOR_SIGNIFICANCE,
        "flops_measured": confidence["flops_measured"],
        "ladder": confidence["ladder"],
    }


def compared_only(chosen: pd.DataFrame, suites: list[str], optimizers: list[str]) -> list[str]:
    """The optimizers of a board that no other optimizer was scored against on any of its suites.

    A board ranks optimizers against each other: an optimizer whose every scored suite has no
    other optimizer's entry (a lone submission, the only run on a board) compares with nothing
    and would be "fastest" with score 1.0, so it is listed without a rank. Suites keep their
    scoring: a missing cell of another optimizer counts as a miss, as on every board.
    """
    if not len(chosen) or not suites:
        return []
    rows = chosen[chosen["suite"].isin(suites)]
    counts = {suite: len(set(group)) for suite, group in rows.groupby("suite")["optimizer"]}
    on_shared = {o for o, s in zip(rows["optimizer"], rows["suite"], strict=True) if counts.get(s, 0) >= 2}
    return [o for o in optimizers if o not in on_shared]


def board_environments(data: SiteData, board: Board) -> list[dict[str, Any]]:
    """Environments of the board's scored runs (else all its runs), with run counts."""
    runs = data.runs
    mine = runs[
        (runs["track"] == board.track) & (runs["backend"] == board.backend) & (runs["hardware"] == board.hardware)
    ]
    use = mine[mine["scored"]] if mine["scored"].any() else mine
    counts = use["environment_id"].dropna().astype(int).value_counts()
    out = []
    for env_id, n in counts.items():
        if env_id not in data.environments.index:
            continue
        env = data.environments.loc[env_id]
        out.append({"env": env.to_dict(), "runs": int(n)})
    out.sort(key=lambda e: (-e["runs"], e["env"]["id"]))
    return out


# ---------------------------------------------------------------------------------- suites


def suite_entries(data: SiteData, suite: str, board: Board) -> pd.DataFrame:
    """Entries of one suite in one board: chosen first (by time), then other configs, then stale."""
    e = data.entries
    if e.empty:
        return e
    mask = (e["suite"] == suite) & (e["track"] == board.track) & (e["backend"] == board.backend)
    mask &= e["hardware"] == board.hardware
    rows = e[mask].copy()
    if rows.empty:
        return rows
    best_ttt = rows.loc[rows["chosen"], "ttt"].min() if rows["chosen"].any() else math.inf
    best_stt = rows.loc[rows["chosen"], "stt"].min() if rows["chosen"].any() else math.inf
    rows["ratio"] = [
        scoring.ratio_to_best(t, best_ttt) if not s else math.nan for t, s in zip(rows["ttt"], rows["stale"])
    ]
    rows["step_ratio"] = [
        scoring.ratio_to_best(t, best_stt) if not s else math.nan for t, s in zip(rows["stt"], rows["stale"])
    ]
    rows["group"] = np.where(rows["stale"], 2, np.where(rows["chosen"], 0, 1))
    return rows.sort_values(["group", "ttt", "stt", "optimizer", "config"], kind="stable")


def convergence_curves(data: SiteData, suite: str, board: Board, val_metric: str) -> pd.DataFrame:
    """Median and min–max over seeds of train loss and the validation metric, per optimizer.

    Only the optimizers' scored configurations. Seeds are put on the union of their evaluation
    steps by linear interpolation inside each seed's own range (the identity when seeds share
    the suite's evaluation cadence, as they do); at each step the statistics run over the seeds
    that reached it (runs stop at the target or on divergence). The time axis is the median
    over those seeds of the steady-state time at that step.
    """
    e = data.entries
    if e.empty:
        return pd.DataFrame()
    chosen = board_table(e, board.key)
    chosen = chosen[chosen["suite"] == suite]
    order = {o: i for i, o in enumerate(optimizer_order(data))}
    rows = []
    for entry in sorted(chosen.itertuples(index=False), key=lambda r: order.get(r.optimizer, len(order))):
        for name in ("train_loss", val_metric):
            series = []
            for rid in entry.run_ids:
                steps, times, values = data.metrics.get(rid, name)
                ok = np.isfinite(values)
                if ok.sum() >= 1:
                    series.append((steps[ok].astype(float), times[ok], values[ok]))
            if not series:
                continue
            grid = np.unique(np.concatenate([s for s, _, _ in series]))
            vals = np.full((len(series), grid.size), np.nan)
            tims = np.full((len(series), grid.size), np.nan)
            for i, (st, tm, va) in enumerate(series):
                inside = (grid >= st[0]) & (grid <= st[-1])
                vals[i, inside] = np.interp(grid[inside], st, va)
                tims[i, inside] = np.interp(grid[inside], st, tm)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN columns cannot occur
                rows.append(
                    pd.DataFrame(
                        {
                            "optimizer": entry.optimizer,
                            "name": name,
                            "step": grid,
                            "time_s": np.nanmedian(tims, axis=0),
                            "median": np.nanmedian(vals, axis=0),
                            "lo": np.nanmin(vals, axis=0),
                            "hi": np.nanmax(vals, axis=0),
                            "seeds": np.isfinite(vals).sum(axis=0),
                        }
                    )
                )
    return pd.concat(rows, ignore_index=True) if rows else pd.DataFrame()


# ---------------------------------------------------------------------------------- optimizers


def optimizer_results(data: SiteData, optimizer: str) -> list[dict[str, Any]]:
    """The optimizer's scored entry per (board, suite), with its rank and ratio to the best."""
    e = data.entries
    if e.empty:
        return []
    chosen = e[e["chosen"]]
    out = []
    for (track, backend, hardware, suite), g in chosen.groupby(["track", "backend", "hardware", "suite"], sort=True):
        mine = g[g["optimizer"] == optimizer]
        if mine.empty:
            continue
        row = mine.iloc[0]
        ttts = g["ttt"].to_numpy(dtype=float)
        best = float(np.min(ttts))
        ratio = scoring.ratio_to_best(row["ttt"], best)
        rank = int(1 + np.sum(ttts < row["ttt"])) if math.isfinite(row["ttt"]) else None
        out.append(
            {
                "board": (track, backend, hardware),
                "suite": suite,
                "entry": row,
                "ratio": ratio if math.isfinite(best) else math.nan,
                "rank": rank,
                "competitors": len(g),
                "status": status_text(row["status_counts"], row["seeds"]),
            }
        )
    return out
