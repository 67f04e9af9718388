"""Reducing a partition's science frames: what is up to date, reading inputs, reducing on a pool of
workers, writing and recording each product (or why a frame is not reducible)."""

from __future__ import annotations

import datetime as dt
import functools
from dataclasses import dataclass

import numpy as np

import reduction_assets
from reduction_assets.catalog import Product, RawFrame
from reduction_assets.catalog.calibrations import BEFORE, CalibrationChoice, select_for_frame
from reduction_assets.catalog.db import is_transient
from reduction_assets.catalog.integrity import STALE
from reduction_assets.catalog.operations import settle_rework
from reduction_assets.catalog.products import (
    NOT_REDUCIBLE,
    REDUCED,
    find_product,
    products_of,
    record_product,
)
from reduction_assets.catalog.raw import raw_frames_of
from reduction_assets.fits.headers import REDACTED_KEYWORD, binning_from_header, card_text, redacted_header
from reduction_assets.fits.products import provenance_cards, readout_cards, reduced_hdul, write_hdul
from reduction_assets.fits.reading import read_image
from reduction_assets.instruments import Geometry, Instrument, ScienceMode
from reduction_assets.reduction.science import NotReducible, ReducedScience, ScienceFrame, ScienceSettings
from reduction_assets.reduction.wcs import sky_positions, trimmed_wcs_header
from reduction_assets.storage import Integrity
from reduction_assets.support.keys import reduced_key
from reduction_assets.support.parallel import FramePool, frame_workers, reduce_science
from reduction_assets.support.progress import progress
from reduction_assets.support.provenance import calibrations_payload, fingerprint, step_version
from reduction_assets.tasks.common import (
    CALIBRATION_WINDOW_NIGHTS,
    CheckVerdict,
    DamagedMaster,
    Stores,
    VerifiedMasters,
    record_and_publish,
    used,
)


@dataclass(frozen=True)
class ReductionSettings:
    """How a partition's frames are reduced (the asset's run config, without Dagster)."""

    full_refresh: bool = False
    detection_threshold: float = 5.0  # source detection, x ERR
    calibration_direction: str = BEFORE
    frame_workers: int = 0  # 0: as many as the cores and the memory budget allow
    memory_budget_mb: int = 4096  # peak memory of the frames reduced at once, MiB


UP_TO_DATE = "up_to_date"


# Plausibility bounds of the (non-blocking) checks.
MAX_SOURCES_PER_MEGAPIXEL = 50000


@dataclass
class FrameOutcome:
    frame: str
    status: str  # reduced, up_to_date, not_reducible
    reason: str | None = None
    path: str | None = None
    sources: int | None = None
    ages: dict[str, int] | None = None
    # An exception nobody named (a bug, not the data): recorded like a not reducible frame, and the
    # step fails once every other frame is done, so that a run never ends green over it.
    unexpected: bool = False

    def row(self) -> dict:
        """The outcome as a row of the frames table."""
        return {
            "frame": self.frame,
            "status": self.status,
            "sources": self.sources,
            "ages": ", ".join(f"{kind} {age}" for kind, age in (self.ages or {}).items()) or None,
            "path": self.path,
            "reason": self.reason,
        }


@dataclass(frozen=True)
class _Run:
    """What every frame of a partition run shares."""

    instrument: Instrument
    settings: ReductionSettings
    stores: Stores
    masters: VerifiedMasters


@dataclass
class _Planned:
    """A frame whose product is missing or out of date, with what its reduction will use."""

    frame: RawFrame
    mode: ScienceMode
    choice: CalibrationChoice
    digest: str
    header: dict | None = None  # the raw header and readout geometry, once the frame is read
    geometry: Geometry | None = None


