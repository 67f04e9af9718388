"""Stacks: one co-add per target, filter and binning of a night and instrument."""

import functools
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from astropy.io import fits
from astropy.wcs import WCS
from dagster import (
    AssetCheckResult,
    AssetCheckSeverity,
    AssetCheckSpec,
    AssetExecutionContext,
    AssetKey,
    Config,
    Failure,
    MaterializeResult,
    MetadataValue,
    TableColumn,
    TableRecord,
    TableSchema,
    asset,
)
from pydantic import Field

import reduction_assets
from reduction_assets.catalog import Catalog, Product, RawFrame, Stack
from reduction_assets.catalog.stacks import (
    FAILED,
    NOT_STACKED,
    STACKED,
    record_stack,
    reduced_frames_of,
    retire_stacks,
    stacks_of,
)
from reduction_assets.fits.products import provenance_cards, write_hdul
from reduction_assets.fits.stacks import stack_hdul
from reduction_assets.instruments import Instrument
from reduction_assets.orchestration.assets.common import (
    OWNERS,
    STACKING_POOL,
    record_and_publish,
    retried_when_transient,
)
from reduction_assets.orchestration.partitions import backfill_policy, night_instrument_partitions, split_key
from reduction_assets.orchestration.resources import ReductionHomeResource
from reduction_assets.reduction.sources import extract_sources
from reduction_assets.reduction.stacking import (
    GroupRefused,
    MemberDecision,
    MemberImage,
    MemberInfo,
    StackSettings,
    assess_members,
    output_grid,
    photometric_reference,
    stack_images,
)
from reduction_assets.reduction.wcs import sky_positions
from reduction_assets.storage import Integrity, MissingObject, ObjectStore
from reduction_assets.support.keys import stack_key
from reduction_assets.support.parallel import FramePool, resample_workers
from reduction_assets.support.progress import progress
from reduction_assets.support.provenance import fingerprint, step_version
from reduction_assets.support.scratch import scratch_planes

UP_TO_DATE = "up_to_date"


class StacksConfig(Config):
    full_refresh: bool = Field(default=False, description="make every stack again")
    kernel: str = Field(default="lanczos3", description="resampling kernel: lanczos3 or bilinear")
    max_area_factor: float = Field(
        default=4.0, description="refuse a group whose footprints cover more than this many frames"
    )
    wcs_tolerance_arcsec: float = Field(
        default=1.0, description="leave out a member whose WCS is further than this from the group's"
    )
    detection_threshold: float = Field(default=5.0, description="source detection on the stack, x ERR")
    frame_workers: int = Field(
        default=1,
        ge=1,
        description="worker processes resampling a group's members side by side, at most as many as "
        "the cores, the members and the memory budget allow; 1: one member at a time in the step's "
        "process, the resampling on numba threads over every core (faster than workers on 2 cores)",
    )
    memory_budget_mb: int = Field(
        default=4096, ge=1, description="peak memory of the members resampled at once by workers, MiB"
    )

    def settings(self) -> StackSettings:
        if self.kernel not in ("lanczos3", "bilinear"):
            raise ValueError(f"kernel must be lanczos3 or bilinear; got {self.kernel!r}")
        return StackSettings(
            kernel=self.kernel,
            max_area_factor=self.max_area_factor,
            wcs_tolerance_arcsec=self.wcs_tolerance_arcsec,
        )


@dataclass
class GroupOutcome:
    partition: str
    group: str
    status: str  # stacked, up_to_date, not_stacked, failed
    members: int
    used: int
    reason: str | None = None
    path: str | None = None
    sources: int | None = None
    workers: int = 1  # processes that resampled the members

    def row(self) -> dict:
        return {
            "partition": self.partition,
            "group": self.group,
            "status": self.status,
            "members": self.members,
            "used": self.used,
            "sources": self.sources,
            "path": self.path,
            "reason": self.reason,
        }


GROUPS_SCHEMA = TableSchema(
    columns=[
        TableColumn("partition", "string"),
        TableColumn("group", "string", description="target | filter | binning"),
        TableColumn("status", "string"),
        TableColumn("members", "int", description="reduced frames in the group"),
        TableColumn("used", "int", description="members that went into the stack"),
        TableColumn("sources", "int"),
        TableColumn("path", "string"),
        TableColumn("reason", "string", description="why the group, or some members, were not stacked"),
    ]
)


class MissingMember(Exception):
    """A member's product file is missing from the store or damaged."""


