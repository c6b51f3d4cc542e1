"""SQLAlchemy models: environments, sweeps, runs, metrics (long format), approx_quality, step_costs.

The schema is owned by the Alembic migrations in ``db/migrations``; these models must match
them (a test compares ``alembic upgrade head`` against ``Base.metadata``).

``runs`` holds one row per run attempt: plain, indexed columns for what the site and the
sweeps filter on (suite, optimizer, backend, seed, status, tag, key), the summary figures
as columns, and the full spec, hyperparameters and per-step pass counts as JSON.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, ClassVar

from sqlalchemy import JSON, BigInteger, Boolean, DateTime, Float, ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

SCHEMA_VERSION = "0001"


class Base(DeclarativeBase):
    type_annotation_map: ClassVar[dict[Any, Any]] = {dict[str, Any]: JSON, list[Any]: JSON}


class Environment(Base):
    __tablename__ = "environments"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    fingerprint: Mapped[str] = mapped_column(String(64), unique=True)
    hostname: Mapped[str | None] = mapped_column(String(255))
    device_kind: Mapped[str | None] = mapped_column(String(32))
    device_name: Mapped[str | None] = mapped_column(String(255))
    cpu: Mapped[str | None] = mapped_column(String(255))
    python: Mapped[str | None] = mapped_column(String(32))
    torch_version: Mapped[str | None] = mapped_column(String(64))
    jax_version: Mapped[str | None] = mapped_column(String(64))
    cuda: Mapped[str | None] = mapped_column(String(64))
    driver: Mapped[str | None] = mapped_column(String(64))
    git_commit: Mapped[str | None] = mapped_column(String(64))
    git_dirty: Mapped[bool | None] = mapped_column(Boolean)
    details: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class Sweep(Base):
    __tablename__ = "sweeps"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(255), index=True)
    #: ``sweep``, ``nightly``, ``tune`` or ``approx``.
    kind: Mapped[str] = mapped_column(String(32), default="sweep")
    #: ``untuned`` or ``tuned`` (ranking track).
    track: Mapped[str] = mapped_column(String(32), default="untuned")
    tag: Mapped[str | None] = mapped_column(String(255))
    spec: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    status: Mapped[str] = mapped_column(String(32), default="running")
    environment_id: Mapped[int | None] = mapped_column(ForeignKey("environments.id"))
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    #: Nightly regression report against the previous nightly (``harness.nightly``)::
    #:
    #:   {"sweep_id": int, "previous_sweep_id": int | None, "generated_at": iso-8601 str,
    #:    "settings": {thresholds and test parameters}, "changes": {software changes},
    #:    "items": [{"suite", "optimizer", "backend", "metric" (step_time_median_s,
    #:               peak_memory_bytes, time_to_target_s, final_train_loss, failed_runs),
    #:               "previous", "current", "ratio", "threshold", "p_value" (or null),
    #:               "flag": "slowdown" | "speedup" | "regression" | "improvement" |
    #:               "unchanged", "detail", "config" (hyperparameter overrides),
    #:               "underpowered" (too few seeds for the test to reach p < alpha)}],
    #:    "summary": {"flagged", "compared", "slowdowns", "speedups", "regressions",
    #:                "improvements", "underpowered", "new_groups", "missing_groups"},
    #:    "step_cost" (only when the nightly measured the step-cost table,
    #:                 ``harness.nightly_step_cost``): {"status": "stored" | "partly stored" |
    #:                 "failed", "settings", "tables": [{"backend", "status", "rows" or
    #:                 "detail", "wall_s"}], "items": [efficiency changes]}}
    report: Mapped[dict[str, Any] | None] = mapped_column(JSON)

    runs: Mapped[list[Run]] = relationship(back_populates="sweep")


class Run(Base):
    __tablename__ = "runs"
    __table_args__ = (
        Index("ix_runs_suite_optimizer_backend", "suite", "optimizer", "backend"),
        Index("ix_runs_key_status", "key", "status"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    key: Mapped[str | None] = mapped_column(String(64))
    sweep_id: Mapped[int | None] = mapped_column(ForeignKey("sweeps.id"), index=True)
    environment_id: Mapped[int | None] = mapped_column(ForeignKey("environments.id"))
    suite: Mapped[str] = mapped_column(String(128))
    suite_version: Mapped[int | None] = mapped_column(Integer)
    optimizer: Mapped[str] = mapped_column(String(128))
    adapter_version: Mapped[str | None] = mapped_column(String(64))
    backend: Mapped[str] = mapped_column(String(32))
    seed: Mapped[int] = mapped_column(Integer)
    dtype: Mapped[str] = mapped_column(String(16), default="float32")
    device: Mapped[str | None] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(32), index=True)
    error: Mapped[str | None] = mapped_column(Text)
    tag: Mapped[str | None] = mapped_column(String(255))
    track: Mapped[str] = mapped_column(String(32), default="untuned")
    #: Tuning: the trial number within its (suite, optimizer) study, and whether this run is a
    #: re-run of the chosen configuration (``role``: ``run``, ``trial``, ``rerun``).
    role: Mapped[str] = mapped_column(String(16), default="run")
    trial: Mapped[int | None] = mapped_column(Integer)
    config_hash: Mapped[str | None] = mapped_column(String(64))
    hparams: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    spec: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    steps: Mapped[int] = mapped_column(Integer, default=0)
    initial_train_loss: Mapped[float | None] = mapped_column(Float)
    final_train_loss: Mapped[float | None] = mapped_column(Float)
    val_metric: Mapped[str | None] = mapped_column(String(64))
    best_val_metric: Mapped[float | None] = mapped_column(Float)
    final_metrics: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    target: Mapped[str | None] = mapped_column(String(128))
    steps_to_target: Mapped[int | None] = mapped_column(Integer)
    time_to_target_s: Mapped[float | None] = mapped_column(Float)
    train_time_s: Mapped[float | None] = mapped_column(Float)
    compile_time_s: Mapped[float | None] = mapped_column(Float)
    init_time_s: Mapped[float | None] = mapped_column(Float)
    eval_time_s: Mapped[float | None] = mapped_column(Float)
    step_time_median_s: Mapped[float | None] = mapped_column(Float)
    step_time_mean_s: Mapped[float | None] = mapped_column(Float)
    step_time_p10_s: Mapped[float | None] = mapped_column(Float)
    step_time_p90_s: Mapped[float | None] = mapped_column(Float)
    peak_memory_bytes: Mapped[int | None] = mapped_column(BigInteger)
    #: The timed steps' peak above the run's baseline (docs/measurement.md, "Memory").
    peak_memory_above_baseline_bytes: Mapped[int | None] = mapped_column(BigInteger)
    memory_kind: Mapped[str | None] = mapped_column(String(64))
    #: Floating-point operations of one step as the framework counts them (docs/measurement.md).
    flops_per_step: Mapped[float | None] = mapped_column(Float)
    passes_per_step: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))

    sweep: Mapped[Sweep | None] = relationship(back_populates="runs")
    environment: Mapped[Environment | None] = relationship()


class Metric(Base):
    __tablename__ = "metrics"

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"), index=True)
    step: Mapped[int] = mapped_column(Integer)
    time_s: Mapped[float] = mapped_column(Float)
    name: Mapped[str] = mapped_column(String(64))
    value: Mapped[float | None] = mapped_column(Float)


class ApproxQuality(Base):
    """One method's direction on one batch at one checkpoint (iEF paper §6, App. F)."""

    __tablename__ = "approx_quality"
    __table_args__ = (Index("ix_approx_run_checkpoint", "run_id", "checkpoint"),)

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    #: The reference-trajectory run the checkpoints come from.
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"))
    checkpoint: Mapped[int] = mapped_column(Integer)
    step: Mapped[int] = mapped_column(Integer)
    method: Mapped[str] = mapped_column(String(128))
    damping: Mapped[float | None] = mapped_column(Float)
    batch: Mapped[int] = mapped_column(Integer)
    gamma: Mapped[float | None] = mapped_column(Float)
    gamma_ratio_sgd: Mapped[float | None] = mapped_column(Float)
    dtg: Mapped[float | None] = mapped_column(Float)
    dtgd: Mapped[float | None] = mapped_column(Float)
    update_norm: Mapped[float | None] = mapped_column(Float)
    grad_norm_imbalance: Mapped[float | None] = mapped_column(Float)
    cos_ng: Mapped[float | None] = mapped_column(Float)
    rel_err_ng: Mapped[float | None] = mapped_column(Float)
    extra: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)


