"""Ingestion of landing files into the raw store and the catalog (no Dagster here).

Each file is handled in its own transaction, so a run killed half-way leaves every file either fully
recorded or untouched, and a re-run completes the rest. Landing files are only read, never modified.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from reduction_assets.catalog import Catalog, raw
from reduction_assets.catalog.db import DuplicateRow, retry_transient
from reduction_assets.fits import headers as reasons
from reduction_assets.fits.headers import (
    REDACTED_KEYWORD,
    FrameInfo,
    FrameRejected,
    header_to_json,
    redacted_header,
    sanitise,
    shown,
)
from reduction_assets.fits.validate import (
    FileState,
    ValidatedFrame,
    read_primary_header,
    sha256_of,
    validate_raw_file,
)
from reduction_assets.instruments import Registry
from reduction_assets.storage import ObjectStore
from reduction_assets.support.keys import raw_key
from reduction_assets.support.progress import progress
from reduction_assets.tasks.landing import resolve_in_landing, route_file

log = logging.getLogger(__name__)

# Reasons that describe a passing state of the file, not its content: resolved by a later success.
TRANSIENT_REASONS = {reasons.STILL_BEING_WRITTEN, reasons.VANISHED}


@dataclass
class IngestReport:
    """What one ingestion pass did, file by file (landing-relative names)."""

    ingested: list[str] = field(default_factory=list)
    already_ingested: list[str] = field(default_factory=list)
    duplicates: list[tuple[str, str]] = field(default_factory=list)  # (name, name it duplicates)
    quarantined: list[tuple[str, str, str]] = field(default_factory=list)  # (name, reason, message)
    other_partition: list[tuple[str, str]] = field(default_factory=list)  # (name, partition)
    by_type_filter: Counter = field(default_factory=Counter)

    def merge(self, other: IngestReport) -> None:
        """Add another pass's results to this report."""
        self.ingested += other.ingested
        self.already_ingested += other.already_ingested
        self.duplicates += other.duplicates
        self.quarantined += other.quarantined
        self.other_partition += other.other_partition
        self.by_type_filter.update(other.by_type_filter)

    def summary(self) -> dict[str, int]:
        return {
            "ingested": len(self.ingested),
            "already_ingested": len(self.already_ingested),
            "duplicates": len(self.duplicates),
            "quarantined": len(self.quarantined),
            "other_partition": len(self.other_partition),
        }