def _plan(run: _Run, frame: RawFrame) -> _Planned | FrameOutcome:
    """The frame's calibrations and fingerprint, or its outcome if its product is up to date."""
    mode = run.instrument.science_mode(frame.header or {})
    with run.stores.catalog.session() as session:
        choice = select_for_frame(
            session, frame, run.instrument, CALIBRATION_WINDOW_NIGHTS, run.settings.calibration_direction
        )
        existing = find_product(session, frame)
    digest = fingerprint(
        "reduced",
        raw=frame.checksum,
        missing=choice.missing,
        skipped=sorted(choice.skipped),
        mode=repr(mode),
        calibrations=calibrations_payload({kind: used(kind, c) for kind, c in choice.calibrations.items()}),
        settings={"threshold": run.settings.detection_threshold, "science": repr(ScienceSettings())},
    )
    if (
        existing is not None
        and existing.fingerprint == digest
        and not run.settings.full_refresh
        and (
            existing.status != REDUCED
            or run.stores.products.check_since(existing.path, existing.checksum, existing.updated_at)
            is Integrity.OK
        )
    ):
        return FrameOutcome(frame.original_name, UP_TO_DATE)
    return _Planned(frame, mode, choice, digest)


def _prepare(run: _Run, pool: FramePool, planned: _Planned) -> ScienceFrame:
    """Read the raw frame and its masters (here: stores and catalog stay in this process) into the
    arrays its reduction takes; keeps the raw header and geometry on ``planned``."""
    frame, choice = planned.frame, planned.choice
    if choice.missing is not None:
        raise NotReducible(choice.missing)
    state = run.stores.raw.check(frame.store_path, frame.checksum)
    if state is not Integrity.OK:
        raise NotReducible(
            f"the stored raw file {frame.store_path} is {state.value}: "
            "`reduction-assets verify --repair` restores it from landing/"
        )
    masters = {kind: pool.share(c.id, run.masters(c)) for kind, c in choice.calibrations.items()}
    with run.stores.raw.open(frame.store_path) as stream:
        header, raw = read_image(stream)
    binning = binning_from_header(run.instrument, header)
    geometry = run.instrument.geometry(raw.shape, binning)
    if geometry is None:
        raise NotReducible(f"raw shape {raw.shape} is not a readout of {run.instrument.name}")
    planned.header, planned.geometry = header, geometry
    return ScienceFrame(
        raw=raw,
        instrument=run.instrument,
        geometry=geometry,
        exptime=frame.exptime,
        masters=masters,
        bad_pixels=run.instrument.bad_pixel_mask(geometry.imaging_shape, binning),
        spectrum=planned.mode.spectrum,
        line_fwhm=planned.mode.line_fwhm,
        detection_threshold=run.settings.detection_threshold,
    )


def _reduce_frames(run: _Run, frames: list[RawFrame], label: str, log) -> tuple[list[FrameOutcome], int]:
    """Reduce a partition's frames whose products are missing or out of date, side by side on a
    pool of workers; never raises for one frame. Outcomes in the frames' order, and the workers."""
    plans = [_plan(run, frame) for frame in frames]
    work = [plan for plan in plans if isinstance(plan, _Planned)]
    workers = run.settings.frame_workers or frame_workers(
        [(p.frame.naxis2, p.frame.naxis1) for p in work], run.settings.memory_budget_mb * 2**20
    )
    outcomes: dict[int, FrameOutcome] = {}
    with FramePool(min(workers, max(len(work), 1)), log) as pool:
        workers = pool.workers
        results = pool.map_in_order(reduce_science, work, functools.partial(_prepare, run, pool))
        bar = progress(results, f"reducing {label}", "frame", len(work))
        for planned, result in bar:
            outcomes[planned.frame.id] = _outcome(run, planned, result, log)
    return [plan if isinstance(plan, FrameOutcome) else outcomes[plan.frame.id] for plan in plans], workers


