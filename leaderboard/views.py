"""Page models: the numbers each page shows, computed from :class:`leaderboard.data.SiteData`.

Everything here returns plain dicts and frames of raw values (numbers, ``None``, ``inf``);
formatting and escaping happen in the templates. The exports write the same tables.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from leaderboard import format as fmt
from leaderboard import scoring
from leaderboard.data import (
    FAILED_STATUSES,
    Board,
    SiteData,
    board_table,
)

#: Short status words used in cells ("diverged 2/3").
STATUS_WORDS: Mapping[str, str] = {
    "done": "done",
    "target_reached": "reached",
    "budget_exhausted": "missed",
    "diverged": "diverged",
    "oom": "OOM",
    "timeout": "timeout",
    "error": "error",
    "crashed": "crashed",
    "interrupted": "interrupted",
}
#: Ratio buckets of the matrix colours: (upper bound, CSS class).
RATIO_BUCKETS: tuple[tuple[float, str], ...] = ((1.0, "best"), (1.25, "r2"), (2.0, "r3"), (4.0, "r4"))


def ratio_class(ratio: float) -> str:
    if not math.isfinite(ratio):
        return "miss"
    for bound, css in RATIO_BUCKETS:
        if ratio <= bound + 1e-12:
            return css
    return "r5"


def status_text(counts: Mapping[str, int], seeds: int) -> str:
    """``3/3 reached`` or the failures and misses, e.g. ``diverged 2/3 · missed 1/3``."""
    total = sum(counts.values()) or seeds
    if counts.get("target_reached", 0) == total:
        return f"{total}/{total} reached"
    parts = [f"{STATUS_WORDS.get(s, s)} {n}/{total}" for s, n in counts.items() if s != "target_reached" and n]
    reached = counts.get("target_reached", 0)
    if reached:
        parts.insert(0, f"reached {reached}/{total}")
    return " · ".join(parts)


def has_failure(counts: Mapping[str, int]) -> bool:
    return any(counts.get(s, 0) for s in FAILED_STATUSES)


def optimizer_order(data: SiteData) -> list[str]:
    """Method-card order first (the CLI passes built-ins in display order), then by name."""
    present = set(data.runs["optimizer"]) if len(data.runs) else set()
    present |= set(data.approx["method"]) if len(data.approx) else set()
    ordered = [m for m in data.methods if m in present]
    return ordered + sorted(present - set(ordered), key=str)


def scorable_suites(data: SiteData) -> list[str]:
    return [name for name, info in data.suites.items() if info.target_metric]


# ---------------------------------------------------------------------------------- overview


def board_scores(data: SiteData, board: Board) -> dict[str, Any]:
    """Score table, suite × optimizer matrix and profile points of one board."""
    chosen = board_table(data.entries, board.key)
    optimizers = [o for o in optimizer_order(data) if o in set(chosen["optimizer"])] if len(chosen) else []
    suites = [s for s in scorable_suites(data) if len(chosen) and s in set(chosen["suite"])]
    untargeted = sorted({s for s in (chosen["suite"] if len(chosen) else []) if s not in suites})
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
    stale_only = sorted({o for o, _ in stale_cells} - set(optimizers), key=str)
    rows = []
    order = list(scores.index) if len(scores) else []
    for opt in order + stale_only:
        cells: list[dict[str, Any]] = []
        for suite in suites:
            entry = by_cell.get((opt, suite))
            if entry is None:
                css = "stale" if (opt, suite) in stale_cells else "none"
                cells.append({"suite": suite, "css": css, "ratio": None, "ttt": None, "status": "", "entry": None})
                continue
            ratio = float(ratios.loc[opt, suite])
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
                }
            )
        score = scores.loc[opt] if opt in scores.index else None
        rows.append(
            {
                "optimizer": opt,
                "score_time": float(score["score_time"]) if score is not None else math.nan,
                "score_steps": float(score["score_steps"]) if score is not None else math.nan,
                "reached": int(score["reached"]) if score is not None else 0,
                "suites": len(suites),
                "stale_only": score is None,
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
        "rows": rows,
        "profile_points": points,
        "time_table": time_table,
        "steps_table": steps_table,
        "scores": scores,
    }


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


# ---------------------------------------------------------------------------------- approx


def _gamma_ratios(a: pd.DataFrame) -> pd.Series:
    """``gamma_ratio_sgd``, else γ over the sgd row's γ of the same run, checkpoint and batch."""
    ratio = pd.to_numeric(a["gamma_ratio_sgd"], errors="coerce").astype(float)
    missing = ratio.isna() & pd.to_numeric(a["gamma"], errors="coerce").notna()
    if missing.any():
        keys = ["run_id", "checkpoint", "batch"]
        sgd = a[a["method"] == "sgd"].groupby(keys)["gamma"].median().rename("g_sgd")
        ref = a.loc[missing, keys].join(sgd, on=keys)
        ratio[missing] = pd.to_numeric(a.loc[missing, "gamma"], errors="coerce") / ref["g_sgd"]
    return ratio


