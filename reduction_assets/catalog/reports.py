"""Reports of the catalog for operators: per-partition counts, progress tables, the quarantine."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, or_, select
from sqlalchemy.orm import Session

from reduction_assets.catalog.models import (
    ArchiveRecord,
    Calibration,
    Product,
    Quarantine,
    RawDuplicate,
    RawFrame,
    Stack,
)
from reduction_assets.catalog.products import NOT_REDUCIBLE, REDUCED
from reduction_assets.catalog.stacks import STACKED


def partition_counts(session: Session, instrument: str, night: dt.date) -> dict[str, Any]:
    rows = session.execute(
        select(RawFrame.frame_type, func.count())
        .where(RawFrame.instrument == instrument, RawFrame.night == night)
        .group_by(RawFrame.frame_type)
    ).all()
    by_type = dict(rows)
    return {"raw": sum(by_type.values()), "by_type": by_type}


MASTER_TYPES = ("bias", "dark", "flat")
# The counts of a progress row: a row whose counts are all 0 is a night without data.
PROGRESS_COUNTS = (
    "raw",
    "marked_bad",
    "duplicates",
    "quarantined",
    "masters",
    "reduced",
    "not_reducible",
    "stacked",
    "archived",
)


def has_data(row: dict[str, Any]) -> bool:
    """Whether a progress row's night holds anything for its instrument."""
    return any(row[key] for key in PROGRESS_COUNTS)


_Partition = tuple[str, dt.date]  # (instrument, night)


@dataclass(frozen=True)
class _Span:
    """The nights [start, end] and the instruments a progress report covers."""

    start: dt.date
    end: dt.date
    instruments: list[str]

    def of(self, model: Any) -> tuple[Any, Any]:
        """The conditions that keep a model's rows of these nights and instruments."""
        return model.night.between(self.start, self.end), model.instrument.in_(self.instruments)

    def partitions(self) -> Iterator[_Partition]:
        """Every (instrument, night), night by night."""
        night = self.start
        while night <= self.end:
            for instrument in self.instruments:
                yield instrument, night
            night += dt.timedelta(days=1)


@dataclass(frozen=True)
class _Tallies:
    """What the catalog holds per (instrument, night): the makings of progress rows."""

    raw: dict[_Partition, tuple[int, dt.datetime | None]]  # count and the last DATE-OBS
    marked_bad: dict[_Partition, int]
    duplicates: dict[_Partition, int]
    quarantined: dict[_Partition, int]
    masters_by_type: dict[_Partition, dict[str, int]]
    versions: dict[_Partition, set[str]]
    reduced: dict[_Partition, int]
    not_reducible: dict[_Partition, int]
    stacked: dict[_Partition, int]
    archived: dict[_Partition, int]


def progress_rows(
    session: Session, start: dt.date, end: dt.date, instruments: list[str]
) -> list[dict[str, Any]]:
    """One row per night in [start, end] and instrument: what has been ingested so far."""
    span = _Span(start, end, instruments)
    tallies = _tallies(session, span)
    return [_progress_row(tallies, instrument, night) for instrument, night in span.partitions()]


def _tallies(session: Session, span: _Span) -> _Tallies:
    """Every count of the span, one query each."""
    return _Tallies(
        raw=_raw_by_partition(session, span),
        marked_bad=_count_by_partition(session, RawFrame, span, RawFrame.bad.is_(True)),
        duplicates=_count_by_partition(session, RawDuplicate, span),
        quarantined=_count_by_partition(session, Quarantine, span, Quarantine.resolved_at.is_(None)),
        masters_by_type=_masters_by_type(session, span),
        versions=_software_versions(session, span),
        reduced=_reduced_with(session, span, REDUCED),
        not_reducible=_reduced_with(session, span, NOT_REDUCIBLE),
        stacked=_count_by_partition(session, Stack, span, Stack.status == STACKED),
        archived=_archived_files(session, span),
    )


def _grouped(session: Session, query: Any) -> dict[_Partition, Any]:
    """A query's (instrument, night, value) rows as a mapping."""
    return {(inst, night): value for inst, night, value in session.execute(query).all()}


