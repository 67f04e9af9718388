"""Catalog queries shared by assets and the command line."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, or_, select
from sqlalchemy.orm import Session

from reduction_assets.catalog.models import Calibration, Product, Quarantine, RawDuplicate, RawFrame


def partition_counts(session: Session, instrument: str, night: dt.date) -> dict[str, Any]:
    rows = session.execute(
        select(RawFrame.frame_type, func.count()).where(
            RawFrame.instrument == instrument, RawFrame.night == night).group_by(RawFrame.frame_type)
    ).all()
    by_type = dict(rows)
    return {"raw": sum(by_type.values()), "by_type": by_type}


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
        .group_by(RawFrame.instrument, RawFrame.night)).all()
    raw_by_key = {(inst, night): (count, last) for inst, night, count, last in raw}
    duplicates = grouped(
        select(RawDuplicate.instrument, RawDuplicate.night, func.count())
        .where(in_range(RawDuplicate.night), RawDuplicate.instrument.in_(instruments))
        .group_by(RawDuplicate.instrument, RawDuplicate.night))
    quarantined = grouped(
        select(Quarantine.instrument, Quarantine.night, func.count())
        .where(in_range(Quarantine.night), Quarantine.instrument.in_(instruments),
               Quarantine.resolved_at.is_(None))
        .group_by(Quarantine.instrument, Quarantine.night))
    masters = grouped(
        select(Calibration.instrument, Calibration.night, func.count())
        .where(in_range(Calibration.night), Calibration.instrument.in_(instruments),
               Calibration.bad.is_(False))
        .group_by(Calibration.instrument, Calibration.night))
    reduced = grouped(
        select(Product.instrument, Product.night, func.count())
        .where(in_range(Product.night), Product.instrument.in_(instruments),
               Product.kind == "reduced", Product.status == "reduced")
        .group_by(Product.instrument, Product.night))
    rows = []
    night = start
    while night <= end:
        for instrument in instruments:
            count, last = raw_by_key.get((instrument, night), (0, None))
            rows.append({
                "night": night.isoformat(),
                "instrument": instrument,
                "raw": count,
                "duplicates": duplicates.get((instrument, night), 0),
                "quarantined": quarantined.get((instrument, night), 0),
                "last_raw_time": last.isoformat() if last else None,
                "masters": masters.get((instrument, night), 0),
                "reduced": reduced.get((instrument, night), 0),
            })
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


@dataclass(frozen=True)
class CalibrationCriteria:
    """What a frame needs of a calibration (BANZAI's model: declared keys, not bad, validity, nearest)."""

    type: str
    instrument: str
    night: dt.date
    binning: str
    filter: str = ""
    exptime: float = 0.0
    window_nights: int = 7

    def describe(self) -> str:
        parts = [f"type={self.type}", f"instrument={self.instrument}", f"binning={self.binning}"]
        if self.filter:
            parts.append(f"filter={self.filter}")
        if self.exptime:
            parts.append(f"exptime={self.exptime:g}s")
        first = self.night - dt.timedelta(days=self.window_nights)
        parts.append(f"nights {first}..{self.night}")
        return ", ".join(parts)


@dataclass(frozen=True)
class NoCalibration:
    """Why no calibration qualified: the criteria and what the catalog holds for this instrument."""

    criteria: CalibrationCriteria
    available: list[dict[str, Any]]

    @property
    def message(self) -> str:
        held = "; ".join(
            f"{c['type']} {c['night']} {c['binning']}{' ' + c['filter'] if c['filter'] else ''}"
            f"{' BAD' if c['bad'] else ''}" for c in self.available[:10]) or "nothing"
        return f"no calibration matches {self.criteria.describe()}; the catalog holds: {held}"


def select_calibration(session: Session, criteria: CalibrationCriteria) -> Calibration | NoCalibration:
    """The best calibration for a frame: same instrument, binning (filter for flats, exposure time
    for bias-including darks), not marked bad, inside a certified validity range when one exists,
    night within ``window_nights`` before the frame's night; nearest night first, same night best.
    """
    first = criteria.night - dt.timedelta(days=criteria.window_nights)
    query = (
        select(Calibration)
        .where(
            Calibration.type == criteria.type,
            Calibration.instrument == criteria.instrument,
            Calibration.binning == criteria.binning,
            Calibration.filter == criteria.filter,
            Calibration.exptime == criteria.exptime,
            Calibration.bad.is_(False),
            Calibration.night.between(first, criteria.night),
            or_(Calibration.valid_from.is_(None), Calibration.valid_from <= criteria.night),
            or_(Calibration.valid_to.is_(None), Calibration.valid_to >= criteria.night),
        )
        .order_by(Calibration.night.desc(), Calibration.id.desc())
    )
    found = session.scalars(query).first()
    if found is not None:
        return found
    held = session.scalars(
        select(Calibration).where(Calibration.instrument == criteria.instrument,
                                  Calibration.type == criteria.type)
        .order_by(Calibration.night.desc()).limit(20))
    return NoCalibration(criteria, [
        {"id": c.id, "type": c.type, "night": c.night.isoformat(), "binning": c.binning,
         "filter": c.filter, "exptime": c.exptime, "bad": c.bad} for c in held])


CALIBRATION_TYPES = ("bias", "dark", "flat")


def criteria_for(frame: RawFrame, kind: str, darks_include_bias: bool, window: int) -> CalibrationCriteria:
    """What a science frame needs of a calibration of ``kind``."""
    return CalibrationCriteria(
        type=kind, instrument=frame.instrument, night=frame.night, binning=frame.binning,
        filter=(frame.filter or "") if kind == "flat" else "",
        exptime=frame.exptime if (kind == "dark" and darks_include_bias) else 0.0,
        window_nights=window)


def select_for_frame(session: Session, frame: RawFrame, darks_include_bias: bool,
                     window: int) -> dict[str, Calibration] | str:
    """The calibrations of a science frame by type, or the reason it cannot be reduced.

    Cameras whose darks include the bias need no bias master (their dark must match the exposure).
    """
    if frame.filter is None:
        return "no filter in the header: a flat cannot be chosen"
    chosen: dict[str, Calibration] = {}
    for kind in CALIBRATION_TYPES:
        if kind == "bias" and darks_include_bias:
            continue
        found = select_calibration(session, criteria_for(frame, kind, darks_include_bias, window))
        if isinstance(found, NoCalibration):
            return found.message
        chosen[kind] = found
    return chosen


def frames_to_recalibrate(session: Session, darks_include_bias: dict[str, bool],
                          window: int) -> dict[tuple[str, dt.date], list[tuple[int, dict[str, int]]]]:
    """Science frames whose best calibrations changed since they were reduced (or first exist).

    Looks at products reduced with a fallback (an earlier night's master) and frames that were not
    reducible; returns {(instrument, night): [(raw frame id, {type: calibration id})]}.
    """
    rows = session.execute(
        select(Product, RawFrame).join(RawFrame, Product.raw_frame_id == RawFrame.id)
        .where(Product.kind == "reduced",
               or_(Product.fallback.is_(True), Product.status == "not_reducible"))).all()
    found: dict[tuple[str, dt.date], list[tuple[int, dict[str, int]]]] = {}
    for product, frame in rows:
        chosen = select_for_frame(session, frame, darks_include_bias.get(frame.instrument, False), window)
        if isinstance(chosen, str):
            continue
        now = {kind: calibration.id for kind, calibration in chosen.items()}
        before = {"bias": product.bias_id, "dark": product.dark_id, "flat": product.flat_id}
        if any(before[k] != v for k, v in now.items()):
            found.setdefault((frame.instrument, frame.night), []).append((frame.id, now))
    return found
