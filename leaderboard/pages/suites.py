"""``suites.html`` and per suite ``suites/<slug>.html`` (a section per board: entries,
convergence plot, scored runs, tuning trials and studies), the suite's run index pages
``suites/<slug>-runs[-k].html`` and ``suites/<slug>`` tables."""

from __future__ import annotations

import math
from types import SimpleNamespace
from typing import Any

import pandas as pd

from leaderboard import format as fmt
from leaderboard.pages.context import BuildContext
from leaderboard.pages.exports import entries_export
from leaderboard.pages.templating import present
from leaderboard.views import convergence_curves, study_rows, suite_entries

#: Runs listed per page of a suite's run index.
RUNS_PER_PAGE = 500


def write(ctx: BuildContext) -> None:
    data = ctx.data
    listing = []
    for name, info in data.suites.items():
        runs = data.runs[data.runs["suite"] == name]
        sections = []
        for board in data.boards:
            board_runs = runs[
                (runs["track"] == board.track)
                & (runs["backend"] == board.backend)
                & (runs["hardware"] == board.hardware)
            ]
            trials = board_runs[board_runs["role"] == "trial"]
            entries = suite_entries(data, name, board)
            studies = study_rows(data, name, board)
            if entries.empty and trials.empty:
                continue
            curves = convergence_curves(data, name, board, info.val_metric) if len(entries) else []
            plot = None
            if len(curves):
                plot = ctx.plot(
                    "convergence",
                    f"plots/convergence-{board.slug}-{fmt.slug(name)}.svg",
                    curves,
                    ctx.style,
                    val_metric=info.val_metric,
                    val_log=info.metric_mode(info.val_metric) == "min",
                    target=info.target_value if info.target_metric == info.val_metric else None,
                )
            sections.append(
                {
                    "board": board,
                    "entries": entries.to_dict("records"),
                    "plot": plot,
                    "current": board_runs[board_runs["scored"]].sort_values(["optimizer", "seed"]).to_dict("records"),
                    "trials": ranked_trials(trials, studies),
                    "studies": studies,
                    "sgd_refs": sorted({r for r in entries["sgd_ref"].dropna()}) if len(entries) else [],
                }
            )
        slug = fmt.slug(name)
        ctx.render(
            "suite.html",
            f"suites/{slug}.html",
            suite=info,
            sections=sections,
            n_runs=len(runs),
            run_pages=run_index_pages(ctx, name, runs),
            export=f"{slug}",
        )
        ctx.write_table(
            f"suites/{slug}",
            entries_export(
                pd.concat([pd.DataFrame(s["entries"]) for s in sections if s["entries"]])
                if any(s["entries"] for s in sections)
                else None
            ),
        )
        listing.append(
            {
                "info": info,
                "runs": len(runs),
                "optimizers": int(runs["optimizer"].nunique()),
                "stale": int(runs["stale"].sum()),
                "failed": int(runs["failed"].sum()),
            }
        )
    ctx.render("suites.html", "suites.html", suites=listing)


def run_index_pages(ctx: BuildContext, suite: str, runs: pd.DataFrame) -> list[str]:
    """Every run of the suite, newest first, in pages of :data:`RUNS_PER_PAGE` (written by
    a worker: the run frame is shared with it)."""
    slug = fmt.slug(suite)
    n_pages = max(1, math.ceil(len(runs) / RUNS_PER_PAGE))
    names = [f"suites/{slug}-runs{'' if i == 0 else f'-{i + 1}'}.html" for i in range(n_pages)]
    for i in range(n_pages):
        ctx.submit(write_run_index, suite, names, i)
    ctx.pages += len(names)
    return names


def write_run_index(ctx: BuildContext, suite: str, names: list[str], i: int) -> None:
    """Page ``i`` of the suite's run index (a deferred task)."""
    runs = ctx.data.runs
    ordered = runs[runs["suite"] == suite].sort_values("id", ascending=False)
    chunk = ordered.iloc[i * RUNS_PER_PAGE : (i + 1) * RUNS_PER_PAGE]
    ctx.render(
        "runs_index.html",
        names[i],
        counted=True,
        suite=suite,
        suite_page=f"suites/{fmt.slug(suite)}.html",
        runs=[SimpleNamespace(**r) for r in chunk.to_dict("records")],
        pages=[(n, j + 1) for j, n in enumerate(names)],
        current=names[i],
        total=len(ordered),
    )


def ranked_trials(trials: pd.DataFrame, studies: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Trial rows with their rank in their study and whether the board scores their configuration."""
    by_opt = {s["optimizer"]: s for s in studies}
    out = []
    for r in trials.sort_values(["optimizer", "trial", "id"]).to_dict("records"):
        study = by_opt.get(r["optimizer"], {})
        trial = int(r["trial"]) if present(r["trial"]) else None
        newest = study.get("trial_ids", {}).get(trial) == int(r["id"])
        r["rank"] = study.get("rank", {}).get(trial) if newest else None
        r["scored_config"] = study.get("chosen_config") is not None and r["config"] == study.get("chosen_config")
        out.append(r)
    return out
