"""Stored step-cost tables (``benchmarks/step_cost.py --store``): write one table, read the newest
row per (backend, problem, adapter).

A table is appended as one transaction, every row carrying where and when it was measured
(machine description, threads, commit, timestamp), so older measurements stay for comparison
and the site shows the newest (:func:`latest_step_costs`).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

import pandas as pd
from sqlalchemy import func, insert, select

from db.models import StepCost
from db.store import Store

#: The columns of a step-cost row, in table order (without ``id``).
STEP_COST_COLUMNS: tuple[str, ...] = tuple(c.name for c in StepCost.__table__.columns if c.name != "id")


def _finite(value: Any) -> float | None:
    """A float, or None for a missing or non-finite figure (stored as SQL NULL)."""
    if value is None:
        return None
    number = float(value)
    return number if math.isfinite(number) else None


def save_step_costs(
    store: Store,
    rows: Iterable[Mapping[str, Any]],
    *,
    machine: str | None,
    threads: int | None,
    git_commit: str | None,
    git_dirty: bool | None = None,
    rounds: int | None = None,
    measured_at: datetime | None = None,
) -> int:
    """Append one measured table; ``rows`` have ``backend``, ``problem``, ``adapter``, ``status``,
    ``params``, ``median_s``, ``p10_s``, ``p90_s``, ``ratio_to_sgd``, ``floor_s``,
    ``efficiency`` and ``passes`` (``benchmarks.step_cost_table.Cost`` fields). Returns the rows written."""
    when = measured_at or datetime.now(UTC)
    values = [
        {
            "backend": str(r["backend"]),
            "problem": str(r["problem"]),
            "adapter": str(r["adapter"]),
            "status": str(r.get("status", "ok")),
            "params": int(r["params"]) if r.get("params") is not None else None,
            "median_step_s": _finite(r.get("median_s")),
            "p10_step_s": _finite(r.get("p10_s")),
            "p90_step_s": _finite(r.get("p90_s")),
            "ratio_to_sgd": _finite(r.get("ratio_to_sgd")),
            "floor_s": _finite(r.get("floor_s")),
            "efficiency": _finite(r.get("efficiency")),
            "passes": {str(k): _finite(v) for k, v in dict(r.get("passes") or {}).items()},
            "rounds": rounds,
            "threads": threads,
            "machine": machine,
            "git_commit": git_commit,
            "git_dirty": git_dirty,
            "measured_at": when,
        }
        for r in rows
    ]
    if not values:
        return 0
    with store.session() as s, s.begin():
        s.execute(insert(StepCost), values)
    return len(values)


def latest_step_costs(store: Store, adapters: Iterable[str] | None = None) -> pd.DataFrame:
    """The newest stored row of every (backend, problem, adapter), columns
    :data:`STEP_COST_COLUMNS`, ordered by adapter, backend and problem; ``adapters`` limits the
    rows to those names (an adapter's presets are named ``adapter:preset``)."""
    newest = (
        select(func.max(StepCost.id).label("id"))
        .group_by(StepCost.backend, StepCost.problem, StepCost.adapter)
        .subquery()
    )
    q = select(*[getattr(StepCost, c) for c in STEP_COST_COLUMNS]).join(newest, StepCost.id == newest.c.id)
    if adapters is not None:
        q = q.where(StepCost.adapter.in_(list(adapters)))
    q = q.order_by(StepCost.adapter, StepCost.backend, StepCost.problem)
    with store.engine.connect() as conn:
        rows = conn.execute(q).all()
    return pd.DataFrame([tuple(r) for r in rows], columns=list(STEP_COST_COLUMNS))
