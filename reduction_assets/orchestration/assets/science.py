"""Reduced science frames: one calibrated, source-catalogued FITS per raw science frame."""

import functools
from dataclasses import dataclass

import numpy as np
from dagster import (
    AssetCheckResult,
    AssetCheckSeverity,
    AssetCheckSpec,
    AssetDep,
    AssetExecutionContext,
    AssetKey,
    Config,
    MaterializeResult,
    MetadataValue,
    TableColumn,
    TableRecord,
    TableSchema,
    asset,
)
from pydantic import Field

import reduction_assets
from reduction_assets.catalog import Catalog, Product, RawFrame
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
from reduction_assets.fits.headers import binning_from_header, card_text
from reduction_assets.fits.products import provenance_cards, readout_cards, reduced_hdul, write_hdul
from reduction_assets.fits.reading import read_image
from reduction_assets.instruments import MASTER_TYPES, Geometry, Instrument, ScienceMode
from reduction_assets.orchestration.assets.common import (
    OWNERS,
    DamagedMaster,
    VerifiedMasters,
    record_and_publish,
    retried_when_transient,
    used,
)
from reduction_assets.orchestration.partitions import (
    CALIBRATION_WINDOW_NIGHTS,
    backfill_policy,
    calibration_window_mapping,
    night_instrument_partitions,
    split_key,
)
from reduction_assets.orchestration.resources import ReductionHomeResource
from reduction_assets.reduction.science import NotReducible, ReducedScience, ScienceFrame, ScienceSettings
from reduction_assets.reduction.wcs import sky_positions, trimmed_wcs_header
from reduction_assets.storage import Integrity, ObjectStore
from reduction_assets.support.keys import reduced_key
from reduction_assets.support.parallel import FramePool, frame_workers, reduce_science
from reduction_assets.support.progress import progress
from reduction_assets.support.provenance import calibrations_payload, fingerprint, step_version
from reduction_assets.tasks import schedule

UP_TO_DATE = "up_to_date"
# Plausibility bounds of the (non-blocking) checks.
MAX_SOURCES_PER_MEGAPIXEL = 50000


class ReducedConfig(Config):
    full_refresh: bool = Field(default=False, description="reduce every frame again")
    detection_threshold: float = Field(default=5.0, description="source detection, x ERR")
    calibration_direction: str = Field(
        default=BEFORE,
        description="'before': masters of the frame's night or the nights before it (nightly work); "
        "'either': the nearest in time on either side, as BANZAI does (reprocessing an archive)",
    )
    frame_workers: int = Field(
        default=0,
        ge=0,
        description="worker processes reducing frames side by side; 0: as many as the cores and the "
        "memory budget allow (1: one frame at a time, in the step's process)",
    )
    memory_budget_mb: int = Field(
        default=4096, ge=1, description="peak memory of the frames reduced at once, MiB"
    )


@dataclass
class FrameOutcome:
    frame: str
    status: str  # reduced, up_to_date, not_reducible
    reason: str | None = None
    path: str | None = None
    sources: int | None = None
    ages: dict[str, int] | None = None

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


FRAMES_SCHEMA = TableSchema(
    columns=[
        TableColumn("partition", "string"),
        TableColumn("frame", "string"),
        TableColumn("status", "string"),
        TableColumn("sources", "int"),
        TableColumn("ages", "string", description="nights between the frame and each master"),
        TableColumn("path", "string"),
        TableColumn("reason", "string", description="why it could not be reduced"),
    ]
)


