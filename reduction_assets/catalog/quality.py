"""The quality metrics' time series: recording a partition's measurements, reading ranges of one
metric back (trends, `reduction-assets plot`, the checks' history) and a partition's values (the
nightly report)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from reduction_assets.catalog.db import advisory_key, hold_advisory_lock
from reduction_assets.catalog.models import QualityMetric


@dataclass(frozen=True)
class MetricRow:
    """One measurement to record (``value`` None: missing, ``reason`` says why)."""

    instrument: str
    night: dt.date
    subject: str
    subject_kind: str  # raw | master | reduced
    frame_type: str
    filter: str
    metric: str
    value: float | None
    unit: str
    reason: str | None
    time: dt.datetime


# What makes two measurements the same (recorded_at aside).
_COMPARED = ("subject", "subject_kind", "frame_type", "filter", "metric", "value", "unit", "reason", "time")


def record_partition_metrics(
    session: Session, instrument: str, night: dt.date, rows: Sequence[MetricRow]
) -> int:
    """Replace the partition's measurements with ``rows`` (a re-measured night never keeps values
    of frames that are gone or were measured by an older rule). Returns the rows written: 0 when
    the partition already holds exactly these (a run that changes nothing writes nothing, so it
    never waits for SQLite's writer lock). Overlapping runs of the partition take turns (a
    PostgreSQL advisory lock until the transaction ends): each otherwise deletes only the rows it
    saw and inserts beside the other's, which the (subject, metric) key refuses."""
    hold_advisory_lock(session, advisory_key(f"quality_metrics {instrument} {night.isoformat()}"))
    held = session.execute(
        select(*(getattr(QualityMetric, name) for name in _COMPARED)).where(
            QualityMetric.instrument == instrument, QualityMetric.night == night
        )
    ).all()
    if sorted(map(tuple, held), key=repr) == sorted(
        (tuple(getattr(row, name) for name in _COMPARED) for row in rows), key=repr
    ):
        return 0
    session.execute(
        delete(QualityMetric).where(QualityMetric.instrument == instrument, QualityMetric.night == night)
    )
    session.add_all(
        QualityMetric(
            instrument=row.instrument,
            night=row.night,
            subject=row.subject,
            subject_kind=row.subject_kind,
            frame_type=row.frame_type,
            filter=row.filter,
            metric=row.metric,
            value=row.value,
            unit=row.unit,
            reason=row.reason,
            time=row.time,
        )
        for row in rows
    )
    return len(rows)


def metric_series(
    session: Session,
    metric: str,
    start: dt.date,
    end: dt.date,
    instruments: Iterable[str] | None = None,
) -> list[QualityMetric]:
    """Measured values of ``metric`` on nights ``start``..``end`` (inclusive), oldest first."""
    query = select(QualityMetric).where(
        QualityMetric.metric == metric,
        QualityMetric.night >= start,
        QualityMetric.night <= end,
        QualityMetric.value.is_not(None),
    )
    if instruments is not None:
        query = query.where(QualityMetric.instrument.in_(list(instruments)))
    return list(session.scalars(query.order_by(QualityMetric.time, QualityMetric.id)))


def partition_metrics(session: Session, instrument: str, night: dt.date) -> list[QualityMetric]:
    """Every measurement of one night and instrument, missing ones included."""
    return list(
        session.scalars(
            select(QualityMetric)
            .where(QualityMetric.instrument == instrument, QualityMetric.night == night)
            .order_by(QualityMetric.subject, QualityMetric.metric)
        )
    )


def earlier_values(
    session: Session, metric: str, instrument: str, before: dt.date, nights: int
) -> dict[dt.date, list[float]]:
    """Values of ``metric`` on the ``nights`` nights before ``before`` that have any, by night."""
    rows = session.execute(
        select(QualityMetric.night, QualityMetric.value)
        .where(
            QualityMetric.metric == metric,
            QualityMetric.instrument == instrument,
            QualityMetric.night < before,
            QualityMetric.value.is_not(None),
        )
        .order_by(QualityMetric.night.desc())
    )
    found: dict[dt.date, list[float]] = {}
    for night, value in rows:
        if night not in found and len(found) == nights:
            break
        found.setdefault(night, []).append(value)
    return found


def latest_night(session: Session, instrument: str) -> dt.date | None:
    """The latest night with measurements of ``instrument``."""
    return session.scalar(select(func.max(QualityMetric.night)).where(QualityMetric.instrument == instrument))


def measured_metrics(session: Session) -> list[str]:
    """The metrics the catalog holds values of."""
    return sorted(session.scalars(select(QualityMetric.metric).distinct()))
