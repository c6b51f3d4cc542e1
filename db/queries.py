"""Read queries returning pandas DataFrames (the CLI, the site, notebooks).

Every function takes a :class:`db.store.Store`. Filters are optional keyword arguments; ``None``
means "any".
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import pandas as pd
from sqlalchemy import Select, select

from db.models import APPROX_COLUMNS, ApproxQuality, Environment, Metric, Run, Sweep
from db.store import Store

#: Columns of :func:`runs_frame`, in display order.
RUN_COLUMNS: tuple[str, ...] = (
    "id",
    "key",
    "sweep_id",
    "environment_id",
    "suite",
    "suite_version",
    "optimizer",
    "adapter_version",
    "backend",
    "seed",
    "dtype",
    "device",
    "status",
    "error",
    "tag",
    "track",
    "role",
    "trial",
    "config_hash",
    "hparams",
    "steps",
    "initial_train_loss",
    "final_train_loss",
    "val_metric",
    "best_val_metric",
    "final_metrics",
    "target",
    "steps_to_target",
    "time_to_target_s",
    "train_time_s",
    "compile_time_s",
    "init_time_s",
    "eval_time_s",
    "step_time_median_s",
    "step_time_mean_s",
    "step_time_p10_s",
    "step_time_p90_s",
    "peak_memory_bytes",
    "peak_memory_above_baseline_bytes",
    "flops_per_step",
    "memory_kind",
    "passes_per_step",
    "started_at",
    "finished_at",
    "created_at",
)


def _frame(store: Store, query: Select, columns: Iterable[str]) -> pd.DataFrame:  # type: ignore[type-arg]
    with store.engine.connect() as conn:
        rows = conn.execute(query).all()
    return pd.DataFrame([tuple(r) for r in rows], columns=list(columns))


def runs_frame(
    store: Store,
    *,
    suite: str | None = None,
    optimizer: str | None = None,
    backend: str | None = None,
    status: str | None = None,
    tag: str | None = None,
    sweep_id: int | None = None,
    ids: Iterable[int] | None = None,
) -> pd.DataFrame:
    """One row per stored run, columns :data:`RUN_COLUMNS`, ordered by id."""
    cols = [getattr(Run, c) for c in RUN_COLUMNS]
    q = select(*cols).order_by(Run.id)
    for column, value in (
        (Run.suite, suite),
        (Run.optimizer, optimizer),
        (Run.backend, backend),
        (Run.status, status),
        (Run.tag, tag),
        (Run.sweep_id, sweep_id),
    ):
        if value is not None:
            q = q.where(column == value)
    if ids is not None:
        q = q.where(Run.id.in_(list(ids)))
    return _frame(store, q, RUN_COLUMNS)


def metrics_frame(store: Store, run_ids: Iterable[int], names: Iterable[str] | None = None) -> pd.DataFrame:
    """Long-format metric rows (``run_id, step, time_s, name, value``) of the given runs."""
    q = select(Metric.run_id, Metric.step, Metric.time_s, Metric.name, Metric.value).where(
        Metric.run_id.in_(list(run_ids))
    )
    if names is not None:
        q = q.where(Metric.name.in_(list(names)))
    q = q.order_by(Metric.run_id, Metric.id)
    return _frame(store, q, ("run_id", "step", "time_s", "name", "value"))


def environments_frame(store: Store) -> pd.DataFrame:
    cols = (
        "id",
        "fingerprint",
        "hostname",
        "device_kind",
        "device_name",
        "cpu",
        "python",
        "torch_version",
        "jax_version",
        "cuda",
        "driver",
        "git_commit",
        "git_dirty",
        "details",
        "created_at",
    )
    return _frame(store, select(*[getattr(Environment, c) for c in cols]).order_by(Environment.id), cols)


def sweeps_frame(store: Store, kind: str | None = None) -> pd.DataFrame:
    cols = (
        "id",
        "name",
        "kind",
        "track",
        "tag",
        "spec",
        "status",
        "environment_id",
        "started_at",
        "finished_at",
        "report",
    )
    q = select(*[getattr(Sweep, c) for c in cols]).order_by(Sweep.id)
    if kind is not None:
        q = q.where(Sweep.kind == kind)
    return _frame(store, q, cols)


def approx_frame(store: Store, run_id: int | None = None) -> pd.DataFrame:
    cols = ("id", "run_id", *APPROX_COLUMNS)
    q = select(*[getattr(ApproxQuality, c) for c in cols]).order_by(ApproxQuality.id)
    if run_id is not None:
        q = q.where(ApproxQuality.run_id == run_id)
    return _frame(store, q, cols)


def metric_rows(
    store: Store,
    names: Iterable[str] | None = None,
    prefixes: Iterable[str] = (),
    *,
    run_ids: Iterable[int] | None = None,
    run_id_range: tuple[int, int] | None = None,
) -> pd.DataFrame:
    """Metric rows (``run_id, step, time_s, name, value``), fetched for bulk reading.

    ``names``/``prefixes`` select metrics by exact name or name prefix (either matches; both
    empty/``None`` select every name). ``run_ids`` (any number) and ``run_id_range`` (inclusive
    ``(first, last)``, served by the ``run_id`` index) select runs. Same rows as
    :func:`metrics_frame`, unordered, with ``name`` categorical. It reads through the DBAPI
    cursor: wrapping two million rows in SQLAlchemy ``Row`` objects costs several times the
    query itself (the site build reads every row once).
    """
    from sqlalchemy import ColumnElement, or_

    base = select(Metric.run_id, Metric.step, Metric.time_s, Metric.name, Metric.value)
    conditions: list[ColumnElement[bool]] = [Metric.name.in_(list(names))] if names is not None else []
    conditions += [Metric.name.startswith(p, autoescape=True) for p in prefixes]
    if conditions:
        base = base.where(or_(*conditions))
    if run_id_range is not None:
        base = base.where(Metric.run_id.between(int(run_id_range[0]), int(run_id_range[1])))
    queries = [base]
    if run_ids is not None:
        ids = sorted({int(i) for i in run_ids})
        step = 900  # below SQLite's oldest bound-parameter limit
        queries = [base.where(Metric.run_id.in_(ids[i : i + step])) for i in range(0, len(ids), step)]
    rows: list[Any] = []
    with store.engine.connect() as conn:
        cursor = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
        try:
            for q in queries:
                compiled = q.compile(dialect=store.engine.dialect, compile_kwargs={"render_postcompile": True})
                params = compiled.params
                positional = getattr(compiled, "positiontup", None)
                args: Any = [params[k] for k in positional] if positional else params
                cursor.execute(str(compiled), args)
                rows.extend(cursor.fetchall())
        finally:
            cursor.close()
    frame = pd.DataFrame(rows, columns=["run_id", "step", "time_s", "name", "value"])
    if frame.empty:
        frame = frame.astype({"run_id": "int64", "step": "int64", "time_s": "float64", "value": "float64"})
    frame["value"] = frame["value"].astype("float64")
    frame["name"] = frame["name"].astype("category")
    return frame


def run_specs(store: Store) -> dict[int, dict[str, Any]]:
    """Every run's stored spec (``RunSpec.to_dict()``), by run id."""
    with store.engine.connect() as conn:
        rows = conn.execute(select(Run.id, Run.spec)).all()
    return {int(i): (s if isinstance(s, dict) else {}) for i, s in rows}
