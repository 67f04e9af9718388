"""Reduced science frames: one calibrated, source-catalogued FITS per raw science frame."""

import hashlib
import json
import warnings
from pathlib import Path

import numpy as np
from astropy.io import fits
from astropy.wcs import WCS, FITSFixedWarning
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
    asset,
)
from pydantic import Field
from sqlalchemy import select

import reduction_assets
from reduction_assets.catalog import Calibration, Product, RawFrame
from reduction_assets.catalog.integrity import mark_calibration_stale
from reduction_assets.catalog.models import utcnow
from reduction_assets.catalog.queries import CALIBRATION_TYPES, select_for_frame
from reduction_assets.fits.headers import binning_from_header, card_text
from reduction_assets.fits.products import read_master, reduced_hdul
from reduction_assets.partitions import (
    CALIBRATION_WINDOW_NIGHTS,
    calibration_window_mapping,
    night_instrument_partitions,
    split_key,
)
from reduction_assets.reduction.science import Master, NotReducible, ScienceSettings, calibrate_science
from reduction_assets.reduction.sources import extract_sources
from reduction_assets.resources import ReductionHomeResource
from reduction_assets.storage import Integrity, LocalStore

# Plausibility bounds of the (non-blocking) checks.
MAX_SOURCES_PER_MEGAPIXEL = 50000


class ReducedConfig(Config):
    full_refresh: bool = Field(default=False, description="reduce every frame again")
    calibration_window_nights: int = Field(
        default=CALIBRATION_WINDOW_NIGHTS, description="calibrations may come from this many nights "
        "before the frame's")
    detection_threshold: float = Field(default=5.0, description="source detection, x ERR")


def fingerprint_of(frame: RawFrame, chosen: dict[str, Calibration] | str, config: ReducedConfig) -> str:
    payload = {
        "raw": frame.checksum,
        "calibrations": ({k: [c.id, c.checksum] for k, c in sorted(chosen.items())}
                         if isinstance(chosen, dict) else chosen),
        "settings": {"threshold": config.detection_threshold, "science": repr(ScienceSettings())},
        "version": reduction_assets.__version__,
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def _wcs_of_trimmed(header: fits.Header, imaging) -> fits.Header | None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FITSFixedWarning)
        wcs = WCS(header)
    if not wcs.has_celestial:
        return None
    return wcs.slice(imaging).to_header()


def _upsert(session, frame: RawFrame, **values) -> Product:
    row = session.scalars(select(Product).where(Product.kind == "reduced",
                                                Product.raw_frame_id == frame.id)).first()
    if row is None:
        row = Product(kind="reduced", raw_frame_id=frame.id, instrument=frame.instrument,
                      night=frame.night, created_at=utcnow())
    for key, value in values.items():
        setattr(row, key, value)
    row.software_version = reduction_assets.__version__
    row.updated_at = utcnow()
    session.add(row)
    return row


class _Masters:
    """Masters read once per run, each verified against its catalog checksum before first use."""

    def __init__(self, catalog, products: LocalStore):
        self.catalog = catalog
        self.products = products
        self.cache: dict[int, Master] = {}

    def __call__(self, calibration: Calibration) -> Master:
        if calibration.id not in self.cache:
            state = self.products.check(calibration.path, calibration.checksum)
            if state is not Integrity.OK:
                with self.catalog.session() as session:
                    mark_calibration_stale(session, calibration.id)
                raise NotReducible(
                    f"master {calibration.type} {calibration.id} ({calibration.path}) is {state.value}: "
                    "it is marked for rebuilding, and this frame is redone after it")
            self.cache[calibration.id] = read_master(self.products.path_for(calibration.path))
        return self.cache[calibration.id]


