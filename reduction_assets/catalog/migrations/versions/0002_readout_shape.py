"""The readout shape joins the calibration key: 512x512 frames must not take 128x128 masters.

Existing masters learn their readout from the raw frames they were made of (the first input's shape).

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("calibrations", schema=None) as batch_op:
        batch_op.add_column(sa.Column("readout", sa.String(length=16), server_default="", nullable=False))
        batch_op.drop_constraint("uq_calibrations_identity", type_="unique")
        batch_op.drop_index("ix_calibrations_lookup")
        batch_op.create_index(
            "ix_calibrations_lookup", ["type", "instrument", "binning", "readout", "filter", "night"]
        )
        batch_op.create_unique_constraint(
            "uq_calibrations_key", ["type", "instrument", "night", "binning", "readout", "filter", "exptime"]
        )
    connection = op.get_bind()
    calibrations = sa.table(
        "calibrations", sa.column("id"), sa.column("inputs", sa.JSON), sa.column("readout")
    )
    raw = sa.table("raw_frames", sa.column("checksum"), sa.column("naxis1"), sa.column("naxis2"))
    for row in connection.execute(sa.select(calibrations.c.id, calibrations.c.inputs)).all():
        first = (row.inputs or [{}])[0].get("checksum")
        shape = connection.execute(
            sa.select(raw.c.naxis2, raw.c.naxis1).where(raw.c.checksum == first)
        ).first()
        if shape is not None:
            connection.execute(
                sa.update(calibrations)
                .where(calibrations.c.id == row.id)
                .values(readout=f"{shape.naxis2}x{shape.naxis1}")
            )


def downgrade() -> None:
    with op.batch_alter_table("calibrations", schema=None) as batch_op:
        batch_op.drop_constraint("uq_calibrations_key", type_="unique")
        batch_op.drop_index("ix_calibrations_lookup")
        batch_op.create_index("ix_calibrations_lookup", ["type", "instrument", "binning", "filter", "night"])
        batch_op.create_unique_constraint(
            "uq_calibrations_identity", ["type", "instrument", "night", "binning", "filter", "exptime"]
        )
        batch_op.drop_column("readout")
