"""What the catalog says is stored, and marking products and masters for rebuilding.

A master or product whose file is damaged is *stale*: its fingerprint is emptied, so the next run of
its partition rebuilds it (the fingerprint can never match), and products that used a stale master
become stale too, because they were made from the damaged file.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from sqlalchemy import or_, select, update
from sqlalchemy.orm import Session

from reduction_assets.catalog.models import (
    Calibration,
    Product,
    Quarantine,
    RawDuplicate,
    RawFrame,
    Stack,
    utcnow,
)

STALE = ""  # the fingerprint of a product or master that must be rebuilt

RAW, QUARANTINE, PRODUCTS = "raw", "quarantine", "products"
STACK = "stack"  # the kind of a stored stack


@dataclass(frozen=True)
class StoredObject:
    """One file the catalog says a store holds, with the checksum it must have."""

    store: str  # RAW, QUARANTINE or PRODUCTS
    key: str
    checksum: str
    kind: str  # raw, quarantine, master, reduced, stack
    row_id: int
    instrument: str | None
    night: dt.date | None
    sources: tuple[str, ...] = ()  # landing names that held this content (raw and quarantine)


def stored_objects(session: Session) -> list[StoredObject]:
    """Every stored file the catalog knows, raw copies first."""
    objects: list[StoredObject] = []
    duplicates: dict[int, list[str]] = {}
    for raw_id, name in session.execute(select(RawDuplicate.raw_frame_id, RawDuplicate.original_name)):
        duplicates.setdefault(raw_id, []).append(name)
    for row in session.scalars(select(RawFrame).order_by(RawFrame.id)):
        objects.append(
            StoredObject(
                RAW,
                row.store_path,
                row.checksum,
                "raw",
                row.id,
                row.instrument,
                row.night,
                (row.original_name, *duplicates.get(row.id, [])),
            )
        )
    for row in session.scalars(
        select(Quarantine).where(Quarantine.copy_path.is_not(None)).order_by(Quarantine.id)
    ):
        objects.append(
            StoredObject(
                QUARANTINE,
                row.copy_path,
                row.checksum or "",
                "quarantine",
                row.id,
                row.instrument,
                row.night,
                (row.original_path,),
            )
        )
    for row in session.scalars(select(Calibration).order_by(Calibration.id)):
        objects.append(
            StoredObject(PRODUCTS, row.path, row.checksum, "master", row.id, row.instrument, row.night)
        )
    for row in session.scalars(select(Product).where(Product.path.is_not(None)).order_by(Product.id)):
        objects.append(
            StoredObject(PRODUCTS, row.path, row.checksum or "", row.kind, row.id, row.instrument, row.night)
        )
    for row in session.scalars(select(Stack).where(Stack.path.is_not(None)).order_by(Stack.id)):
        objects.append(
            StoredObject(PRODUCTS, row.path, row.checksum or "", STACK, row.id, row.instrument, row.night)
        )
    return objects


def made_with(calibration_id: int):
    """The condition on products that were reduced with a master."""
    return or_(
        Product.bias_id == calibration_id,
        Product.dark_id == calibration_id,
        Product.flat_id == calibration_id,
    )


def mark_products_of_stale(session: Session, calibration_id: int) -> int:
    """Mark every product made with a master for rebuilding (the master stays as it is); returns
    how many."""
    result = session.execute(
        update(Product).where(made_with(calibration_id)).values(fingerprint=STALE, updated_at=utcnow())
    )
    return result.rowcount or 0


def mark_calibration_stale(session: Session, calibration_id: int) -> int:
    """Mark a master for rebuilding, and every product made with it; returns the products marked."""
    session.execute(
        update(Calibration)
        .where(Calibration.id == calibration_id)
        .values(fingerprint=STALE, updated_at=utcnow())
    )
    return mark_products_of_stale(session, calibration_id)


FAILED_CHECK = "failed check "  # how a master that failed a blocking check is marked bad


def record_check(session: Session, calibration_id: int, failure: str | None) -> int:
    """Record a blocking check's verdict on a master: a failure marks it bad (so it is never chosen)
    and the products made with it stale (so they are redone with the next best master); a pass
    lifts a bad mark that an earlier failed check set, never one an operator set. Returns the
    products marked."""
    row = session.get(Calibration, calibration_id)
    if row is None:
        return 0
    if failure is None:
        if row.bad and (row.bad_reason or "").startswith(FAILED_CHECK):
            row.bad, row.bad_reason = False, None
        return 0
    row.bad, row.bad_reason = True, FAILED_CHECK + failure
    return mark_products_of_stale(session, calibration_id)


def mark_product_stale(session: Session, product_id: int) -> None:
    session.execute(
        update(Product).where(Product.id == product_id).values(fingerprint=STALE, updated_at=utcnow())
    )


def mark_stack_stale(session: Session, stack_id: int) -> None:
    session.execute(update(Stack).where(Stack.id == stack_id).values(fingerprint=STALE, updated_at=utcnow()))


@dataclass(frozen=True)
class StalePartition:
    instrument: str
    night: dt.date
    masters: bool  # a master of this partition must be rebuilt (else only reduced frames and stacks)
    version: str  # changes whenever something in the partition is marked stale again


def stale_partitions(session: Session) -> list[StalePartition]:
    """Partitions holding a stale master or product, oldest night first."""
    found: dict[tuple[str, dt.date], tuple[bool, dt.datetime]] = {}
    for model, is_master in ((Calibration, True), (Product, False), (Stack, False)):
        rows = session.execute(
            select(model.instrument, model.night, model.updated_at).where(model.fingerprint == STALE)
        )
        for instrument, night, updated in rows:
            masters, latest = found.get((instrument, night), (False, updated))
            found[(instrument, night)] = (masters or is_master, max(latest, updated))
    ordered = sorted(found.items(), key=lambda item: (item[0][1], item[0][0]))
    return [
        StalePartition(instrument, night, masters, latest.isoformat())
        for (instrument, night), (masters, latest) in ordered
    ]


@dataclass(frozen=True)
class UnreducedFrame:
    """A science frame that is not bad and has no product row: never reduced, or its row was lost."""

    id: int
    instrument: str
    night: dt.date
    store_path: str


def science_frames_without_products(session: Session) -> list[UnreducedFrame]:
    """Science frames, not marked bad, that no product row stands for."""
    recorded = select(Product.raw_frame_id)
    rows = session.execute(
        select(RawFrame.id, RawFrame.instrument, RawFrame.night, RawFrame.store_path)
        .where(RawFrame.frame_type == "science", RawFrame.bad.is_(False), RawFrame.id.not_in(recorded))
        .order_by(RawFrame.id)
    )
    return [UnreducedFrame(*row) for row in rows]
