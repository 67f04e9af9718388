"""Master calibration assets: master_bias, master_dark and master_flat per night and instrument."""

import datetime as dt
import functools
import hashlib
import json
from collections import defaultdict
from dataclasses import asdict

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
from reduction_assets.catalog import Calibration, RawFrame
from reduction_assets.catalog.integrity import mark_calibration_stale
from reduction_assets.catalog.models import utcnow
from reduction_assets.catalog.queries import CalibrationCriteria, NoCalibration, select_calibration
from reduction_assets.fits.headers import sanitise
from reduction_assets.fits.products import master_hdul, read_master
from reduction_assets.instruments import Instrument
from reduction_assets.partitions import (
    CALIBRATION_WINDOW_NIGHTS,
    calibration_window_mapping,
    night_instrument_partitions,
    split_key,
)
from reduction_assets.reduction.masters import InputFrame, MasterSettings, NoMaster, build_master
from reduction_assets.resources import ReductionHomeResource
from reduction_assets.storage import Integrity, LocalStore


class MasterConfig(Config):
    min_frames: int = Field(default=3, description="fewer usable frames than this: no master")
    method: str = Field(default="sigma_clip", description="sigma_clip, median or mean")
    sigma: float = Field(default=3.0, description="clipping threshold, both sides")
    scale: str = Field(default="mad", description="clipping scale: mad (robust for few frames) or std")
    max_iters: int | None = Field(default=None, description="clipping iterations; empty: converge")
    memory_budget_mb: int = Field(default=512, description="peak memory of the stacking, MiB")
    outlier_sigma: float = Field(default=5.0, description="reject frames whose level is this far out")
    calibration_window_nights: int = Field(
        default=CALIBRATION_WINDOW_NIGHTS, description="biases and darks may come from this many "
        "nights before")
    full_refresh: bool = Field(default=False, description="rebuild masters even if up to date")

    def settings(self) -> MasterSettings:
        return MasterSettings(
            method=self.method, sigma=self.sigma, scale=self.scale, max_iters=self.max_iters,
            min_frames=self.min_frames, memory_budget=self.memory_budget_mb * 2**20,
            outlier_sigma=self.outlier_sigma)


# Bounds of the blocking checks: a master outside them would poison everything reduced with it.
READ_NOISE_TOLERANCE = 0.25  # fraction of the registry's read noise
MAX_DARK_RATE = 50.0  # e-/s/pixel: a median above this is a light leak or a mislabelled frame
FLAT_LEVEL_TOLERANCE = 0.01
MAX_FLAT_BAD_FRACTION = 0.05


def _group_key(kind: str, instrument: Instrument, frame: RawFrame) -> tuple[str, str, float]:
    filter_name = (frame.filter or "") if kind == "flat" else ""
    exptime = frame.exptime if (kind == "dark" and instrument.darks_include_bias) else 0.0
    return frame.binning, filter_name, exptime


def _master_key(kind: str, instrument: str, night, binning: str, filter_name: str, exptime: float) -> str:
    parts = [instrument, night.strftime("%Y%m%d"), kind, binning]
    if filter_name:
        parts.append(sanitise(filter_name, max_length=16))
    if exptime:
        parts.append(f"{exptime:g}s")
    return f"masters/{instrument}/{night.isoformat()}/{'_'.join(parts)}.fits"


def _fingerprint(payload: dict) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()


