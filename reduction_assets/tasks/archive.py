"""Archiving one file: validate its headers, checksum it, upload it, record it (LCO's ingester's
steps: validate, md5, upload, record with a version).

The order keeps the archive and the catalog in step: a file is uploaded under a key that names its
version, verified, and only then recorded; a failed upload leaves no record, and a failed record
removes the object again. The same content under the same name is never archived twice; other
content under the same name becomes the next version, the older versions stay.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import tempfile
import warnings
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from astropy.io import fits
from astropy.wcs import WCS, FITSFixedWarning

from reduction_assets.catalog import Catalog
from reduction_assets.catalog.archive import (
    MASTER,
    RAW,
    REDUCED_LEVEL,
    STACK,
    Candidate,
    VersionTaken,
    add_message,
    add_record,
    archive_candidates,
    hold_name,
    latest_record,
)
from reduction_assets.instruments import Instrument, Registry
from reduction_assets.storage import ObjectStore, StoreError
from reduction_assets.support.keys import archive_key
from reduction_assets.support.progress import progress
from reduction_assets.support.secrets import DENIED_KEYWORD, DENIED_VALUE

# Keywords every file of a level must carry in one of its headers; raw and reduced frames also the
# camera's own keywords (from the registry) for these quantities.
REQUIRED_KEYWORDS = {
    RAW: (),
    MASTER: ("INSTRUME", "CALTYPE", "NIGHT", "BINNING", "NCOMBINE", "FINGERPR"),
    REDUCED_LEVEL: ("FINGERPR", "RAWSUM", "SOFTVER"),
    STACK: ("INSTRUME", "DAY-OBS", "OBJECT", "EXPTIME", "NCOMBINE", "FINGERPR"),
}
CAMERA_QUANTITIES = {RAW: ("frame_type", "date_obs", "exptime"), REDUCED_LEVEL: ("date_obs", "exptime")}
_CHUNK = 1 << 20

ARCHIVED, ALREADY_ARCHIVED, INVALID, FAILED = "archived", "already_archived", "invalid", "failed"
WOULD_ARCHIVE = "would_archive"  # --check-only: valid and not archived yet


@dataclass(frozen=True)
class ArchiveSettings:
    """Who sees what when: days after the observation before science data are public (calibrations
    are public at once), per proposal when listed."""

    embargo_days: int = 365
    embargo_by_proposal: Mapping[str, int] = field(default_factory=dict)


@dataclass
class Outcome:
    name: str
    level: str
    status: str  # archived, already_archived, invalid, failed
    reason: str | None = None
    version: int | None = None
    record_id: int | None = None
    object_key: str | None = None


def header_problems(headers: list[fits.Header], required: tuple[str, ...]) -> list[str]:
    """What keeps a file out of the archive: required keywords missing from every header, and
    deny-listed keywords or credential-like values (named by keyword, never quoted)."""
    problems = [f"missing keyword {k}" for k in required if not any(k in h for h in headers)]
    for header in headers:
        for card in header.cards:
            # Anything that looks like a credential refuses the file (support.secrets says what does).
            if card.keyword and DENIED_KEYWORD.search(card.keyword):
                problems.append(f"keyword {card.keyword} is on the deny-list (looks like a credential)")
            elif isinstance(card.value, str) and DENIED_VALUE.search(card.value):  # COMMENT, HISTORY too
                problems.append(f"the value of {card.keyword or 'a card'} looks like a credential")
    return problems


def required_keywords(level: str, instrument: Instrument) -> tuple[str, ...]:
    """The keywords a file of ``level`` from ``instrument`` must carry."""
    camera = (instrument.keyword(q) for q in CAMERA_QUANTITIES.get(level, ()))
    return (*REQUIRED_KEYWORDS[level], *(k for k in camera if k))


def footprint(headers: list[fits.Header]) -> list[list[float]] | None:
    """The corners (RA, Dec in degrees, in order around the edge) of the first image with a
    celestial WCS, or None."""
    for header in headers:
        if header.get("NAXIS", 0) != 2:
            continue
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FITSFixedWarning)
            wcs = WCS(header)
        if not wcs.has_celestial:
            continue
        ny, nx = header["NAXIS2"], header["NAXIS1"]
        corners = np.array([[-0.5, -0.5], [nx - 0.5, -0.5], [nx - 0.5, ny - 0.5], [-0.5, ny - 0.5]])
        world = wcs.celestial.all_pix2world(corners, 0)
        return [[round(float(ra), 7), round(float(dec), 7)] for ra, dec in world]
    return None


def public_date(candidate: Candidate, proposal: str | None, settings: ArchiveSettings) -> dt.date:
    """Calibrations (raw and master) are public at once; science after the proposal's embargo."""
    if candidate.calibration:
        return candidate.night
    days = settings.embargo_by_proposal.get(proposal or "", settings.embargo_days)
    return candidate.night + dt.timedelta(days=int(days))


