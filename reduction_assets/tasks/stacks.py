"""Stacking a partition's reduced frames: grouping by target, filter and binning, what is up to date,
choosing and resampling the members, writing and recording each stack (or why a group is not stacked)."""

from __future__ import annotations

import datetime as dt
import functools
import json
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from astropy.io import fits
from astropy.wcs import WCS

import reduction_assets
from reduction_assets.catalog import Product, RawFrame, Stack
from reduction_assets.catalog.stacks import (
    FAILED,
    NOT_STACKED,
    STACKED,
    record_stack,
    reduced_frames_of,
    retire_stacks,
    stacks_of,
)
from reduction_assets.fits.headers import Binning
from reduction_assets.fits.products import provenance_cards, write_hdul
from reduction_assets.fits.stacks import stack_hdul
from reduction_assets.instruments import Instrument
from reduction_assets.reduction.sources import extract_sources
from reduction_assets.reduction.stacking import (
    Grid,
    GroupRefused,
    MemberDecision,
    MemberImage,
    MemberInfo,
    StackImage,
    StackSettings,
    assess_members,
    output_grid,
    photometric_reference,
    stack_images,
)
from reduction_assets.reduction.wcs import sky_positions
from reduction_assets.storage import Integrity, MissingObject
from reduction_assets.support.keys import stack_key
from reduction_assets.support.parallel import FramePool, resample_workers
from reduction_assets.support.progress import progress
from reduction_assets.support.provenance import fingerprint, step_version
from reduction_assets.support.scratch import scratch_planes
from reduction_assets.tasks.common import CheckVerdict, Stores, record_and_publish

UP_TO_DATE = "up_to_date"


@dataclass(frozen=True)
class StackRequest:
    """How a partition's groups are stacked (the asset's run config, without Dagster)."""

    settings: StackSettings
    full_refresh: bool = False
    detection_threshold: float = 5.0  # source detection on the stack, x ERR
    frame_workers: int = 1  # processes resampling a group's members side by side
    memory_budget_mb: int = 4096  # peak memory of the members resampled at once by workers, MiB


@dataclass(frozen=True, order=True)
class StackGroup:
    """Frames stacked together: one target, filter and binning of a night and instrument."""

    target: str
    filter: str
    binning: str  # the catalog's label, "2x2"

    @classmethod
    def of(cls, frame: RawFrame) -> StackGroup:
        return cls(frame.object or "unknown", frame.filter or "", frame.binning)

    @property
    def key(self) -> str:
        """The group's identity in the catalog (``group_key``) and in the stack's file name hash:
        ``target|filter|binning`` as it always was, or, when a field holds a ``|`` itself (which
        would make two groups alike), the fields as a JSON list. Never split to get fields back."""
        fields = [self.target, self.filter, self.binning]
        if any("|" in value for value in fields):
            return json.dumps(fields, ensure_ascii=False)
        return "|".join(fields)

    def __str__(self) -> str:
        return f"{self.target} | {self.filter or '-'} | {self.binning}"


@dataclass
class GroupOutcome:
    partition: str
    group: StackGroup
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
            "group": self.group.key,
            "status": self.status,
            "members": self.members,
            "used": self.used,
            "sources": self.sources,
            "path": self.path,
            "reason": self.reason,
        }


class MissingMember(Exception):
    """A member's product file is missing from the store or damaged."""


class _TooFewKept(Exception):
    """Fewer than two members are left once the others are left out, with why each was."""

    def __init__(self, reason: str, decisions: list[MemberDecision]):
        super().__init__(reason)
        self.decisions = decisions


Member = tuple[Product, RawFrame]


@dataclass(frozen=True)
class _Run:
    """What every group of a partition shares."""

    instrument: Instrument
    night: dt.date
    partition: str
    stores: Stores
    request: StackRequest
    scratch: Path
    log: object


@dataclass(frozen=True)
class _Group:
    """A group being stacked: its members in time order and its fingerprint."""

    group: StackGroup
    members: list[Member]
    digest: str


@dataclass(frozen=True)
class _Combined:
    """A group's members, assessed and stacked on the output grid."""

    infos: list[MemberInfo]
    decisions: list[MemberDecision]
    grid: Grid
    image: StackImage
    workers: int

    @property
    def kept(self) -> list[MemberDecision]:
        return [d for d in self.decisions if d.included]


def group_members(members: list[Member]) -> dict[StackGroup, list[Member]]:
    """The reduced frames of a partition by the group they are stacked in."""
    groups: dict[StackGroup, list[Member]] = defaultdict(list)
    for product, frame in members:
        groups[StackGroup.of(frame)].append((product, frame))
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
    products = run.stores.products
    state = products.check(product.path, product.checksum)
    if state is not Integrity.OK:
        raise MissingMember(f"member {product.path} is {state.value} in the product store")
    with products.open(product.path) as stream, fits.open(stream) as hdul:
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
        with run.stores.products.open(product.path) as stream, fits.open(stream) as hdul:
            return MemberImage(
                sci=np.asarray(hdul["SCI"].data, dtype=np.float32),
                err=np.asarray(hdul["ERR"].data, dtype=np.float32),
                dq=np.asarray(hdul["DQ"].data, dtype=np.uint16),
                wcs=WCS(hdul["SCI"].header).celestial,
            )
    except MissingObject as err:
        raise MissingMember(f"member {product.path} is missing from the product store") from err