def _is_sweep(rows: pd.DataFrame) -> bool:
    """An evaluation is a damping sweep when some method has rows at several dampings."""
    return bool((rows.groupby("method")["damping_key"].nunique() > 1).any())


def _quantile(q: float) -> Any:
    def agg(s: pd.Series) -> float:
        v = s.to_numpy(dtype=float)
        v = v[np.isfinite(v)]
        return float(np.percentile(v, q)) if v.size else math.nan

    return agg


def approx_views(data: SiteData) -> list[dict[str, Any]]:
    """γ/γ_SGD per (suite, backend) of the reference runs: vs training stage, and vs damping.

    Each approximation evaluation is one reference run (``harness.approx``: role
    ``approx_reference``) with its rows. The stage view uses the newest evaluation without a
    damping sweep (every method at its own damping), else the newest one; where a method still
    has several dampings there, the one with the most rows (ties: the middle value). The damping
    view uses the newest sweep: every damping at the first and last checkpoint.
    """
    a = data.approx
    if a.empty:
        return []
    runs = data.runs.set_index("id") if len(data.runs) else pd.DataFrame(columns=["suite", "backend", "optimizer"])
    a = a.copy()
    for col, src in (("suite", "suite"), ("backend", "backend"), ("reference", "optimizer")):
        a[col] = a["run_id"].map(runs[src]) if len(runs) else None
    a["suite"] = a["suite"].fillna("unknown suite")
    a["backend"] = a["backend"].fillna("unknown backend")
    a["ratio"] = _gamma_ratios(a)
    a["damping_key"] = pd.to_numeric(a["damping"], errors="coerce")
    a["uphill"] = [isinstance(x, dict) and x.get("descent") is False for x in a["extra"]]
    order = {m: i for i, m in enumerate(optimizer_order(data))}

    def method_order(s: pd.Series) -> pd.Series:
        return s.map(order).fillna(len(order)) if s.name == "method" else s

    views = []
    for (suite, backend), g in a.groupby(["suite", "backend"], sort=True):
        evaluations = {int(rid): rows for rid, rows in g.groupby("run_id", sort=True)}
        plain = [rid for rid, rows in evaluations.items() if not _is_sweep(rows)]
        swept = [rid for rid, rows in evaluations.items() if _is_sweep(rows)]
        stage_run = max(plain) if plain else max(evaluations)
        main_rows = []
        for _method, gm in evaluations[stage_run].groupby("method", sort=False):
            counts = gm["damping_key"].value_counts(dropna=False)
            top = sorted(counts[counts == counts.max()].index.tolist(), key=lambda d: (math.isnan(d), d))
            main = top[len(top) // 2]
            sel = gm[gm["damping_key"].isna()] if math.isnan(main) else gm[gm["damping_key"] == main]
            main_rows.append(sel.assign(main_damping=main))
        stages = (
            pd.concat(main_rows)
            .groupby(["method", "checkpoint"])
            .agg(
                step=("step", "median"),
                median=("ratio", "median"),
                q25=("ratio", _quantile(25)),
                q75=("ratio", _quantile(75)),
                cos_ng=("cos_ng", "median"),
                rel_err_ng=("rel_err_ng", "median"),
                imbalance=("grad_norm_imbalance", "median"),
                batches=("batch", "nunique"),
                uphill=("uphill", "sum"),
                damping=("main_damping", "first"),
            )
            .reset_index()
            .sort_values(["method", "checkpoint"], key=method_order)
        )
        checkpoints = sorted(int(c) for c in stages["checkpoint"].unique())
        table = []
        for method, gm in stages.groupby("method", sort=False):
            by_cp = {int(r.checkpoint): r for r in gm.itertuples(index=False)}
            last = by_cp[max(by_cp)]
            table.append(
                {
                    "method": method,
                    "damping": gm["damping"].iloc[0],
                    "values": [by_cp[c].median if c in by_cp else math.nan for c in checkpoints],
                    "cos_ng": last.cos_ng,
                    "rel_err_ng": last.rel_err_ng,
                    "imbalance": last.imbalance,
                    "batches": int(gm["batches"].max()),
                    "uphill": int(gm["uphill"].sum()),
                }
            )
        sweeps = pd.DataFrame()
        sweep_run = max(swept) if swept else None
        if sweep_run is not None:
            rows = evaluations[sweep_run]
            first, last_cp = rows["checkpoint"].min(), rows["checkpoint"].max()
            multi = rows.groupby("method")["damping_key"].nunique()
            sw = rows[
                rows["method"].isin(multi[multi > 1].index)
                & rows["checkpoint"].isin([first, last_cp])
                & rows["damping_key"].notna()
            ]
            sweeps = sw.groupby(["method", "checkpoint", "damping_key"])["ratio"].median().reset_index()
            sweeps["stage"] = np.where(sweeps["checkpoint"] == first, "first", "last")
            sweeps = sweeps.rename(columns={"damping_key": "damping", "ratio": "median"})
        steps = stages.groupby("checkpoint")["step"].median()
        views.append(
            {
                "suite": suite,
                "backend": backend,
                "stage_run": stage_run,
                "sweep_run": sweep_run,
                "references": sorted({str(r) for r in g["reference"].dropna()}),
                "evaluations": sorted(evaluations),
                "checkpoints": [(c, steps.get(c)) for c in checkpoints],
                "stages": stages,
                "table": table,
                "sweeps": sweeps,
                "rows": len(g),
            }
        )
    return views


# ---------------------------------------------------------------------------------- history

HISTORY_METRICS: tuple[tuple[str, str], ...] = (
    ("ttt", "time-to-target"),
    ("step_time", "step time"),
    ("memory", "peak memory"),
)


def _report_metric(metric: str) -> str:
    m = str(metric)
    if "target" in m:
        return "ttt"
    if "step_time" in m or "step time" in m:
        return "step_time"
    if "memory" in m:
        return "memory"
    return "other"


def history_view(data: SiteData) -> dict[str, Any] | None:
    """Nightly trends per machine and (suite, optimizer, backend), with the reports' flags.

    A nightly sweep belongs to the machine (device name) most of its runs ran on; each
    machine's nightlies form their own sequence, as the regression reports compare a nightly
    with the previous one on the same machine (``harness.nightly``).
    """
    sweeps = data.sweeps
    if sweeps.empty:
        return None
    nightly = sweeps[sweeps["kind"] == "nightly"].copy()
    if nightly.empty:
        return None
    nightly["started"] = pd.to_datetime(nightly["started_at"], utc=True, errors="coerce")
    nightly = nightly.sort_values(["started", "id"]).reset_index(drop=True)
    runs = data.runs
    mine = runs[runs["sweep_id"].isin(nightly["id"])] if len(runs) else runs
    hardware_of: dict[int, str] = {}
    if len(mine):
        for sid, g in mine.groupby("sweep_id"):
            hardware_of[int(sid)] = str(g["hardware"].mode().iloc[0])
    env_device = data.environments["device_name"] if len(data.environments) else pd.Series(dtype=object)
    for row in nightly.itertuples(index=False):
        if int(row.id) not in hardware_of:
            name = env_device.get(row.environment_id) if row.environment_id is not None else None
            hardware_of[int(row.id)] = str(name) if isinstance(name, str) and name else "unknown device"
    nightly["hardware"] = [hardware_of[int(i)] for i in nightly["id"]]
    per = {}
    scored = mine[~mine["status"].isin(["interrupted"])] if len(mine) else mine
    if len(scored):
        # Median with misses as +inf equals scoring.median_to_target (np.median semantics).
        frame = scored.assign(ttt_inf=scored["ttt"].fillna(scoring.INF))
        agg = frame.groupby(["suite", "optimizer", "backend", "sweep_id"], sort=True).agg(
            ttt=("ttt_inf", "median"),
            step_time=("step_time_median_s", "median"),
            memory=("peak_memory_bytes", "median"),
            runs=("id", "size"),
            failed=("failed", "sum"),
        )
        for (suite, opt, backend, sid), row in zip(agg.index, agg.to_dict("records")):
            per[(suite, opt, backend, int(sid))] = row
    flags: dict[tuple[str, str, str, int], list[dict[str, Any]]] = {}
    flagged_items = []
    for row in nightly.itertuples(index=False):
        report = row.report if isinstance(row.report, dict) else {}
        for item in report.get("items", []) or []:
            if not isinstance(item, dict):
                continue
            key = (str(item.get("suite")), str(item.get("optimizer")), str(item.get("backend")), int(row.id))
            flag = str(item.get("flag") or "unchanged")
            rec = {**item, "flag": flag, "column": _report_metric(item.get("metric", "")), "sweep": row}
            flags.setdefault(key, []).append(rec)
            if flag != "unchanged":
                flagged_items.append(rec)
    machines = []
    for hardware, sweeps_hw in nightly.groupby("hardware", sort=False):
        sweep_ids = [int(i) for i in sweeps_hw["id"]]
        n = len(sweep_ids)
        keys = sorted({k[:3] for k in per if k[3] in sweep_ids} | {k[:3] for k in flags if k[3] in sweep_ids})
        suites: dict[str, list[dict[str, Any]]] = {}
        for suite, opt, backend in keys:
            values: dict[str, list[float | None]] = {m: [None] * n for m, _ in HISTORY_METRICS}
            marks: dict[str, list[bool]] = {m: [False] * n for m, _ in HISTORY_METRICS}
            bad_nights = 0
            for i, sid in enumerate(sweep_ids):
                p = per.get((suite, opt, backend, sid))
                if p:
                    for m, _ in HISTORY_METRICS:
                        v = p[m]
                        # A missed target stays +inf (a gap in the trend, "inf" in the export).
                        values[m][i] = None if v is None or math.isnan(v) else float(v)
                recs = flags.get((suite, opt, backend, sid), [])
                for rec in recs:
                    if rec["flag"] in ("slowdown", "regression") and rec["column"] in marks:
                        marks[rec["column"]][i] = True
                bad_nights += any(r["flag"] in ("slowdown", "regression") for r in recs)
            last_two = {
                m: [v for v in values[m] if v is not None and math.isfinite(v)][-2:] for m, _ in HISTORY_METRICS
            }
            latest = per.get((suite, opt, backend, sweep_ids[-1]), {})
            suites.setdefault(suite, []).append(
                {
                    "optimizer": opt,
                    "backend": backend,
                    "values": values,
                    "marks": marks,
                    "latest": {m: (last_two[m][-1] if last_two[m] else None) for m, _ in HISTORY_METRICS},
                    "change": {m: (v[-1] / v[-2] if len(v) == 2 and v[-2] else None) for m, v in last_two.items()},
                    "latest_flags": [
                        r for r in flags.get((suite, opt, backend, sweep_ids[-1]), []) if r["flag"] != "unchanged"
                    ],
                    "flagged_nights": bad_nights,
                    "missed_latest": latest.get("ttt") == math.inf,
                }
            )
        last = sweeps_hw.iloc[-1].to_dict()
        report = last.get("report") if isinstance(last.get("report"), dict) else {}
        changes: dict[str, Any] = report["changes"] if isinstance(report.get("changes"), dict) else {}
        machines.append(
            {
                "hardware": hardware,
                "slug": fmt.slug(f"nightly-{hardware}"),
                "nightly": sweeps_hw,
                "count": n,
                "latest": last,
                "summary": report.get("summary") if isinstance(report.get("summary"), dict) else None,
                "changes": [(str(k), v) for k, v in changes.items()],
                "suites": dict(sorted(suites.items())),
            }
        )
    position = {int(sid): i for i, sid in enumerate(nightly["id"])}
    flagged_items.sort(
        key=lambda r: (-position.get(int(r["sweep"].id), 0), str(r.get("suite")), str(r.get("optimizer")))
    )
    return {"nightly": nightly, "machines": machines, "flagged": flagged_items, "count": len(nightly)}


# ---------------------------------------------------------------------------------- tuning


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
