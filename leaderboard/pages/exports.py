"""``data.html`` and the downloadable tables under ``data/`` (CSV and JSON, see
:mod:`leaderboard.export`): runs, entries, scores, the board matrices, environments."""

from __future__ import annotations

import pandas as pd

from leaderboard import uncertainty
from leaderboard.cost import PASS_WEIGHTS
from leaderboard.pages.context import BuildContext
from suites.ladder import FRACTIONS

#: The tables ``data.html`` lists, with what each holds.
TABLES: tuple[tuple[str, str], ...] = (
    ("runs", "every run: spec, status, summary figures and the derived ranking columns"),
    ("entries", "per board, suite, optimizer and configuration: medians over seeds"),
    (
        "scores",
        "per board and optimizer: the performance-profile scores by time, steps and FLOPs with 95 % "
        "bootstrap intervals, and the rank (ties share a rank)",
    ),
    ("matrix", "per board, optimizer and suite: time-to-target and ratio to the best"),
    ("approx", "γ/γ_SGD per suite, method and checkpoint"),
    ("history", "nightly medians per suite, optimizer and backend"),
    ("tunability", "per backend, device and optimizer: untuned vs tuned score on the same suites"),
    ("environments", "the machines and software the runs used"),
)


def write(ctx: BuildContext) -> None:
    data = ctx.data
    ctx.submit(export_runs)
    ctx.write_table("data/entries", entries_export(data.entries))
    scores, matrix = [], []
    for board in data.boards:
        view = ctx.board_view(board)
        for row in view["rows"]:
            scores.append(
                {
                    "track": board.track,
                    "backend": board.backend,
                    "hardware": board.hardware,
                    "optimizer": row["optimizer"],
                    "rank": row.get("rank"),
                    "score_time": row["score_time"],
                    "score_time_low": row.get("score_time_low"),
                    "score_time_high": row.get("score_time_high"),
                    "score_steps": row["score_steps"],
                    "score_steps_low": row.get("score_steps_low"),
                    "score_steps_high": row.get("score_steps_high"),
                    "score_flops": row.get("score_flops"),
                    "score_flops_low": row.get("score_flops_low"),
                    "score_flops_high": row.get("score_flops_high"),
                    "suites_reached": row["reached"],
                    "suites_run": row["ran"],
                    "suites": row["suites"],
                }
            )
            for cell in row["cells"]:
                matrix.append(
                    {
                        "track": board.track,
                        "backend": board.backend,
                        "hardware": board.hardware,
                        "optimizer": row["optimizer"],
                        "suite": cell["suite"],
                        "time_to_target_s": cell.get("ttt"),
                        "steps_to_target": cell.get("stt"),
                        "ratio_to_best": cell.get("ratio"),
                        "steps_ratio_to_best": cell.get("step_ratio"),
                        "status": cell["status"] or cell["css"],
                        "p_value_vs_best": cell.get("p_value"),
                        "significantly_slower_than_best": cell.get("significant"),
                    }
                )
    ctx.write_table("data/scores", pd.DataFrame(scores))
    ctx.write_table("data/matrix", pd.DataFrame(matrix))
    envs = data.environments.drop(columns=["fingerprint"], errors="ignore") if len(data.environments) else None
    ctx.write_table("data/environments", envs)
    ctx.render(
        "data.html",
        "data.html",
        environments=data.environments.to_dict("records") if len(data.environments) else [],
        tables=TABLES,
        method={
            "fractions": [f"{round(100 * f)} %" for f in FRACTIONS],
            "resamples": uncertainty.N_RESAMPLES,
            "level": uncertainty.LEVEL,
            "alpha": uncertainty.ALPHA,
            "min_seeds": uncertainty.MIN_SEEDS_FOR_SIGNIFICANCE,
            "weights": dict(PASS_WEIGHTS),
        },
    )
    if not (ctx.out / "data" / "approx.json").exists():
        ctx.write_table("data/approx", None)


def export_runs(ctx: BuildContext) -> None:
    """``data/runs``: every column of the runs frame but the display forms (a deferred task)."""
    runs = ctx.data.runs
    cols = [c for c in runs.columns if c != "board" and not c.endswith("_text")]
    table = runs[cols].copy() if len(runs) else pd.DataFrame(columns=cols)
    if "flops_per_step" in table.columns:
        # FLOPs to target: the hardware-neutral cost axis (NaN for a miss or an uncounted run).
        table["flops_to_target"] = pd.to_numeric(table["flops_per_step"], errors="coerce") * pd.to_numeric(
            table["steps_to_target"], errors="coerce"
        )
    ctx.write_table("data/runs", table)


def entries_export(entries: pd.DataFrame | None) -> pd.DataFrame | None:
    """The entries table as exported: the public columns, named with their units."""
    if entries is None or entries.empty:
        return entries
    keep = [
        c
        for c in (
            "track",
            "backend",
            "hardware",
            "suite",
            "optimizer",
            "config",
            "config_label",
            "stale",
            "chosen",
            "configs",
            "runs",
            "seeds",
            "reached",
            "status_counts",
            "ttt",
            "ttt_min",
            "ttt_max",
            "stt",
            "ratio",
            "final_train_loss",
            "best_val_metric",
            "step_time",
            "sgd_ratio",
            "sgd_ref",
            "peak_memory",
            "step_memory",
            "memory_kind",
            "compile_time",
            "passes",
            "grad_equivalents",
            "hparams",
            "run_ids",
        )
        if c in entries.columns
    ]
    return entries[keep].rename(
        columns={
            "ttt": "time_to_target_s",
            "ttt_min": "time_to_target_min_s",
            "ttt_max": "time_to_target_max_s",
            "stt": "steps_to_target",
            "ratio": "ratio_to_best",
            "step_time": "step_time_median_s",
            "grad_equivalents": "grad_equivalents_per_step",
        }
    )