@dataclass
class _Run:
    instrument: Instrument
    catalog: Catalog
    products: ObjectStore
    config: StacksConfig
    settings: StackSettings
    scratch: Path


Member = tuple[Product, RawFrame]


def group_key(frame: RawFrame) -> str:
    """``target|filter|binning``: frames stacked together share it."""
    return f"{frame.object or 'unknown'}|{frame.filter or ''}|{frame.binning}"


def _groups(members: list[Member]) -> dict[str, list[Member]]:
    groups: dict[str, list[Member]] = defaultdict(list)
    for product, frame in members:
        groups[group_key(frame)].append((product, frame))
    return dict(groups)


def _version() -> str:
    return f"{reduction_assets.__version__} {step_version('stacked')}"


def _member_row(product: Product, decision: MemberDecision | None, reason: str | None = None) -> dict:
    return {
        "product_id": product.id,
        "product_fingerprint": product.fingerprint,
        "included": bool(decision and decision.included),
        "reason": reason if reason is not None else (decision.reason if decision else None),
        "weight": decision.weight if decision and decision.included else None,
        "scale": decision.scale if decision and decision.included else None,
        "background_offset": decision.offset if decision and decision.included else None,
        "scale_method": decision.scale_method if decision else None,
        "wcs_offset_arcsec": decision.wcs_offset_arcsec if decision else None,
        "matched_sources": decision.matched if decision else None,
    }


def _member_info(run: _Run, product: Product, frame: RawFrame) -> MemberInfo:
    """A member's WCS, sources and sky, after its file is checked against the catalog's checksum
    (the check that lets :func:`_member_image` read the pixels without hashing them again)."""
    state = run.products.check(product.path, product.checksum)
    if state is not Integrity.OK:
        raise MissingMember(f"member {product.path} is {state.value} in the product store")
    with run.products.open(product.path) as stream, fits.open(stream) as hdul:
        header = hdul["SCI"].header
        return MemberInfo(
            name=product.path,
            wcs=WCS(header).celestial,
            shape=(int(header["NAXIS2"]), int(header["NAXIS1"])),
            exptime=float(frame.exptime),
            sky=float(product.statistics.get("sky_e", 0.0)),
            sky_rms=float(product.statistics.get("sky_rms_e", 1.0)),
            sources=np.array(hdul["CAT"].data),
        )


def _member_image(run: _Run, product: Product) -> MemberImage:
    try:
        with run.products.open(product.path) as stream, fits.open(stream) as hdul:
            return MemberImage(
                sci=np.asarray(hdul["SCI"].data, dtype=np.float32),
                err=np.asarray(hdul["ERR"].data, dtype=np.float32),
                dq=np.asarray(hdul["DQ"].data, dtype=np.uint16),
                wcs=WCS(hdul["SCI"].header).celestial,
            )
    except MissingObject as err:
        raise MissingMember(f"member {product.path} is missing from the product store") from err


def _stack_row(instrument: str, night, key: str, digest: str, **values) -> dict:
    """The fields of a group's stack row: who it is (from the group key), its fingerprint and
    version, and ``values`` (status, reason, members...)."""
    target, filter_name, binning = key.split("|")
    return {
        "instrument": instrument,
        "night": night,
        "group_key": key,
        "target": target,
        "filter": filter_name,
        "binning": binning,
        "fingerprint": digest,
        "software_version": _version(),
        **values,
    }


def _record(run: _Run, instrument: str, night, key: str, group: list[Member], digest: str, **values):
    """Record a group that was not stacked (or failed); ``values`` hold status, reason and members."""
    empty = {"exptime": float(group[0][1].exptime), "statistics": {}, "path": None, "checksum": None}
    with run.catalog.session() as session:
        record_stack(session, **_stack_row(instrument, night, key, digest, **{**empty, **values}))


