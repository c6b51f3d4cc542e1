"""runs.peak_memory_above_baseline_bytes: the timed steps' peak above the run's baseline

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-03 07:20:00.000000
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("runs", sa.Column("peak_memory_above_baseline_bytes", sa.BigInteger(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("runs") as batch:
        batch.drop_column("peak_memory_above_baseline_bytes")
