"""``claims.html``: each paper's headline claim, its experiment, rule and verdict with the
evidence behind it, and ``data/claims`` (see :mod:`leaderboard.claims`)."""

from __future__ import annotations

import pandas as pd

from leaderboard.claims import CLAIMS, ApproxExperiment, outcome
from leaderboard.pages.context import BuildContext


def write(ctx: BuildContext) -> None:
    data = ctx.data
    runs = data.runs
    specs = (
        {int(i): (s if isinstance(s, dict) else {}) for i, s in zip(runs["id"], runs["spec"], strict=True)}
        if len(runs)
        else {}
    )
    tags = set(runs["tag"].dropna()) if len(runs) else set()
    items, rows = [], []
    for claim in CLAIMS:
        older = sorted(t for t in tags if t.startswith(f"claim:{claim.id}@v") and t != claim.tag)
        o = outcome(claim, runs, specs, data.approx, older_tags=older)
        if isinstance(claim.experiment, ApproxExperiment):
            what = (
                f"approximation track on {', '.join(claim.experiment.suites)}; methods "
                f"{', '.join(claim.experiment.methods)}; damping "
                f"{', '.join(f'{d:g}' for d in claim.experiment.dampings)}"
            )
        else:
            arms = "; ".join(
                f"{a.label} = {a.optimizer}" + (" (the suite's calibrated configuration)" if a.calibrated else "")
                for a in claim.experiment.arms
            )
            what = (
                f"{', '.join(claim.experiment.suites)}; {arms}; backends {', '.join(claim.experiment.backends)}; "
                f"seeds {', '.join(str(s) for s in claim.experiment.seeds)}"
            )
        items.append({"outcome": o, "experiment": what, "command": f"ngbench claims run --only {claim.id}"})
        rows.append(
            {
                "id": claim.id,
                "version": claim.version,
                "paper": claim.paper,
                "place": claim.place,
                "statement": claim.statement,
                "rule": claim.rule.text,
                "verdict": o.verdict.value,
                "summary": o.summary,
                "stale": o.stale,
                "measured_on": o.measured_on,
                "measured_at": o.measured_at,
            }
        )
    ctx.render("claims.html", "claims.html", items=items)
    ctx.write_table("data/claims", pd.DataFrame(rows))
