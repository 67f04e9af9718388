"""Reduced science frames in the catalog: one row per raw science frame, reduced or not."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from reduction_assets.catalog.calibrations import select_for_frame
from reduction_assets.catalog.models import Product, RawFrame, utcnow
from reduction_assets.instruments import Registry

REDUCED = "reduced"  # product kind, and the status of a product that was made
NOT_REDUCIBLE = "not_reducible"  # the status of a frame that could not be reduced (with its reason)


def find_product(session: Session, frame: RawFrame, kind: str = REDUCED) -> Product | None:
    found = session.scalars(
        select(Product).where(Product.kind == kind, Product.raw_frame_id == frame.id)
    ).first()
    if found is not None:
        session.expunge(found)
    return found


def record_product(
    session: Session, frame: RawFrame, software_version: str, kind: str = REDUCED, **values: Any
) -> Product:
    """Insert or update the product of a raw frame; returns the row (flushed)."""
    row = session.scalars(
        select(Product).where(Product.kind == kind, Product.raw_frame_id == frame.id)
    ).first()
    if row is None:
        row = Product(
            kind=kind,
            raw_frame_id=frame.id,
            instrument=frame.instrument,
            night=frame.night,
            created_at=utcnow(),
        )
        session.add(row)
    for name, value in values.items():
        setattr(row, name, value)
    row.software_version = software_version
    row.updated_at = utcnow()
    session.flush()
    return row


def products_of(session: Session, instrument: str, night: dt.date, kind: str = REDUCED) -> list[Product]:
    rows = list(
        session.scalars(
            select(Product)
            .where(Product.kind == kind, Product.instrument == instrument, Product.night == night)
            .order_by(Product.id)
        )
    )
    session.expunge_all()
    return rows


def frames_to_recalibrate(
    session: Session, registry: Registry, window_nights: int
) -> dict[tuple[str, dt.date], list[tuple[int, dict[str, int]]]]:
    """Science frames whose best masters changed since they were reduced (or first exist).

    Looks at products reduced with a fallback (an earlier night's master) or without an optional
    master, and frames that were not reducible; returns
    {(instrument, night): [(raw frame id, {type: calibration id})]}.
    """
    rows = session.execute(
        select(Product, RawFrame)
        .join(RawFrame, Product.raw_frame_id == RawFrame.id)
        .where(
            Product.kind == REDUCED,
            or_(
                Product.fallback.is_(True),
                Product.status == NOT_REDUCIBLE,
                # reduced without an optional master, which may exist now
                Product.flat_id.is_(None),
                Product.dark_id.is_(None),
            ),
        )
    ).all()
    found: dict[tuple[str, dt.date], list[tuple[int, dict[str, int]]]] = {}
    for product, frame in rows:
        if frame.instrument not in registry.instruments:
            continue
        choice = select_for_frame(session, frame, registry[frame.instrument], window_nights)
        if choice.missing:
            continue
        now = {kind: calibration.id for kind, calibration in choice.calibrations.items()}
        before = {"bias": product.bias_id, "dark": product.dark_id, "flat": product.flat_id}
        if any(before[k] != v for k, v in now.items()):
            found.setdefault((frame.instrument, frame.night), []).append((frame.id, now))
    return found
