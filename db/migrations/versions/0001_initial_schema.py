"""initial schema

Revision ID: 0001
Revises:
Create Date: 2026-11-23 12:12:48.943854
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "environments",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("fingerprint", sa.String(length=64), nullable=False),
        sa.Column("hostname", sa.String(length=255), nullable=True),
        sa.Column("device_kind", sa.String(length=32), nullable=True),
        sa.Column("device_name", sa.String(length=255), nullable=True),
        sa.Column("cpu", sa.String(length=255), nullable=True),
        sa.Column("python", sa.String(length=32), nullable=True),
        sa.Column("torch_version", sa.String(length=64), nullable=True),
        sa.Column("jax_version", sa.String(length=64), nullable=True),
        sa.Column("cuda", sa.String(length=64), nullable=True),
        sa.Column("driver", sa.String(length=64), nullable=True),
        sa.Column("git_commit", sa.String(length=64), nullable=True),
        sa.Column("git_dirty", sa.Boolean(), nullable=True),
        sa.Column("details", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("fingerprint"),
    )
    op.create_table(
        "sweeps",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=255), nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("track", sa.String(length=32), nullable=False),
        sa.Column("tag", sa.String(length=255), nullable=True),
        sa.Column("spec", sa.JSON(), nullable=False),
        sa.Column("status", sa.String(length=32), nullable=False),
        sa.Column("environment_id", sa.Integer(), nullable=True),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("report", sa.JSON(), nullable=True),
        sa.ForeignKeyConstraint(
            ["environment_id"],
            ["environments.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("sweeps", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_sweeps_name"), ["name"], unique=False)

    op.create_table(
        "runs",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("key", sa.String(length=64), nullable=True),
        sa.Column("sweep_id", sa.Integer(), nullable=True),
        sa.Column("environment_id", sa.Integer(), nullable=True),
        sa.Column("suite", sa.String(length=128), nullable=False),
        sa.Column("suite_version", sa.Integer(), nullable=True),
        sa.Column("optimizer", sa.String(length=128), nullable=False),
        sa.Column("adapter_version", sa.String(length=64), nullable=True),
        sa.Column("backend", sa.String(length=32), nullable=False),
        sa.Column("seed", sa.Integer(), nullable=False),
        sa.Column("dtype", sa.String(length=16), nullable=False),
        sa.Column("device", sa.String(length=64), nullable=True),
        sa.Column("status", sa.String(length=32), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("tag", sa.String(length=255), nullable=True),
        sa.Column("track", sa.String(length=32), nullable=False),
        sa.Column("role", sa.String(length=16), nullable=False),
        sa.Column("trial", sa.Integer(), nullable=True),
        sa.Column("config_hash", sa.String(length=64), nullable=True),
        sa.Column("hparams", sa.JSON(), nullable=False),
        sa.Column("spec", sa.JSON(), nullable=False),
        sa.Column("steps", sa.Integer(), nullable=False),
        sa.Column("initial_train_loss", sa.Float(), nullable=True),
        sa.Column("final_train_loss", sa.Float(), nullable=True),
        sa.Column("val_metric", sa.String(length=64), nullable=True),
        sa.Column("best_val_metric", sa.Float(), nullable=True),
        sa.Column("final_metrics", sa.JSON(), nullable=False),
        sa.Column("target", sa.String(length=128), nullable=True),
        sa.Column("steps_to_target", sa.Integer(), nullable=True),
        sa.Column("time_to_target_s", sa.Float(), nullable=True),
        sa.Column("train_time_s", sa.Float(), nullable=True),
        sa.Column("compile_time_s", sa.Float(), nullable=True),
        sa.Column("init_time_s", sa.Float(), nullable=True),
        sa.Column("eval_time_s", sa.Float(), nullable=True),
        sa.Column("step_time_median_s", sa.Float(), nullable=True),
        sa.Column("step_time_mean_s", sa.Float(), nullable=True),
        sa.Column("step_time_p10_s", sa.Float(), nullable=True),
        sa.Column("step_time_p90_s", sa.Float(), nullable=True),
        sa.Column("peak_memory_bytes", sa.BigInteger(), nullable=True),
        sa.Column("memory_kind", sa.String(length=64), nullable=True),
        sa.Column("passes_per_step", sa.JSON(), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["environment_id"],
            ["environments.id"],
        ),
        sa.ForeignKeyConstraint(
            ["sweep_id"],
            ["sweeps.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("runs", schema=None) as batch_op:
        batch_op.create_index("ix_runs_key_status", ["key", "status"], unique=False)
        batch_op.create_index(batch_op.f("ix_runs_status"), ["status"], unique=False)
        batch_op.create_index("ix_runs_suite_optimizer_backend", ["suite", "optimizer", "backend"], unique=False)
        batch_op.create_index(batch_op.f("ix_runs_sweep_id"), ["sweep_id"], unique=False)

    op.create_table(
        "approx_quality",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("run_id", sa.Integer(), nullable=False),
        sa.Column("checkpoint", sa.Integer(), nullable=False),
        sa.Column("step", sa.Integer(), nullable=False),
        sa.Column("method", sa.String(length=128), nullable=False),
        sa.Column("damping", sa.Float(), nullable=True),
        sa.Column("batch", sa.Integer(), nullable=False),
        sa.Column("gamma", sa.Float(), nullable=True),
        sa.Column("gamma_ratio_sgd", sa.Float(), nullable=True),
        sa.Column("dtg", sa.Float(), nullable=True),
        sa.Column("dtgd", sa.Float(), nullable=True),
        sa.Column("update_norm", sa.Float(), nullable=True),
        sa.Column("grad_norm_imbalance", sa.Float(), nullable=True),
        sa.Column("cos_ng", sa.Float(), nullable=True),
        sa.Column("rel_err_ng", sa.Float(), nullable=True),
        sa.Column("extra", sa.JSON(), nullable=False),
        sa.ForeignKeyConstraint(["run_id"], ["runs.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("approx_quality", schema=None) as batch_op:
        batch_op.create_index("ix_approx_run_checkpoint", ["run_id", "checkpoint"], unique=False)

    op.create_table(
        "metrics",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("run_id", sa.Integer(), nullable=False),
        sa.Column("step", sa.Integer(), nullable=False),
        sa.Column("time_s", sa.Float(), nullable=False),
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("value", sa.Float(), nullable=True),
        sa.ForeignKeyConstraint(["run_id"], ["runs.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("metrics", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_metrics_run_id"), ["run_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("metrics", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_metrics_run_id"))

    op.drop_table("metrics")
    with op.batch_alter_table("approx_quality", schema=None) as batch_op:
        batch_op.drop_index("ix_approx_run_checkpoint")

    op.drop_table("approx_quality")
    with op.batch_alter_table("runs", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_runs_sweep_id"))
        batch_op.drop_index("ix_runs_suite_optimizer_backend")
        batch_op.drop_index(batch_op.f("ix_runs_status"))
        batch_op.drop_index("ix_runs_key_status")

    op.drop_table("runs")
    with op.batch_alter_table("sweeps", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_sweeps_name"))

    op.drop_table("sweeps")
    op.drop_table("environments")
