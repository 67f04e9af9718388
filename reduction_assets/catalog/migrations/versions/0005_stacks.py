"""Stacks and their members.

Revision ID: 0005
Revises: 0004
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "stacks",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("instrument", sa.String(length=32), nullable=False),
        sa.Column("night", sa.Date(), nullable=False),
        sa.Column("group_key", sa.String(length=256), nullable=False),
        sa.Column("target", sa.String(length=128), nullable=False),
        sa.Column("filter", sa.String(length=32), nullable=False),
        sa.Column("binning", sa.String(length=8), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("path", sa.String(length=512), nullable=True),
        sa.Column("checksum", sa.String(length=64), nullable=True),
        sa.Column("fingerprint", sa.String(length=64), nullable=False),
        sa.Column("software_version", sa.String(length=32), nullable=False),
        sa.Column("n_members", sa.Integer(), nullable=False),
        sa.Column("reference_product_id", sa.Integer(), nullable=True),
        sa.Column("exptime", sa.Float(), nullable=False),
        sa.Column("statistics", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(["reference_product_id"], ["products.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("instrument", "night", "group_key", name="uq_stacks_group"),
    )
    op.create_index("ix_stacks_partition", "stacks", ["instrument", "night"])
    op.create_table(
        "stack_members",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("stack_id", sa.Integer(), nullable=False),
        sa.Column("product_id", sa.Integer(), nullable=False),
        sa.Column("product_fingerprint", sa.String(length=64), nullable=False),
        sa.Column("included", sa.Boolean(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("weight", sa.Float(), nullable=True),
        sa.Column("scale", sa.Float(), nullable=True),
        sa.Column("background_offset", sa.Float(), nullable=True),
        sa.Column("scale_method", sa.String(length=32), nullable=True),
        sa.Column("wcs_offset_arcsec", sa.Float(), nullable=True),
        sa.Column("matched_sources", sa.Integer(), nullable=True),
        sa.ForeignKeyConstraint(["stack_id"], ["stacks.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["product_id"], ["products.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("stack_id", "product_id", name="uq_stack_members"),
    )
    op.create_index("ix_stack_members_stack_id", "stack_members", ["stack_id"])
    op.create_index("ix_stack_members_product_id", "stack_members", ["product_id"])


def downgrade() -> None:
    op.drop_index("ix_stack_members_product_id", table_name="stack_members")
    op.drop_index("ix_stack_members_stack_id", table_name="stack_members")
    op.drop_table("stack_members")
    op.drop_index("ix_stacks_partition", table_name="stacks")
    op.drop_table("stacks")
