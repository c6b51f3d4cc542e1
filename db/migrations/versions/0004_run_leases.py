"""run_leases: one claim per run key by a running sweep, so concurrent sweeps never run it twice

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-03 10:45:00.000000
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "run_leases",
        sa.Column("lease_key", sa.String(length=96), nullable=False),
        sa.Column("sweep_id", sa.Integer(), nullable=True),
        sa.Column("owner", sa.String(length=255), nullable=False),
        sa.Column("expires_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("lease_key"),
    )
    op.create_index("ix_run_leases_owner", "run_leases", ["owner"])


def downgrade() -> None:
    op.drop_index("ix_run_leases_owner", table_name="run_leases")
    op.drop_table("run_leases")
