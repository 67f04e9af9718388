"""Reports of the catalog for operators: per-partition counts, progress tables, the quarantine."""

from __future__ import annotations

import datetime as dt
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


def progress_rows(
    session: Session, start: dt.date, end: dt.date, instruments: list[str]
) -> list[dict[str, Any]]:
    """One row per night in [start, end] and instrument: what has been ingested so far."""

    def grouped(query):
        return {(inst, night): value for inst, night, value in session.execute(query).all()}

    in_range = lambda column_night: column_night.between(start, end)  # noqa: E731
    raw = session.execute(
        select(RawFrame.instrument, RawFrame.night, func.count(), func.max(RawFrame.date_obs))
        .where(in_range(RawFrame.night), RawFrame.instrument.in_(instruments))
        .group_by(RawFrame.instrument, RawFrame.night)
    ).all()
    raw_by_key = {(inst, night): (count, last) for inst, night, count, last in raw}
    marked_bad = grouped(
        select(RawFrame.instrument, RawFrame.night, func.count())
        .where(in_range(RawFrame.night), RawFrame.instrument.in_(instruments), RawFrame.bad.is_(True))
        .group_by(RawFrame.instrument, RawFrame.night)
    )
    duplicates = grouped(
        select(RawDuplicate.instrument, RawDuplicate.night, func.count())
        .where(in_range(RawDuplicate.night), RawDuplicate.instrument.in_(instruments))
        .group_by(RawDuplicate.instrument, RawDuplicate.night)
    )
    quarantined = grouped(
        select(Quarantine.instrument, Quarantine.night, func.count())
        .where(
            in_range(Quarantine.night),
            Quarantine.instrument.in_(instruments),
            Quarantine.resolved_at.is_(None),
        )
        .group_by(Quarantine.instrument, Quarantine.night)
    )
    masters_by_type: dict[tuple[str, dt.date], dict[str, int]] = {}
    for inst, night_, kind, count in session.execute(
        select(Calibration.instrument, Calibration.night, Calibration.type, func.count())
        .where(
            in_range(Calibration.night), Calibration.instrument.in_(instruments), Calibration.bad.is_(False)
        )
        .group_by(Calibration.instrument, Calibration.night, Calibration.type)
    ):
        masters_by_type.setdefault((inst, night_), {})[kind] = count
    # The package versions that made a night's products (masters, reduced frames, stacks).
    versions: dict[tuple[str, dt.date], set[str]] = {}
    for model in (Calibration, Product, Stack):
        for inst, night_, version in session.execute(
            select(model.instrument, model.night, model.software_version)
            .where(in_range(model.night), model.instrument.in_(instruments))
            .distinct()
        ):
            versions.setdefault((inst, night_), set()).add(str(version).split()[0])

    def products_with(status: str):
        # A frame an operator marked bad has left the night's products.
        return grouped(
            select(Product.instrument, Product.night, func.count())
            .join(RawFrame, Product.raw_frame_id == RawFrame.id)
            .where(
                RawFrame.bad.is_(False),
                in_range(Product.night),
                Product.instrument.in_(instruments),
                Product.kind == REDUCED,
                Product.status == status,
            )
            .group_by(Product.instrument, Product.night)
        )

    reduced, not_reducible = products_with(REDUCED), products_with(NOT_REDUCIBLE)
    stacked = grouped(
        select(Stack.instrument, Stack.night, func.count())
        .where(in_range(Stack.night), Stack.instrument.in_(instruments), Stack.status == STACKED)
        .group_by(Stack.instrument, Stack.night)
    )
    archived = grouped(  # files in the archive (each once, whatever its versions)
        select(ArchiveRecord.instrument, ArchiveRecord.night, func.count(func.distinct(ArchiveRecord.name)))
        .where(in_range(ArchiveRecord.night), ArchiveRecord.instrument.in_(instruments))
        .group_by(ArchiveRecord.instrument, ArchiveRecord.night)
    )
    rows = []
    night = start
    while night <= end:
        for instrument in instruments:
            count, last = raw_by_key.get((instrument, night), (0, None))
            rows.append(
                {
                    "night": night.isoformat(),
                    "instrument": instrument,
                    "raw": count,
                    "marked_bad": marked_bad.get((instrument, night), 0),
                    "duplicates": duplicates.get((instrument, night), 0),
                    "quarantined": quarantined.get((instrument, night), 0),
                    "last_raw_time": last.isoformat() if last else None,
                    "masters": sum(masters_by_type.get((instrument, night), {}).values()),
                    **{
                        kind: masters_by_type.get((instrument, night), {}).get(kind, 0)
                        for kind in MASTER_TYPES
                    },
                    "reduced": reduced.get((instrument, night), 0),
                    "not_reducible": not_reducible.get((instrument, night), 0),
                    "stacked": stacked.get((instrument, night), 0),
                    "archived": archived.get((instrument, night), 0),
                    "software": ", ".join(sorted(versions.get((instrument, night), ()))) or None,
                }
            )
        night += dt.timedelta(days=1)
    return rows


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
