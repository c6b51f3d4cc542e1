"""``optimizers.html`` and per optimizer ``optimizers/<slug>.html``: the method card, results
per board and suite, configurations run, and its approximation-quality rows."""

from __future__ import annotations

from leaderboard import format as fmt
from leaderboard.pages.context import BuildContext
from leaderboard.views import optimizer_results


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