def _stack_group(run: _Run, partition: str, key: str, members: list[Member], existing: Stack | None, log):
    instrument, night = split_key(partition)
    members = sorted(members, key=lambda m: (m[1].date_obs, m[1].id))
    digest = fingerprint(
        "stacked",
        members=[(product.id, product.fingerprint) for product, _ in members],
        settings=run.settings.as_dict(),
        pixel_scale=run.instrument.pixel_scale,
        threshold=run.config.detection_threshold,
    )
    outcome = functools.partial(GroupOutcome, partition, key, members=len(members))
    if (
        existing is not None
        and existing.fingerprint == digest
        and not run.config.full_refresh
        and existing.status != FAILED
        and (
            existing.status != STACKED
            or run.products.check_since(existing.path, existing.checksum, existing.updated_at) is Integrity.OK
        )
    ):
        return outcome(UP_TO_DATE, used=existing.n_members, path=existing.path)

    def not_stacked(reason: str, decisions: list[MemberDecision | None] | None = None):
        rows = [
            _member_row(product, decisions[k] if decisions else None, None if decisions else reason)
            for k, (product, _) in enumerate(members)
        ]
        _record(run, instrument, night, key, members, digest, status=NOT_STACKED, reason=reason,
                n_members=0, members=rows)  # fmt: skip
        return outcome(NOT_STACKED, used=0, reason=reason)

    if any(run.instrument.science_mode(frame.header or {}).spectrum for _, frame in members):
        return not_stacked("spectra are not stacked")
    if len(members) == 1:
        return not_stacked("a single frame: nothing to stack it with")
    try:
        infos = [_member_info(run, product, frame) for product, frame in members]
        binning = members[0][1].binning
        bx = int(binning.split("x")[0]) if "x" in binning else 1
        scale = run.instrument.pixel_scale * bx if run.instrument.pixel_scale else None
        grid = output_grid(infos, scale, run.settings.max_area_factor)
        decisions = assess_members(infos, grid, run.settings)
        kept = [d for d in decisions if d.included]
        if len(kept) < 2:
            left_out = "; ".join(
                f"{d.name.rsplit('/', 1)[-1]}: {d.reason}" for d in decisions if not d.included
            )
            return not_stacked(f"{len(kept)} member left after leaving out: {left_out}", decisions)
        workers = resample_workers(
            run.config.frame_workers,
            [info.shape for info, d in zip(infos, decisions, strict=True) if d.included],
            grid.shape,
            run.config.memory_budget_mb * 2**20,
        )
        with FramePool(workers, log) as pool, scratch_planes(run.scratch) as planes:
            workers = pool.workers
            image = stack_images(
                [functools.partial(_member_image, run, product) for product, _ in members],
                decisions,
                [info.exptime for info in infos],
                [info.sky for info in infos],
                grid,
                run.settings,
                planes=planes,
                # One worker: the members are resampled here, into one set of planes.
                map_members=pool.map_in_order if pool.workers > 1 else None,
            )
    except GroupRefused as err:
        return not_stacked(str(err))
    except MissingMember as err:
        reason = str(err)
        _record(run, instrument, night, key, members, digest, status=FAILED, reason=reason, n_members=0,
                members=[_member_row(product, None, None) for product, _ in members])  # fmt: skip
        return outcome(FAILED, used=0, reason=reason)
    wcs_header = grid.wcs.to_header()
    sources, source_stats = extract_sources(
        image.sci, image.err, image.dq, threshold=run.config.detection_threshold
    )
    if len(sources):
        sources["ra"], sources["dec"] = sky_positions(wcs_header, sources["x"], sources["y"])
    reference = photometric_reference(infos, decisions)
    rows = [_member_row(product, decisions[k]) for k, (product, _) in enumerate(members)]
    table_rows = [{**row, "file": members[k][0].path.rsplit("/", 1)[-1]} for k, row in enumerate(rows)]
    target, filter_name, binning = key.split("|")
    hdul = stack_hdul(
        image,
        wcs_header,
        sources,
        table_rows,
        instrument=instrument,
        night=night,
        target=target,
        filter_name=filter_name,
        binning=binning,
        exptime=infos[reference].exptime,
        provenance={
            **provenance_cards(
                software_version=reduction_assets.__version__,
                step_version=step_version("stacked"),
                fingerprint=digest,
                night=night,
                used={},
            ),
            "KERNEL": (run.settings.kernel, "resampling kernel"),
        },
    )
    staged = run.products.stage(
        stack_key(instrument, night, key, target, filter_name, binning), functools.partial(write_hdul, hdul)
    )
    left_out = [f"{d.name.rsplit('/', 1)[-1]}: {d.reason}" for d in decisions if not d.included]
    statistics = {**image.statistics, **source_stats}
    record_and_publish(
        run.catalog,
        staged,
        lambda session: record_stack(
            session,
            **_stack_row(
                instrument,
                night,
                key,
                digest,
                status=STACKED,
                reason="; ".join(left_out) or None,
                path=staged.key,
                checksum=staged.checksum,
                n_members=len(kept),
                reference_product_id=members[reference][0].id,
                exptime=infos[reference].exptime,
                statistics=statistics,
                members=rows,
            ),
        ),
    )
    if left_out:
        log.warning("stack %s left out %s", key, "; ".join(left_out))
    return outcome(
        STACKED,
        used=len(kept),
        workers=workers,
        path=staged.key,
        reason="; ".join(left_out) or None,
        sources=int(source_stats["n_sources"]),
    )