def _outcome(run: _Run, planned: _Planned, result: ReducedScience | Exception, log) -> FrameOutcome:
    """Record a frame's product, or why it could not be reduced; raises only what is transient."""
    frame, digest = planned.frame, planned.digest
    unexpected = False
    if not isinstance(result, Exception):
        try:
            return _record(run, planned, result)
        except Exception as err:
            result = err
    if isinstance(result, DamagedMaster):
        # The master is rebuilt to the same bytes (products are reproducible), so the same
        # fingerprint would call this frame done: stale, it is reduced again after the rebuild.
        reason, digest = str(result), STALE
    elif isinstance(result, NotReducible):
        reason = str(result)
    elif is_transient(result):
        raise result  # not the frame's fault: the step is retried
    else:
        log.error("reducing %s failed", frame.original_name, exc_info=result)
        reason = f"reduction failed: {type(result).__name__}: {result}"
        unexpected = True
    log.warning("%s not reducible: %s", frame.original_name, reason)
    # The masters it would have used are kept, so the calibration sensor only returns to this frame
    # when they change.
    ids = {kind: c.id for kind, c in planned.choice.calibrations.items()}
    with run.stores.catalog.session() as session:
        record_product(
            session,
            frame,
            _version(),
            status=NOT_REDUCIBLE,
            reason=reason,
            path=None,
            checksum=None,
            fingerprint=digest,
            bias_id=ids.get("bias"),
            dark_id=ids.get("dark"),
            flat_id=ids.get("flat"),
            calibration_age={},
            skipped=planned.choice.skipped,
            fallback=False,
            statistics={},
        )
    return FrameOutcome(frame.original_name, NOT_REDUCIBLE, reason=reason, unexpected=unexpected)


def _version() -> str:
    return f"{reduction_assets.__version__} {step_version('reduced')}"


def _record(run: _Run, planned: _Planned, reduced: ReducedScience) -> FrameOutcome:
    """Write the reduced frame (SCI, ERR, DQ, CAT, provenance) and record it in the catalog."""
    frame, choice, digest = planned.frame, planned.choice, planned.digest
    # A credential in the raw header must not travel into the product (the raw copy stays as it came).
    header, redacted = redacted_header(planned.header)
    redaction = (
        {REDACTED_KEYWORD: (card_text(" ".join(redacted)), "credential-like cards")} if redacted else {}
    )
    geometry = planned.geometry
    calibrated, sources, source_stats = reduced.calibrated, reduced.sources, reduced.source_statistics
    wcs_header = trimmed_wcs_header(header, geometry.imaging)
    if wcs_header is not None and len(sources):
        sources["ra"], sources["dec"] = sky_positions(wcs_header, sources["x"], sources["y"])
    provenance = {
        **provenance_cards(
            software_version=reduction_assets.__version__,
            step_version=step_version("reduced"),
            fingerprint=digest,
            night=frame.night,
            used={kind: used(kind, c) for kind, c in choice.calibrations.items()},
        ),
        **{
            f"{kind.upper()[:4]}SKIP": card_text(f"optional, none found: {reason}", keep_end=False)
            for kind, reason in choice.skipped.items()
        },
        **redaction,
        "SCIMODE": (planned.mode.name, "science mode of the instrument registry"),
        "RAWFILE": card_text(frame.original_name),
        "RAWSUM": frame.checksum,
    }
    clean = calibrated.dq == 0
    statistics = {
        **calibrated.statistics,
        **source_stats,
        "nan_in_clean_sci": float(np.count_nonzero(~np.isfinite(calibrated.sci[clean]))),
        "nonpositive_err": float(np.count_nonzero(~(calibrated.err > 0))),
        "pixels": float(calibrated.sci.size),
    }
    readout = readout_cards(
        run.instrument.keyword("gain") or "GAIN",
        geometry.imaging_shape,
        calibrated.statistics["saturation_e"],
    )
    hdul = reduced_hdul(
        header, calibrated.sci, calibrated.err, calibrated.dq, sources, wcs_header, provenance, readout
    )
    staged = run.stores.products.stage(
        reduced_key(frame.instrument, frame.night, frame.store_path), functools.partial(write_hdul, hdul)
    )
    ages = {kind: (frame.night - c.night).days for kind, c in choice.calibrations.items()}
    ids = {kind: c.id for kind, c in choice.calibrations.items()}
    record_and_publish(
        run.stores.catalog,
        staged,
        lambda session: record_product(
            session,
            frame,
            _version(),
            status=REDUCED,
            reason=None,
            path=staged.key,
            checksum=staged.checksum,
            fingerprint=digest,
            bias_id=ids.get("bias"),
            dark_id=ids.get("dark"),
            flat_id=ids.get("flat"),
            calibration_age=ages,
            skipped=choice.skipped,
            fallback=any(age > 0 for age in ages.values()),
            statistics=statistics,
        ),
    )
    return FrameOutcome(
        frame.original_name, REDUCED, path=staged.key, sources=int(source_stats["n_sources"]), ages=ages
    )


