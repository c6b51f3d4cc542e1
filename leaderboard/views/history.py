"""Page model of the nightly history: trends per machine and (suite, optimizer, backend), with
the regression reports' flags."""

from __future__ import annotations

import math
from typing import Any

import pandas as pd

from leaderboard import format as fmt
from leaderboard import scoring
from leaderboard.data import SiteData

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