def build_partition_masters(context: AssetExecutionContext, kind: str, config: MasterConfig,
                            home: ReductionHomeResource) -> tuple[list[dict], list[Calibration]]:
    """Build (or confirm up to date) every master of ``kind`` for the run's partition.

    Returns one summary row per group and the catalog rows of the masters now current.
    """
    instrument_name, night = split_key(context.partition_key)
    instrument = home.registry()[instrument_name]
    catalog = home.catalog()
    raw_store = home.raw_store()
    products = home.product_store()
    settings = config.settings()
    with catalog.session() as session:
        frames = list(session.scalars(select(RawFrame).where(
            RawFrame.instrument == instrument_name, RawFrame.night == night,
            RawFrame.frame_type == kind).order_by(RawFrame.date_obs)))
    groups: dict[tuple, list[RawFrame]] = defaultdict(list)
    for frame in frames:
        groups[_group_key(kind, instrument, frame)].append(frame)
    summaries: list[dict] = []
    current: list[Calibration] = []
    if not groups:
        summaries.append({"status": "no frames", "reason": f"no {kind} frames in {instrument_name} "
                          f"{night}"})
    for (binning, filter_name, exptime), members in sorted(groups.items()):
        label = " ".join(v for v in (binning, filter_name, f"{exptime:g}s" if exptime else "") if v)
        inputs = [_input_frame(f, raw_store) for f in members]
        used_calibrations, bias, dark, notes = _upstream(kind, instrument, night, binning, exptime,
                                                        config, catalog, products)
        if isinstance(used_calibrations, str):
            summaries.append({"group": label, "status": "not made", "reason": used_calibrations,
                              "candidates": len(inputs)})
            continue
        fingerprint = _fingerprint({
            "kind": kind, "group": [binning, filter_name, exptime],
            "inputs": sorted((f.checksum, f.bad) for f in inputs), "settings": asdict(settings),
            "calibrations": used_calibrations, "version": reduction_assets.__version__})
        key = _master_key(kind, instrument_name, night, binning, filter_name, exptime)
        with catalog.session() as session:
            existing = session.scalars(select(Calibration).where(
                Calibration.type == kind, Calibration.instrument == instrument_name,
                Calibration.night == night, Calibration.binning == binning,
                Calibration.filter == filter_name, Calibration.exptime == exptime)).first()
        if (existing is not None and existing.fingerprint == fingerprint and not config.full_refresh
                and products.check(existing.path, existing.checksum) is Integrity.OK):
            summaries.append({"group": label, "status": "up to date", "id": existing.id,
                              "inputs": existing.input_count, "path": existing.path})
            current.append(existing)
            continue
        product = build_master(kind, inputs, instrument, settings, bias=bias, dark=dark)
        if isinstance(product, NoMaster):
            context.log.warning("%s %s %s: %s", kind, instrument_name, label, product.reason)
            summaries.append({"group": label, "status": "not made", "reason": product.reason,
                              "candidates": product.candidates,
                              "rejected": [{"frame": n, "reason": r} for n, r in product.rejected]})
            continue
        hdul = master_hdul(product, instrument=instrument_name, night=night, binning=binning,
                           filter=filter_name, fingerprint=fingerprint,
                           software_version=reduction_assets.__version__,
                           calibrations_used={k.upper()[:8]: str(v) for k, v in used_calibrations.items()})
        staged = products.stage_product(key, functools.partial(_write_fits, hdul))
        try:
            row = _record(catalog, existing, kind, instrument_name, night, binning, filter_name, exptime,
                          staged, product, fingerprint)
        finally:
            staged.discard()
        current.append(row)
        summaries.append({"group": label, "status": "made", "id": row.id, "inputs": row.input_count,
                          "path": key, "rejected": [{"frame": n, "reason": r} for n, r in product.rejected],
                          **({"notes": notes} if notes else {}),
                          **{k: round(v, 6) for k, v in product.statistics.items()}})
    return summaries, current


def _write_fits(hdul, path) -> None:
    hdul.writeto(path, checksum=True, overwrite=True)


def _input_frame(frame: RawFrame, raw_store: LocalStore) -> InputFrame:
    """A raw frame offered to a master; a stored copy that fails its checksum is refused as bad."""
    bad, reason = frame.bad, frame.bad_reason
    if not bad:
        state = raw_store.check(frame.store_path, frame.checksum)
        if state is not Integrity.OK:
            bad, reason = True, (f"the stored raw copy is {state.value}: `reduction-assets verify "
                                 "--repair` restores it from landing/")
    return InputFrame(name=frame.original_name, path=raw_store.path_for(frame.store_path),
                      checksum=frame.checksum, exptime=frame.exptime,
                      date_obs=frame.date_obs.isoformat(), bad=bad, bad_reason=reason)


def _read_verified(calibration: Calibration, catalog, products: LocalStore):
    """A master's arrays, or the reason it cannot be used (its file is missing or damaged: it is
    then marked for rebuilding)."""
    state = products.check(calibration.path, calibration.checksum)
    if state is not Integrity.OK:
        with catalog.session() as session:
            mark_calibration_stale(session, calibration.id)
        return (f"the master {calibration.type} {calibration.id} ({calibration.path}) is {state.value}; "
                "it is marked for rebuilding")
    return read_master(products.path_for(calibration.path))


