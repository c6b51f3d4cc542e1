"""``approx.html``: γ/γ_SGD per suite and backend against the training stage and the damping,
with its plots, and ``data/approx``."""

from __future__ import annotations

import pandas as pd

from leaderboard import format as fmt
from leaderboard.pages.context import BuildContext


def write(ctx: BuildContext) -> None:
    approx = ctx.approx()
    for v in approx:
        base = f"{fmt.slug(v['suite'])}-{fmt.slug(v['backend'])}"
        v["plot"] = v["sweep_plot"] = None
        if len(v["stages"]) and v["stages"]["median"].notna().any():
            v["plot"] = ctx.plot("approx_stages", f"plots/approx-{base}.svg", v["stages"], ctx.style)
        if len(v["sweeps"]):
            v["sweep_plot"] = ctx.plot("damping_sweep", f"plots/damping-{base}.svg", v["sweeps"], ctx.style)
    ctx.render("approx.html", "approx.html", views=approx)
    rows = []
    for v in approx:
        for r in v["stages"].to_dict("records"):
            rows.append({"suite": v["suite"], "backend": v["backend"], **r})
    ctx.write_table("data/approx", pd.DataFrame(rows))
