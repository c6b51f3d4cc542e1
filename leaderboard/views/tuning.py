"""Page models of the tuned track: tuning protocols, studies per suite, and tunability
(untuned against tuned score)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from leaderboard import format as fmt
from leaderboard import scoring
from leaderboard.data import SiteData
from leaderboard.ranking import Board
from leaderboard.views.boards import board_scores
from leaderboard.views.common import optimizer_order


def tuning_protocols(data: SiteData, board: Board) -> list[dict[str, Any]]:
    """The tuning protocols (sweep ``spec["tuning"]``) of the sweeps whose runs are on ``board``."""
    if board.track != "tuned" or data.sweeps.empty or data.runs.empty:
        return []
    runs = data.runs
    mask = (runs["track"] == board.track) & (runs["backend"] == board.backend) & (runs["hardware"] == board.hardware)
    ids = {int(i) for i in runs.loc[mask, "sweep_id"].dropna()}
    out: list[dict[str, Any]] = []
    seen: set[str] = set()
    for row in data.sweeps.sort_values("id").itertuples(index=False):
        spec = row.spec if isinstance(row.spec, dict) else {}
        tuning = spec.get("tuning")
        if int(row.id) not in ids or not isinstance(tuning, dict):
            continue
        text = repr(sorted((k, repr(v)) for k, v in tuning.items()))
        if text in seen:
            continue
        seen.add(text)
        out.append({"sweep": row.name, "sweep_id": int(row.id), "tuning": tuning})
    return out


def study_rows(data: SiteData, suite: str, board: Board) -> list[dict[str, Any]]:
    """The tuning studies of one suite on one board, in optimizer order, with each trial's rank."""
    s = data.studies
    if s.empty:
        return []
    mask = (s["suite"] == suite) & (s["track"] == board.track) & (s["backend"] == board.backend)
    mask &= s["hardware"] == board.hardware
    order = {o: i for i, o in enumerate(optimizer_order(data))}
    rows = sorted(s[mask].to_dict("records"), key=lambda r: (order.get(r["optimizer"], len(order)), r["optimizer"]))
    for r in rows:
        rank = {t: i + 1 for i, t in enumerate(r["ranking"])}
        r["rank"] = rank
        if r["all_failed"]:
            r["summary"] = f"all {r['trials']} trials failed: no configuration, scored as a miss on every seed"
        elif r["chosen_config"] is None:
            r["summary"] = f"{r['trials']} trials, no re-runs yet (the study is incomplete: not scored)"
        else:
            which = f"trial {r['chosen_trial']}" if r["chosen_trial"] is not None else "another study's choice"
            agree = "" if r["chosen_trial"] == r["best_trial"] else " (not the best of the trials listed here)"
            r["summary"] = (
                f"{r['trials']} trials ({r['failed_trials']} failed); scored: {r['reruns']} re-runs of {which}{agree}"
            )
    return rows


def tunability_views(data: SiteData) -> list[dict[str, Any]]:
    """Untuned vs tuned score per optimizer, per (backend, hardware) that has both boards.

    Definition (:func:`leaderboard.scoring.tunability_table`): on the suites both boards score,
    one pooled performance profile holds every optimizer twice (untuned entry, tuned entry),
    each suite's reference being the fastest time of either track; ``score_untuned`` and
    ``score_tuned`` are the integrated scores in that pool, ``delta`` their difference, and
    ``speedup`` the geometric mean over suites both reached of untuned / tuned time-to-target.
    """
    out = []
    boards = {b.key: b for b in data.boards}
    pairs = sorted({(b.backend, b.hardware) for b in data.boards if b.track == "tuned"})
    for backend, hardware in pairs:
        ub, tb = boards.get(("untuned", backend, hardware)), boards.get(("tuned", backend, hardware))
        if ub is None or tb is None:
            continue
        uv, tv = board_scores(data, ub), board_scores(data, tb)
        u, t = uv["time_table"], tv["time_table"]
        table = scoring.tunability_table(u, t)
        common = [s for s in u.columns if s in set(t.columns)]
        order = {o: i for i, o in enumerate(optimizer_order(data))}
        names = list(table.index)
        points: dict[str, dict[str, tuple[np.ndarray, np.ndarray]]] = {}
        if names and common:
            uu = u.reindex(index=names, columns=common).astype(float).fillna(scoring.INF)
            tt = t.reindex(index=names, columns=common).astype(float).fillna(scoring.INF)
            pooled = pd.concat([uu.rename(index=lambda n: f"u:{n}"), tt.rename(index=lambda n: f"t:{n}")])
            curves = scoring.profile_curve_points(scoring.performance_ratios(pooled))
            points = {
                "untuned time": {n: curves[f"u:{n}"] for n in names},
                "tuned time": {n: curves[f"t:{n}"] for n in names},
            }
        rows = [
            {"optimizer": name, **{k: table.at[name, k] for k in table.columns}}
            for name in sorted(names, key=lambda n: (order.get(n, len(order)), n))
        ]
        out.append(
            {
                "backend": backend,
                "hardware": hardware,
                "slug": fmt.slug(f"tunability-{backend}-{hardware}"),
                "untuned": ub,
                "tuned": tb,
                "suites": common,
                "only_untuned": [s for s in u.columns if s not in set(t.columns)],
                "only_tuned": [s for s in t.columns if s not in set(u.columns)],
                "rows": rows,
                "ranked": list(table.index),
                "table": table,
                "points": points,
            }
        )
    return out