def _upstream(kind, instrument, night, binning, exptime, config, catalog, products):
    """Calibrations a master needs: (ids used, bias e-, dark e-/s, notes) or (reason, ...)."""
    used: dict[str, int] = {}
    notes: list[str] = []
    bias = dark = None
    if kind == "flat" and instrument.darks_include_bias:
        return _zero_level_for_flats(instrument, night, binning, config, catalog, products)
    if kind == "bias" or instrument.darks_include_bias:
        return used, bias, dark, notes
    with catalog.session() as session:
        found = select_calibration(session, CalibrationCriteria(
            "bias", instrument.name, night, binning, window_nights=config.calibration_window_nights))
        found_dark = select_calibration(session, CalibrationCriteria(
            "dark", instrument.name, night, binning, window_nights=config.calibration_window_nights)) \
            if kind == "flat" else None
    if isinstance(found, NoCalibration):
        return f"needs a master bias: {found.message}", None, None, notes
    bias = _read_verified(found, catalog, products)
    if isinstance(bias, str):
        return bias, None, None, notes
    used["bias_id"] = found.id
    bias = bias.data
    if found.night != night:
        notes.append(f"bias from {found.night}")
    if isinstance(found_dark, NoCalibration):
        notes.append("dark current not subtracted: " + found_dark.message)
    elif found_dark is not None:
        dark = _read_verified(found_dark, catalog, products)
        if isinstance(dark, str):
            return dark, None, None, notes
        used["dark_id"] = found_dark.id
        dark = dark.data
    return used, bias, dark, notes


def _zero_level_for_flats(instrument, night, binning, config, catalog, products):
    """Cameras without bias frames: the shortest bias-including dark stands in for the bias of flats.

    Its dark current over the difference in exposure time is neglected (the same choice as "dark
    flats" in amateur practice); the note says which dark was used.
    """
    first = night - dt.timedelta(days=config.calibration_window_nights)
    with catalog.session() as session:
        dark = session.scalars(
            select(Calibration).where(
                Calibration.type == "dark", Calibration.instrument == instrument.name,
                Calibration.binning == binning, Calibration.bad.is_(False),
                Calibration.night.between(first, night))
            .order_by(Calibration.exptime, Calibration.night.desc())).first()
        if dark is None:
            return (f"needs a bias-including master dark (nights {first}..{night}) to remove the "
                    "pedestal of the flats", None, None, [])
    zero = _read_verified(dark, catalog, products)
    if isinstance(zero, str):
        return zero, None, None, []
    return ({"zero_id": dark.id}, zero.data, None,
            [f"pedestal from the {dark.exptime:g} s dark of {dark.night}"])


def _record(catalog, existing, kind, instrument, night, binning, filter_name, exptime, staged,
            product, fingerprint) -> Calibration:
    """Record a master and publish its file in one transaction (a crash in between leaves a checksum
    mismatch that the next run sees and rebuilds)."""
    key, checksum = staged.key, staged.checksum
    with catalog.session() as session:
        row = session.get(Calibration, existing.id) if existing is not None else Calibration(
            type=kind, instrument=instrument, night=night, binning=binning, filter=filter_name,
            exptime=exptime)
        row.path = key
        row.checksum = checksum
        row.input_count = len(product.inputs)
        row.inputs = [{"name": f.name, "checksum": f.checksum} for f in product.inputs]
        row.rejected = [{"frame": n, "reason": r} for n, r in product.rejected]
        row.statistics = {k: (v if v == v else None) for k, v in product.statistics.items()}
        row.fingerprint = fingerprint
        row.software_version = reduction_assets.__version__
        row.updated_at = utcnow()
        session.add(row)
        session.flush()
        staged.publish()
        session.expunge(row)
    return row


def _result(kind: str, summaries: list[dict], check: AssetCheckResult) -> MaterializeResult:
    made = sum(1 for s in summaries if s["status"] in ("made", "up to date"))
    return MaterializeResult(
        metadata={
            "masters": MetadataValue.int(made),
            "not_made": MetadataValue.int(sum(1 for s in summaries if s["status"] != "made"
                                              and s["status"] != "up to date")),
            "summary": MetadataValue.json(summaries),
            "status": MetadataValue.text(
                "; ".join(f"{s.get('group', kind)}: {s['status']}"
                          + (f" ({s['reason']})" if "reason" in s else "") for s in summaries)),
        },
        check_results=[check],
    )