def _copy_and_hash(source: ObjectStore, key: str, folder: Path) -> tuple[Path, str, str, int]:
    """A local copy of a stored object, with its SHA-256, MD5 and size."""
    sha, md5, size = hashlib.sha256(), hashlib.md5(usedforsecurity=False), 0
    copy = folder / "candidate.fits"
    with source.open(key) as stream, open(copy, "wb") as out:
        while chunk := stream.read(_CHUNK):
            sha.update(chunk)
            md5.update(chunk)
            size += len(chunk)
            out.write(chunk)
    return copy, sha.hexdigest(), md5.hexdigest(), size


def _already_archived(candidate: Candidate, latest) -> Outcome:
    return Outcome(
        candidate.name,
        candidate.level,
        ALREADY_ARCHIVED,
        version=latest.version,
        record_id=latest.id,
        object_key=latest.object_key,
    )


class _Invalid(Exception):
    """A file's own fault that keeps it out of the archive (its reason)."""


@dataclass(frozen=True)
class _LocalCopy:
    """A candidate's file copied here and checked: its path, hashes, size (bytes), headers and
    proposal (PROPID)."""

    path: Path
    sha256: str
    md5: str
    size: int
    headers: list[fits.Header]
    proposal: str | None


def _checked_copy(
    candidate: Candidate, source: ObjectStore, instrument: Instrument, folder: Path
) -> _LocalCopy:
    """A local copy of the candidate's file, once it proves to be the catalogued content with sound
    headers; raises :class:`_Invalid` with the reason otherwise."""
    try:
        copy, sha, md5, size = _copy_and_hash(source, candidate.key, folder)
    except StoreError as err:
        raise _Invalid(f"unreadable: {err}") from None
    if sha != candidate.checksum:
        raise _Invalid(
            "the file changed after it was catalogued (checksum mismatch): "
            "`reduction-assets verify` finds and rebuilds it"
        )
    try:
        with fits.open(copy) as hdul:
            headers = [hdu.header.copy() for hdu in hdul]
    except (OSError, ValueError) as err:
        raise _Invalid(f"unreadable FITS: {type(err).__name__}") from None
    problems = header_problems(headers, required_keywords(candidate.level, instrument))
    if problems:
        raise _Invalid("; ".join(problems))
    proposal = str(headers[0].get("PROPID") or "").strip() or None
    return _LocalCopy(copy, sha, md5, size, headers, proposal)


def _record_values(
    candidate: Candidate,
    local: _LocalCopy,
    instrument: Instrument,
    settings: ArchiveSettings,
    version: int,
    key: str,
) -> dict[str, Any]:
    """The fields of the archive record of a file uploaded under ``key`` as ``version``."""
    primary = local.headers[0]
    return dict(
        name=candidate.name,
        version=version,
        level=candidate.level,
        source_kind=candidate.source_kind,
        source_id=candidate.source_id,
        # the observatory's own codes when its headers carry them (as LCO's do)
        site=str(primary.get("SITEID") or "").strip() or instrument.site.name,
        telescope=str(primary.get("TELID") or primary.get("TELESCOP") or "").strip() or None,
        instrument=candidate.instrument,
        night=candidate.night,
        date_obs=candidate.date_obs,
        proposal=local.proposal,
        target=candidate.target,
        exptime=candidate.exptime,
        filter=candidate.filter,
        configuration_type=candidate.configuration_type,
        related=list(candidate.related),
        public_date=public_date(candidate, local.proposal, settings),
        footprint=footprint(local.headers),
        size_bytes=local.size,
        md5=local.md5,
        sha256=local.sha256,
        object_key=key,
    )