def _stack_row(run: _Run, group: _Group, **values) -> dict:
    """The fields of a group's stack row: who it is (the group's own fields), its fingerprint and
    version, and ``values`` (status, reason, members...)."""
    return {
        "instrument": run.instrument.name,
        "night": run.night,
        "group_key": group.group.key,
        "target": group.group.target,
        "filter": group.group.filter,
        "binning": group.group.binning,
        "fingerprint": group.digest,
        "software_version": _version(),
        **values,
    }


def _record_unstacked(run: _Run, group: _Group, status: str, reason: str, members: list[dict]) -> None:
    """Record a group that was not stacked (or failed)."""
    values = {
        "exptime": float(group.members[0][1].exptime), "statistics": {}, "path": None, "checksum": None,
        "status": status, "reason": reason, "n_members": 0, "members": members,
    }  # fmt: skip
    with run.stores.catalog.session() as session:
        record_stack(session, **_stack_row(run, group, **values))


def _is_up_to_date(run: _Run, group: _Group, existing: Stack | None) -> bool:
    return (
        existing is not None
        and existing.fingerprint == group.digest
        and not run.request.full_refresh
        and existing.status != FAILED
        and (
            existing.status != STACKED
            or run.stores.products.check_since(existing.path, existing.checksum, existing.updated_at)
            is Integrity.OK
        )
    )


def _not_stacked(
    run: _Run, group: _Group, reason: str, decisions: list[MemberDecision] | None = None
) -> GroupOutcome:
    rows = [
        _member_row(product, decisions[k] if decisions else None, None if decisions else reason)
        for k, (product, _) in enumerate(group.members)
    ]
    _record_unstacked(run, group, NOT_STACKED, reason, rows)
    return GroupOutcome(run.partition, group.group, NOT_STACKED, len(group.members), 0, reason=reason)


def _combine(run: _Run, group: _Group) -> _Combined:
    """Assess the members and stack those kept; raises :class:`_TooFewKept`, :class:`GroupRefused`
    or :class:`MissingMember` for a group that cannot be stacked."""
    members, instrument, request = group.members, run.instrument, run.request
    infos = [_member_info(run, product, frame) for product, frame in members]
    scale = instrument.pixel_scale * Binning.parse(group.group.binning).x if instrument.pixel_scale else None
    grid = output_grid(infos, scale, request.settings.max_area_factor)
    decisions = assess_members(infos, grid, request.settings)
    kept = [d for d in decisions if d.included]
    if len(kept) < 2:
        left_out = "; ".join(f"{d.name.rsplit('/', 1)[-1]}: {d.reason}" for d in decisions if not d.included)
        raise _TooFewKept(f"{len(kept)} member left after leaving out: {left_out}", decisions)
    workers = resample_workers(
        request.frame_workers,
        [info.shape for info, d in zip(infos, decisions, strict=True) if d.included],
        grid.shape,
        request.memory_budget_mb * 2**20,
    )
    with FramePool(workers, run.log) as pool, scratch_planes(run.scratch) as planes:
        image = stack_images(
            [functools.partial(_member_image, run, product) for product, _ in members],
            decisions,
            [info.exptime for info in infos],
            [info.sky for info in infos],
            grid,
            request.settings,
            planes=planes,
            # One worker: the members are resampled here, into one set of planes.
            map_members=pool.map_in_order if pool.workers > 1 else None,
        )
        return _Combined(infos, decisions, grid, image, pool.workers)


def _stack_group(run: _Run, group: StackGroup, members: list[Member], existing: Stack | None) -> GroupOutcome:
    """Stack one group (or confirm it up to date, or record why it is not stacked)."""
    members = sorted(members, key=lambda m: (m[1].date_obs, m[1].id))
    digest = fingerprint(
        "stacked",
        members=[(product.id, product.fingerprint) for product, _ in members],
        settings=run.request.settings.as_dict(),
        pixel_scale=run.instrument.pixel_scale,
        threshold=run.request.detection_threshold,
    )
    planned = _Group(group, members, digest)
    if _is_up_to_date(run, planned, existing):
        return GroupOutcome(
            run.partition, group, UP_TO_DATE, len(members), existing.n_members, path=existing.path
        )
    if any(run.instrument.science_mode(frame.header or {}).spectrum for _, frame in members):
        return _not_stacked(run, planned, "spectra are not stacked")
    if len(members) == 1:
        return _not_stacked(run, planned, "a single frame: nothing to stack it with")
    try:
        combined = _combine(run, planned)
    except _TooFewKept as err:
        return _not_stacked(run, planned, str(err), err.decisions)
    except GroupRefused as err:
        return _not_stacked(run, planned, str(err))
    except MissingMember as err:
        rows = [_member_row(product, None, None) for product, _ in members]
        _record_unstacked(run, planned, FAILED, str(err), rows)
        return GroupOutcome(run.partition, group, FAILED, len(members), 0, reason=str(err))
    return _write_stack(run, planned, combined)


