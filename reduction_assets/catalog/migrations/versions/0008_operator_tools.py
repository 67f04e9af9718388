"""Landing routes (a partition's files without a landing scan), the operator audit trail and the
partitions waiting to run again.

Revision ID: 0008
Revises: 0007
"""

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "landing_routes",
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("size_bytes", sa.BigInteger(), nullable=False),
        sa.Column("mtime_ns", sa.BigInteger(), nullable=False),
        sa.Column("instrument", sa.String(length=32), nullable=True),
        sa.Column("night", sa.Date(), nullable=True),
        sa.Column("routed_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("name"),
    )
    op.create_index("ix_landing_routes_partition", "landing_routes", ["instrument", "night"])
    op.create_table(
        "operator_actions",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("acted_at", sa.DateTime(), nullable=False),
        sa.Column("operator", sa.String(length=128), nullable=False),
        sa.Column("action", sa.String(length=32), nullable=False),
        sa.Column("target_kind", sa.String(length=16), nullable=False),
        sa.Column("target_id", sa.Integer(), nullable=True),
        sa.Column("target", sa.Text(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("details", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_operator_actions_at", "operator_actions", ["acted_at"])
    op.create_table(
        "rework",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("instrument", sa.String(length=32), nullable=False),
        sa.Column("night", sa.Date(), nullable=False),
        sa.Column("level", sa.String(length=16), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("action_id", sa.Integer(), nullable=True),
        sa.Column("requested_at", sa.DateTime(), nullable=False),
        sa.Column("not_before", sa.DateTime(), nullable=True),
        sa.Column("done_at", sa.DateTime(), nullable=True),
        sa.ForeignKeyConstraint(["action_id"], ["operator_actions.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_rework_pending", "rework", ["done_at"])


def downgrade() -> None:
    op.drop_index("ix_rework_pending", table_name="rework")
    op.drop_table("rework")
    op.drop_index("ix_operator_actions_at", table_name="operator_actions")
    op.drop_table("operator_actions")
    op.drop_index("ix_landing_routes_partition", table_name="landing_routes")
    op.drop_table("landing_routes")