def _checks(rows: list[Stack]) -> list[AssetCheckResult]:
    stacked = [r for r in rows if r.status == STACKED]
    nan = [r.path for r in stacked if r.statistics.get("nan_in_sci", 0) > 0]
    failed = [f"{r.group_key}: {r.reason}" for r in rows if r.status == FAILED]
    return [
        AssetCheckResult(
            check_name="stacks_finite",
            asset_key=AssetKey("stacks"),
            passed=not nan,
            severity=AssetCheckSeverity.WARN,
            description="; ".join(nan[:10]) if nan else f"{len(stacked)} stacks: SCI finite everywhere",
            metadata={"failing": MetadataValue.int(len(nan))},
        ),
        AssetCheckResult(
            check_name="all_groups_stacked",
            asset_key=AssetKey("stacks"),
            passed=not failed,
            severity=AssetCheckSeverity.WARN,
            description="; ".join(failed[:10]) if failed else "no group failed",
            metadata={"failing": MetadataValue.int(len(failed))},
        ),
    ]


@asset(
    partitions_def=night_instrument_partitions,
    backfill_policy=backfill_policy,
    owners=OWNERS,
    deps=[AssetKey("reduced_frames")],
    group_name="stacks",
    kinds={"fits"},
    pool=STACKING_POOL,
    tags={"reduction_assets/family": "stacks"},
    check_specs=[
        AssetCheckSpec("stacks_finite", asset="stacks", description="no NaN or inf in any stack's SCI"),
        AssetCheckSpec(
            "all_groups_stacked",
            asset="stacks",
            description="no group failed for a reason outside its data (a member missing from the store)",
        ),
    ],
)
@retried_when_transient
def stacks(
    context: AssetExecutionContext, config: StacksConfig, home: ReductionHomeResource
) -> MaterializeResult:
    """Co-adds of a night's reduced frames, one per target, filter and binning (SCI e- at the
    reference exposure, ERR, DQ, EXPMAP, NIMAGES, CAT, MEMBERS), with the members in the catalog."""
    catalog, products = home.catalog(), home.product_store()
    settings = config.settings()
    outcomes: list[GroupOutcome] = []
    rows: list[Stack] = []
    scratch = home.layout().ensure().scratch
    for key in context.partition_keys:
        instrument, night = split_key(key)
        run = _Run(home.registry()[instrument], catalog, products, config, settings, scratch)
        with catalog.session() as session:
            groups = _groups(reduced_frames_of(session, instrument, night))
            existing = {row.group_key: row for row in stacks_of(session, instrument, night)}
        bar = progress(sorted(groups.items()), f"stacking {instrument} {night}", "group")
        for group, members in bar:
            outcomes.append(_stack_group(run, str(key), group, members, existing.get(group), context.log))
        with catalog.session() as session:
            retire_stacks(session, instrument, night, set(groups))
            rows += stacks_of(session, instrument, night)
    counts = {
        status: sum(1 for o in outcomes if o.status == status)
        for status in (STACKED, UP_TO_DATE, NOT_STACKED, FAILED)
    }
    metadata = {
        "stacked": MetadataValue.int(counts[STACKED]),
        "up_to_date": MetadataValue.int(counts[UP_TO_DATE]),
        "not_stacked": MetadataValue.int(counts[NOT_STACKED]),
        "failed": MetadataValue.int(counts[FAILED]),
        "groups": MetadataValue.table([TableRecord(o.row()) for o in outcomes], schema=GROUPS_SCHEMA),
        "frame_workers": MetadataValue.int(max((o.workers for o in outcomes), default=1)),
    }
    failed = [o for o in outcomes if o.status == FAILED]
    if failed:
        # The other groups are stacked and recorded; the run fails so that the missing file is seen.
        raise Failure(
            description="; ".join(f"{o.group}: {o.reason}" for o in failed),
            metadata=metadata,
        )
    return MaterializeResult(metadata=metadata, check_results=_checks(rows))
