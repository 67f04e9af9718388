"""Master calibrations of a partition: grouping the raw frames, what is up to date, the masters each
needs, stacking, writing and recording, pedestal fits, and the verdicts of the blocking checks."""

from __future__ import annotations

import datetime as dt
import functools
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import numpy as np

import reduction_assets
from reduction_assets.catalog import Calibration, Catalog, RawFrame
from reduction_assets.catalog.calibrations import (
    CalibrationCriteria,
    FrameGroup,
    NoCalibration,
    calibration_groups,
    find_calibration,
    record_calibration,
    select_calibration,
    shortest_dark,
)
from reduction_assets.catalog.integrity import record_check
from reduction_assets.catalog.operations import schedule_masters
from reduction_assets.catalog.raw import frame_times
from reduction_assets.fits.headers import parse_binning_label
from reduction_assets.fits.products import master_hdul, provenance_cards, write_hdul
from reduction_assets.fits.reading import StoreFrameReader
from reduction_assets.instruments import CalibrationKey, Instrument
from reduction_assets.reduction.masters import (
    InputFrame,
    MasterProduct,
    MasterSettings,
    NoMaster,
    build_master,
)
from reduction_assets.reduction.pedestal import fit_pedestal_and_rate
from reduction_assets.storage import Integrity, ObjectStore
from reduction_assets.support.keys import master_key
from reduction_assets.support.progress import progress
from reduction_assets.support.provenance import (
    UsedCalibration,
    calibrations_payload,
    fingerprint,
    step_version,
)
from reduction_assets.tasks import schedule
from reduction_assets.tasks.common import (
    CALIBRATION_WINDOW_NIGHTS,
    DamagedMaster,
    Stores,
    VerifiedMasters,
    record_and_publish,
    used,
)


@dataclass(frozen=True)
class MasterRequest:
    """How the masters are stacked, and whether up-to-date ones are rebuilt anyway."""

    settings: MasterSettings
    full_refresh: bool = False


MADE, UP_TO_DATE, NOT_MADE = "made", "up_to_date", "not_made"


WAITING = "waiting"  # its calibration block is still being taken (see reduction_assets.tasks.schedule)


@dataclass
class Upstream:
    """The masters a master is made with (bias for darks; bias and dark, or a pedestal, for flats)."""

    used: dict[str, UsedCalibration] = field(default_factory=dict)
    bias: Calibration | None = None  # subtracted as the zero level (a bias, or a pedestal dark)
    dark: Calibration | None = None
    notes: list[str] = field(default_factory=list)
    missing: str | None = None