def _write_stack(run: _Run, group: _Group, combined: _Combined) -> GroupOutcome:
    """Catalogue the stack's sources, write it (SCI, ERR, DQ, EXPMAP, NIMAGES, CAT, MEMBERS) and
    record it with its members, in one transaction with its file."""
    members, decisions, infos, image = group.members, combined.decisions, combined.infos, combined.image
    wcs_header = combined.grid.wcs.to_header()
    sources, source_stats = extract_sources(
        image.sci, image.err, image.dq, threshold=run.request.detection_threshold
    )
    if len(sources):
        sources["ra"], sources["dec"] = sky_positions(wcs_header, sources["x"], sources["y"])
    reference = photometric_reference(infos, decisions)
    rows = [_member_row(product, decisions[k]) for k, (product, _) in enumerate(members)]
    table_rows = [{**row, "file": members[k][0].path.rsplit("/", 1)[-1]} for k, row in enumerate(rows)]
    who = group.group
    provenance = provenance_cards(
        software_version=reduction_assets.__version__, step_version=step_version("stacked"),
        fingerprint=group.digest, night=run.night, used={},
    )  # fmt: skip
    hdul = stack_hdul(
        image, wcs_header, sources, table_rows, instrument=run.instrument.name, night=run.night,
        target=who.target, filter_name=who.filter, binning=who.binning, exptime=infos[reference].exptime,
        provenance={**provenance, "KERNEL": (run.request.settings.kernel, "resampling kernel")},
    )  # fmt: skip
    key = stack_key(run.instrument.name, run.night, who.key, who.target, who.filter, who.binning)
    staged = run.stores.products.stage(key, functools.partial(write_hdul, hdul))
    left_out = "; ".join(f"{d.name.rsplit('/', 1)[-1]}: {d.reason}" for d in decisions if not d.included)
    values = dict(
        status=STACKED, reason=left_out or None, path=staged.key, checksum=staged.checksum,
        n_members=len(combined.kept), reference_product_id=members[reference][0].id,
        exptime=infos[reference].exptime, statistics={**image.statistics, **source_stats}, members=rows,
    )  # fmt: skip
    record_and_publish(
        run.stores.catalog, staged, lambda session: record_stack(session, **_stack_row(run, group, **values))
    )
    if left_out:
        run.log.warning("stack %s left out %s", who.key, left_out)
    return GroupOutcome(
        run.partition, who, STACKED, len(members), len(combined.kept), workers=combined.workers,
        path=staged.key, reason=left_out or None, sources=int(source_stats["n_sources"]),
    )  # fmt: skip


@dataclass(frozen=True)
class PartitionStacked:
    """What stacking one partition did."""

    outcomes: list[GroupOutcome]
    rows: list[Stack]  # every stack row of the partition after the run


def stack_partition(
    instrument: Instrument,
    night: dt.date,
    partition: str,
    request: StackRequest,
    stores: Stores,
    scratch: Path,
    log,
) -> PartitionStacked:
    """Stack (or confirm up to date) every group of one night and instrument's reduced frames, and
    retire the stacks of groups that no longer exist."""
    run = _Run(instrument, night, partition, stores, request, scratch, log)
    with stores.catalog.session() as session:
        groups = group_members(reduced_frames_of(session, instrument.name, night))
        existing = {row.group_key: row for row in stacks_of(session, instrument.name, night)}
    outcomes = [
        _stack_group(run, group, members, existing.get(group.key))
        for group, members in progress(
            sorted(groups.items(), key=lambda item: item[0].key),
            f"stacking {instrument.name} {night}",
            "group",
        )
    ]
    with stores.catalog.session() as session:
        retire_stacks(session, instrument.name, night, {group.key for group in groups})
        rows = stacks_of(session, instrument.name, night)
    return PartitionStacked(outcomes, rows)


def stack_checks(rows: list[Stack]) -> list[CheckVerdict]:
    """The stacks' checks over a run's stack rows."""
    stacked = [r for r in rows if r.status == STACKED]
    nan = [r.path for r in stacked if r.statistics.get("nan_in_sci", 0) > 0]
    failed = [f"{r.group_key}: {r.reason}" for r in rows if r.status == FAILED]
    return [
        CheckVerdict("stacks_finite", nan, f"{len(stacked)} stacks: SCI finite everywhere"),
        CheckVerdict("all_groups_stacked", failed, "no group failed"),
    ]
