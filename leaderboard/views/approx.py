"""Page model of approximation quality: γ/γ_SGD per suite and backend, against the training
stage and against the damping."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

from leaderboard.data import SiteData
from leaderboard.views.common import optimizer_order


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


def _first_text(s: pd.Series) -> str | None:
    """The first non-empty text of a group (``None`` when there is none)."""
    return next((str(x) for x in s if isinstance(x, str) and x), None)


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
    # Where the harness judged the cosine to the exact NG not comparable, or scored the method on
    # the regularised objective it preconditions (harness/approx/comparability.py).
    a["ng_not_comparable"] = [x.get("ng_not_comparable") if isinstance(x, dict) else None for x in a["extra"]]
    a["objective"] = [x.get("objective") if isinstance(x, dict) else None for x in a["extra"]]
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
                ng_not_comparable=("ng_not_comparable", _first_text),
                objective=("objective", _first_text),
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
                    # NaN (what pandas makes of a group without text) is truthy in a template.
                    "ng_not_comparable": last.ng_not_comparable if isinstance(last.ng_not_comparable, str) else None,
                    "objective": last.objective if isinstance(last.objective, str) else None,
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
