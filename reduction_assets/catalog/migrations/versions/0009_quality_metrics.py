"""The quality metrics' time series.

Revision ID: 0009
Revises: 0008
"""

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "quality_metrics",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("instrument", sa.String(length=32), nullable=False),
        sa.Column("night", sa.Date(), nullable=False),
        sa.Column("subject", sa.String(length=512), nullable=False),
        sa.Column("subject_kind", sa.String(length=16), nullable=False),
        sa.Column("frame_type", sa.String(length=16), nullable=False),
        sa.Column("filter", sa.String(length=32), nullable=False),
        sa.Column("metric", sa.String(length=48), nullable=False),
        sa.Column("value", sa.Float(), nullable=True),
        sa.Column("unit", sa.String(length=24), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("time", sa.DateTime(), nullable=False),
        sa.Column("recorded_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("subject", "metric", name="uq_quality_metrics_subject"),
    )
    op.create_index("ix_quality_metrics_series", "quality_metrics", ["metric", "instrument", "time"])
    op.create_index("ix_quality_metrics_partition", "quality_metrics", ["instrument", "night"])


def downgrade() -> None:
    op.drop_index("ix_quality_metrics_partition", table_name="quality_metrics")
    op.drop_index("ix_quality_metrics_series", table_name="quality_metrics")
    op.drop_table("quality_metrics")