@dataclass
class _Run:
    """What every frame of a partition run shares."""

    instrument: Instrument
    config: ReducedConfig
    catalog: Catalog
    raw_store: ObjectStore
    products: ObjectStore
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
    with run.catalog.session() as session:
        choice = select_for_frame(
            session, frame, run.instrument, CALIBRATION_WINDOW_NIGHTS, run.config.calibration_direction
        )
        existing = find_product(session, frame)
    digest = fingerprint(
        "reduced",
        raw=frame.checksum,
        missing=choice.missing,
        skipped=sorted(choice.skipped),
        mode=repr(mode),
        calibrations=calibrations_payload({kind: used(kind, c) for kind, c in choice.calibrations.items()}),
        settings={"threshold": run.config.detection_threshold, "science": repr(ScienceSettings())},
    )
    if (
        existing is not None
        and existing.fingerprint == digest
        and not run.config.full_refresh
        and (
            existing.status != REDUCED
            or run.products.check_since(existing.path, existing.checksum, existing.updated_at) is Integrity.OK
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
    state = run.raw_store.check(frame.store_path, frame.checksum)
    if state is not Integrity.OK:
        raise NotReducible(
            f"the stored raw file {frame.store_path} is {state.value}: "
            "`reduction-assets verify --repair` restores it from landing/"
        )
    masters = {kind: pool.share(c.id, run.masters(c)) for kind, c in choice.calibrations.items()}
    with run.raw_store.open(frame.store_path) as stream:
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
        detection_threshold=run.config.detection_threshold,
    )


def _reduce_frames(run: _Run, frames: list[RawFrame], label: str, log) -> tuple[list[FrameOutcome], int]:
    """Reduce a partition's frames whose products are missing or out of date, side by side on a
    pool of workers; never raises for one frame. Outcomes in the frames' order, and the workers."""
    plans = [_plan(run, frame) for frame in frames]
    work = [plan for plan in plans if isinstance(plan, _Planned)]
    workers = run.config.frame_workers or frame_workers(
        [(p.frame.naxis2, p.frame.naxis1) for p in work], run.config.memory_budget_mb * 2**20
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
    log.warning("%s not reducible: %s", frame.original_name, reason)
    # The masters it would have used are kept, so the calibration sensor only returns to this frame
    # when they change.
    ids = {kind: c.id for kind, c in planned.choice.calibrations.items()}
    with run.catalog.session() as session:
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
    return FrameOutcome(frame.original_name, NOT_REDUCIBLE, reason=reason)


def _version() -> str:
    return f"{reduction_assets.__version__} {step_version('reduced')}"


def _record(run: _Run, planned: _Planned, reduced: ReducedScience) -> FrameOutcome:
    """Write the reduced frame (SCI, ERR, DQ, CAT, provenance) and record it in the catalog."""
    frame, choice, digest = planned.frame, planned.choice, planned.digest
    header, geometry = planned.header, planned.geometry
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
    staged = run.products.stage(
        reduced_key(frame.instrument, frame.night, frame.store_path), functools.partial(write_hdul, hdul)
    )
    ages = {kind: (frame.night - c.night).days for kind, c in choice.calibrations.items()}
    ids = {kind: c.id for kind, c in choice.calibrations.items()}
    record_and_publish(
        run.catalog,
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


def _checks(rows: list[Product]) -> list[AssetCheckResult]:
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

    def result(name, failures, what):
        return AssetCheckResult(
            check_name=name,
            asset_key=AssetKey("reduced_frames"),
            passed=not failures,
            severity=AssetCheckSeverity.WARN,
            description="; ".join(failures[:10]) if failures else f"{len(reduced)} frames: {what}",
            metadata={"failing": MetadataValue.int(len(failures))},
        )

    return [
        result("sci_finite_where_clean", nan, "SCI finite wherever DQ is 0"),
        result("err_positive", err, "ERR > 0 everywhere"),
        result("sky_and_sources_plausible", implausible, "sky and source counts plausible"),
        result("all_frames_reduced", unreduced, "every science frame reduced"),
    ]


def _assets_of_run(context: AssetExecutionContext):
    """The assets this run materializes (a backfill's selection, or the job's)."""
    return context.run.asset_selection or context.job_def.asset_layer.selected_asset_keys


@asset(
    partitions_def=night_instrument_partitions,
    backfill_policy=backfill_policy,
    owners=OWNERS,
    deps=[
        AssetKey("raw_frames"),
        *[
            AssetDep(f"master_{kind}", partition_mapping=calibration_window_mapping())
            for kind in ("bias", "dark", "flat")
        ],
    ],
    group_name="science",
    kinds={"fits"},
    tags={"reduction_assets/family": "science"},
    check_specs=[
        AssetCheckSpec(
            "sci_finite_where_clean",
            asset="reduced_frames",
            description="no NaN or inf in SCI where DQ is 0",
        ),
        AssetCheckSpec(
            "err_positive",
            asset="reduced_frames",
            description="ERR > 0 everywhere",
        ),
        AssetCheckSpec(
            "all_frames_reduced",
            asset="reduced_frames",
            description="every science frame of the partition reduced (the failing frames and reasons "
            "are listed)",
        ),
        AssetCheckSpec(
            "sky_and_sources_plausible",
            asset="reduced_frames",
            description="sky not negative beyond noise; at least one source, not absurdly many",
        ),
    ],
)
@retried_when_transient
def reduced_frames(
    context: AssetExecutionContext, config: ReducedConfig, home: ReductionHomeResource
) -> MaterializeResult:
    """Reduced science frames of one night and instrument (SCI e-, ERR, DQ, CAT), with provenance."""
    started = schedule.utc_now().replace(tzinfo=None)
    masters_ran = bool(set(_assets_of_run(context)) & {AssetKey(f"master_{kind}") for kind in MASTER_TYPES})
    catalog, products = home.catalog(), home.product_store()
    masters = VerifiedMasters(catalog, products)
    outcomes: list[tuple[str, FrameOutcome]] = []
    rows: list[Product] = []
    most_workers = 1
    for key in context.partition_keys:
        instrument, night = split_key(key)
        run = _Run(home.registry()[instrument], config, catalog, home.raw_store(), products, masters)
        with catalog.session() as session:
            frames = raw_frames_of(session, instrument, night, "science", include_bad=False)
        done, workers = _reduce_frames(run, frames, f"{instrument} {night}", context.log)
        outcomes += [(str(key), outcome) for outcome in done]
        most_workers = max(most_workers, workers)
        with catalog.session() as session:
            rows += products_of(session, instrument, night)
            # What operators asked to redo for this partition is done now (its stacks and archive
            # follow in this run).
            settle_rework(session, instrument, night, started, masters_ran=masters_ran)
    counts = {
        status: sum(1 for _, o in outcomes if o.status == status)
        for status in (REDUCED, UP_TO_DATE, NOT_REDUCIBLE)
    }
    return MaterializeResult(
        metadata={
            "reduced": MetadataValue.int(counts[REDUCED]),
            "up_to_date": MetadataValue.int(counts[UP_TO_DATE]),
            "not_reducible": MetadataValue.int(counts[NOT_REDUCIBLE]),
            "fallback_calibrations": MetadataValue.int(sum(1 for r in rows if r.fallback)),
            "frame_workers": MetadataValue.int(most_workers),
            "frames": MetadataValue.table(
                [TableRecord({"partition": partition, **o.row()}) for partition, o in outcomes],
                schema=FRAMES_SCHEMA,
            ),
        },
        check_results=_checks(rows),
    )
