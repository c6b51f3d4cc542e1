"""Writing results: one run's rows in one transaction, sweeps, environments.

Only the parent process of a sweep (or ``api.run`` in-process) writes; workers return
:class:`~harness.runner.RunResult` objects and never see a database URL.
"""

from __future__ import annotations

import math
import os
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Engine, insert, select, update
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlalchemy.orm import Session

from db.engine import connect, masked
from db.models import ApproxQuality, Environment, Metric, Run, Sweep
from harness.errors import DatabaseError

_ENV_COLUMNS = {
    "hostname": "hostname",
    "device_kind": "device_kind",
    "device_name": "device_name",
    "cpu": "cpu",
    "python": "python",
    "torch": "torch_version",
    "jax": "jax_version",
    "cuda": "cuda",
    "driver": "driver",
    "git_commit": "git_commit",
    "git_dirty": "git_dirty",
}


def _now() -> datetime:
    return datetime.now(UTC)


def _parse_time(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value else None


def _clean(value: Any) -> Any:
    """JSON/SQL-safe scalars: non-finite floats become ``None``."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    return value


class Store:
    """A connected, migrated database."""

    def __init__(self, engine: Engine, url: str) -> None:
        self.engine = engine
        self.url = url

    @property
    def display_url(self) -> str:
        return masked(self.url)

    def session(self) -> Session:
        return Session(self.engine, expire_on_commit=False)

    # ------------------------------------------------------------------ environments
    def environment_id(self, session: Session, record: dict[str, Any]) -> int | None:
        fp = record.get("fingerprint")
        if not fp:
            return None
        found = session.scalar(select(Environment.id).where(Environment.fingerprint == fp))
        if found is not None:
            return found
        values = {col: record.get(key) for key, col in _ENV_COLUMNS.items()}
        try:
            with session.begin_nested():
                env = Environment(fingerprint=fp, details=_clean(record), created_at=_now(), **values)
                session.add(env)
                session.flush()
                return env.id
        except IntegrityError:  # another writer created it first
            return session.scalar(select(Environment.id).where(Environment.fingerprint == fp))

    # ------------------------------------------------------------------ sweeps
    def create_sweep(
        self,
        name: str,
        *,
        kind: str = "sweep",
        track: str = "untuned",
        tag: str | None = None,
        spec: dict[str, Any] | None = None,
    ) -> int:
        with self.session() as s, s.begin():
            sweep = Sweep(
                name=name, kind=kind, track=track, tag=tag, spec=_clean(spec or {}), status="running", started_at=_now()
            )
            s.add(sweep)
            s.flush()
            return sweep.id

    def finish_sweep(self, sweep_id: int, status: str = "finished") -> None:
        with self.session() as s, s.begin():
            s.execute(update(Sweep).where(Sweep.id == sweep_id).values(status=status, finished_at=_now()))

    # ------------------------------------------------------------------ runs
    def save_run(
        self,
        result: Any,
        *,
        sweep_id: int | None = None,
        track: str = "untuned",
        role: str = "run",
        trial: int | None = None,
        config_hash: str | None = None,
    ) -> int:
        """Write a run and its metric rows in one transaction; returns the run id."""
        spec = result.spec
        try:
            with self.session() as s, s.begin():
                env_id = self.environment_id(s, result.environment)
                run = Run(
                    key=result.key,
                    sweep_id=sweep_id,
                    environment_id=env_id,
                    suite=spec.suite,
                    suite_version=result.suite_version,
                    optimizer=spec.optimizer,
                    adapter_version=result.adapter_version,
                    backend=spec.backend,
                    seed=spec.seed,
                    dtype=spec.dtype,
                    device=result.device,
                    status=result.status,
                    error=result.error,
                    tag=spec.tag,
                    track=track,
                    role=role,
                    trial=trial,
                    config_hash=config_hash,
                    hparams=_clean(result.hparams),
                    spec=_clean(spec.to_dict()),
                    steps=result.steps,
                    initial_train_loss=_clean(result.initial_train_loss),
                    final_train_loss=_clean(result.final_train_loss),
                    val_metric=result.val_metric,
                    best_val_metric=_clean(result.best_val_metric),
                    final_metrics=_clean(result.final_metrics),
                    target=result.target,
                    steps_to_target=result.steps_to_target,
                    time_to_target_s=_clean(result.time_to_target_s),
                    train_time_s=_clean(result.train_time_s),
                    compile_time_s=_clean(result.compile_time_s),
                    init_time_s=_clean(result.init_time_s),
                    eval_time_s=_clean(result.eval_time_s),
                    step_time_median_s=_clean(result.step_time_median_s),
                    step_time_mean_s=_clean(result.step_time_mean_s),
                    step_time_p10_s=_clean(result.step_time_p10_s),
                    step_time_p90_s=_clean(result.step_time_p90_s),
                    peak_memory_bytes=result.peak_memory_bytes,
                    memory_kind=result.memory_kind,
                    passes_per_step=_clean(result.passes_per_step),
                    started_at=_parse_time(result.started_at),
                    finished_at=_parse_time(result.finished_at),
                    created_at=_now(),
                )
                s.add(run)
                s.flush()
                rows = [
                    {"run_id": run.id, "step": int(st), "time_s": float(t), "name": n, "value": _clean(float(v))}
                    for st, t, n, v in result.metrics
                ]
                if rows:
                    s.execute(insert(Metric), rows)
                return run.id
        except SQLAlchemyError as exc:
            reason = getattr(exc, "orig", None) or exc
            raise DatabaseError(f"could not store the run in {self.display_url}: {reason}") from None

    def save_approx_rows(self, run_id: int, rows: list[dict[str, Any]]) -> None:
        """Approximation-quality rows of one reference run, in one transaction."""
        with self.session() as s, s.begin():
            if rows:
                s.execute(insert(ApproxQuality), [dict(_clean(r), run_id=run_id) for r in rows])

    def finished_keys(self, statuses: frozenset[str] | None = None) -> set[str]:
        """Keys of runs that finished (by default every status a sweep does not retry)."""
        from harness.runner import FINISHED_STATUSES

        wanted = statuses or FINISHED_STATUSES
        with self.session() as s:
            return set(s.scalars(select(Run.key).where(Run.status.in_(wanted), Run.key.is_not(None))))

    def dispose(self) -> None:
        self.engine.dispose()


def open_store(db: str | os.PathLike[str] | None = None) -> Store:
    """Connect to ``db`` (default: ``NGBENCH_DB_URL`` or ``./ngbench.db``), migrated to head."""
    engine, url = connect(db)
    return Store(engine, url)
