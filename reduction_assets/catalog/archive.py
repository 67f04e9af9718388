"""The archive in the catalog: what a partition holds that belongs in the archive, and the records
of what was archived (one row per version of a file)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from reduction_assets.catalog.db import advisory_key, hold_advisory_lock
from reduction_assets.catalog.models import (
    ArchiveMessage,
    ArchiveRecord,
    Calibration,
    Product,
    RawFrame,
    Stack,
    utcnow,
)
from reduction_assets.catalog.stacks import STACKED, reduced_frames_of
from reduction_assets.support.keys import ARCHIVE_LEVELS

RAW, MASTER, REDUCED_LEVEL, STACK = ARCHIVE_LEVELS


@dataclass(frozen=True)
class Candidate:
    """A file the catalog says belongs in the archive: where it is now (``store``: raw or products,
    ``key``, ``checksum`` = its SHA-256 in the catalog) and the fields of its archive record."""

    level: str
    name: str
    store: str  # "raw" or "products"
    key: str
    checksum: str
    source_kind: str
    source_id: int
    instrument: str
    night: dt.date
    date_obs: dt.datetime | None = None
    target: str | None = None
    exptime: float | None = None
    filter: str | None = None
    configuration_type: str | None = None
    related: tuple[str, ...] = field(default_factory=tuple)
    calibration: bool = False  # raw calibration frames and masters: public at once


def _name(key: str) -> str:
    return PurePosixPath(key).name


def archive_candidates(session: Session, instrument: str, night: dt.date) -> list[Candidate]:
    """Every raw frame, good master, reduced frame and stack of a partition, in that order."""
    raws = _partition_raws(session, instrument, night)
    by_checksum = _raw_names_by_checksum(session, instrument)
    found = [_raw_candidate(row) for row in raws]
    calibration_names: dict[int, str] = {}
    for row in _good_masters(session, instrument, night):
        calibration_names[row.id] = _name(row.path)
        found.append(_master_candidate(row, by_checksum))
    products = reduced_frames_of(session, instrument, night)
    _name_used_calibrations(session, products, calibration_names)
    product_names: dict[int, str] = {}
    for product, frame in products:
        product_names[product.id] = _name(product.path)
        found.append(_reduced_candidate(product, frame, calibration_names))
    found.extend(_stack_candidate(row, product_names) for row in _stacked(session, instrument, night))
    return found


def _partition_raws(session: Session, instrument: str, night: dt.date) -> list[RawFrame]:
    """The raw frames of a partition, in the order they were observed."""
    return list(
        session.scalars(
            select(RawFrame)
            .where(RawFrame.instrument == instrument, RawFrame.night == night)
            .order_by(RawFrame.date_obs, RawFrame.id)
        )
    )


def _raw_names_by_checksum(session: Session, instrument: str) -> dict[str, str]:
    """The file name of every raw frame of an instrument (any night), by its checksum."""
    return {
        checksum: _name(path)
        for checksum, path in session.execute(
            select(RawFrame.checksum, RawFrame.store_path).where(RawFrame.instrument == instrument)
        )
    }


def _raw_candidate(row: RawFrame) -> Candidate:
    """A raw frame as a candidate (calibration frames are public at once)."""
    return Candidate(
        level=RAW,
        name=_name(row.store_path),
        store="raw",
        key=row.store_path,
        checksum=row.checksum,
        source_kind="raw_frames",
        source_id=row.id,
        instrument=row.instrument,
        night=row.night,
        date_obs=row.date_obs,
        target=row.object,
        exptime=row.exptime,
        filter=row.filter,
        configuration_type=(row.normalised or {}).get("raw_frame_type") or row.frame_type,
        calibration=row.frame_type != "science",
    )


def _good_masters(session: Session, instrument: str, night: dt.date) -> Iterable[Calibration]:
    """The masters of a partition not marked bad, oldest first."""
    return session.scalars(
        select(Calibration)
        .where(Calibration.instrument == instrument, Calibration.night == night, Calibration.bad.is_(False))
        .order_by(Calibration.id)
    )


def _master_candidate(row: Calibration, by_checksum: dict[str, str]) -> Candidate:
    """A master as a candidate, related to the raw frames it was made of."""
    inputs = row.inputs or []
    return Candidate(
        level=MASTER,
        name=_name(row.path),
        store="products",
        key=row.path,
        checksum=row.checksum,
        source_kind="calibrations",
        source_id=row.id,
        instrument=row.instrument,
        night=row.night,
        exptime=row.exptime or None,
        filter=row.filter or None,
        configuration_type=f"master_{row.type}",
        related=tuple(sorted(by_checksum.get(i.get("checksum"), i.get("name", "")) for i in inputs)),
        calibration=True,
    )


def _name_used_calibrations(
    session: Session, products: list[tuple[Product, RawFrame]], calibration_names: dict[int, str]
) -> None:
    """Add the file names of the masters the reduced frames used, of other nights too."""
    used_ids = {i for p, _ in products for i in (p.bias_id, p.dark_id, p.flat_id) if i is not None}
    for calibration_id, path in session.execute(
        select(Calibration.id, Calibration.path).where(Calibration.id.in_(used_ids))
    ):
        calibration_names.setdefault(calibration_id, _name(path))


def _reduced_candidate(product: Product, frame: RawFrame, calibration_names: dict[int, str]) -> Candidate:
    """A reduced frame as a candidate, related to its raw frame and the masters it used."""
    masters_used = [calibration_names[i] for i in (product.bias_id, product.dark_id, product.flat_id) if i]
    return Candidate(
        level=REDUCED_LEVEL,
        name=_name(product.path),
        store="products",
        key=product.path,
        checksum=product.checksum or "",
        source_kind="products",
        source_id=product.id,
        instrument=product.instrument,
        night=product.night,
        date_obs=frame.date_obs,
        target=frame.object,
        exptime=frame.exptime,
        filter=frame.filter,
        configuration_type=frame.frame_type,
        related=(_name(frame.store_path), *masters_used),
    )


def _stacked(session: Session, instrument: str, night: dt.date) -> Iterable[Stack]:
    """The stacks of a partition that were made, oldest first."""
    return session.scalars(
        select(Stack)
        .where(Stack.instrument == instrument, Stack.night == night, Stack.status == STACKED)
        .order_by(Stack.id)
    )


def _stack_candidate(row: Stack, product_names: dict[int, str]) -> Candidate:
    """A stack as a candidate, related to the reduced frames it includes."""
    return Candidate(
        level=STACK,
        name=_name(row.path),
        store="products",
        key=row.path,
        checksum=row.checksum or "",
        source_kind="stacks",
        source_id=row.id,
        instrument=row.instrument,
        night=row.night,
        target=row.target,
        exptime=row.exptime,
        filter=row.filter or None,
        configuration_type="stack",
        related=tuple(product_names.get(m.product_id, str(m.product_id)) for m in row.members if m.included),
    )


def hold_name(session: Session, name: str) -> None:
    """Make other transactions that archive ``name`` wait until this one ends (a PostgreSQL
    transaction-level advisory lock; SQLite has one writer anyway, and the record's unique version
    catches the rest). Overlapping runs of a night then archive each file once."""
    hold_advisory_lock(session, advisory_key(name))


def latest_record(session: Session, name: str) -> ArchiveRecord | None:
    """The newest version of a file in the archive, or None."""
    row = session.scalars(
        select(ArchiveRecord).where(ArchiveRecord.name == name).order_by(ArchiveRecord.version.desc())
    ).first()
    if row is not None:
        session.expunge(row)
    return row


class VersionTaken(Exception):
    """Another process recorded the same name at the same version first."""


def add_record(session: Session, **values: Any) -> ArchiveRecord:
    """Add an archive record; raises :class:`VersionTaken` (the transaction is then lost) when the
    name already has this version."""
    row = ArchiveRecord(**values)
    session.add(row)
    try:
        session.flush()
    except IntegrityError as err:
        raise VersionTaken(
            f"{values.get('name')} version {values.get('version')} is recorded already"
        ) from err
    return row


def message_payload(row: ArchiveRecord) -> dict[str, Any]:
    """The notification of an archived record (what consumers of the exchange receive)."""
    return {
        "record_id": row.id,
        "key": row.object_key,
        "md5": row.md5,
        "level": row.level,
        "instrument": row.instrument,
        "night": row.night.isoformat(),
        "version": row.version,
        "name": row.name,
    }


def add_message(session: Session, row: ArchiveRecord) -> ArchiveMessage:
    """Queue the notification of a record in the outbox (same transaction as the record)."""
    message = ArchiveMessage(record_id=row.id, payload=message_payload(row), attempts=0)
    session.add(message)
    session.flush()
    return message


def pending_messages(session: Session, limit: int = 1000) -> list[ArchiveMessage]:
    rows = list(
        session.scalars(
            select(ArchiveMessage)
            .where(ArchiveMessage.delivered_at.is_(None))
            .order_by(ArchiveMessage.id)
            .limit(limit)
        )
    )
    session.expunge_all()
    return rows


def mark_delivered(session: Session, message_id: int) -> None:
    row = session.get(ArchiveMessage, message_id)
    row.delivered_at = utcnow()
    row.attempts += 1
    row.last_error = None


def mark_attempt_failed(session: Session, message_ids: list[int], error: str) -> None:
    for row in session.scalars(select(ArchiveMessage).where(ArchiveMessage.id.in_(message_ids))):
        row.attempts += 1
        row.last_error = error


def find_records(
    session: Session,
    *,
    night: dt.date | None = None,
    instrument: str | None = None,
    target: str | None = None,
    level: str | None = None,
    md5: str | None = None,
) -> list[dict[str, Any]]:
    """Archive records (every version) matching all the given fields, newest night first."""
    query = select(ArchiveRecord)
    for column, value in (
        (ArchiveRecord.night, night),
        (ArchiveRecord.instrument, instrument),
        (ArchiveRecord.target, target),
        (ArchiveRecord.level, level),
        (ArchiveRecord.md5, md5),
    ):
        if value is not None:
            query = query.where(column == value)
    rows = session.scalars(
        query.order_by(ArchiveRecord.night.desc(), ArchiveRecord.name, ArchiveRecord.version)
    )
    return [
        {
            "id": row.id,
            "level": row.level,
            "instrument": row.instrument,
            "night": row.night.isoformat(),
            "name": row.name,
            "version": row.version,
            "target": row.target,
            "filter": row.filter,
            "exptime": row.exptime,
            "date_obs": row.date_obs.isoformat() if row.date_obs else None,
            "public_date": row.public_date.isoformat(),
            "md5": row.md5,
            "size_bytes": row.size_bytes,
            "object_key": row.object_key,
            "related": row.related,
            "footprint": row.footprint,
        }
        for row in rows
    ]


@dataclass(frozen=True)
class ArchivedObject:
    """An archived file as verify checks it: its object in the archive store and SHA-256, and where
    the file it was made from lives in the home (``source_store``: raw or products; its key)."""

    object_key: str
    sha256: str
    source_store: str
    source_key: str | None


def archived_objects(session: Session) -> list[ArchivedObject]:
    """Every archive record's object, oldest first, with the key of its source file in the home."""
    sources = {
        "raw_frames": ("raw", RawFrame, RawFrame.store_path),
        "calibrations": ("products", Calibration, Calibration.path),
        "products": ("products", Product, Product.path),
        "stacks": ("products", Stack, Stack.path),
    }
    keys = {
        kind: dict(session.execute(select(model.id, column)).all())
        for kind, (_, model, column) in sources.items()
    }
    return [
        ArchivedObject(
            row.object_key,
            row.sha256,
            sources[row.source_kind][0] if row.source_kind in sources else "products",
            keys.get(row.source_kind, {}).get(row.source_id),
        )
        for row in session.scalars(select(ArchiveRecord).order_by(ArchiveRecord.id))
    ]
