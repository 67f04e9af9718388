"""Raw frames, their duplicates and the quarantine: the catalog side of ingestion."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable

from sqlalchemy import select
from sqlalchemy.orm import Session

from reduction_assets.catalog.models import LandingRoute, Quarantine, RawDuplicate, RawFrame, utcnow


def raw_frame_with_checksum(session: Session, checksum: str) -> RawFrame | None:
    return session.scalars(select(RawFrame).where(RawFrame.checksum == checksum)).first()


def raw_frame_named(session: Session, instrument: str, night: dt.date, name: str) -> RawFrame | None:
    """The frame ingested under a landing name in a partition (names repeat across nights)."""
    return session.scalars(
        select(RawFrame).where(
            RawFrame.instrument == instrument, RawFrame.night == night, RawFrame.original_name == name
        )
    ).first()


def add_raw_frame(session: Session, **fields) -> RawFrame:
    row = RawFrame(**fields)
    session.add(row)
    session.flush()
    return row


def record_duplicate(session: Session, frame: RawFrame, name: str, checksum: str) -> None:
    """Remember that ``name`` delivered the content of ``frame`` again (once per name)."""
    seen = session.scalars(
        select(RawDuplicate).where(RawDuplicate.raw_frame_id == frame.id, RawDuplicate.original_name == name)
    ).first()
    if seen is None:
        session.add(
            RawDuplicate(
                raw_frame_id=frame.id,
                instrument=frame.instrument,
                night=frame.night,
                original_name=name,
                checksum=checksum,
            )
        )


def resolve_quarantine(
    session: Session, name: str, resolution: str, reasons: Iterable[str] | None = None
) -> None:
    """Mark the open quarantine entries of a landing name resolved (only ``reasons``, if given)."""
    query = select(Quarantine).where(Quarantine.original_path == name, Quarantine.resolved_at.is_(None))
    if reasons is not None:
        query = query.where(Quarantine.reason.in_(list(reasons)))
    for row in session.scalars(query):
        row.resolved_at = utcnow()
        row.resolution = resolution


def open_quarantine_entry(
    session: Session, name: str, reason: str, size: int | None, mtime_ns: int | None
) -> Quarantine | None:
    """The unresolved entry for this file version and reason, if it was already quarantined."""
    return session.scalars(
        select(Quarantine).where(
            Quarantine.original_path == name,
            Quarantine.reason == reason,
            Quarantine.size_bytes == size,
            Quarantine.mtime_ns == mtime_ns,
            Quarantine.resolved_at.is_(None),
        )
    ).first()


def add_quarantine(session: Session, **fields) -> None:
    session.add(Quarantine(**fields))


def raw_frames_of(
    session: Session, instrument: str, night: dt.date, frame_type: str, *, include_bad: bool = True
) -> list[RawFrame]:
    """The partition's raw frames of one type, in time order, detached from the session."""
    query = select(RawFrame).where(
        RawFrame.instrument == instrument, RawFrame.night == night, RawFrame.frame_type == frame_type
    )
    if not include_bad:
        query = query.where(RawFrame.bad.is_(False))
    frames = list(session.scalars(query.order_by(RawFrame.date_obs, RawFrame.id)))
    session.expunge_all()
    return frames


def nights_with_data(session: Session, instrument: str, first: dt.date, last: dt.date) -> list[dt.date]:
    """Nights in ``first``..``last`` holding raw frames of an instrument, or landing files routed to
    it (arrived, not ingested yet)."""
    raw = session.scalars(
        select(RawFrame.night)
        .where(RawFrame.instrument == instrument, RawFrame.night.between(first, last))
        .distinct()
    )
    routed = session.scalars(
        select(LandingRoute.night)
        .where(LandingRoute.instrument == instrument, LandingRoute.night.between(first, last))
        .distinct()
    )
    return sorted(set(raw) | set(routed))


def frame_times(session: Session, instrument: str, night: dt.date) -> dict[int, dt.datetime]:
    """Start (DATE-OBS, UTC) of every raw frame of a partition, by id, frames marked bad included
    (they too show that the observatory moved on)."""
    rows = session.execute(
        select(RawFrame.id, RawFrame.date_obs).where(
            RawFrame.instrument == instrument, RawFrame.night == night
        )
    )
    return dict(rows.all())