@dataclass(frozen=True)
class PartitionReduced:
    """What reducing one partition's science frames did."""

    outcomes: list[FrameOutcome]  # in the frames' order
    rows: list[Product]  # every product row of the partition after the run
    workers: int


def reduce_partition(
    instrument: Instrument,
    night: dt.date,
    settings: ReductionSettings,
    stores: Stores,
    masters: VerifiedMasters,
    log,
    *,
    started: dt.datetime,
    masters_ran: bool,
) -> PartitionReduced:
    """Reduce (or confirm up to date) every science frame of one night and instrument, then settle
    what operators asked to redo for the partition since ``started`` (naive UTC)."""
    run = _Run(instrument, settings, stores, masters)
    with stores.catalog.session() as session:
        frames = raw_frames_of(session, instrument.name, night, "science", include_bad=False)
    outcomes, workers = _reduce_frames(run, frames, f"{instrument.name} {night}", log)
    with stores.catalog.session() as session:
        rows = products_of(session, instrument.name, night)
        # What operators asked to redo for this partition is done now (its stacks and archive follow
        # in this run).
        settle_rework(session, instrument.name, night, started, masters_ran=masters_ran)
    return PartitionReduced(outcomes, rows, workers)


def frame_checks(rows: list[Product]) -> list[CheckVerdict]:
    """The reduced frames' plausibility checks over a run's product rows."""
    reduced = [r for r in rows if r.status == REDUCED]
    nan = [r.path for r in reduced if r.statistics.get("nan_in_clean_sci", 0) > 0]
    err = [r.path for r in reduced if r.statistics.get("nonpositive_err", 0) > 0]
    implausible = []
    for r in reduced:
        stats = r.statistics
        if stats.get("spectrum"):
            continue  # no source catalogue to judge
        sky, rms = stats.get("sky_e", 0.0), stats.get("sky_rms_e", 0.0)
        sources = stats.get("n_sources", 0.0)
        limit = MAX_SOURCES_PER_MEGAPIXEL * stats.get("pixels", 1.0) / 1e6
        if sky < -5 * max(rms, 1.0) or sources < 1 or sources > max(limit, 10):
            implausible.append(f"{r.path}: sky {sky:.0f} e-, {sources:.0f} sources")
    unreduced = [f"frame {r.raw_frame_id}: {r.reason}" for r in rows if r.status == NOT_REDUCIBLE]
    n = len(reduced)
    return [
        CheckVerdict("sci_finite_where_clean", nan, f"{n} frames: SCI finite wherever DQ is 0"),
        CheckVerdict("err_positive", err, f"{n} frames: ERR > 0 everywhere"),
        CheckVerdict(
            "sky_and_sources_plausible",
            implausible,
            f"{n} frames: sky and source counts plausible",
        ),
        CheckVerdict("all_frames_reduced", unreduced, f"{n} frames: every science frame reduced"),
    ]