#: The measured columns of ``approx_quality`` in table order (without ``id`` and ``run_id``):
#: the row layout of ``harness.approx`` and of the site's approximation tables.
APPROX_COLUMNS: tuple[str, ...] = tuple(
    c.name for c in ApproxQuality.__table__.columns if c.name not in ("id", "run_id")
)


class RunLease(Base):
    """A claim on one run by one running sweep (``db.leases``): while it is live, other sweeps
    leave the run alone. ``lease_key`` is the run key (a plain sweep: results are shared by the
    whole database) or ``<sweep id>:<run key>`` (a nightly re-measures within its own sweep)."""

    __tablename__ = "run_leases"

    lease_key: Mapped[str] = mapped_column(String(96), primary_key=True)
    sweep_id: Mapped[int | None] = mapped_column(Integer)
    #: ``host:pid:token`` of the claiming process (the pid makes a dead owner visible on its host).
    owner: Mapped[str] = mapped_column(String(255), index=True)
    #: Unix seconds after which the claim is void unless renewed (a wall-clock deadline).
    expires_at: Mapped[float] = mapped_column(Float)


class StepCost(Base):
    """One row of a stored step-cost table (``benchmarks/step_cost.py --store``): an adapter's
    median step on one (backend, problem), its ratio to SGD's step in the same rounds, its floor
    (what its counted passes cost) and efficiency (step / floor), and where and when it was
    measured. Rows are appended; the site shows the newest per (backend, problem, adapter)."""

    __tablename__ = "step_costs"
    __table_args__ = (Index("ix_step_costs_adapter", "adapter", "backend", "problem"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    backend: Mapped[str] = mapped_column(String(32))
    problem: Mapped[str] = mapped_column(String(128))
    #: The adapter name, or ``adapter:preset`` for a preset.
    adapter: Mapped[str] = mapped_column(String(128))
    #: ``"ok"`` or the error that stopped the adapter's lane.
    status: Mapped[str] = mapped_column(Text, default="ok")
    params: Mapped[int | None] = mapped_column(Integer)
    median_step_s: Mapped[float | None] = mapped_column(Float)
    p10_step_s: Mapped[float | None] = mapped_column(Float)
    p90_step_s: Mapped[float | None] = mapped_column(Float)
    ratio_to_sgd: Mapped[float | None] = mapped_column(Float)
    floor_s: Mapped[float | None] = mapped_column(Float)
    efficiency: Mapped[float | None] = mapped_column(Float)
    #: Counted passes per step by kind (forward, backward, jvp, vjp, per_sample).
    passes: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    rounds: Mapped[int | None] = mapped_column(Integer)
    #: Intra-op threads of the measuring process (``--threads``; None: the framework's default).
    threads: Mapped[int | None] = mapped_column(Integer)
    #: What the table was measured on, in words (host, CPU, cores, framework versions).
    machine: Mapped[str | None] = mapped_column(Text)
    git_commit: Mapped[str | None] = mapped_column(String(64))
    git_dirty: Mapped[bool | None] = mapped_column(Boolean)
    measured_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