def _count_by_partition(session: Session, model: Any, span: _Span, *conditions: Any) -> dict[_Partition, int]:
    """How many rows of a model each partition of the span has, of those meeting the conditions."""
    return _grouped(
        session,
        select(model.instrument, model.night, func.count())
        .where(*span.of(model), *conditions)
        .group_by(model.instrument, model.night),
    )


def _raw_by_partition(session: Session, span: _Span) -> dict[_Partition, tuple[int, dt.datetime | None]]:
    """The number of raw frames of each partition, and the last one's DATE-OBS."""
    raw = session.execute(
        select(RawFrame.instrument, RawFrame.night, func.count(), func.max(RawFrame.date_obs))
        .where(*span.of(RawFrame))
        .group_by(RawFrame.instrument, RawFrame.night)
    ).all()
    return {(inst, night): (count, last) for inst, night, count, last in raw}


def _masters_by_type(session: Session, span: _Span) -> dict[_Partition, dict[str, int]]:
    """The number of good masters of each partition, by type."""
    masters_by_type: dict[_Partition, dict[str, int]] = {}
    for inst, night, kind, count in session.execute(
        select(Calibration.instrument, Calibration.night, Calibration.type, func.count())
        .where(*span.of(Calibration), Calibration.bad.is_(False))
        .group_by(Calibration.instrument, Calibration.night, Calibration.type)
    ):
        masters_by_type.setdefault((inst, night), {})[kind] = count
    return masters_by_type


def _software_versions(session: Session, span: _Span) -> dict[_Partition, set[str]]:
    """The package versions that made each partition's products (masters, reduced frames, stacks)."""
    versions: dict[_Partition, set[str]] = {}
    for model in (Calibration, Product, Stack):
        for inst, night, version in session.execute(
            select(model.instrument, model.night, model.software_version).where(*span.of(model)).distinct()
        ):
            versions.setdefault((inst, night), set()).add(str(version).split()[0])
    return versions


def _reduced_with(session: Session, span: _Span, status: str) -> dict[_Partition, int]:
    """The number of reduced frames of each partition left in ``status``."""
    # A frame an operator marked bad has left the night's products.
    return _grouped(
        session,
        select(Product.instrument, Product.night, func.count())
        .join(RawFrame, Product.raw_frame_id == RawFrame.id)
        .where(
            RawFrame.bad.is_(False),
            *span.of(Product),
            Product.kind == REDUCED,
            Product.status == status,
        )
        .group_by(Product.instrument, Product.night),
    )


def _archived_files(session: Session, span: _Span) -> dict[_Partition, int]:
    """The number of files of each partition in the archive (each once, whatever its versions)."""
    return _grouped(
        session,
        select(ArchiveRecord.instrument, ArchiveRecord.night, func.count(func.distinct(ArchiveRecord.name)))
        .where(*span.of(ArchiveRecord))
        .group_by(ArchiveRecord.instrument, ArchiveRecord.night),
    )


def _progress_row(tallies: _Tallies, instrument: str, night: dt.date) -> dict[str, Any]:
    """The progress row of one instrument and night."""
    key = (instrument, night)
    count, last = tallies.raw.get(key, (0, None))
    masters = tallies.masters_by_type.get(key, {})
    return {
        "night": night.isoformat(),
        "instrument": instrument,
        "raw": count,
        "marked_bad": tallies.marked_bad.get(key, 0),
        "duplicates": tallies.duplicates.get(key, 0),
        "quarantined": tallies.quarantined.get(key, 0),
        "last_raw_time": last.isoformat() if last else None,
        "masters": sum(masters.values()),
        **{kind: masters.get(kind, 0) for kind in MASTER_TYPES},
        "reduced": tallies.reduced.get(key, 0),
        "not_reducible": tallies.not_reducible.get(key, 0),
        "stacked": tallies.stacked.get(key, 0),
        "archived": tallies.archived.get(key, 0),
        "software": ", ".join(sorted(tallies.versions.get(key, ()))) or None,
    }


