"""What the landing sensor asked for, file version by file version (the table ``landing_files``)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from reduction_assets.catalog.models import LandingFile, LandingRoute, utcnow

# The states of a requested file version.
REQUESTED = "requested"  # a run was asked for and has not ended (or has not been created yet)
DONE = "done"  # its run succeeded
FAILED = "failed"  # its run failed: asked for again at retry_at, until attempts run out


@dataclass(frozen=True)
class LandingRecord:
    """One row of ``landing_files``, detached from the session."""

    name: str  # as encode_name()
    size_bytes: int
    mtime_ns: int
    partition: str | None
    run_key: str
    requested_by: str
    state: str
    attempts: int
    requested_at: dt.datetime
    retry_at: dt.datetime | None = None
    run_id: str | None = None

    @property
    def stamp(self) -> tuple[int, int]:
        return (self.size_bytes, self.mtime_ns)


@dataclass(frozen=True)
class LandingRequest:
    """A file version being asked for now."""

    name: str  # as encode_name()
    size_bytes: int
    mtime_ns: int
    partition: str | None
    run_key: str
    attempts: int


def _record(row: LandingFile) -> LandingRecord:
    return LandingRecord(
        name=row.name,
        size_bytes=row.size_bytes,
        mtime_ns=row.mtime_ns,
        partition=row.partition,
        run_key=row.run_key,
        requested_by=row.requested_by,
        state=row.state,
        attempts=row.attempts,
        requested_at=row.requested_at,
        retry_at=row.retry_at,
        run_id=row.run_id,
    )


def landing_records(session: Session) -> dict[str, LandingRecord]:
    """Every remembered file version, by encoded name (as many rows as files in landing/)."""
    return {row.name: _record(row) for row in session.scalars(select(LandingFile))}


def record_requests(session: Session, requests: Iterable[LandingRequest], requested_by: str) -> None:
    """Remember that these file versions were asked for (replacing what was known of their names)."""
    now = utcnow()
    for request in requests:
        row = session.get(LandingFile, request.name) or LandingFile(name=request.name)
        row.size_bytes = request.size_bytes
        row.mtime_ns = request.mtime_ns
        row.partition = request.partition
        row.run_key = request.run_key
        row.requested_by = requested_by
        row.state = REQUESTED
        row.attempts = request.attempts
        row.requested_at = now
        row.retry_at = None
        row.run_id = None
        session.add(row)


def settle_run_key(
    session: Session, run_key: str, state: str, run_id: str | None, retry_at: dt.datetime | None = None
) -> int:
    """Set the state of the file versions asked for under ``run_key``; returns how many there were."""
    rows = session.scalars(
        select(LandingFile).where(LandingFile.run_key == run_key, LandingFile.state == REQUESTED)
    ).all()
    for row in rows:
        row.state = state
        row.run_id = run_id
        row.retry_at = retry_at
    return len(rows)


def forget_landing_files(session: Session, names: Iterable[str]) -> int:
    """Drop the rows of files no longer in landing/ (encoded names); returns how many."""
    names = list(names)
    dropped = 0
    for start in range(0, len(names), 500):  # bounded IN lists
        chunk = names[start : start + 500]
        dropped += session.execute(delete(LandingFile).where(LandingFile.name.in_(chunk))).rowcount or 0
    return dropped


def import_requested(session: Session, requested: Mapping[str, tuple[int, int]], run_key: str) -> int:
    """Remember file versions asked for before this table existed (a sensor cursor of release 0.2)
    as done, unless the table already knows their names; returns how many were added."""
    known = set(session.scalars(select(LandingFile.name)))
    added = 0
    for name, (size, mtime_ns) in requested.items():
        if name in known:
            continue
        session.add(
            LandingFile(
                name=name,
                size_bytes=size,
                mtime_ns=mtime_ns,
                partition=None,
                run_key=run_key,
                requested_by="imported",
                state=DONE,
                attempts=1,
            )
        )
        added += 1
    return added


def landing_state_counts(session: Session) -> dict[str, int]:
    """Number of remembered file versions per state."""
    query = select(LandingFile.state, func.count()).group_by(LandingFile.state)
    return dict(session.execute(query).tuples())


# (size_bytes, mtime_ns, instrument, night) of a routed file version; instrument and night are None
# for a file that fits no partition.
KnownRoute = tuple[int, int, str | None, dt.date | None]


def known_routes(session: Session) -> dict[str, KnownRoute]:
    """Every routed landing file version, by encoded name."""
    rows = session.execute(
        select(
            LandingRoute.name,
            LandingRoute.size_bytes,
            LandingRoute.mtime_ns,
            LandingRoute.instrument,
            LandingRoute.night,
        )
    )
    return {name: (size, mtime, instrument, night) for name, size, mtime, instrument, night in rows}


def remember_routes(session: Session, routes: Mapping[str, KnownRoute]) -> None:
    """Remember where these file versions (encoded names) belong, replacing older versions."""
    now = utcnow()
    for name, (size, mtime_ns, instrument, night) in routes.items():
        row = session.get(LandingRoute, name) or LandingRoute(name=name)
        row.size_bytes, row.mtime_ns, row.instrument, row.night = size, mtime_ns, instrument, night
        row.routed_at = now
        session.add(row)


def forget_routes(session: Session, names: Iterable[str]) -> int:
    """Drop the routes of files no longer in landing/ (encoded names); returns how many."""
    names = list(names)
    dropped = 0
    for start in range(0, len(names), 500):
        chunk = names[start : start + 500]
        dropped += session.execute(delete(LandingRoute).where(LandingRoute.name.in_(chunk))).rowcount or 0
    return dropped