class Ingestor:
    """Validates landing files, copies good ones into the raw store, records everything."""

    def __init__(
        self,
        *,
        landing: Path,
        registry: Registry,
        catalog: Catalog,
        raw_store: ObjectStore,
        quarantine_store: ObjectStore,
        night_in_range: Callable[[dt.date], bool] = lambda night: True,
        settle_seconds: float = 0.0,
    ):
        self.landing = landing
        self.registry = registry
        self.catalog = catalog
        self.raw_store = raw_store
        self.quarantine_store = quarantine_store
        self.night_in_range = night_in_range
        self.settle_seconds = settle_seconds

    def ingest(self, names: list[str], partition: tuple[str, dt.date] | None = None) -> IngestReport:
        """Ingest landing files (landing-relative names).

        With ``partition`` = (instrument, night), files that belong to another partition are left
        alone and reported in ``other_partition``; with None, every file is taken where it belongs.
        """
        report = IngestReport()
        where = f"{partition[0]} {partition[1]}" if partition else "landing/"
        for name in progress(sorted(set(names)), f"ingesting {where}", "file"):
            self._ingest_one(name, partition, report)
        return report

    def _ingest_one(self, name: str, partition, report: IngestReport) -> None:
        try:
            path = resolve_in_landing(self.landing, name)
        except FrameRejected as rejected:
            self._quarantine(name, None, rejected, report)
            return
        try:
            frame = validate_raw_file(path, self.registry, settle_seconds=self.settle_seconds)
        except FrameRejected as rejected:
            self._quarantine(name, path, rejected, report)
            return
        except Exception as err:
            log.exception("validating %s failed unexpectedly", shown(name))
            self._quarantine(
                name,
                path,
                FrameRejected(reasons.VALIDATION_ERROR, f"validation failed: {type(err).__name__}: {err}"),
                report,
            )
            return
        info = frame.info
        if partition is not None and (info.instrument, info.night) != partition:
            report.other_partition.append((shown(name), f"{info.instrument}|{info.night.isoformat()}"))
            return
        if not self.night_in_range(info.night):
            self._quarantine(
                name,
                path,
                FrameRejected(
                    reasons.NIGHT_OUT_OF_RANGE,
                    f"night {info.night} is outside the partitions this installation covers",
                ),
                report,
                info=info,
                frame=frame,
            )
            return
        self._record(name, path, frame, report)

    @retry_transient
    def _record(self, name: str, path: Path, frame: ValidatedFrame, report: IngestReport) -> None:
        try:
            self._record_once(name, path, frame, report)
        except DuplicateRow:
            # Another ingestion (a concurrent run, the daemon) recorded the same content between our
            # lookup and our insert: this time the lookup finds its row, and the file is done.
            log.info("%s was recorded concurrently; looking again", shown(name))
            self._record_once(name, path, frame, report)

    def _record_once(self, name: str, path: Path, frame: ValidatedFrame, report: IngestReport) -> None:
        info = frame.info
        name = shown(name)
        with self.catalog.session() as session:
            existing = raw.raw_frame_with_checksum(session, frame.checksum)
            if existing is not None:
                if existing.original_name == name:
                    report.already_ingested.append(name)
                else:
                    raw.record_duplicate(session, existing, name, frame.checksum)
                    report.duplicates.append((name, existing.original_name))
                raw.resolve_quarantine(
                    session, name, f"content already in raw frame {existing.id}", TRANSIENT_REASONS
                )
                return
            conflict = raw.raw_frame_named(session, info.instrument, info.night, name)
            if conflict is not None:
                rejected = FrameRejected(
                    reasons.NAME_CONFLICT,
                    f"{name} was ingested as raw frame {conflict.id} (sha256 {conflict.checksum[:12]}…) "
                    f"and now arrives with different content (sha256 {frame.checksum[:12]}…)",
                )
                self._quarantine_in(session, name, path, rejected, report, info=info, frame=frame)
                return
            key = raw_key(info, frame.checksum)
            self.raw_store.put_file(path, key, frame.checksum)
            row = raw.add_raw_frame(
                session,
                instrument=info.instrument,
                night=info.night,
                frame_type=info.frame_type,
                filter=info.filter,
                exptime=info.exptime,
                binning=info.binning_label,
                date_obs=info.date_obs,
                object=info.object,
                ra=info.ra,
                dec=info.dec,
                naxis1=info.shape[1],
                naxis2=info.shape[0],
                checksum=frame.checksum,
                size_bytes=frame.state.size,
                store_path=key,
                original_name=name,
                header=catalog_header(frame.header),
                normalised=info.as_json(),
            )
            raw.resolve_quarantine(session, name, f"ingested as raw frame {row.id}")
        report.ingested.append(name)
        report.by_type_filter[(info.frame_type, info.filter or "-")] += 1

    def _quarantine(self, name, path, rejected, report, info=None, frame=None) -> None:
        @retry_transient
        def write():
            with self.catalog.session() as session:
                self._quarantine_in(session, name, path, rejected, report, info=info, frame=frame)

        write()

    def _quarantine_in(
        self,
        session,
        name: str,
        path: Path | None,
        rejected: FrameRejected,
        report: IngestReport,
        info: FrameInfo | None = None,
        frame: ValidatedFrame | None = None,
    ) -> None:
        """Record a refused file once per (name, reason, size, mtime) and keep a verified copy."""
        name = shown(name)
        state = frame.state if frame else None
        if state is None and path is not None:
            try:
                state = FileState.of(path)
            except FrameRejected:
                state = None
        instrument, night = (info.instrument, info.night) if info else self._best_route(path)
        size, mtime_ns = (state.size, state.mtime_ns) if state else (None, None)
        report.quarantined.append((name, rejected.reason, rejected.message))
        if raw.open_quarantine_entry(session, name, rejected.reason, size, mtime_ns) is not None:
            return
        checksum = frame.checksum if frame else None
        copy_key = None
        if (
            path is not None
            and state is not None
            and state.size > 0
            and rejected.reason not in TRANSIENT_REASONS
        ):
            try:
                checksum = checksum or sha256_of(path)
                copy_key = f"{checksum[:16]}-{sanitise(Path(name).name, max_length=96)}"
                self.quarantine_store.put_file(path, copy_key, checksum)
            except OSError as err:
                log.warning("could not keep a copy of quarantined %s: %s", name, err)
                copy_key = None
        raw.add_quarantine(
            session,
            original_path=name,
            reason=rejected.reason,
            message=rejected.message,
            instrument=instrument,
            night=night,
            checksum=checksum,
            size_bytes=size,
            mtime_ns=mtime_ns,
            copy_path=copy_key,
        )

    def _best_route(self, path: Path | None) -> tuple[str | None, dt.date | None]:
        if path is None:
            return None, None
        try:
            route = route_file(path, self.registry)
            return route.instrument, route.night
        except FrameRejected:
            pass
        try:
            instrument = self.registry.identify_header(read_primary_header(path))
            return (instrument.name if instrument else None), None
        except FrameRejected:
            return None, None


def catalog_header(header) -> dict:
    """The raw header as the catalog keeps it: credential-like values redacted, and which keywords
    were (a refused archive would not be the only place a password lands)."""
    shown, redacted = redacted_header(header)
    record = header_to_json(shown)
    if redacted:
        record[REDACTED_KEYWORD] = " ".join(redacted)
    return record