def _upload_and_record(
    candidate: Candidate,
    local: _LocalCopy,
    *,
    archive: ObjectStore,
    catalog: Catalog,
    instrument: Instrument,
    settings: ArchiveSettings,
    notify: bool,
    check_only: bool,
) -> Outcome:
    """Upload a checked file as the next version of its name and record it (see :func:`archive_one`)."""
    uploaded = None
    try:
        with catalog.session() as session:
            # Holding the name from the version check to the commit: a run that archives the
            # same file at the same moment (overlapping backfills) waits and then finds it.
            hold_name(session, candidate.name)
            latest = latest_record(session, candidate.name)
            if latest is not None and latest.md5 == local.md5:
                return _already_archived(candidate, latest)
            version = latest.version + 1 if latest is not None else 1
            key = archive_key(candidate.level, candidate.instrument, candidate.night, version, candidate.name)
            if check_only:
                return Outcome(
                    candidate.name, candidate.level, WOULD_ARCHIVE, version=version, object_key=key
                )
            archive.put_file(local.path, key, local.sha256, replace=True)
            uploaded = key
            row = add_record(session, **_record_values(candidate, local, instrument, settings, version, key))
            if notify:
                add_message(session, row)
            record_id = row.id
    except VersionTaken:
        # Another process recorded this version first (on SQLite, where nothing waits): the key
        # is its record's now, so the object stays. The same content is simply archived.
        with catalog.session() as session:
            latest = latest_record(session, candidate.name)
        if latest is not None and latest.md5 == local.md5:
            return _already_archived(candidate, latest)
        raise
    except Exception:
        if uploaded is not None:
            archive.remove(uploaded)  # no object without its record
        raise
    return Outcome(
        candidate.name, candidate.level, ARCHIVED, version=version, record_id=record_id, object_key=key
    )


def archive_one(
    candidate: Candidate,
    *,
    source: ObjectStore,
    archive: ObjectStore,
    catalog: Catalog,
    instrument: Instrument,
    settings: ArchiveSettings,
    notify: bool = False,
    check_only: bool = False,
) -> Outcome:
    """Archive one file unless its content is archived already; never raises for the file's own
    faults (they come back as ``invalid`` with the reason); a store that fails raises StoreError.
    With ``notify`` the record's message is queued in the outbox in the same transaction; with
    ``check_only`` nothing is uploaded or recorded (the answer is ``would_archive``)."""
    with catalog.session() as session:
        latest = latest_record(session, candidate.name)
    if latest is not None and latest.sha256 == candidate.checksum:
        # The catalogued content is the archived one: nothing to read (every run of a night asks).
        return _already_archived(candidate, latest)
    with tempfile.TemporaryDirectory(prefix="archive_") as folder:
        try:
            local = _checked_copy(candidate, source, instrument, Path(folder))
        except _Invalid as err:
            return Outcome(candidate.name, candidate.level, INVALID, reason=str(err))
        return _upload_and_record(
            candidate,
            local,
            archive=archive,
            catalog=catalog,
            instrument=instrument,
            settings=settings,
            notify=notify,
            check_only=check_only,
        )


def level_of(header: fits.Header) -> str:
    """The reduction level of a file from its primary header (this project's products carry their
    step's keywords; anything else is a raw frame)."""
    if "CALTYPE" in header:
        return MASTER
    if "RAWSUM" in header and "FINGERPR" in header:
        return REDUCED_LEVEL
    if "NCOMBINE" in header and "FINGERPR" in header:
        return STACK
    return RAW


class NotArchivable(Exception):
    """A file from outside the graph that cannot be described for the archive (its reason)."""


