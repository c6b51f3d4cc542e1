"""``history.html``: nightly trends per machine and (suite, optimizer, backend) as sparklines
with the regression reports' flags, and ``data/history``."""

from __future__ import annotations

import pandas as pd
from markupsafe import Markup

from leaderboard import svg
from leaderboard.pages.context import BuildContext
from leaderboard.views import HISTORY_METRICS, history_view


def write(ctx: BuildContext) -> None:
    view = history_view(ctx.data)
    sparks: dict[tuple[str, str, str, str, str], Markup] = {}
    records = []
    for machine in view["machines"] if view is not None else []:
        sweeps = list(machine["nightly"].itertuples(index=False))
        for suite, rows in machine["suites"].items():
            for row in rows:
                for metric, _ in HISTORY_METRICS:
                    key = (machine["hardware"], suite, row["optimizer"], row["backend"], metric)
                    sparks[key] = svg.sparkline(row["values"][metric], row["marks"][metric])
                for i, sweep in enumerate(sweeps):
                    records.append(
                        {
                            "hardware": machine["hardware"],
                            "suite": suite,
                            "optimizer": row["optimizer"],
                            "backend": row["backend"],
                            "sweep_id": int(sweep.id),
                            "sweep": sweep.name,
                            "started_at": sweep.started_at,
                            "time_to_target_s": row["values"]["ttt"][i],
                            "step_time_median_s": row["values"]["step_time"][i],
                            "peak_memory_bytes": row["values"]["memory"][i],
                            "flagged": any(row["marks"][m][i] for m, _ in HISTORY_METRICS),
                        }
                    )
    ctx.render("history.html", "history.html", view=view, sparks=sparks, metrics=HISTORY_METRICS)
    ctx.write_table("data/history", pd.DataFrame(records))
