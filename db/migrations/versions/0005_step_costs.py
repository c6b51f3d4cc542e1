"""step_costs: stored rows of the step-cost benchmark (median step, ratio to SGD, floor, efficiency)

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-03 13:30:00.000000
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "step_costs",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("backend", sa.String(length=32), nullable=False),
        sa.Column("problem", sa.String(length=128), nullable=False),
        sa.Column("adapter", sa.String(length=128), nullable=False),
        sa.Column("status", sa.Text(), nullable=False),
        sa.Column("params", sa.Integer(), nullable=True),
        sa.Column("median_step_s", sa.Float(), nullable=True),
        sa.Column("p10_step_s", sa.Float(), nullable=True),
        sa.Column("p90_step_s", sa.Float(), nullable=True),
        sa.Column("ratio_to_sgd", sa.Float(), nullable=True),
        sa.Column("floor_s", sa.Float(), nullable=True),
        sa.Column("efficiency", sa.Float(), nullable=True),
        sa.Column("passes", sa.JSON(), nullable=False),
        sa.Column("rounds", sa.Integer(), nullable=True),
        sa.Column("threads", sa.Integer(), nullable=True),
        sa.Column("machine", sa.Text(), nullable=True),
        sa.Column("git_commit", sa.String(length=64), nullable=True),
        sa.Column("git_dirty", sa.Boolean(), nullable=True),
        sa.Column("measured_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_step_costs_adapter", "step_costs", ["adapter", "backend", "problem"])


def downgrade() -> None:
    op.drop_index("ix_step_costs_adapter", table_name="step_costs")
    op.drop_table("step_costs")