def quarantine_rows(session: Session, include_resolved: bool = False) -> list[dict[str, Any]]:
    query = select(Quarantine).order_by(Quarantine.quarantined_at, Quarantine.id)
    if not include_resolved:
        query = query.where(Quarantine.resolved_at.is_(None))
    return [
        {
            "id": row.id,
            "quarantined_at": row.quarantined_at.isoformat(),
            "original_path": row.original_path,
            "reason": row.reason,
            "message": row.message,
            "instrument": row.instrument,
            "night": row.night.isoformat() if row.night else None,
            "checksum": row.checksum,
            "copy_path": row.copy_path,
            "resolved_at": row.resolved_at.isoformat() if row.resolved_at else None,
            "resolution": row.resolution,
        }
        for row in session.scalars(query)
    ]


def not_reducible_frames(session: Session, partitions: list[tuple[str, dt.date]]) -> list[dict[str, Any]]:
    """The science frames of these partitions that are left not reducible, with their reasons."""
    rows = []
    for instrument, night in sorted(set(partitions), key=lambda p: (p[1], p[0])):
        found = session.execute(
            select(RawFrame.original_name, Product.reason)
            .join(RawFrame, Product.raw_frame_id == RawFrame.id)
            .where(
                Product.kind == REDUCED,
                Product.status == NOT_REDUCIBLE,
                Product.instrument == instrument,
                Product.night == night,
            )
            .order_by(RawFrame.date_obs)
        )
        rows.extend(
            {"instrument": instrument, "night": night.isoformat(), "frame": name, "reason": reason}
            for name, reason in found
        )
    return rows


def night_contents(session: Session, instrument: str, night: dt.date) -> dict[str, list[dict[str, Any]]]:
    """What a night and instrument holds, for the nightly report: raw frames, quarantined files
    (those routed to the night; files that fit no night are in ``quarantine_rows``), masters, reduced
    frames and stacks, each as plain rows."""
    raw = session.execute(
        select(RawFrame)
        .where(RawFrame.instrument == instrument, RawFrame.night == night)
        .order_by(RawFrame.date_obs)
    ).scalars()
    frames = [
        {
            "name": f.original_name,
            "type": f.frame_type,
            "filter": f.filter or "",
            "exptime": f.exptime,
            "date_obs": f.date_obs.isoformat(timespec="seconds"),
            "object": f.object or "",
            "bad": f.bad_reason if f.bad else "",
        }
        for f in raw
    ]
    quarantined = [
        {"path": q.original_path, "reason": q.reason, "message": q.message,
         "resolved": q.resolution or "" if q.resolved_at else ""}
        for q in session.scalars(
            select(Quarantine)
            .where(Quarantine.night == night)
            .where(or_(Quarantine.instrument == instrument, Quarantine.instrument.is_(None)))
            .order_by(Quarantine.quarantined_at)
        )
    ]  # fmt: skip
    masters = [
        {
            "type": c.type,
            "binning": c.binning,
            "filter": c.filter,
            "exptime": c.exptime,
            "inputs": c.input_count,
            "rejected": len(c.rejected or []),
            "path": c.path,
            "status": f"bad: {c.bad_reason}" if c.bad else "good",
        }
        for c in session.scalars(
            select(Calibration)
            .where(Calibration.instrument == instrument, Calibration.night == night)
            .order_by(Calibration.type, Calibration.binning, Calibration.filter)
        )
    ]
    reduced = [
        {
            "frame": name,
            "status": p.status,
            "reason": p.reason or "",
            "sources": int(p.statistics.get("n_sources", 0)) if p.statistics else 0,
            "ages": ", ".join(f"{k} {v}" for k, v in (p.calibration_age or {}).items()),
            "path": p.path or "",
        }
        for p, name in session.execute(
            select(Product, RawFrame.original_name)
            .join(RawFrame, Product.raw_frame_id == RawFrame.id)
            .where(Product.kind == REDUCED, Product.instrument == instrument, Product.night == night)
            .order_by(RawFrame.date_obs)
        )
    ]
    stacks = [
        {"target": s.target, "filter": s.filter, "status": s.status, "members": s.n_members,
         "reason": s.reason or "", "path": s.path or ""}
        for s in session.scalars(
            select(Stack)
            .where(Stack.instrument == instrument, Stack.night == night)
            .order_by(Stack.group_key)
        )
    ]  # fmt: skip
    return {
        "raw": frames,
        "quarantined": quarantined,
        "masters": masters,
        "reduced": reduced,
        "stacks": stacks,
    }
