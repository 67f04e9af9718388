"""Catalog tables (SQLAlchemy 2 typed models). SQLite by default, PostgreSQL by URL, same code."""

from __future__ import annotations

import datetime as dt
from typing import Any, ClassVar

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Date,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(tzinfo=None)


class Base(DeclarativeBase):
    type_annotation_map: ClassVar = {dict[str, Any]: JSON}


class InstrumentRow(Base):
    """One registered camera, as the registry described it when it was last synchronised."""

    __tablename__ = "instruments"

    name: Mapped[str] = mapped_column(String(32), primary_key=True)
    description: Mapped[str] = mapped_column(Text, default="")
    site: Mapped[str] = mapped_column(String(128))
    longitude: Mapped[float] = mapped_column(Float)
    timezone: Mapped[str | None] = mapped_column(String(64))
    gain: Mapped[float] = mapped_column(Float)
    read_noise: Mapped[float] = mapped_column(Float)
    saturation: Mapped[float] = mapped_column(Float)
    updated_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)


class RawFrame(Base):
    """One unique raw frame (by content) in the raw store."""

    __tablename__ = "raw_frames"
    __table_args__ = (
        UniqueConstraint("checksum", name="uq_raw_frames_checksum"),
        Index("ix_raw_frames_partition", "instrument", "night"),
        Index("ix_raw_frames_landing", "instrument", "night", "original_name"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    instrument: Mapped[str] = mapped_column(ForeignKey("instruments.name"))
    night: Mapped[dt.date] = mapped_column(Date)
    frame_type: Mapped[str] = mapped_column(String(16))
    filter: Mapped[str | None] = mapped_column(String(32))
    exptime: Mapped[float] = mapped_column(Float)
    binning: Mapped[str] = mapped_column(String(8))
    date_obs: Mapped[dt.datetime] = mapped_column(DateTime)
    object: Mapped[str | None] = mapped_column(String(128))
    ra: Mapped[float | None] = mapped_column(Float)
    dec: Mapped[float | None] = mapped_column(Float)
    naxis1: Mapped[int] = mapped_column(Integer)
    naxis2: Mapped[int] = mapped_column(Integer)
    checksum: Mapped[str] = mapped_column(String(64))
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    store_path: Mapped[str] = mapped_column(String(512), unique=True)
    original_name: Mapped[str] = mapped_column(String(512))
    header: Mapped[dict[str, Any]] = mapped_column(JSON)
    normalised: Mapped[dict[str, Any]] = mapped_column(JSON)
    bad: Mapped[bool] = mapped_column(Boolean, default=False)
    bad_reason: Mapped[str | None] = mapped_column(Text)
    ingested_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)

    duplicates: Mapped[list[RawDuplicate]] = relationship(back_populates="frame")


class RawDuplicate(Base):
    """A landing file whose content was already ingested under another name."""

    __tablename__ = "raw_duplicates"
    __table_args__ = (UniqueConstraint("raw_frame_id", "original_name", name="uq_raw_duplicates"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    raw_frame_id: Mapped[int] = mapped_column(ForeignKey("raw_frames.id"))
    instrument: Mapped[str] = mapped_column(String(32))
    night: Mapped[dt.date] = mapped_column(Date)
    original_name: Mapped[str] = mapped_column(String(512))
    checksum: Mapped[str] = mapped_column(String(64))
    seen_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)

    frame: Mapped[RawFrame] = relationship(back_populates="duplicates")


class Quarantine(Base):
    """A landing file that was refused, with a machine-readable reason.

    Transient reasons (a file still being written) are resolved automatically when a later attempt
    ingests the file; the row stays as history.
    """

    __tablename__ = "quarantine"
    __table_args__ = (Index("ix_quarantine_original", "original_path"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    original_path: Mapped[str] = mapped_column(String(1024))
    reason: Mapped[str] = mapped_column(String(32))
    message: Mapped[str] = mapped_column(Text)
    instrument: Mapped[str | None] = mapped_column(String(32))
    night: Mapped[dt.date | None] = mapped_column(Date)
    checksum: Mapped[str | None] = mapped_column(String(64))
    size_bytes: Mapped[int | None] = mapped_column(BigInteger)
    mtime_ns: Mapped[int | None] = mapped_column(BigInteger)
    copy_path: Mapped[str | None] = mapped_column(String(1024))
    quarantined_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)
    resolved_at: Mapped[dt.datetime | None] = mapped_column(DateTime)
    resolution: Mapped[str | None] = mapped_column(Text)


class LandingFile(Base):
    """A file version in landing/ that was asked for (ingestion or quarantine): the landing sensor's
    memory, kept here rather than in the sensor's cursor so that the cursor stays small whatever the
    size of landing/. One row per file present in landing/; rows of files gone from it are deleted."""

    __tablename__ = "landing_files"
    __table_args__ = (Index("ix_landing_files_state", "state"),)

    name: Mapped[str] = mapped_column(Text, primary_key=True)  # path under landing/, as encode_name()
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    mtime_ns: Mapped[int] = mapped_column(BigInteger)
    partition: Mapped[str | None] = mapped_column(String(64))  # instrument|night; None for rejects
    run_key: Mapped[str] = mapped_column(String(160))
    requested_by: Mapped[str] = mapped_column(String(32))  # landing_sensor or process
    state: Mapped[str] = mapped_column(String(16))  # requested, done, failed
    attempts: Mapped[int] = mapped_column(Integer, default=1)
    requested_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)
    retry_at: Mapped[dt.datetime | None] = mapped_column(DateTime)
    run_id: Mapped[str | None] = mapped_column(String(64))  # the run that settled the state


class Calibration(Base):
    """A master calibration in the product store.

    One row per calibration key (type, binning, readout shape, filter, exposure time) of an
    instrument and night (see ``Instrument.calibration_key``); re-building replaces the file and
    updates the row. ``readout`` is the raw frames' shape ``NYxNX``. ``exptime`` is 0 for masters that
    scale with exposure time (rate darks, bias, flats) and the exposure time for darks that include
    the bias. ``filter`` is '' when it does not apply. ``valid_from``/``valid_to`` hold a certified
    validity range (nights) when an operator has certified the master.
    """

    __tablename__ = "calibrations"
    __table_args__ = (
        UniqueConstraint(
            "type",
            "instrument",
            "night",
            "binning",
            "readout",
            "filter",
            "exptime",
            name="uq_calibrations_key",
        ),
        Index("ix_calibrations_lookup", "type", "instrument", "binning", "readout", "filter", "night"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    type: Mapped[str] = mapped_column(String(16))
    instrument: Mapped[str] = mapped_column(ForeignKey("instruments.name"))
    night: Mapped[dt.date] = mapped_column(Date)
    binning: Mapped[str] = mapped_column(String(8))
    readout: Mapped[str] = mapped_column(String(16), default="", server_default="")
    filter: Mapped[str] = mapped_column(String(32), default="")
    exptime: Mapped[float] = mapped_column(Float, default=0.0)
    path: Mapped[str] = mapped_column(String(512))
    checksum: Mapped[str] = mapped_column(String(64))
    input_count: Mapped[int] = mapped_column(Integer)
    inputs: Mapped[list] = mapped_column(JSON)
    rejected: Mapped[list] = mapped_column(JSON)
    statistics: Mapped[dict[str, Any]] = mapped_column(JSON)
    fingerprint: Mapped[str] = mapped_column(String(64))
    software_version: Mapped[str] = mapped_column(String(32))
    bad: Mapped[bool] = mapped_column(Boolean, default=False)
    bad_reason: Mapped[str | None] = mapped_column(Text)
    valid_from: Mapped[dt.date | None] = mapped_column(Date)
    valid_to: Mapped[dt.date | None] = mapped_column(Date)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)


class Product(Base):
    """A reduced science frame (or the record that it could not be reduced, and why).

    One row per (kind, raw frame); re-reduction updates it. ``fingerprint`` hashes the raw checksum,
    the calibrations used (ids and checksums), the settings and the software version: a product is
    redone exactly when it changes. ``calibration_age`` is nights between frame and calibration.
    """

    __tablename__ = "products"
    __table_args__ = (
        UniqueConstraint("kind", "raw_frame_id", name="uq_products_raw"),
        Index("ix_products_partition", "instrument", "night"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    kind: Mapped[str] = mapped_column(String(16))
    raw_frame_id: Mapped[int] = mapped_column(ForeignKey("raw_frames.id"))
    instrument: Mapped[str] = mapped_column(String(32))
    night: Mapped[dt.date] = mapped_column(Date)
    status: Mapped[str] = mapped_column(String(16))  # reduced | not_reducible
    reason: Mapped[str | None] = mapped_column(Text)
    path: Mapped[str | None] = mapped_column(String(512))
    checksum: Mapped[str | None] = mapped_column(String(64))
    fingerprint: Mapped[str] = mapped_column(String(64))
    software_version: Mapped[str] = mapped_column(String(32))
    bias_id: Mapped[int | None] = mapped_column(ForeignKey("calibrations.id"))
    dark_id: Mapped[int | None] = mapped_column(ForeignKey("calibrations.id"))
    flat_id: Mapped[int | None] = mapped_column(ForeignKey("calibrations.id"))
    calibration_age: Mapped[dict[str, Any]] = mapped_column(JSON)
    # Optional masters the frame was reduced without, and why ({type: reason}).
    skipped: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict, server_default="{}")
    fallback: Mapped[bool] = mapped_column(Boolean, default=False)
    statistics: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)


class Stack(Base):
    """A co-add of one target, filter and binning in one night and instrument, or the record that
    the group was not stacked (a single frame, members left out, refused) and why.

    ``group_key`` is ``target|filter|binning``; ``fingerprint`` hashes the members' products
    (ids and fingerprints), the settings and the step version: a stack is redone exactly when it
    changes. ``reference_product_id`` is the member whose exposure the stack's electrons refer to.
    """

    __tablename__ = "stacks"
    __table_args__ = (
        UniqueConstraint("instrument", "night", "group_key", name="uq_stacks_group"),
        Index("ix_stacks_partition", "instrument", "night"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    instrument: Mapped[str] = mapped_column(String(32))
    night: Mapped[dt.date] = mapped_column(Date)
    group_key: Mapped[str] = mapped_column(String(256))
    target: Mapped[str] = mapped_column(String(128))
    filter: Mapped[str] = mapped_column(String(32), default="")
    binning: Mapped[str] = mapped_column(String(8))
    status: Mapped[str] = mapped_column(String(16))  # stacked | not_stacked | failed
    reason: Mapped[str | None] = mapped_column(Text)
    path: Mapped[str | None] = mapped_column(String(512))
    checksum: Mapped[str | None] = mapped_column(String(64))
    fingerprint: Mapped[str] = mapped_column(String(64))
    software_version: Mapped[str] = mapped_column(String(32))
    n_members: Mapped[int] = mapped_column(Integer)  # members that went into the stack
    reference_product_id: Mapped[int | None] = mapped_column(ForeignKey("products.id"))
    exptime: Mapped[float] = mapped_column(Float, default=0.0)  # seconds, of the reference exposure
    statistics: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)

    members: Mapped[list[StackMember]] = relationship(
        back_populates="stack", cascade="all, delete-orphan", order_by="StackMember.id"
    )


class StackMember(Base):
    """A reduced frame of a stack's group: used (with its weight, scale and background offset) or
    left out with its reason."""

    __tablename__ = "stack_members"
    __table_args__ = (UniqueConstraint("stack_id", "product_id", name="uq_stack_members"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    stack_id: Mapped[int] = mapped_column(ForeignKey("stacks.id", ondelete="CASCADE"), index=True)
    product_id: Mapped[int] = mapped_column(ForeignKey("products.id"), index=True)
    product_fingerprint: Mapped[str] = mapped_column(String(64))
    included: Mapped[bool] = mapped_column(Boolean)
    reason: Mapped[str | None] = mapped_column(Text)
    weight: Mapped[float | None] = mapped_column(Float)  # 1 / e-^2
    scale: Mapped[float | None] = mapped_column(Float)  # to the reference exposure
    background_offset: Mapped[float | None] = mapped_column(Float)  # e-, added after scaling
    scale_method: Mapped[str | None] = mapped_column(String(32))
    wcs_offset_arcsec: Mapped[float | None] = mapped_column(Float)  # from the group's consensus
    matched_sources: Mapped[int | None] = mapped_column(Integer)

    stack: Mapped[Stack] = relationship(back_populates="members")


class ArchiveRecord(Base):
    """One version of one archived file: where it is (``object_key`` in the archive store), what it
    is (its fields, for finding it) and its content (``md5``, ``sha256``, ``size_bytes``).

    ``name`` is the file's name in the archive; the same name with other content is a new
    ``version`` (the older versions stay); the same content is never archived twice.
    ``source_kind``/``source_id`` point at the catalog row it was made from (raw_frames,
    calibrations, products or stacks), ``related`` names the files it was made from or with.
    """

    __tablename__ = "archive_records"
    __table_args__ = (
        UniqueConstraint("name", "version", name="uq_archive_records_version"),
        Index("ix_archive_records_partition", "instrument", "night"),
        Index("ix_archive_records_md5", "md5"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(512))
    version: Mapped[int] = mapped_column(Integer)
    level: Mapped[str] = mapped_column(String(16))  # raw | master | reduced | stack
    source_kind: Mapped[str] = mapped_column(String(16))
    source_id: Mapped[int] = mapped_column(Integer)
    site: Mapped[str | None] = mapped_column(String(128))
    telescope: Mapped[str | None] = mapped_column(String(64))
    instrument: Mapped[str] = mapped_column(String(32))
    night: Mapped[dt.date] = mapped_column(Date)  # observation day
    date_obs: Mapped[dt.datetime | None] = mapped_column(DateTime)
    proposal: Mapped[str | None] = mapped_column(String(64))
    target: Mapped[str | None] = mapped_column(String(128))
    exptime: Mapped[float | None] = mapped_column(Float)
    filter: Mapped[str | None] = mapped_column(String(32))
    configuration_type: Mapped[str | None] = mapped_column(String(32))
    related: Mapped[list] = mapped_column(JSON)
    public_date: Mapped[dt.date] = mapped_column(Date)
    footprint: Mapped[list | None] = mapped_column(JSON)  # [[ra, dec], ...] degrees, corners in order
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    md5: Mapped[str] = mapped_column(String(32))
    sha256: Mapped[str] = mapped_column(String(64))
    object_key: Mapped[str] = mapped_column(String(1024))
    archived_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)


class ArchiveMessage(Base):
    """The transactional outbox of archive notifications: written in the same transaction as its
    record, delivered to the broker later (and again after a broker outage) until ``delivered_at``
    is set. ``payload`` is the JSON message; its ``record_id`` is the message id consumers dedupe on."""

    __tablename__ = "archive_outbox"
    __table_args__ = (Index("ix_archive_outbox_pending", "delivered_at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    record_id: Mapped[int] = mapped_column(ForeignKey("archive_records.id"), unique=True)
    payload: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)
    delivered_at: Mapped[dt.datetime | None] = mapped_column(DateTime)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_error: Mapped[str | None] = mapped_column(Text)


class LandingRoute(Base):
    """Where a landing file version belongs (its night and instrument, from its primary header), so
    that a run of a few partitions looks up their files here instead of opening every header in
    landing/. ``instrument`` and ``night`` are None for a file that fits no partition. Rows of files
    gone from landing/ are deleted; a new size or mtime is a new version, routed again."""

    __tablename__ = "landing_routes"
    __table_args__ = (Index("ix_landing_routes_partition", "instrument", "night"),)

    name: Mapped[str] = mapped_column(Text, primary_key=True)  # path under landing/, as encode_name()
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    mtime_ns: Mapped[int] = mapped_column(BigInteger)
    instrument: Mapped[str | None] = mapped_column(String(32))
    night: Mapped[dt.date | None] = mapped_column(Date)
    routed_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)


class OperatorAction(Base):
    """The audit trail of operator commands: who did what to which frame or master, when and why.
    ``details`` holds what the action changed (rows marked stale, partitions to redo)."""

    __tablename__ = "operator_actions"
    __table_args__ = (Index("ix_operator_actions_at", "acted_at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    acted_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)
    operator: Mapped[str] = mapped_column(String(128))
    action: Mapped[str] = mapped_column(String(32))  # mark_good, mark_bad, certify, decertify, requeue
    target_kind: Mapped[str] = mapped_column(String(16))  # raw_frame, calibration, landing_file
    target_id: Mapped[int | None] = mapped_column(Integer)
    target: Mapped[str] = mapped_column(Text)  # what the operator named
    reason: Mapped[str] = mapped_column(Text)
    details: Mapped[dict[str, Any]] = mapped_column(JSON)


class Rework(Base):
    """A partition that must run again (``level`` masters: from its masters on; reduced: from its
    reduced frames on), at ``not_before`` at the earliest. The calibration sensor (and `process`)
    request the run; the reduced_frames step that covers the partition settles it (``done_at``)."""

    __tablename__ = "rework"
    __table_args__ = (Index("ix_rework_pending", "done_at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    instrument: Mapped[str] = mapped_column(String(32))
    night: Mapped[dt.date] = mapped_column(Date)
    level: Mapped[str] = mapped_column(String(16))
    reason: Mapped[str] = mapped_column(Text)
    action_id: Mapped[int | None] = mapped_column(ForeignKey("operator_actions.id"))
    requested_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)
    not_before: Mapped[dt.datetime | None] = mapped_column(DateTime)
    done_at: Mapped[dt.datetime | None] = mapped_column(DateTime)


class QualityMetric(Base):
    """One value of one quality metric of one frame or master: the time series the trend plots, the
    checks and the nightly report read. ``value`` is None when the metric could not be computed for
    the frame, and ``reason`` says why (never a zero that looks like a measurement). ``subject`` names
    what was measured (a raw frame's or a product's store key); ``time`` is when it was observed (UTC,
    the frame's DATE-OBS; a master's: its latest input). Re-measuring a subject replaces its rows."""

    __tablename__ = "quality_metrics"
    __table_args__ = (
        UniqueConstraint("subject", "metric", name="uq_quality_metrics_subject"),
        # Range queries: one metric of one instrument between two times (trends, `plot`).
        Index("ix_quality_metrics_series", "metric", "instrument", "time"),
        Index("ix_quality_metrics_partition", "instrument", "night"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    instrument: Mapped[str] = mapped_column(String(32))
    night: Mapped[dt.date] = mapped_column(Date)
    subject: Mapped[str] = mapped_column(String(512))
    subject_kind: Mapped[str] = mapped_column(String(16))  # raw | master | reduced
    frame_type: Mapped[str] = mapped_column(String(16))  # bias | dark | flat | science
    filter: Mapped[str] = mapped_column(String(32), default="")
    metric: Mapped[str] = mapped_column(String(48))
    value: Mapped[float | None] = mapped_column(Float)
    unit: Mapped[str] = mapped_column(String(24))
    reason: Mapped[str | None] = mapped_column(Text)
    time: Mapped[dt.datetime] = mapped_column(DateTime)
    recorded_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)
