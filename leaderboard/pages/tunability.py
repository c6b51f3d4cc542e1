"""``tunability.html``: untuned against tuned score per (backend, hardware) with both tracks,
its pooled profile plots, and ``data/tunability``."""

from __future__ import annotations

import pandas as pd

from leaderboard import scoring
from leaderboard.pages.context import BuildContext
from leaderboard.views import tuning_protocols


def write(ctx: BuildContext) -> None:
    found = ctx.tunability()
    rows = []
    for v in found:
        v["plot"] = None
        if v["points"]:
            v["plot"] = ctx.plot("profiles", f"plots/{v['slug']}.svg", v["points"], ctx.style, tau_max=scoring.TAU_MAX)
        for r in v["rows"]:
            rows.append({"backend": v["backend"], "hardware": v["hardware"], **r})
    ctx.render(
        "tunability.html",
        "tunability.html",
        views_=found,
        board_pages=ctx.board_pages,
        protocols={v["slug"]: tuning_protocols(ctx.data, v["tuned"]) for v in found},
    )
    ctx.write_table("data/tunability", pd.DataFrame(rows))