def reduce_partition(context, config: ReducedConfig, home: ReductionHomeResource) -> list[dict]:
    """Reduce every science frame of the partition whose fingerprint changed; one summary each.

    A frame that cannot be reduced (no calibration, a damaged input, bad pixel data, or any error in
    its reduction) is recorded as not reducible with its reason; the other frames go on.
    """
    instrument_name, night = split_key(context.partition_key)
    instrument = home.registry()[instrument_name]
    catalog = home.catalog()
    raw_store = home.raw_store()
    products = home.product_store()
    masters = _Masters(catalog, products)
    summaries = []
    with catalog.session() as session:
        frames = list(session.scalars(select(RawFrame).where(
            RawFrame.instrument == instrument_name, RawFrame.night == night,
            RawFrame.frame_type == "science", RawFrame.bad.is_(False)).order_by(RawFrame.date_obs)))
        session.expunge_all()
    for frame in frames:
        with catalog.session() as session:
            chosen = select_for_frame(session, frame, instrument.darks_include_bias,
                                      config.calibration_window_nights)
            existing = session.scalars(select(Product).where(
                Product.kind == "reduced", Product.raw_frame_id == frame.id)).first()
            if isinstance(chosen, dict):
                session.expunge_all()
        fingerprint = fingerprint_of(frame, chosen, config)
        if (existing is not None and existing.fingerprint == fingerprint and not config.full_refresh
                and (existing.status != "reduced"
                     or products.check(existing.path, existing.checksum) is Integrity.OK)):
            summaries.append({"frame": frame.original_name, "status": "up to date",
                              "product": existing.status})
            continue
        reason = None
        if isinstance(chosen, str):
            reason = chosen
        else:
            state = raw_store.check(frame.store_path, frame.checksum)
            if state is not Integrity.OK:
                reason = (f"the stored raw file {frame.store_path} is {state.value}: "
                          "`reduction-assets verify --repair` restores it from landing/")
        if reason is None:
            try:
                summary = _reduce_one(frame, chosen, fingerprint, raw_store.path_for(frame.store_path),
                                      instrument, config, masters, products, catalog)
            except NotReducible as err:
                reason = str(err)
            except Exception as err:
                context.log.exception("reducing %s failed", frame.original_name)
                reason = f"reduction failed: {type(err).__name__}: {err}"
            else:
                summaries.append({"frame": frame.original_name, "status": "reduced", **summary})
                continue
        context.log.warning("%s not reducible: %s", frame.original_name, reason)
        # The calibrations it would have used are kept, so the calibration sensor only returns to
        # this frame when they change.
        ids = {kind: c.id for kind, c in chosen.items()} if isinstance(chosen, dict) else {}
        with catalog.session() as session:
            _upsert(session, frame, status="not_reducible", reason=reason, path=None, checksum=None,
                    fingerprint=fingerprint, bias_id=ids.get("bias"), dark_id=ids.get("dark"),
                    flat_id=ids.get("flat"), calibration_age={}, fallback=False, statistics={})
        summaries.append({"frame": frame.original_name, "status": "not reducible", "reason": reason})
    return summaries


def _reduce_one(frame, chosen, fingerprint, raw_path, instrument, config, masters, products, catalog):
    with fits.open(raw_path, memmap=False) as hdul:
        header = hdul[0].header.copy()
        raw = np.asarray(hdul[0].data, dtype=np.float32)
    geometry = instrument.geometry(raw.shape, binning_from_header(instrument, header))
    if geometry is None:
        raise NotReducible(f"raw shape {raw.shape} is not a readout of {instrument.name}")
    calibrated = calibrate_science(
        raw, instrument=instrument, geometry=geometry, exptime=frame.exptime,
        bias=masters(chosen["bias"]) if "bias" in chosen else None, dark=masters(chosen["dark"]),
        flat=masters(chosen["flat"]),
        bad_pixels=instrument.bad_pixel_mask(
            (geometry.imaging[0].stop - geometry.imaging[0].start,
             geometry.imaging[1].stop - geometry.imaging[1].start),
            binning_from_header(instrument, header)))
    sources, source_stats = extract_sources(calibrated.sci, calibrated.err, calibrated.dq,
                                            threshold=config.detection_threshold)
    wcs_header = _wcs_of_trimmed(header, geometry.imaging)
    if wcs_header is not None and len(sources):
        ra, dec = WCS(wcs_header).all_pix2world(sources["x"], sources["y"], 0)
        sources["ra"], sources["dec"] = ra, dec
    ages = {kind: (frame.night - c.night).days for kind, c in chosen.items()}
    provenance = {
        "SOFTVER": (reduction_assets.__version__, "reduction_assets version"),
        "FINGERPR": fingerprint,
        "RAWFILE": card_text(frame.original_name),
        "RAWSUM": frame.checksum,
    }
    for kind, calibration in chosen.items():
        tag = kind.upper()[:4]
        provenance[f"{tag}ID"] = (calibration.id, f"catalog id of the master {kind}")
        provenance[f"{tag}FILE"] = card_text(Path(calibration.path).name)
        provenance[f"{tag}AGE"] = (ages[kind], f"nights between frame and master {kind}")
    clean = calibrated.dq == 0
    statistics = {
        **calibrated.statistics, **source_stats,
        "nan_in_clean_sci": float(np.count_nonzero(~np.isfinite(calibrated.sci[clean]))),
        "nonpositive_err": float(np.count_nonzero(~(calibrated.err > 0))),
        "pixels": float(calibrated.sci.size),
    }
    key = f"reduced/{frame.instrument}/{frame.night.isoformat()}/{Path(frame.store_path).stem}_red.fits"
    hdul = reduced_hdul(header, calibrated.sci, calibrated.err, calibrated.dq, sources, wcs_header,
                        provenance)
    staged = products.stage_product(key, lambda path: hdul.writeto(path, checksum=True, overwrite=True))
    fallback = any(age > 0 for age in ages.values())
    try:
        # The row and the file change together: the file is published inside the transaction
        # that records its checksum (a crash in between leaves a mismatch the next run redoes).
        with catalog.session() as session:
            _upsert(session, frame, status="reduced", reason=None, path=key, checksum=staged.checksum,
                    fingerprint=fingerprint, bias_id=chosen["bias"].id if "bias" in chosen else None,
                    dark_id=chosen["dark"].id, flat_id=chosen["flat"].id, calibration_age=ages,
                    fallback=fallback, statistics=statistics)
            session.flush()
            staged.publish()
    finally:
        staged.discard()
    return {"path": key, "sources": int(source_stats["n_sources"]), "fallback": fallback, "ages": ages}


