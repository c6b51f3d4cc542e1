"""An evaluation's result: the :class:`ApproxResult`, its pandas summaries, and its storage in one
database transaction.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from db.models import APPROX_COLUMNS
from harness.approx.planning import ApproxSpec
from harness.runner import RunResult

#: ``Run.role`` of the reference trajectory's run (never ranked on the leaderboard).
REFERENCE_ROLE = "approx_reference"
#: ``Sweep.kind`` of an approximation-quality evaluation.
SWEEP_KIND = "approx"
#: Columns of the rows, in order (the ``approx_quality`` table without ``id``/``run_id``).
COLUMNS: tuple[str, ...] = APPROX_COLUMNS

# --------------------------------------------------------------------------- the result


@dataclass
class ApproxResult:
    """Rows, the reference run, and what was skipped."""

    spec: ApproxSpec
    rows: list[dict[str, Any]]
    reference: RunResult
    checkpoint_steps: list[int]
    #: Per evaluated checkpoint: ``step``, ``progress`` and the reference's evaluation metrics.
    checkpoint_metrics: list[dict[str, Any]]
    skipped: dict[str, str]
    variants: list[dict[str, Any]]
    exact_ng: dict[str, Any]
    #: Per method (``name@damping`` in a sweep): its first direction error, or its feeding failures.
    errors: dict[str, str]
    wall_time_s: float
    run_id: int | None = None
    sweep_id: int | None = None

    def frame(self) -> pd.DataFrame:
        """The rows as a DataFrame with :data:`COLUMNS` (plus ``attrs``: skipped, run_id ...)."""
        frame = pd.DataFrame(self.rows, columns=list(COLUMNS))
        for col in COLUMNS:
            if col not in ("method", "extra", "checkpoint", "step", "batch"):
                frame[col] = pd.to_numeric(frame[col], errors="coerce").astype(float)
        frame.attrs.update(
            skipped=dict(self.skipped),
            run_id=self.run_id,
            sweep_id=self.sweep_id,
            reference=self.spec.reference,
            checkpoint_steps=list(self.checkpoint_steps),
            checkpoint_metrics=list(self.checkpoint_metrics),
            exact_ng=dict(self.exact_ng),
            errors=dict(self.errors),
            wall_time_s=self.wall_time_s,
        )
        return frame

    def to_dict(self) -> dict[str, Any]:
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        out["spec"] = self.spec.to_dict()
        out["reference"] = self.reference.to_dict()
        return _json_safe(out)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ApproxResult:
        data = dict(data)
        data["spec"] = ApproxSpec.from_dict(data["spec"])
        data["reference"] = RunResult.from_dict(data["reference"])
        return cls(**data)

    def sweep_spec(self) -> dict[str, Any]:
        """What the ``sweeps`` row of this evaluation records (JSON)."""
        return {
            "approx": self.spec.to_dict(),
            "steps": self.reference.steps,
            "checkpoint_steps": self.checkpoint_steps,
            "checkpoints": self.checkpoint_metrics,
            "variants": self.variants,
            "skipped": self.skipped,
            "exact_ng": self.exact_ng,
            "errors": self.errors,
            "wall_time_s": self.wall_time_s,
        }


def summary(frame: pd.DataFrame, value: str = "gamma_ratio_sgd") -> pd.DataFrame:
    """Median of ``value`` per (method, damping) x checkpoint, methods in row order."""
    if frame.empty:
        return pd.DataFrame()
    f = frame.assign(damping_key=frame["damping"].astype(float), _value=pd.to_numeric(frame[value], errors="coerce"))
    table = f.groupby(["method", "damping_key", "checkpoint"], dropna=False)["_value"].median().unstack("checkpoint")
    order = {m: i for i, m in enumerate(dict.fromkeys(frame["method"]))}
    table = table.reset_index()
    table["_order"] = table["method"].map(order)
    table = table.sort_values(["_order", "damping_key"], na_position="first").drop(columns="_order")
    table = table.rename(columns={"damping_key": "damping"}).set_index(["method", "damping"])
    table.columns.name = "checkpoint"
    return table


def non_descent_counts(frame: pd.DataFrame) -> dict[tuple[str, float | None], int]:
    """Rows per (method, damping) whose direction is not a descent direction (``d^T g <= 0``)."""
    out: dict[tuple[str, float | None], int] = {}
    for row in frame.itertuples(index=False):
        if row.dtg is not None and math.isfinite(row.dtg) and row.dtg <= 0:
            key = (row.method, None if not math.isfinite(row.damping) else float(row.damping))
            out[key] = out.get(key, 0) + 1
    return out


# --------------------------------------------------------------------------- storage


def _json_safe(value: Any) -> Any:
    """Non-finite floats become ``None``; numpy scalars become Python numbers."""
    if isinstance(value, (np.floating, np.integer, np.bool_)):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value


def store_result(store: Any, result: ApproxResult) -> int:
    """Write the evaluation in ONE transaction: a ``sweeps`` row (kind ``approx``, the spec,
    skips and checkpoint metrics), the reference run (role :data:`REFERENCE_ROLE`, linked to the
    sweep) and its ``approx_quality`` rows. Returns the run id (also set on ``result``)."""
    sweep_id, run_id = store.save_approx(
        result.reference,
        [_json_safe(r) for r in result.rows],
        sweep_name=f"approx:{result.spec.suite}",
        sweep_spec=_json_safe(result.sweep_spec()),
        role=REFERENCE_ROLE,
        tag=result.spec.tag,
    )
    result.run_id, result.sweep_id = run_id, sweep_id
    return run_id
