"""Writing results: one run's rows in one transaction, sweeps, environments.

Only the parent process of a sweep (or ``api.run`` in-process) writes; workers return
:class:`~harness.runner.RunResult` objects and never see a database URL.
"""

from __future__ import annotations

import hashlib
import math
import os
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, Engine, insert, select, text, update
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlalchemy.orm import Session

from db.checks import preflight
from db.engine import connect, masked
from db.errors import DatabaseError
from db.models import ApproxQuality, Environment, Metric, Run, Sweep

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
        try:
            with self.session() as s, s.begin():
                return self._add_run(
                    s, result, sweep_id=sweep_id, track=track, role=role, trial=trial, config_hash=config_hash
                )
        except SQLAlchemyError as exc:
            reason = getattr(exc, "orig", None) or exc
            raise DatabaseError(f"could not store the run in {self.display_url}: {reason}") from None

    def _add_run(
        self,
        s: Session,
        result: Any,
        *,
        sweep_id: int | None,
        track: str,
        role: str,
        trial: int | None,
        config_hash: str | None,
    ) -> int:
        """Add a run's row and metric rows inside the caller's transaction; returns the run id."""
        spec = result.spec
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
            peak_memory_above_baseline_bytes=result.peak_memory_above_baseline_bytes,
            flops_per_step=_clean(result.flops_per_step),
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

    def save_approx_rows(self, run_id: int, rows: list[dict[str, Any]]) -> None:
        """Approximation-quality rows of one reference run, in one transaction."""
        with self.session() as s, s.begin():
            if rows:
                s.execute(insert(ApproxQuality), [dict(_clean(r), run_id=run_id) for r in rows])

    def save_approx(
        self,
        reference: Any,
        rows: list[dict[str, Any]],
        *,
        sweep_name: str,
        sweep_spec: dict[str, Any],
        role: str = "approx_reference",
        tag: str | None = None,
    ) -> tuple[int, int]:
        """An approximation-quality evaluation in ONE transaction: a ``sweeps`` row (kind
        ``approx``), the reference run (``role``) and its ``approx_quality`` rows.

        Returns ``(sweep_id, run_id)``.
        """
        started = _parse_time(reference.started_at) or _now()
        try:
            with self.session() as s, s.begin():
                env_id = self.environment_id(s, reference.environment)
                sweep = Sweep(
                    name=sweep_name,
                    kind="approx",
                    track="untuned",
                    tag=tag,
                    spec=_clean(sweep_spec),
                    status="finished",
                    environment_id=env_id,
                    started_at=started,
                    finished_at=_now(),
                )
                s.add(sweep)
                s.flush()
                run_id = self._add_run(
                    s, reference, sweep_id=sweep.id, track="untuned", role=role, trial=None, config_hash=None
                )
                if rows:
                    s.execute(insert(ApproxQuality), [dict(_clean(r), run_id=run_id) for r in rows])
                return sweep.id, run_id
        except SQLAlchemyError as exc:
            reason = getattr(exc, "orig", None) or exc
            raise DatabaseError(f"could not store the approximation rows in {self.display_url}: {reason}") from None

    def finished_keys(self, statuses: frozenset[str] | None = None) -> set[str]:
        """Keys of runs that finished (by default every status a sweep does not retry)."""
        from db.statuses import FINISHED_STATUSES

        wanted = statuses or FINISHED_STATUSES
        with self.session() as s:
            return set(s.scalars(select(Run.key).where(Run.status.in_(wanted), Run.key.is_not(None))))

    def dispose(self) -> None:
        self.engine.dispose()

    # ------------------------------------------------------------------ sweeps: exactly-once writes
    def _lock_key(self, conn: Connection, key: str) -> None:
        """Serialise writers of ``key`` until the end of the transaction on ``conn``.

        PostgreSQL: a transaction-scoped advisory lock on a 63-bit hash of the key (writers of
        other keys are not blocked). SQLite: ``BEGIN IMMEDIATE`` takes the database's write lock
        before the duplicate check reads, so check and insert are one atomic step (other
        writers wait up to the busy timeout).
        """
        dialect = conn.dialect.name
        if dialect == "sqlite":
            conn.exec_driver_sql("BEGIN IMMEDIATE")
        elif dialect == "postgresql":
            lock_id = int.from_bytes(hashlib.sha256(f"ngbench-run:{key}".encode()).digest()[:8], "big", signed=True)
            conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": lock_id})

    def save_run_once(
        self,
        result: Any,
        *,
        sweep_id: int | None = None,
        scope: str = "sweep",
        track: str = "untuned",
        role: str = "run",
        trial: int | None = None,
        config_hash: str | None = None,
    ) -> tuple[int | None, bool]:
        """Store ``result`` unless its key already finished; ``(run id, stored)``.

        "Already finished" means a row with the same key and a status in
        ``db.statuses.FINISHED_STATUSES`` in the same sweep (``scope="sweep"``) or anywhere in
        the database (``scope="global"``); then nothing is written and the existing row's id
        is returned with ``stored=False``. The check and the insert happen in one transaction
        under a per-key lock, so concurrent sweeps never store a finished key twice. Results
        with a retry status (``error``, ``crashed``, ``interrupted``) are stored as attempts
        unless the key already finished.
        """
        from db.statuses import FINISHED_STATUSES

        if scope not in ("sweep", "global"):
            raise ValueError(f"scope must be 'sweep' or 'global', got {scope!r}")
        key = result.key
        existing = None
        if key is not None:
            existing = select(Run.id).where(Run.key == key, Run.status.in_(FINISHED_STATUSES))
            if scope == "sweep":
                existing = existing.where(Run.sweep_id == sweep_id)
        return self._insert_unless(
            key, existing, result, sweep_id=sweep_id, track=track, role=role, trial=trial, config_hash=config_hash
        )

    def save_run_unless_stored(
        self,
        result: Any,
        *,
        sweep_id: int | None = None,
        track: str = "untuned",
        role: str = "run",
        trial: int | None = None,
        config_hash: str | None = None,
    ) -> tuple[int, bool]:
        """Store one attempt unless that very attempt is stored; ``(run id, stored)``.

        An attempt is identified by its key, suite, optimizer, backend, seed, status, step count
        and start and finish times: storing a recovered result twice (``ngbench db recover``
        run again) stores it once. Check and insert are one step under the key's lock.
        """
        spec = result.spec
        ident = f"{result.key}|{spec.suite}|{spec.optimizer}|{spec.backend}|{spec.seed}|{result.started_at}"
        existing = select(Run.id).where(
            Run.suite == spec.suite,
            Run.optimizer == spec.optimizer,
            Run.backend == spec.backend,
            Run.seed == spec.seed,
            Run.status == result.status,
            Run.steps == result.steps,
            Run.key.is_(None) if result.key is None else Run.key == result.key,
            Run.started_at.is_(None) if result.started_at is None else Run.started_at == _parse_time(result.started_at),
            Run.finished_at.is_(None)
            if result.finished_at is None
            else Run.finished_at == _parse_time(result.finished_at),
        )
        return self._insert_unless(
            ident, existing, result, sweep_id=sweep_id, track=track, role=role, trial=trial, config_hash=config_hash
        )

    def _insert_unless(self, lock: str | None, existing: Any, result: Any, **where: Any) -> tuple[int, bool]:
        """Insert ``result`` unless the query ``existing`` finds a run; check and insert are one
        transaction under ``lock``'s key lock. ``(run id, inserted)``."""
        try:
            with self.engine.connect() as conn:
                if lock is not None:
                    self._lock_key(conn, lock)
                with Session(bind=conn, expire_on_commit=False) as s:
                    if existing is not None:
                        found = s.scalar(existing.order_by(Run.id).limit(1))
                        if found is not None:
                            conn.rollback()
                            return found, False
                    run_id = self._add_run(s, result, **where)
                    s.flush()
                conn.commit()
                return run_id, True
        except SQLAlchemyError as exc:
            reason = getattr(exc, "orig", None) or exc
            raise DatabaseError(f"could not store the run in {self.display_url}: {reason}") from None

    def sweep_exists(self, sweep_id: int) -> bool:
        with self.session() as s:
            return s.scalar(select(Sweep.id).where(Sweep.id == sweep_id)) is not None

    def finished_keys_among(self, keys: Iterable[str], *, sweep_id: int | None = None) -> set[str]:
        """Which of ``keys`` finished (``FINISHED_STATUSES``), in sweep ``sweep_id`` or anywhere."""
        from db.statuses import FINISHED_STATUSES

        wanted = sorted(set(keys))
        out: set[str] = set()
        with self.session() as s:
            for i in range(0, len(wanted), 500):
                q = select(Run.key).where(Run.key.in_(wanted[i : i + 500]), Run.status.in_(FINISHED_STATUSES))
                if sweep_id is not None:
                    q = q.where(Run.sweep_id == sweep_id)
                out.update(k for k in s.scalars(q) if k is not None)
        return out

    def latest_sweep(self, name: str, kind: str = "sweep") -> int | None:
        """Id of the newest sweep called ``name`` of ``kind``, or ``None``."""
        with self.session() as s:
            return s.scalar(
                select(Sweep.id).where(Sweep.name == name, Sweep.kind == kind).order_by(Sweep.id.desc()).limit(1)
            )

    def reopen_sweep(self, sweep_id: int) -> None:
        """Mark a sweep running again (``--resume``)."""
        with self.session() as s, s.begin():
            s.execute(update(Sweep).where(Sweep.id == sweep_id).values(status="running", finished_at=None))

    def set_sweep_environment(self, sweep_id: int, record: dict[str, Any]) -> int | None:
        """Attach the environment ``record`` (a fingerprint) to a sweep; returns its id."""
        with self.session() as s, s.begin():
            env_id = self.environment_id(s, record)
            s.execute(update(Sweep).where(Sweep.id == sweep_id).values(environment_id=env_id))
            return env_id

    def set_sweep_report(self, sweep_id: int, report: dict[str, Any]) -> None:
        """Store a nightly regression report (``Sweep.report`` format) on its sweep."""
        with self.session() as s, s.begin():
            s.execute(update(Sweep).where(Sweep.id == sweep_id).values(report=_clean(report)))


def open_store(db: str | os.PathLike[str] | None = None, *, writable: bool = False) -> Store:
    """Connect to ``db`` (default: ``NGBENCH_DB_URL`` or ``./ngbench.db``), migrated to head.

    ``writable``: also run the storage pre-flight (:func:`db.checks.preflight`: schema, integrity,
    a rolled-back write), so a command that computes before it stores refuses a database that
    could not take its results before any work starts.
    """
    engine, url = connect(db)
    if writable:
        try:
            preflight(engine, url)
        except DatabaseError:
            engine.dispose()
            raise
    return Store(engine, url)