def _check(name: str, asset_name: str, failures: list[str], checked: int, detail: dict) -> AssetCheckResult:
    return AssetCheckResult(
        check_name=name, asset_key=AssetKey(asset_name), passed=not failures,
        severity=AssetCheckSeverity.ERROR,
        description="; ".join(failures) if failures else (
            f"{checked} master(s) checked" if checked else "no master made: nothing to check"),
        metadata={"detail": MetadataValue.json(detail)})


# Shared by the three masters: stacking is memory-heavy, so its steps share an instance-wide pool.
_MASTER_ASSET = dict(
    partitions_def=night_instrument_partitions,
    group_name="calibrations",
    kinds={"fits"},
    tags={"reduction_assets/family": "calibrations"},
    pool="stacking",
)


@asset(
    **_MASTER_ASSET,
    deps=[AssetKey("raw_frames")],
    check_specs=[AssetCheckSpec("read_noise_consistent", asset="master_bias", blocking=True,
                                description="bias read noise within 25% of the instrument's")],
)
def master_bias(context: AssetExecutionContext, config: MasterConfig,
                home: ReductionHomeResource) -> MaterializeResult:
    """Master bias frames (e-) of one night and instrument, one per binning."""
    summaries, masters = build_partition_masters(context, "bias", config, home)
    instrument = home.registry()[split_key(context.partition_key)[0]]
    failures, detail = [], {}
    for row in masters:
        measured = row.statistics.get("read_noise_e")
        detail[row.path] = measured
        if measured is None or abs(measured / instrument.read_noise - 1) > READ_NOISE_TOLERANCE:
            failures.append(f"{row.path}: read noise {measured} e- vs {instrument.read_noise} e- expected")
    return _result("bias", summaries, _check("read_noise_consistent", "master_bias", failures,
                                             len(masters), detail))


@asset(
    **_MASTER_ASSET,
    deps=[AssetKey("raw_frames"),
          AssetDep("master_bias", partition_mapping=calibration_window_mapping())],
    check_specs=[AssetCheckSpec("dark_current_plausible", asset="master_dark", blocking=True,
                                description="median dark current not negative beyond noise and below "
                                f"{MAX_DARK_RATE:g} e-/s")],
)
def master_dark(context: AssetExecutionContext, config: MasterConfig,
                home: ReductionHomeResource) -> MaterializeResult:
    """Master darks of one night and instrument: e-/s per binning, or e- per exposure time for
    cameras whose darks include the bias."""
    summaries, masters = build_partition_masters(context, "dark", config, home)
    failures, detail = [], {}
    for row in masters:
        median = row.statistics.get("median")
        noise = row.statistics.get("median_error") or 0.0
        detail[row.path] = {"median": median, "median_error": noise, "exptime": row.exptime}
        if median is None:
            failures.append(f"{row.path}: no median")
        elif row.exptime:  # includes the bias: a level in e-, positive
            if median < 0:
                failures.append(f"{row.path}: negative level {median:.1f} e-")
        elif median < -3 * max(noise, 1e-6) or median > MAX_DARK_RATE:
            failures.append(f"{row.path}: median dark current {median:.4g} e-/s is implausible")
    return _result("dark", summaries, _check("dark_current_plausible", "master_dark", failures,
                                             len(masters), detail))


@asset(
    **_MASTER_ASSET,
    deps=[AssetKey("raw_frames"),
          AssetDep("master_bias", partition_mapping=calibration_window_mapping()),
          AssetDep("master_dark", partition_mapping=calibration_window_mapping())],
    check_specs=[AssetCheckSpec("flat_normalised", asset="master_flat", blocking=True,
                                description="illuminated level 1 within 1% and at most 5% bad pixels")],
)
def master_flat(context: AssetExecutionContext, config: MasterConfig,
                home: ReductionHomeResource) -> MaterializeResult:
    """Master flats (normalised to 1) of one night and instrument, per binning and filter."""
    summaries, masters = build_partition_masters(context, "flat", config, home)
    failures, detail = [], {}
    for row in masters:
        level = row.statistics.get("illuminated_level")
        bad = row.statistics.get("bad_fraction")
        detail[row.path] = {"illuminated_level": level, "bad_fraction": bad}
        if level is None or abs(level - 1) > FLAT_LEVEL_TOLERANCE:
            failures.append(f"{row.path}: illuminated level {level}")
        if bad is None or bad > MAX_FLAT_BAD_FRACTION:
            failures.append(f"{row.path}: {100 * (bad or 1):.1f}% bad pixels")
    return _result("flat", summaries, _check("flat_normalised", "master_flat", failures,
                                             len(masters), detail))
