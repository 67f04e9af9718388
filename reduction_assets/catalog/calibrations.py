"""Master calibrations in the catalog: grouping raw frames into masters, recording masters, and
choosing the master for a frame (BANZAI's model: declared keys, not bad, validity, nearest night).

Grouping and selection use the same key, :meth:`reduction_assets.instruments.Instrument.calibration_key`.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from reduction_assets.catalog.models import Calibration, RawFrame, utcnow
from reduction_assets.catalog.raw import raw_frames_of
from reduction_assets.instruments import MASTER_TYPES, CalibrationKey, Instrument, ReadoutShape

BEFORE, EITHER = "before", "either"  # where masters may come from: earlier nights, or both sides


@dataclass(frozen=True)
class CalibrationCriteria:
    """What a frame needs of a master: its key, the instrument, and the nights it may come from:
    ``window_nights`` before the frame's (the default, for nightly work), or on either side
    (``direction='either'``, BANZAI's nearest in time, for reprocessing an archive)."""

    key: CalibrationKey
    instrument: str
    night: dt.date
    window_nights: int
    direction: str = BEFORE

    @property
    def first_night(self) -> dt.date:
        return self.night - dt.timedelta(days=self.window_nights)

    @property
    def last_night(self) -> dt.date:
        return self.night + dt.timedelta(days=self.window_nights if self.direction == EITHER else 0)

    def describe(self) -> str:
        parts = [
            f"type={self.key.type}",
            f"instrument={self.instrument}",
            f"binning={self.key.binning}",
            f"readout={self.key.readout}",
        ]
        if self.key.filter:
            parts.append(f"filter={self.key.filter}")
        if self.key.exptime:
            parts.append(f"exptime={self.key.exptime:g}s")
        parts.append(f"nights {self.first_night}..{self.last_night}")
        return ", ".join(parts)


@dataclass(frozen=True)
class NoCalibration:
    """Why no master qualified: the criteria and what the catalog holds for this instrument."""

    criteria: CalibrationCriteria
    available: list[dict[str, Any]]

    @property
    def message(self) -> str:
        held = "; ".join(_held(c) for c in self.available[:10]) or "nothing"
        return f"no calibration matches {self.criteria.describe()}; the catalog holds: {held}"


def _held(master: dict[str, Any]) -> str:
    key = CalibrationKey(
        master["type"], master["binning"], master["readout"], master["filter"], master["exptime"]
    )
    bad = f" BAD ({master['bad_reason']})" if master["bad"] and master.get("bad_reason") else ""
    bad = bad or (" BAD" if master["bad"] else "")
    valid = ""
    if master.get("valid_from") or master.get("valid_to"):
        valid = f" certified for {master.get('valid_from') or '...'}..{master.get('valid_to') or '...'}"
    return f"{master['type']} {master['night']} {key.label()}{bad}{valid}"


def select_calibration(session: Session, criteria: CalibrationCriteria) -> Calibration | NoCalibration:
    """The best master for a frame: same key, not marked bad, inside a certified validity range when
    one exists, night within the criteria's window; nearest night first (the earlier one on a tie),
    same night best. Detached from the session."""
    if criteria.direction not in (BEFORE, EITHER):
        raise ValueError(f"direction must be {BEFORE!r} or {EITHER!r}, got {criteria.direction!r}")
    key = criteria.key
    query = (
        select(Calibration)
        .where(
            Calibration.type == key.type,
            Calibration.instrument == criteria.instrument,
            Calibration.binning == key.binning,
            Calibration.readout == key.readout,
            Calibration.filter == key.filter,
            Calibration.exptime == key.exptime,
            Calibration.bad.is_(False),
            Calibration.night.between(criteria.first_night, criteria.last_night),
            or_(Calibration.valid_from.is_(None), Calibration.valid_from <= criteria.night),
            or_(Calibration.valid_to.is_(None), Calibration.valid_to >= criteria.night),
        )
        .order_by(Calibration.night.desc(), Calibration.id.desc())
    )
    nearest = sorted(
        session.scalars(query),
        key=lambda c: (abs((c.night - criteria.night).days), c.night > criteria.night),
    )
    found = nearest[0] if nearest else None
    if found is not None:
        session.expunge(found)
        return found
    held = session.scalars(
        select(Calibration)
        .where(Calibration.instrument == criteria.instrument, Calibration.type == key.type)
        .order_by(Calibration.night.desc())
        .limit(20)
    )
    return NoCalibration(
        criteria,
        [
            {
                "id": c.id,
                "type": c.type,
                "night": c.night.isoformat(),
                "binning": c.binning,
                "readout": c.readout,
                "filter": c.filter,
                "exptime": c.exptime,
                "bad": c.bad,
                "bad_reason": c.bad_reason,
                "valid_from": c.valid_from.isoformat() if c.valid_from else None,
                "valid_to": c.valid_to.isoformat() if c.valid_to else None,
            }
            for c in held
        ],
    )


def readout_of(frame: RawFrame) -> str:
    """A raw frame's readout shape as it appears in calibration keys: ``NYxNX``."""
    return ReadoutShape(frame.naxis2, frame.naxis1).label


def frame_key(instrument: Instrument, kind: str, frame: RawFrame) -> CalibrationKey:
    """The key of a master of ``kind`` made from, or used for, ``frame``."""
    return instrument.calibration_key(
        kind, binning=frame.binning, readout=readout_of(frame), filter=frame.filter, exptime=frame.exptime
    )


@dataclass(frozen=True)
class CalibrationChoice:
    """The masters chosen for a science frame, by type, or why it cannot have them."""

    calibrations: dict[str, Calibration] = field(default_factory=dict)
    missing: str | None = None  # the reason, when a required master is missing
    skipped: dict[str, str] = field(default_factory=dict)  # optional masters done without, and why


def select_for_frame(
    session: Session,
    frame: RawFrame,
    instrument: Instrument,
    window_nights: int,
    direction: str = BEFORE,
) -> CalibrationChoice:
    """The masters of a science frame, by the rules of its science mode (required ones must exist,
    optional ones are used when they do), each chosen by :func:`select_calibration` with the frame's
    calibration key. For cameras whose darks include the bias, a dark of the frame's exposure time
    stands for bias and dark; without one, a bias (synthetic, from the pedestal fit) and a rate dark.
    """
    mode = instrument.science_mode(frame.header or {})
    wanted = [kind for kind in MASTER_TYPES if kind in mode.required or kind in mode.optional]
    chosen: dict[str, Calibration] = {}
    skipped: dict[str, str] = {}

    def criteria(kind: str, exptime: float) -> CalibrationCriteria:
        key = instrument.calibration_key(
            kind, binning=frame.binning, readout=readout_of(frame), filter=frame.filter, exptime=exptime
        )
        return CalibrationCriteria(key, frame.instrument, frame.night, window_nights, direction)

    if instrument.darks_include_bias and "dark" in wanted:
        found = select_calibration(session, criteria("dark", frame.exptime))
        if not isinstance(found, NoCalibration):
            chosen["dark"] = found
            wanted = [kind for kind in wanted if kind not in ("bias", "dark")]
    for kind in wanted:
        if kind == "flat" and frame.filter is None:
            reason = "no filter in the header: a flat cannot be chosen"
        else:
            found = select_calibration(session, criteria(kind, 0.0))
            if not isinstance(found, NoCalibration):
                chosen[kind] = found
                continue
            reason = found.message
        if kind in mode.required:
            return CalibrationChoice(calibrations=chosen, missing=reason, skipped=skipped)
        skipped[kind] = reason
    return CalibrationChoice(calibrations=chosen, skipped=skipped)


def shortest_dark(
    session: Session, instrument: str, key: CalibrationKey, night: dt.date, window_nights: int
) -> Calibration | None:
    """The shortest good master dark of the window with the binning and readout of ``key``, nearest
    night first: cameras without bias frames take the pedestal of their flats from it."""
    first = night - dt.timedelta(days=window_nights)
    found = session.scalars(
        select(Calibration)
        .where(
            Calibration.type == "dark",
            Calibration.instrument == instrument,
            Calibration.binning == key.binning,
            Calibration.readout == key.readout,
            Calibration.bad.is_(False),
            Calibration.night.between(first, night),
        )
        .order_by(Calibration.exptime, Calibration.night.desc())
    ).first()
    if found is not None:
        session.expunge(found)
    return found


@dataclass(frozen=True)
class FrameGroup:
    """The raw frames of one partition that make one master."""

    key: CalibrationKey
    frames: list[RawFrame]


def calibration_groups(
    session: Session, instrument: Instrument, night: dt.date, kind: str
) -> list[FrameGroup]:
    """The partition's raw frames of ``kind`` grouped by calibration key, in key order."""
    groups: dict[CalibrationKey, list[RawFrame]] = defaultdict(list)
    for frame in raw_frames_of(session, instrument.name, night, kind):
        groups[frame_key(instrument, kind, frame)].append(frame)
    order = sorted(groups, key=lambda key: (key.binning, key.readout, key.filter, key.exptime))
    return [FrameGroup(key, groups[key]) for key in order]


def _master_of(key: CalibrationKey, instrument: str, night: dt.date):
    return select(Calibration).where(
        Calibration.type == key.type,
        Calibration.instrument == instrument,
        Calibration.night == night,
        Calibration.binning == key.binning,
        Calibration.readout == key.readout,
        Calibration.filter == key.filter,
        Calibration.exptime == key.exptime,
    )


def find_calibration(
    session: Session, key: CalibrationKey, instrument: str, night: dt.date
) -> Calibration | None:
    """The master of a partition with this key, if one was recorded (detached)."""
    found = session.scalars(_master_of(key, instrument, night)).first()
    if found is not None:
        session.expunge(found)
    return found


def record_calibration(
    session: Session, key: CalibrationKey, instrument: str, night: dt.date, **values: Any
) -> Calibration:
    """Insert or update the master of a partition with this key; returns the row (flushed)."""
    row = session.scalars(_master_of(key, instrument, night)).first()
    if row is None:
        row = Calibration(
            type=key.type,
            instrument=instrument,
            night=night,
            binning=key.binning,
            readout=key.readout,
            filter=key.filter,
            exptime=key.exptime,
        )
        session.add(row)
    for name, value in values.items():
        setattr(row, name, value)
    row.updated_at = utcnow()
    session.flush()
    return row


def masters_of(session: Session, instrument: str, night: dt.date) -> list[Calibration]:
    """The masters of a partition, bad ones included, by type and key (detached)."""
    rows = list(
        session.scalars(
            select(Calibration)
            .where(Calibration.instrument == instrument, Calibration.night == night)
            .order_by(
                Calibration.type,
                Calibration.binning,
                Calibration.readout,
                Calibration.filter,
                Calibration.exptime,
            )
        )
    )
    session.expunge_all()
    return rows