@dataclass
class MasterOutcome:
    """What became of one group of raw frames."""

    group: str
    status: str  # made, up_to_date, not_made
    calibration: Calibration | None = None
    reason: str | None = None
    rejected: list[tuple[str, str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    candidates: int = 0
    statistics: dict[str, float] = field(default_factory=dict)

    def row(self) -> dict:
        """The outcome as a row of the summary table."""
        calibration = self.calibration
        return {
            "group": self.group,
            "status": self.status,
            "id": calibration.id if calibration else None,
            "inputs": calibration.input_count if calibration else len(self.rejected) + self.candidates,
            "rejected": len(self.rejected),
            "path": calibration.path if calibration else None,
            "reason": self.reason or "; ".join(f"{name}: {why}" for name, why in self.rejected) or None,
            "notes": "; ".join(self.notes) or None,
        }


def partition_masters(
    kind: str, instrument: Instrument, night: dt.date, request: MasterRequest, stores: Stores, log
) -> list[MasterOutcome]:
    """Build (or confirm up to date) every master of ``kind`` of one partition."""
    catalog, products = stores.catalog, stores.products
    with catalog.session() as session:
        groups = calibration_groups(session, instrument, night, kind)
        times = frame_times(session, instrument.name, night)
    if not groups:
        return [MasterOutcome(kind, NOT_MADE, reason=f"no {kind} frames in {instrument.name} {night}")]
    outcomes = [
        _waiting(kind, group, instrument, night, times, catalog)
        or _master_of_group(kind, group, instrument, night, request, catalog, stores.raw, products)
        for group in progress(groups, f"master {kind} {instrument.name} {night}", "master")
    ]
    if kind == "dark" and instrument.darks_include_bias:
        outcomes += pedestal_fits(instrument, night, _current(outcomes), catalog, products)
    for outcome in outcomes:
        if outcome.status == NOT_MADE:
            log.warning("%s %s %s %s: %s", kind, instrument.name, night, outcome.group, outcome.reason)
    return outcomes


def _waiting(
    kind: str,
    group: FrameGroup,
    instrument: Instrument,
    night,
    times: dict[int, dt.datetime],
    catalog: Catalog,
) -> MasterOutcome | None:
    """The outcome of a group whose calibration block is still being taken (None when it is
    complete): the master waits, keeping the one made before if any, and the partition is asked for
    again when the block closes at the latest."""
    ids = {frame.id for frame in group.frames}
    due = instrument.site.masters_due_utc(night)
    now = schedule.utc_now()
    others = [time for frame_id, time in times.items() if frame_id not in ids]
    aware = [t.replace(tzinfo=dt.UTC) for t in (f.date_obs for f in group.frames)]
    if not schedule.block_open(aware, [t.replace(tzinfo=dt.UTC) for t in others], due, now):
        return None
    with catalog.session() as session:
        existing = find_calibration(session, group.key, instrument.name, night)
        schedule_masters(session, instrument.name, night, due.replace(tzinfo=None))
    reason = (
        f"calibration block still being taken ({len(group.frames)} frames so far, nothing else after "
        f"them): made when other frames follow, or at {due:%Y-%m-%d %H:%M} UTC "
        f"({instrument.site.masters_at:%H:%M} local)"
    )
    return MasterOutcome(group.key.label(), WAITING, calibration=existing, reason=reason)


def _master_of_group(
    kind: str,
    group: FrameGroup,
    instrument: Instrument,
    night,
    request: MasterRequest,
    catalog: Catalog,
    raw_store: ObjectStore,
    products: ObjectStore,
) -> MasterOutcome:
    label = group.key.label()
    upstream = _upstream(kind, instrument, night, group.key, catalog)
    if upstream.missing:
        return MasterOutcome(label, NOT_MADE, reason=upstream.missing, candidates=len(group.frames))
    settings = request.settings
    inputs = [_input_frame(frame, raw_store) for frame in group.frames]
    digest = fingerprint(
        "master",
        kind=kind,
        group=asdict(group.key),
        settings=asdict(settings),
        inputs=sorted((f.checksum, f.bad) for f in inputs),
        calibrations=calibrations_payload(upstream.used),
    )
    with catalog.session() as session:
        existing = find_calibration(session, group.key, instrument.name, night)
    if (
        existing is not None
        and existing.fingerprint == digest
        and not request.full_refresh
        and products.check_since(existing.path, existing.checksum, existing.updated_at) is Integrity.OK
    ):
        return MasterOutcome(label, UP_TO_DATE, calibration=existing)
    masters = VerifiedMasters(catalog, products)
    try:
        bias = masters(upstream.bias) if upstream.bias else None
        dark = masters(upstream.dark) if upstream.dark else None
    except DamagedMaster as damaged:
        return MasterOutcome(label, NOT_MADE, reason=str(damaged), candidates=len(inputs))
    product = build_master(
        kind, inputs, StoreFrameReader(raw_store), instrument, settings, bias=bias, dark=dark
    )
    if isinstance(product, NoMaster):
        return MasterOutcome(
            label, NOT_MADE, reason=product.reason, rejected=product.rejected, candidates=product.candidates
        )
    row = _write_master(product, group.key, instrument, night, digest, upstream.used, catalog, products)
    return MasterOutcome(
        label,
        MADE,
        calibration=row,
        rejected=product.rejected,
        notes=upstream.notes,
        statistics=product.statistics,
    )


def _write_master(
    product: MasterProduct,
    key: CalibrationKey,
    instrument: Instrument,
    night,
    digest: str,
    used_masters: dict[str, UsedCalibration],
    catalog: Catalog,
    products: ObjectStore,
) -> Calibration:
    """Write a master as FITS and record it, in one transaction with its file."""
    provenance = provenance_cards(
        software_version=reduction_assets.__version__,
        step_version=step_version("master"),
        fingerprint=digest,
        night=night,
        used=used_masters,
    )
    hdul = master_hdul(
        product, instrument=instrument.name, night=night, binning=key.binning, filter=key.filter,
        provenance=provenance,
    )  # fmt: skip
    staged = products.stage(master_key(instrument.name, night, key), functools.partial(write_hdul, hdul))
    return record_and_publish(
        catalog,
        staged,
        lambda session: record_calibration(
            session,
            key,
            instrument.name,
            night,
            path=staged.key,
            checksum=staged.checksum,
            input_count=len(product.inputs),
            inputs=[{"name": f.name, "checksum": f.checksum} for f in product.inputs],
            rejected=[{"frame": n, "reason": r} for n, r in product.rejected],
            statistics={k: (v if v == v else None) for k, v in product.statistics.items()},
            fingerprint=digest,
            software_version=_version("master"),
        ),
    )


def _version(step: str) -> str:
    return f"{reduction_assets.__version__} {step_version(step)}"


def _input_frame(frame: RawFrame, raw_store: ObjectStore) -> InputFrame:
    """A raw frame offered to a master; a stored copy that fails its checksum is refused as bad."""
    bad, reason = frame.bad, frame.bad_reason
    if not bad:
        state = raw_store.check(frame.store_path, frame.checksum)
        if state is not Integrity.OK:
            bad, reason = (
                True,
                (
                    f"the stored raw copy is {state.value}: `reduction-assets verify "
                    "--repair` restores it from landing/"
                ),
            )
    binning = parse_binning_label(frame.binning)
    return InputFrame(
        name=frame.original_name,
        key=frame.store_path,
        checksum=frame.checksum,
        exptime=frame.exptime,
        date_obs=frame.date_obs.isoformat(),
        shape=(frame.naxis2, frame.naxis1),
        binning=binning,
        bad=bad,
        bad_reason=reason,
    )


def _upstream(kind: str, instrument: Instrument, night, key: CalibrationKey, catalog: Catalog) -> Upstream:
    """The masters a master of ``kind`` needs, chosen in the catalog (not read yet): a bias for darks,
    a bias and a dark for flats. Cameras without bias frames take for their flats the synthetic bias
    and rate dark of a pedestal fit, or else the shortest bias-including dark as the pedestal."""
    if kind == "bias" or (kind == "dark" and instrument.darks_include_bias):
        return Upstream()
    found = {}
    with catalog.session() as session:
        for needed in ("bias", "dark") if kind == "flat" else ("bias",):
            wanted = instrument.calibration_key(
                needed, binning=key.binning, readout=key.readout, filter=None, exptime=0.0
            )
            found[needed] = select_calibration(
                session, CalibrationCriteria(wanted, instrument.name, night, CALIBRATION_WINDOW_NIGHTS)
            )
        zero = shortest_dark(session, instrument.name, key, night, CALIBRATION_WINDOW_NIGHTS)
    if isinstance(found["bias"], NoCalibration):
        if not instrument.darks_include_bias:
            return Upstream(missing=f"needs a master bias: {found['bias'].message}")
        if zero is None:
            return Upstream(
                missing="needs a pedestal fit or a bias-including master dark to remove the pedestal "
                f"of the flats (nights up to {CALIBRATION_WINDOW_NIGHTS} before {night})"
            )
        # Without a pedestal fit, the dark current over the difference in exposure time is
        # neglected ("dark flats").
        return Upstream(
            used={"zero": used("dark", zero)},
            bias=zero,
            notes=[f"pedestal from the {zero.exptime:g} s dark of {zero.night}"],
        )
    upstream = Upstream(used={"bias": used("bias", found["bias"])}, bias=found["bias"])
    if found["bias"].night != night:
        upstream.notes.append(f"bias from {found['bias'].night}")
    if isinstance(found.get("dark"), NoCalibration):
        upstream.notes.append("dark current not subtracted: " + found["dark"].message)
    elif "dark" in found:
        upstream.used["dark"] = used("dark", found["dark"])
        upstream.dark = found["dark"]
    return upstream


def pedestal_fits(
    instrument: Instrument, night, darks: list[Calibration], catalog: Catalog, products: ObjectStore
) -> list[MasterOutcome]:
    """Cameras without bias frames: per binning and readout, a synthetic bias and a rate dark fitted
    through the partition's bias-including darks of two or more exposure times."""
    groups: dict[tuple[str, str], list[Calibration]] = {}
    for dark in darks:
        if dark.exptime > 0:
            groups.setdefault((dark.binning, dark.readout), []).append(dark)
    outcomes = []
    for (binning, readout), members in sorted(groups.items()):
        members = sorted(members, key=lambda c: c.exptime)
        if len({dark.exptime for dark in members}) < 2:
            continue
        label = f"{binning} {readout} fit of {'/'.join(f'{d.exptime:g}' for d in members)} s"
        digest = fingerprint("master", kind="pedestal", darks=[[d.id, d.checksum] for d in members])
        keys = {
            kind: instrument.calibration_key(kind, binning=binning, readout=readout, filter=None, exptime=0.0)
            for kind in ("bias", "dark")
        }
        with catalog.session() as session:
            existing = {
                kind: find_calibration(session, key, instrument.name, night) for kind, key in keys.items()
            }
        if all(
            row is not None
            and row.fingerprint == digest
            and products.check_since(row.path, row.checksum, row.updated_at) is Integrity.OK
            for row in existing.values()
        ):
            outcomes += [
                MasterOutcome(f"{kind} {label}", UP_TO_DATE, calibration=row)
                for kind, row in existing.items()
            ]
            continue
        try:
            masters = VerifiedMasters(catalog, products)
            fit = fit_pedestal_and_rate([masters(dark) for dark in members])
        except DamagedMaster as damaged:
            outcomes.append(MasterOutcome(label, NOT_MADE, reason=str(damaged)))
            continue
        inputs = [
            InputFrame(entry["name"], "", entry["checksum"], dark.exptime, "", (0, 0), (1, 1))
            for dark in members
            for entry in dark.inputs
        ]
        used_darks = {f"dk{index}": used("dark", dark) for index, dark in enumerate(members, start=1)}
        for kind, master in (("bias", fit.bias), ("dark", fit.rate)):
            product = MasterProduct(
                kind, master, np.full(master.data.shape, len(inputs), np.int32), inputs, [],
                {"synthetic": 1.0, **fit.statistics},
            )  # fmt: skip
            row = _write_master(product, keys[kind], instrument, night, digest, used_darks, catalog, products)
            outcomes.append(
                MasterOutcome(f"{kind} {label}", MADE, calibration=row, statistics=product.statistics,
                              notes=[f"fitted through {len(used_darks)} darks"])
            )  # fmt: skip
    return outcomes


def read_noise_verdict(row: Calibration, instrument: Instrument) -> tuple[object, str | None]:
    """(detail, failure) of a master bias: its measured read noise within tolerance of the registry's."""
    measured = row.statistics.get("read_noise_e")
    if row.statistics.get("synthetic"):
        return measured, None  # a pedestal fit measures no read noise
    tolerance = instrument.quality["read_noise"].limit
    if measured is None or abs(measured / instrument.read_noise - 1) > tolerance:
        return measured, f"read noise {measured} e- vs {instrument.read_noise} e- expected"
    return measured, None


def dark_verdict(row: Calibration, instrument: Instrument) -> tuple[object, str | None]:
    """(detail, failure) of a master dark: a positive level (darks with the bias) or a plausible rate."""
    median = row.statistics.get("median")
    noise = row.statistics.get("median_error") or 0.0
    detail = {"median": median, "median_error": noise, "exptime": row.exptime}
    if median is None:
        return detail, "no median"
    if row.exptime:  # includes the bias: a level in e-, positive
        return detail, f"negative level {median:.1f} e-" if median < 0 else None
    if median < -3 * max(noise, 1e-6) or median > instrument.quality["dark_current"].limit:
        return detail, f"median dark current {median:.4g} e-/s is implausible"
    return detail, None


def flat_verdict(row: Calibration, instrument: Instrument) -> tuple[object, str | None]:
    """(detail, failure) of a master flat: illuminated level 1 and few bad pixels."""
    level = row.statistics.get("illuminated_level")
    bad = row.statistics.get("bad_fraction")
    problems = []
    if level is None or abs(level - 1) > instrument.quality["flat_level"].limit:
        problems.append(f"illuminated level {level}")
    if bad is None or bad > instrument.quality["flat_bad_pixels"].limit:
        problems.append(f"{100 * (bad or 1):.1f}% bad pixels")
    return {"illuminated_level": level, "bad_fraction": bad}, "; ".join(problems) or None


# The registry thresholds whose severity decides whether a master's failure blocks it.
CHECK_THRESHOLDS = {
    "read_noise_consistent": ("read_noise",),
    "dark_current_plausible": ("dark_current",),
    "flat_normalised": ("flat_level", "flat_bad_pixels"),
}


def blocks(check_name: str, instrument: Instrument) -> bool:
    """Whether failing ``check_name`` blocks a master of ``instrument`` (an ``error`` threshold)."""
    return any(instrument.quality[name].severity == "error" for name in CHECK_THRESHOLDS[check_name])


Verdict = Callable[[Calibration, Instrument], tuple[object, str | None]]


def _current(outcomes: list[MasterOutcome]) -> list[Calibration]:
    return [o.calibration for o in outcomes if o.calibration is not None]


@dataclass
class Judgement:
    """The blocking check's verdicts over a run's masters: the failures, whether any blocks, and
    each judged master's detail by path."""

    failures: list[str] = field(default_factory=list)
    blocking: bool = False
    detail: dict[str, object] = field(default_factory=dict)


def judge_masters(
    kind: str,
    check_name: str,
    verdict: Verdict,
    instrument: Instrument,
    outcomes: list[MasterOutcome],
    catalog: Catalog,
    judgement: Judgement,
) -> None:
    """Judge each master of ``kind`` among ``outcomes`` with ``verdict``, into ``judgement``: a master
    that fails a blocking threshold is marked bad, so no later frame uses it, and what was made with
    it is redone; a failed warning keeps it in use. The outcomes' reasons say which."""
    for outcome in outcomes:
        row = outcome.calibration
        if row is None or row.type != kind:
            continue
        judgement.detail[row.path], failure = verdict(row, instrument)
        block = bool(failure) and blocks(check_name, instrument)
        with catalog.session() as session:
            redo = record_check(session, row.id, f"{check_name}: {failure}" if block else None)
        if failure:
            judgement.failures.append(f"{row.path}: {failure}")
            judgement.blocking = judgement.blocking or block
            outcome.reason = f"failed {check_name}: {failure}; " + (
                f"marked bad, {redo} products to redo" if block else "a warning: kept in use"
            )
