"""Archive records: one row per archived version of a file.

Revision ID: 0006
Revises: 0005
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "archive_records",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=512), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("level", sa.String(length=16), nullable=False),
        sa.Column("source_kind", sa.String(length=16), nullable=False),
        sa.Column("source_id", sa.Integer(), nullable=False),
        sa.Column("site", sa.String(length=128), nullable=True),
        sa.Column("telescope", sa.String(length=64), nullable=True),
        sa.Column("instrument", sa.String(length=32), nullable=False),
        sa.Column("night", sa.Date(), nullable=False),
        sa.Column("date_obs", sa.DateTime(), nullable=True),
        sa.Column("proposal", sa.String(length=64), nullable=True),
        sa.Column("target", sa.String(length=128), nullable=True),
        sa.Column("exptime", sa.Float(), nullable=True),
        sa.Column("filter", sa.String(length=32), nullable=True),
        sa.Column("configuration_type", sa.String(length=32), nullable=True),
        sa.Column("related", sa.JSON(), nullable=False),
        sa.Column("public_date", sa.Date(), nullable=False),
        sa.Column("footprint", sa.JSON(), nullable=True),
        sa.Column("size_bytes", sa.BigInteger(), nullable=False),
        sa.Column("md5", sa.String(length=32), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("object_key", sa.String(length=1024), nullable=False),
        sa.Column("archived_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("name", "version", name="uq_archive_records_version"),
    )
    op.create_index("ix_archive_records_partition", "archive_records", ["instrument", "night"])
    op.create_index("ix_archive_records_md5", "archive_records", ["md5"])


def downgrade() -> None:
    op.drop_index("ix_archive_records_md5", table_name="archive_records")
    op.drop_index("ix_archive_records_partition", table_name="archive_records")
    op.drop_table("archive_records")
