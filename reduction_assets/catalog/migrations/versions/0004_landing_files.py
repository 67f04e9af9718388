"""The landing sensor's memory moves from its cursor into the catalog.

Revision ID: 0004
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "landing_files",
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("size_bytes", sa.BigInteger(), nullable=False),
        sa.Column("mtime_ns", sa.BigInteger(), nullable=False),
        sa.Column("partition", sa.String(length=64), nullable=True),
        sa.Column("run_key", sa.String(length=160), nullable=False),
        sa.Column("requested_by", sa.String(length=32), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("requested_at", sa.DateTime(), nullable=False),
        sa.Column("retry_at", sa.DateTime(), nullable=True),
        sa.Column("run_id", sa.String(length=64), nullable=True),
        sa.PrimaryKeyConstraint("name"),
    )
    op.create_index("ix_landing_files_state", "landing_files", ["state"])


def downgrade() -> None:
    op.drop_index("ix_landing_files_state", table_name="landing_files")
    op.drop_table("landing_files")