def candidate_for_file(path: Path, registry: Registry) -> tuple[Candidate, Instrument]:
    """Describe a file from outside the graph for :func:`archive_one` (its store is the file's own
    folder); raw frames are checked as landing files are. Raises :class:`NotArchivable`."""
    from reduction_assets.fits.headers import FrameRejected, parse_date_obs, parse_day_obs
    from reduction_assets.fits.validate import read_primary_header, validate_raw_file
    from reduction_assets.support.checksums import sha256_of

    try:
        header = read_primary_header(path)
    except FrameRejected as err:
        raise NotArchivable(str(err)) from None
    level = level_of(header)
    common = {"level": level, "name": path.name, "store": "file", "key": path.name, "source_kind": "external",
              "source_id": 0}  # fmt: skip
    if level == RAW:
        try:
            frame = validate_raw_file(path, registry)
        except FrameRejected as err:
            raise NotArchivable(str(err)) from None
        info = frame.info
        candidate = Candidate(**common, checksum=frame.checksum, instrument=info.instrument, night=info.night,
                              date_obs=info.date_obs, target=info.object, exptime=info.exptime,
                              filter=info.filter, configuration_type=info.raw_frame_type,
                              calibration=info.frame_type != "science")  # fmt: skip
        return candidate, registry[info.instrument]
    name = str(header.get("INSTRUME", "")).strip()
    if name not in registry.instruments:
        raise NotArchivable(f"INSTRUME {name!r} is not a registered instrument")
    try:
        night = parse_day_obs(header.get("NIGHT") or header.get("DAY-OBS"))
    except (FrameRejected, TypeError, ValueError):
        raise NotArchivable("no NIGHT or DAY-OBS keyword with a date") from None
    date_obs = None
    if header.get("DATE-OBS"):
        try:
            date_obs = parse_date_obs(header["DATE-OBS"])
        except (FrameRejected, ValueError):
            date_obs = None
    candidate = Candidate(**common, checksum=sha256_of(path), instrument=name, night=night, date_obs=date_obs,
                          target=header.get("OBJECT"), exptime=header.get("EXPTIME"),
                          filter=header.get("FILTER"), configuration_type=header.get("CALTYPE") or level,
                          calibration=level == MASTER)  # fmt: skip
    return candidate, registry[name]


@dataclass(frozen=True)
class ArchiveNight:
    """A night of an instrument to archive, and the partition its files are reported under."""

    partition: str
    instrument: str
    night: dt.date


@dataclass(frozen=True)
class ArchivedFile:
    """One file's outcome, with the partition it belongs to."""

    partition: str
    outcome: Outcome


@dataclass(frozen=True)
class ArchiveTally:
    """The outcomes of a run's files, in the order they were archived."""

    files: tuple[ArchivedFile, ...]

    def counts(self) -> dict[str, int]:
        """How many files are archived, already archived, invalid and failed (in that order)."""
        statuses = (ARCHIVED, ALREADY_ARCHIVED, INVALID, FAILED)
        return {s: sum(1 for f in self.files if f.outcome.status == s) for s in statuses}

    def with_status(self, status: str) -> list[Outcome]:
        """The outcomes of the files with ``status``, in order."""
        return [f.outcome for f in self.files if f.outcome.status == status]


def archive_nights(
    nights: Iterable[ArchiveNight],
    *,
    registry: Registry,
    stores: Mapping[str, ObjectStore],
    archive: ObjectStore,
    catalog: Catalog,
    settings: ArchiveSettings,
    notify: bool,
    log,
) -> ArchiveTally:
    """Archive every candidate file of each night in turn (:func:`archive_one`, reading each from
    ``stores[candidate.store]``); files refused or failed are logged as warnings."""
    files = []
    for entry in nights:
        instrument = registry[entry.instrument]
        with catalog.session() as session:
            candidates = archive_candidates(session, entry.instrument, entry.night)
        for candidate in progress(candidates, f"archiving {entry.instrument} {entry.night}", "file"):
            try:
                outcome = archive_one(
                    candidate,
                    source=stores[candidate.store],
                    archive=archive,
                    catalog=catalog,
                    instrument=instrument,
                    settings=settings,
                    notify=notify,
                )
            except StoreError as err:  # the archive store failed (after its retries): this file only
                outcome = Outcome(candidate.name, candidate.level, FAILED, reason=str(err))
            if outcome.status in (INVALID, FAILED):
                log.warning("%s not archived: %s", candidate.name, outcome.reason)
            files.append(ArchivedFile(entry.partition, outcome))
    return ArchiveTally(tuple(files))
