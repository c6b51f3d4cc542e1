"""One page per run (``runs/<id>.html``): spec, status, summary figures, environment, curves.

Run pages are most of a large site: they are written in chunks of :data:`RUN_CHUNK` by the
workers (deferred tasks), each chunk reading the metric series of its runs.
"""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
from markupsafe import Markup

from leaderboard import format as fmt
from leaderboard import svg
from leaderboard.catalogue import SuiteInfo
from leaderboard.pages.context import BuildContext
from leaderboard.pages.templating import present
from leaderboard.series import BATCH_LOSS, TRAIN_LOSS, MetricSeries

#: Run pages per task.
RUN_CHUNK = 400


def schedule(ctx: BuildContext) -> None:
    """Schedule the run pages in chunks (rendered by :func:`write_chunk`)."""
    data = ctx.data
    ids = [int(i) for i in data.runs["id"]] if len(data.runs) else []
    if not ids:
        return
    (ctx.out / "runs").mkdir(parents=True, exist_ok=True)
    envs = {int(k): v for k, v in data.environments.to_dict("index").items()} if len(data.environments) else {}
    env_template = ctx.env.get_template("environment.html")
    # Rendered (and escaped) once per environment, not once per run.
    ctx.shared["env_html"] = {k: Markup(env_template.render(env=v, DASH=fmt.DASH)) for k, v in envs.items()}
    ctx.shared["sweeps"] = {int(r["id"]): r for r in data.sweeps.to_dict("records")} if len(data.sweeps) else {}
    # Attribute access is Jinja's fast path (a dict costs a failed getattr per lookup).
    ctx.shared["run_records"] = [SimpleNamespace(**r) for r in data.runs.to_dict("records")]
    for start in range(0, len(ids), RUN_CHUNK):
        ctx.submit(write_chunk, start, start + RUN_CHUNK)
    ctx.pages += len(ids)


def write_chunk(ctx: BuildContext, start: int, stop: int) -> None:
    """The pages of runs ``start:stop`` (a deferred task)."""
    template = ctx.env.get_template("run.html")
    common = dict(ctx.common, root="../")
    env_html, sweeps = ctx.shared["env_html"], ctx.shared["sweeps"]
    records = ctx.shared["run_records"][start:stop]
    series = ctx.data.series_for([int(r.id) for r in records])
    for run in records:
        rid = int(run.id)
        info = ctx.data.suites.get(run.suite)
        val_metric = run.val_metric or (info.val_metric if info else "val_accuracy")
        page = template.render(
            page=f"runs/{rid}.html",
            run=run,
            suite=info,
            charts=run_charts(series, rid, val_metric, info),
            env_html=env_html.get(int(run.environment_id)) if present(run.environment_id) else None,
            sweep=sweeps.get(int(run.sweep_id)) if present(run.sweep_id) else None,
            spec_json=json.dumps(run.spec, indent=1, sort_keys=True, default=str) if run.spec else "none stored",
            hparams=sorted(run.hparams.items()) if isinstance(run.hparams, dict) else [],
            final_metrics=sorted(run.final_metrics.items()) if isinstance(run.final_metrics, dict) else [],
            **common,
        )
        (ctx.out / "runs" / f"{rid}.html").write_text(page, encoding="utf-8")


def run_charts(m: MetricSeries, rid: int, val_metric: str, info: SuiteInfo | None) -> list[Markup]:
    """Train loss (batch and evaluation) and the validation metric against steps, with the
    steady-state time at the first and last step; optimizer statistics (``opt_*``)."""
    target = info.target_value if info and info.target_metric == val_metric else None
    bs, bt, bv = m.get(rid, BATCH_LOSS)
    es, et, ev = m.get(rid, TRAIN_LOSS)
    vs, vt, vv = m.get(rid, val_metric)
    steps = np.concatenate([bs, es, vs])
    times = np.concatenate([bt, et, vt])
    notes = None
    if steps.size:
        notes = (fmt.seconds(times[np.argmin(steps)]), fmt.seconds(times[np.argmax(steps)]))
    loss_series = []
    if bs.size:
        loss_series.append(svg.Series(bs, bv, "batch", "batch"))
    if es.size:
        loss_series.append(svg.Series(es, ev, "s1", "evaluation"))
    positive = [a[np.isfinite(a)] for a in (bv, ev)]
    logy = all(bool(np.all(a > 0)) for a in positive) and any(a.size for a in positive)
    charts = [svg.chart(loss_series, title="train loss", xlabel="step (time)", logy=logy, x_notes=notes)]
    if vs.size:
        charts.append(
            svg.chart(
                [svg.Series(vs, vv, "s2", "")], title=val_metric, xlabel="step (time)", hline=target, x_notes=notes
            )
        )
    for name in m.names(rid):
        if name.startswith("opt_"):
            s, _, v = m.get(rid, name)
            charts.append(svg.chart([svg.Series(s, v, "s3", "")], title=name, xlabel="step", width=240, height=130))
    return charts
