"""``optimizers.html`` and per optimizer ``optimizers/<slug>.html``: the method card, results
per board and suite, the newest stored step cost (floor and efficiency), configurations run,
and its approximation-quality rows."""

from __future__ import annotations

import json
from typing import Any

import pandas as pd

from leaderboard import format as fmt
from leaderboard.pages.context import BuildContext
from leaderboard.views import optimizer_results

#: Keys of a stored step cost's ``passes`` field that are not pass counts.
ALGEBRA_KEYS = frozenset({"algebra_s", "efficiency_algebra", "algebra_after_pass_s", "efficiency_after_pass"})


def step_cost_rows(step_costs: pd.DataFrame, optimizer: str) -> list[dict[str, Any]]:
    """The newest stored step costs of ``optimizer`` and its presets (``optimizer:preset``), one
    dict per (backend, problem, configuration), for the optimizer page's step-cost table."""
    if step_costs is None or not len(step_costs):
        return []
    adapter = step_costs["adapter"].astype(str)
    mine = step_costs[(adapter == optimizer) | adapter.str.startswith(optimizer + ":")]
    rows = []
    for r in mine.to_dict("records"):
        name = str(r["adapter"])
        threads, dirty = fmt.finite(r.get("threads")), r.get("git_dirty")
        stored = r.get("passes") if isinstance(r.get("passes"), dict) else {}
        rows.append(
            {
                **r,
                # the passes field also carries the method's linear algebra (benchmarks.method_algebra)
                "passes": {k: v for k, v in stored.items() if k not in ALGEBRA_KEYS},
                **{k: stored.get(k) for k in sorted(ALGEBRA_KEYS)},
                "configuration": name.partition(":")[2] or "defaults",
                "threads": None if threads is None else int(threads),
                "git_dirty": bool(dirty) if isinstance(dirty, (bool, int)) and not pd.isna(dirty) else None,
            }
        )
    order = ("configuration", "backend", "problem")
    return sorted(rows, key=lambda r: (r["configuration"] != "defaults", *(r[k] for k in order)))


def write(ctx: BuildContext) -> None:
    data = ctx.data
    approx = ctx.approx()
    listing = []
    for opt in ctx.optimizers:
        info = data.methods.get(opt)
        results = optimizer_results(data, opt)
        runs = data.runs[data.runs["optimizer"] == opt] if len(data.runs) else data.runs
        configs = (
            runs.groupby(["config", "config_label"]).size().reset_index(name="runs").to_dict("records")
            if len(runs)
            else []
        )
        approx_rows = []
        for v in approx:
            for row in v["table"]:
                if row["method"] == opt:
                    approx_rows.append({"suite": v["suite"], "backend": v["backend"], "row": row, "view": v})
        ctx.render(
            "optimizer.html",
            f"optimizers/{fmt.slug(opt)}.html",
            step_costs=step_cost_rows(data.step_costs, opt),
            name=opt,
            info=info,
            results=results,
            configs=configs,
            approx=approx_rows,
            n_runs=len(runs),
            status_counts=runs["status"].value_counts().to_dict() if len(runs) else {},
        )
        listing.append({"name": opt, "info": info, "runs": len(runs), "results": results})
    ctx.render("optimizers.html", "optimizers.html", optimizers=listing)
    # Every default with where it comes from (docs/defaults.md): paper, library or held-out.
    cards = {
        opt: {
            h.name: {"default": h.default, "provenance": h.provenance or None, "source": h.source or None}
            for h in info.hyperparams
        }
        for opt in ctx.optimizers
        if (info := data.methods.get(opt)) is not None
    }
    (ctx.out / "data").mkdir(parents=True, exist_ok=True)
    text = json.dumps(cards, indent=1, sort_keys=True, default=str, allow_nan=False)
    (ctx.out / "data" / "optimizers.json").write_text(text + "\n", encoding="utf-8")