def _checks(rows: list[Product]) -> list[AssetCheckResult]:
    reduced = [r for r in rows if r.status == "reduced"]
    nan = [r.path for r in reduced if r.statistics.get("nan_in_clean_sci", 0) > 0]
    err = [r.path for r in reduced if r.statistics.get("nonpositive_err", 0) > 0]
    implausible = []
    for r in reduced:
        stats = r.statistics
        sky, rms = stats.get("sky_e", 0.0), stats.get("sky_rms_e", 0.0)
        sources = stats.get("n_sources", 0.0)
        limit = MAX_SOURCES_PER_MEGAPIXEL * stats.get("pixels", 1.0) / 1e6
        if sky < -5 * max(rms, 1.0) or sources < 1 or sources > max(limit, 10):
            implausible.append(f"{r.path}: sky {sky:.0f} e-, {sources:.0f} sources")

    def result(name, failures, what):
        return AssetCheckResult(
            check_name=name, asset_key=AssetKey("reduced_frames"), passed=not failures,
            severity=AssetCheckSeverity.WARN,
            description="; ".join(failures[:10]) if failures else f"{len(reduced)} frames: {what}")

    return [result("sci_finite_where_clean", nan, "SCI finite wherever DQ is 0"),
            result("err_positive", err, "ERR > 0 everywhere"),
            result("sky_and_sources_plausible", implausible, "sky and source counts plausible")]


@asset(
    partitions_def=night_instrument_partitions,
    deps=[AssetKey("raw_frames"),
          *[AssetDep(f"master_{kind}", partition_mapping=calibration_window_mapping())
            for kind in CALIBRATION_TYPES]],
    group_name="science",
    kinds={"fits"},
    tags={"reduction_assets/family": "science"},
    check_specs=[
        AssetCheckSpec("sci_finite_where_clean", asset="reduced_frames",
                       description="no NaN or inf in SCI where DQ is 0"),
        AssetCheckSpec("err_positive", asset="reduced_frames", description="ERR > 0 everywhere"),
        AssetCheckSpec("sky_and_sources_plausible", asset="reduced_frames",
                       description="sky not negative beyond noise; at least one source, not absurdly "
                       "many"),
    ],
)
def reduced_frames(context: AssetExecutionContext, config: ReducedConfig,
                   home: ReductionHomeResource) -> MaterializeResult:
    """Reduced science frames of one night and instrument (SCI e-, ERR, DQ, CAT), with provenance."""
    summaries = reduce_partition(context, config, home)
    instrument, night = split_key(context.partition_key)
    with home.catalog().session() as session:
        rows = list(session.scalars(select(Product).where(
            Product.kind == "reduced", Product.instrument == instrument, Product.night == night)))
        session.expunge_all()
    counts = {status: sum(1 for s in summaries if s["status"] == status)
              for status in ("reduced", "up to date", "not reducible")}
    return MaterializeResult(
        metadata={
            "reduced": MetadataValue.int(counts["reduced"]),
            "up_to_date": MetadataValue.int(counts["up to date"]),
            "not_reducible": MetadataValue.int(counts["not reducible"]),
            "fallback_calibrations": MetadataValue.int(sum(1 for r in rows if r.fallback)),
            "frames": MetadataValue.json(summaries),
        },
        check_results=_checks(rows),
    )
