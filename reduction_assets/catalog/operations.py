"""Operator actions on the catalog, each recorded in the audit trail (``operator_actions``), and the
partitions they send back through the graph (``rework``).

An action changes flags (a raw frame good or bad, a master certified or decertified), marks stale
what must be redone (see :mod:`reduction_assets.catalog.integrity`), and asks for a run of the
partitions concerned; the calibration sensor (and `process`) request those runs, and the
reduced_frames step that covers a partition settles its rework.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import or_, select, update
from sqlalchemy.orm import Session

from reduction_assets.catalog.integrity import (
    STALE,
    made_with,
    mark_calibration_stale,
    mark_product_stale,
    mark_products_of_stale,
)
from reduction_assets.catalog.landing import forget_landing_files
from reduction_assets.catalog.models import (
    Calibration,
    LandingFile,
    OperatorAction,
    Product,
    RawDuplicate,
    RawFrame,
    Rework,
    utcnow,
)
from reduction_assets.catalog.products import REDUCED
from reduction_assets.instruments import MASTER_TYPES
from reduction_assets.support.keys import NightPartition

# Rework levels: where in a partition's graph the run starts.
MASTERS = "masters"  # masters, then reduced frames, stacks and archive
REDUCED_FRAMES = "reduced"  # reduced frames, stacks and archive

# Actions (operator_actions.action).
MARK_GOOD, MARK_BAD = "mark_good", "mark_bad"
CERTIFY, DECERTIFY = "certify", "decertify"
REQUEUE = "requeue"
DECERTIFIED = "decertified: "  # how an operator's decertification reads in bad_reason


class UnknownTarget(LookupError):
    """An operator named a frame, file or master the catalog does not hold."""


class Ambiguous(LookupError):
    """A name matches several raw frames; the operator must give a catalog id."""


@dataclass
class ActionResult:
    """What one action did."""

    action_id: int
    target: str
    changed: bool
    partitions: list[str] = field(default_factory=list)  # "instrument|night" sent back through the graph
    products_marked: int = 0
    masters_marked: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {
            "action_id": self.action_id,
            "target": self.target,
            "changed": self.changed,
            "partitions": self.partitions,
            "products_marked": self.products_marked,
            "masters_marked": self.masters_marked,
        }


def partition_text(instrument: str, night: dt.date) -> str:
    return NightPartition(instrument, night).key


def find_raw_frame(session: Session, frame: str) -> RawFrame:
    """A raw frame by catalog id (digits) or by a landing name it arrived under (its own or a
    duplicate's). Raises :class:`UnknownTarget` or :class:`Ambiguous`."""
    text = frame.strip()
    if text.isdigit():
        row = session.get(RawFrame, int(text))
        if row is None:
            raise UnknownTarget(f"no raw frame has catalog id {text}")
        return row
    rows = list(session.scalars(select(RawFrame).where(RawFrame.original_name == text)))
    if not rows:
        rows = list(
            session.scalars(
                select(RawFrame)
                .join(RawDuplicate, RawDuplicate.raw_frame_id == RawFrame.id)
                .where(RawDuplicate.original_name == text)
            )
        )
    if not rows:
        raise UnknownTarget(f"no raw frame arrived as {text!r} (give its landing name or catalog id)")
    if len(rows) > 1:
        ids = ", ".join(str(r.id) for r in rows)
        raise Ambiguous(f"{text!r} names {len(rows)} raw frames (ids {ids}); give the catalog id")
    return rows[0]


def _record_action(
    session: Session,
    *,
    operator: str,
    action: str,
    target_kind: str,
    target_id: int | None,
    target: str,
    reason: str,
    details: dict[str, Any],
) -> OperatorAction:
    row = OperatorAction(
        acted_at=utcnow(),
        operator=operator,
        action=action,
        target_kind=target_kind,
        target_id=target_id,
        target=target,
        reason=reason,
        details=details,
    )
    session.add(row)
    session.flush()
    return row


def request_rework(
    session: Session,
    instrument: str,
    night: dt.date,
    level: str,
    reason: str,
    action_id: int | None = None,
    not_before: dt.datetime | None = None,
) -> None:
    """Ask for a run of a partition from ``level`` on (at ``not_before`` UTC at the earliest)."""
    session.add(
        Rework(
            instrument=instrument,
            night=night,
            level=level,
            reason=reason,
            action_id=action_id,
            requested_at=utcnow(),
            not_before=not_before,
        )
    )


def schedule_masters(session: Session, instrument: str, night: dt.date, when: dt.datetime) -> None:
    """Ask for a partition's masters at ``when`` (UTC), once: a calibration block still being taken
    is complete then at the latest."""
    pending = session.scalars(
        select(Rework.id).where(
            Rework.instrument == instrument,
            Rework.night == night,
            Rework.level == MASTERS,
            Rework.not_before == when,
            Rework.done_at.is_(None),
        )
    ).first()
    if pending is None:
        request_rework(session, instrument, night, MASTERS, "calibration block complete", not_before=when)


def _masters_of(session: Session, frame: RawFrame) -> list[Calibration]:
    """The masters of the frame's partition that were made with it or, for a frame that was left
    out, that it may join (same type, binning and, for flats, filter)."""
    masters = session.scalars(
        select(Calibration).where(
            Calibration.instrument == frame.instrument,
            Calibration.night == frame.night,
            Calibration.type == frame.frame_type,
        )
    )
    found = []
    for master in masters:
        used = any(entry.get("checksum") == frame.checksum for entry in master.inputs or [])
        same_kind = master.binning == frame.binning and (
            master.type != "flat" or master.filter == (frame.filter or "")
        )
        if used or (not frame.bad and same_kind):
            found.append(master)
    return found


def _withdraw_if_emptied(session: Session, master: Calibration, frame: RawFrame) -> bool:
    """Mark a master bad when every frame it was made from is now marked bad: it cannot be redone
    without them, and it must not be chosen any more."""
    checksums = [entry.get("checksum") for entry in master.inputs or []]
    good = session.scalars(
        select(RawFrame.id).where(RawFrame.checksum.in_(checksums), RawFrame.bad.is_(False))
    ).first()
    if good is None and checksums:
        master.bad = True
        master.bad_reason = f"every input marked bad (last: {frame.original_name})"
        return True
    return False


def _send_back(session: Session, frame: RawFrame, reason: str, action_id: int) -> tuple[int, int, str]:
    """Mark stale what was made from a raw frame and ask for its partition's run; returns (masters
    marked, products marked, level)."""
    masters_marked = products_marked = 0
    if frame.frame_type in MASTER_TYPES:
        level = MASTERS
        for master in _masters_of(session, frame):
            masters_marked += 1
            if _withdraw_if_emptied(session, master, frame):
                products_marked += mark_products_of_stale(session, master.id)
            else:
                products_marked += mark_calibration_stale(session, master.id)
    else:
        level = REDUCED_FRAMES
        product = session.scalars(
            select(Product).where(Product.kind == REDUCED, Product.raw_frame_id == frame.id)
        ).first()
        # A bad frame's product simply leaves the night (nothing reduces a bad frame again).
        if product is not None and not frame.bad:
            mark_product_stale(session, product.id)
            products_marked = 1
    request_rework(session, frame.instrument, frame.night, level, reason, action_id)
    return masters_marked, products_marked, level


def mark_frame(session: Session, frame: RawFrame, *, good: bool, reason: str, operator: str) -> ActionResult:
    """Mark a raw frame good or bad. A bad frame leaves its night's products: masters made with it
    are rebuilt without it (and the frames reduced with them redone), its reduced frame stops
    counting and leaves the stacks. A good one comes back. Recorded whether or not it changed."""
    changed = frame.bad == good
    action = _record_action(
        session,
        operator=operator,
        action=MARK_GOOD if good else MARK_BAD,
        target_kind="raw_frame",
        target_id=frame.id,
        target=frame.original_name,
        reason=reason,
        details={"was_bad": frame.bad, "previous_reason": frame.bad_reason},
    )
    result = ActionResult(action.id, frame.original_name, changed)
    if not changed:
        return result
    frame.bad = not good
    frame.bad_reason = None if good else reason
    session.flush()
    masters, products, level = _send_back(session, frame, f"{action.action} {frame.original_name}", action.id)
    result.partitions = [partition_text(frame.instrument, frame.night)]
    result.masters_marked, result.products_marked = masters, products
    action.details = {
        **action.details,
        "level": level,
        "masters_marked": masters,
        "products_marked": products,
    }
    return result


def requeue_frame(session: Session, frame: RawFrame, *, reason: str, operator: str) -> ActionResult:
    """Redo what was made from a raw frame through the rest of the graph, whatever its fingerprints
    say. Raises ValueError for a frame marked bad (nothing is made from it)."""
    if frame.bad:
        raise ValueError(
            f"{frame.original_name} is marked bad ({frame.bad_reason}): nothing is made from it; "
            "`mark ... good` brings it back"
        )
    action = _record_action(
        session,
        operator=operator,
        action=REQUEUE,
        target_kind="raw_frame",
        target_id=frame.id,
        target=frame.original_name,
        reason=reason,
        details={},
    )
    masters, products, level = _send_back(session, frame, f"requeue {frame.original_name}", action.id)
    action.details = {"level": level, "masters_marked": masters, "products_marked": products}
    return ActionResult(
        action.id,
        frame.original_name,
        True,
        [partition_text(frame.instrument, frame.night)],
        products,
        masters,
    )


def requeue_landing_file(session: Session, name: str, *, reason: str, operator: str) -> ActionResult:
    """Forget what the landing sensor asked for a landing file that never became a raw frame (failed
    runs, given up after too many attempts), so that it is asked for again at once."""
    row = session.get(LandingFile, name)
    if row is None:
        raise UnknownTarget(f"{name!r} is neither a raw frame nor a file the landing sensor knows")
    details = {"state": row.state, "attempts": row.attempts, "partition": row.partition}
    forget_landing_files(session, [name])
    action = _record_action(
        session,
        operator=operator,
        action=REQUEUE,
        target_kind="landing_file",
        target_id=None,
        target=name,
        reason=reason,
        details=details,
    )
    return ActionResult(action.id, name, True, [row.partition] if row.partition else [])


def get_calibration(session: Session, calibration_id: int) -> Calibration:
    row = session.get(Calibration, calibration_id)
    if row is None:
        raise UnknownTarget(f"no master calibration has id {calibration_id} (see `calibrations list`)")
    return row


def certify(
    session: Session,
    calibration_id: int,
    *,
    begin: dt.date | None,
    end: dt.date | None,
    reason: str,
    operator: str,
) -> ActionResult:
    """Certify a master as good for nights ``begin``..``end`` (open-ended where None). Frames it
    calibrated outside that range are redone with another master; frames reduced with an earlier
    night's master than this one pick it up through the calibration sensor."""
    if begin is not None and end is not None and end < begin:
        raise ValueError(f"--end {end} is before --begin {begin}")
    row = get_calibration(session, calibration_id)
    details = {
        "was_bad": row.bad,
        "previous_reason": row.bad_reason,
        "previous_range": [_iso(row.valid_from), _iso(row.valid_to)],
        "range": [_iso(begin), _iso(end)],
    }
    action = _record_action(
        session,
        operator=operator,
        action=CERTIFY,
        target_kind="calibration",
        target_id=row.id,
        target=_label(row),
        reason=reason,
        details=details,
    )
    row.bad, row.bad_reason = False, None
    row.valid_from, row.valid_to = begin, end
    row.updated_at = utcnow()
    outside = [
        p
        for p in session.scalars(select(Product).where(made_with(row.id)))
        if (begin is not None and p.night < begin) or (end is not None and p.night > end)
    ]
    for product in outside:
        product.fingerprint, product.updated_at = STALE, utcnow()
    partitions = sorted({partition_text(p.instrument, p.night) for p in outside})
    action.details = {**details, "products_marked": len(outside), "partitions": partitions}
    return ActionResult(action.id, _label(row), True, partitions, len(outside))


def decertify(session: Session, calibration_id: int, *, reason: str, operator: str) -> ActionResult:
    """Withdraw a master: it is never chosen again, and the frames it calibrated are reduced again
    with the next best one (or recorded as not reducible, with the reason, when there is none)."""
    row = get_calibration(session, calibration_id)
    action = _record_action(
        session,
        operator=operator,
        action=DECERTIFY,
        target_kind="calibration",
        target_id=row.id,
        target=_label(row),
        reason=reason,
        details={"was_bad": row.bad, "previous_reason": row.bad_reason},
    )
    row.bad, row.bad_reason = True, DECERTIFIED + reason
    row.updated_at = utcnow()
    products = list(session.scalars(select(Product).where(made_with(row.id))))
    mark_products_of_stale(session, row.id)
    partitions = sorted({partition_text(p.instrument, p.night) for p in products})
    action.details = {**action.details, "products_marked": len(products), "partitions": partitions}
    return ActionResult(action.id, _label(row), True, partitions, len(products))


def _iso(day: dt.date | None) -> str | None:
    return day.isoformat() if day else None


def _label(row: Calibration) -> str:
    parts = [row.type, row.instrument, row.night.isoformat(), row.binning, row.readout]
    if row.filter:
        parts.append(row.filter)
    if row.exptime:
        parts.append(f"{row.exptime:g}s")
    return f"#{row.id} " + " ".join(parts)


def calibration_rows(
    session: Session,
    *,
    instrument: str | None = None,
    first_night: dt.date | None = None,
    last_night: dt.date | None = None,
    kind: str | None = None,
) -> list[dict[str, Any]]:
    """Masters with their state, validity and use, newest night first."""
    query = select(Calibration)
    if instrument:
        query = query.where(Calibration.instrument == instrument)
    if first_night:
        query = query.where(Calibration.night >= first_night)
    if last_night:
        query = query.where(Calibration.night <= last_night)
    if kind:
        query = query.where(Calibration.type == kind)
    rows = []
    for row in session.scalars(query.order_by(Calibration.night.desc(), Calibration.type, Calibration.id)):
        used_by = len(
            session.scalars(select(Product.id).where(made_with(row.id), Product.status == REDUCED)).all()
        )
        rows.append(
            {
                "id": row.id,
                "type": row.type,
                "instrument": row.instrument,
                "night": row.night.isoformat(),
                "binning": row.binning,
                "readout": row.readout,
                "filter": row.filter or None,
                "exptime": row.exptime or None,
                "inputs": row.input_count,
                "state": "bad" if row.bad else ("certified" if row.valid_from or row.valid_to else "good"),
                "valid_from": _iso(row.valid_from),
                "valid_to": _iso(row.valid_to),
                "reason": row.bad_reason,
                "used_by": used_by,
                "path": row.path,
            }
        )
    return rows


def audit_rows(session: Session, limit: int = 100) -> list[dict[str, Any]]:
    """The newest operator actions first."""
    query = select(OperatorAction).order_by(OperatorAction.acted_at.desc(), OperatorAction.id.desc())
    return [
        {
            "id": row.id,
            "acted_at": row.acted_at.isoformat(timespec="seconds"),
            "operator": row.operator,
            "action": row.action,
            "target": row.target,
            "reason": row.reason,
            "details": row.details,
        }
        for row in session.scalars(query.limit(limit))
    ]


@dataclass(frozen=True)
class PendingRework:
    instrument: str
    night: dt.date
    masters: bool  # some rework starts at the masters
    ids: tuple[int, ...]


def pending_rework(session: Session, now: dt.datetime | None = None) -> list[PendingRework]:
    """Partitions waiting to run again whose time has come, oldest night first."""
    now = now or utcnow()
    rows = session.execute(
        select(Rework.id, Rework.instrument, Rework.night, Rework.level).where(
            Rework.done_at.is_(None), or_(Rework.not_before.is_(None), Rework.not_before <= now)
        )
    ).all()
    found: dict[tuple[str, dt.date], tuple[bool, list[int]]] = {}
    for row_id, instrument, night, level in rows:
        masters, ids = found.get((instrument, night), (False, []))
        found[(instrument, night)] = (masters or level == MASTERS, [*ids, row_id])
    return [
        PendingRework(instrument, night, masters, tuple(sorted(ids)))
        for (instrument, night), (masters, ids) in sorted(found.items(), key=lambda i: (i[0][1], i[0][0]))
    ]


def settle_rework(
    session: Session, instrument: str, night: dt.date, started: dt.datetime, *, masters_ran: bool
) -> int:
    """Settle a partition's rework asked for before ``started`` (a step's start, UTC) and due by
    then: all of it when the run made the masters, else only what starts at the reduced frames."""
    levels = (MASTERS, REDUCED_FRAMES) if masters_ran else (REDUCED_FRAMES,)
    due = list(
        session.scalars(
            select(Rework.id).where(
                Rework.instrument == instrument,
                Rework.night == night,
                Rework.done_at.is_(None),
                Rework.requested_at <= started,
                or_(Rework.not_before.is_(None), Rework.not_before <= started),
                Rework.level.in_(levels),
            )
        )
    )
    if due:  # a run with nothing to settle writes nothing (SQLite: takes no writer lock)
        session.execute(update(Rework).where(Rework.id.in_(due)).values(done_at=utcnow()))
    return len(due)
