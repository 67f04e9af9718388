"""Stacks: co-adds of repeated exposures of one target in one filter (SWarp's and LSST's coadds).

The steps, each a pure function:

1. :func:`output_grid` — a TAN projection around the members' mean pointing at the instrument's
   pixel scale, just large enough for the union of their footprints (refused, not allocated, when
   that union is larger than ``max_area_factor`` frames).
2. :func:`assess_members` — sources of each member's CAT matched to a reference member's by sky
   position: a member whose WCS disagrees with the group's (matched sources offset by more than
   ``wcs_tolerance_arcsec`` from the group's median offset), that overlaps the reference too little or
   shares too few sources with it is left out with its reason; the others get a photometric scale
   (clipped, error-weighted mean of matched flux ratios; the exposure-time ratio when too few bright
   sources match) bringing them to the reference's exposure, a background offset (sky levels matched
   to the reference's) and an inverse-variance weight (1 / (scale^2 * sky rms^2)).
3. :func:`stack_images` — every member resampled (:func:`reduction_assets.kernels.resample`) onto the
   grid into scratch files, then co-added row block by row block
   (:func:`reduction_assets.kernels.coadd`), so memory stays bounded for any number of members.

Units: SCI and ERR in electrons at the reference member's exposure; EXPMAP in seconds (the sum of
the exposure times of the members used at each pixel); NIMAGES the number of members used.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

import numpy as np
from astropy.wcs import WCS

from reduction_assets.kernels import PixelMap, Resampled, coadd, pixel_map, resample
from reduction_assets.reduction.dq import DQ

# Input flags that keep a member's pixel out of the stack (cosmic rays, saturation, bad and hot
# pixels, no data); the others (flat response) are information only.
REJECT_BITS = int(DQ.NO_DATA | DQ.SATURATED | DQ.BAD_PIXEL | DQ.HOT | DQ.COSMIC_RAY)


@dataclass(frozen=True)
class StackSettings:
    """How groups are stacked. Angles in arcseconds, memory in bytes."""

    kernel: str = "lanczos3"
    max_mapping_error: float = 0.01  # pixels
    max_area_factor: float = 4.0  # the grid may cover at most this many frames' area
    min_overlap: float = 0.25  # fraction of the reference's area a member must cover
    wcs_tolerance_arcsec: float = 1.0
    match_radius_arcsec: float = 1.0  # sources within this of the offset-corrected position match
    search_radius_arcsec: float = 60.0  # the largest WCS offset that can be measured
    min_matches: int = 3
    min_snr_for_scale: float = 20.0
    kappa: float = 4.0
    amplitude_fraction: float = 0.3
    max_iters: int = 3
    memory_budget: int = 128 << 20  # bytes of member rows co-added at once

    def as_dict(self) -> dict:
        return {name: getattr(self, name) for name in self.__dataclass_fields__}


@dataclass(frozen=True)
class MemberInfo:
    """What the group-level decisions need of one member: its WCS, shape, exposure (s), sky level
    and rms (e- per pixel) and its CAT table (x, y, flux, flux_err, flag, ra, dec)."""

    name: str
    wcs: WCS
    shape: tuple[int, int]
    exptime: float
    sky: float
    sky_rms: float
    sources: np.ndarray


@dataclass
class MemberDecision:
    """A member's place in the stack: kept with scale, offset and weight, or left out with a reason."""

    name: str
    included: bool
    reason: str | None = None
    scale: float = 1.0
    offset: float = 0.0  # e- added after scaling (background matching)
    weight: float = 0.0
    wcs_offset_arcsec: float | None = None
    matched: int = 0
    scale_method: str | None = None


@dataclass(frozen=True)
class Grid:
    """The stack's pixel grid: a celestial WCS and a shape (rows, columns)."""

    wcs: WCS
    shape: tuple[int, int]


class GroupRefused(ValueError):
    """A group that cannot be stacked as a whole (its reason is recorded with the stack)."""


def _unit_vectors(ra: np.ndarray, dec: np.ndarray) -> np.ndarray:
    ra, dec = np.radians(ra), np.radians(dec)
    return np.stack([np.cos(dec) * np.cos(ra), np.cos(dec) * np.sin(ra), np.sin(dec)], axis=-1)


def _outline(shape: tuple[int, int], points_per_side: int = 9) -> tuple[np.ndarray, np.ndarray]:
    """Pixel positions (x, y) along a frame's edge (pixel-edge coordinates, 0-based centres)."""
    ny, nx = shape
    t = np.linspace(0.0, 1.0, points_per_side)
    xs = np.concatenate([-0.5 + t * nx, np.full_like(t, nx - 0.5), nx - 0.5 - t * nx, np.full_like(t, -0.5)])
    ys = np.concatenate([np.full_like(t, -0.5), -0.5 + t * ny, np.full_like(t, ny - 0.5), ny - 0.5 - t * ny])
    return xs, ys


def mean_pointing(members: Sequence[MemberInfo]) -> tuple[float, float]:
    """RA, Dec (degrees) of the mean of the members' centres on the sphere."""
    centres = [m.wcs.all_pix2world((m.shape[1] - 1) / 2, (m.shape[0] - 1) / 2, 0) for m in members]
    vector = _unit_vectors(np.array([c[0] for c in centres]), np.array([c[1] for c in centres])).sum(0)
    vector /= np.linalg.norm(vector)
    return float(np.degrees(np.arctan2(vector[1], vector[0])) % 360), float(np.degrees(np.arcsin(vector[2])))


def pixel_scale_arcsec(wcs: WCS) -> float:
    """The mean pixel scale (arcsec) of a celestial WCS at its reference point."""
    scales = wcs.celestial.proj_plane_pixel_scales()
    return float(np.sqrt(scales[0].to_value("deg") * scales[1].to_value("deg")) * 3600)


def _tan(ra: float, dec: float, scale_arcsec: float, crpix: tuple[float, float]) -> WCS:
    wcs = WCS(naxis=2)
    wcs.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    wcs.wcs.crval = [ra, dec]
    wcs.wcs.crpix = list(crpix)
    wcs.wcs.cd = np.array([[-scale_arcsec / 3600, 0.0], [0.0, scale_arcsec / 3600]])
    return wcs


def footprint_on(grid_wcs: WCS, member: MemberInfo) -> tuple[np.ndarray, np.ndarray]:
    """The member's outline in the grid's pixel coordinates (x, y)."""
    xs, ys = _outline(member.shape)
    ra, dec = member.wcs.all_pix2world(xs, ys, 0)
    gx, gy = grid_wcs.all_world2pix(ra, dec, 0)
    return np.asarray(gx), np.asarray(gy)


def output_grid(members: Sequence[MemberInfo], scale_arcsec: float | None, max_area_factor: float) -> Grid:
    """The stack's grid: TAN around the members' mean pointing, ``scale_arcsec`` per pixel (the
    first member's own scale when None), covering the union of their footprints.

    Raises :class:`GroupRefused` when the grid would cover more than ``max_area_factor`` times the
    largest member's area (members far apart: a mosaic, not a stack).
    """
    if not members:
        raise GroupRefused("no members")
    ra, dec = mean_pointing(members)
    scale = scale_arcsec or pixel_scale_arcsec(members[0].wcs)
    provisional = _tan(ra, dec, scale, (1.0, 1.0))
    xs, ys = [], []
    for member in members:
        gx, gy = footprint_on(provisional, member)
        xs.append(gx)
        ys.append(gy)
    x, y = np.concatenate(xs), np.concatenate(ys)
    if not (np.isfinite(x).all() and np.isfinite(y).all()):
        raise GroupRefused("a member's footprint does not project onto the stack's tangent plane")
    # Pixels whose centres lie inside the union (a thousandth of a pixel of rounding forgiven).
    x0, x1 = math.floor(x.min() + 0.5 + 1e-3), math.ceil(x.max() - 0.5 - 1e-3)
    y0, y1 = math.floor(y.min() + 0.5 + 1e-3), math.ceil(y.max() - 0.5 - 1e-3)
    shape = (int(y1 - y0 + 1), int(x1 - x0 + 1))
    frame_area = max(m.shape[0] * m.shape[1] * (pixel_scale_arcsec(m.wcs) / scale) ** 2 for m in members)
    factor = shape[0] * shape[1] / frame_area
    if factor > max_area_factor:
        raise GroupRefused(
            f"the members cover {factor:.1f} frames' area (at most {max_area_factor:g}): they are "
            f"too far apart to stack"
        )
    return Grid(wcs=_tan(ra, dec, scale, (1.0 - x0, 1.0 - y0)), shape=shape)


def _bbox_overlap(grid_wcs: WCS, a: MemberInfo, b: MemberInfo) -> float:
    """Area of the intersection of two members' bounding boxes on the grid, over ``a``'s box."""
    ax, ay = footprint_on(grid_wcs, a)
    bx, by = footprint_on(grid_wcs, b)
    width = min(ax.max(), bx.max()) - max(ax.min(), bx.min())
    height = min(ay.max(), by.max()) - max(ay.min(), by.min())
    area_a = (ax.max() - ax.min()) * (ay.max() - ay.min())
    return float(max(width, 0) * max(height, 0) / area_a) if area_a > 0 else 0.0


@dataclass
class Match:
    """Sources of a member matched to the reference's: the WCS offset (arcsec, member minus
    reference, on the sky) and the matched pairs' indices."""

    offset: tuple[float, float]
    reference_index: np.ndarray
    member_index: np.ndarray

    @property
    def count(self) -> int:
        return len(self.member_index)


# CAT flags (sep's, and this project's 256 = saturated, 512 = cosmic-ray pixels filled) that spoil
# a position: truncated at the edge, singular, every aperture pixel masked.
POSITION_FLAGS = 2 | 8 | 64
# ...and a flux: also extraction overflow, aperture truncated or partly masked, non-positive,
# saturated. Merged (1) and filled (512) fluxes are alike in every member: the ratio holds.
FLUX_FLAGS = POSITION_FLAGS | 4 | 16 | 32 | 128 | 256


def _usable(sources: np.ndarray, limit: int = 300) -> np.ndarray:
    """Indices of the brightest sources whose positions are sound, with sky positions."""
    if len(sources) == 0:
        return np.zeros(0, dtype=int)
    good = (
        ((sources["flag"] & POSITION_FLAGS) == 0) & np.isfinite(sources["ra"]) & np.isfinite(sources["dec"])
    )
    good &= np.isfinite(sources["flux"]) & (sources["flux"] > 0)
    index = np.flatnonzero(good)
    return index[np.argsort(-sources["flux"][index])][:limit]


def match_sources(
    reference: np.ndarray, member: np.ndarray, *, match_radius: float, search_radius: float
) -> Match:
    """Match a member's sources to the reference's (CAT tables with ra, dec in degrees).

    The WCS offset is found first, as the densest cell of the offsets of all pairs within
    ``search_radius`` arcsec, then refined as the median offset of the pairs within
    ``match_radius`` of it; each source matches at most once (nearest first)."""
    ri, mi = _usable(reference), _usable(member)
    empty = Match((float("nan"), float("nan")), np.zeros(0, int), np.zeros(0, int))
    if len(ri) == 0 or len(mi) == 0:
        return empty
    dec0 = float(np.median(reference["dec"][ri]))
    cos0 = math.cos(math.radians(dec0))
    rx = reference["ra"][ri] * cos0 * 3600
    ry = reference["dec"][ri] * 3600
    mx = member["ra"][mi] * cos0 * 3600
    my = member["dec"][mi] * 3600
    # RA wrap-around: offsets are taken modulo 360 degrees
    dx = mx[None, :] - rx[:, None]
    dx = (dx + 180 * 3600 * cos0) % (360 * 3600 * cos0) - 180 * 3600 * cos0
    dy = my[None, :] - ry[:, None]
    near = (np.abs(dx) <= search_radius) & (np.abs(dy) <= search_radius)
    if not near.any():
        return empty
    cell = max(match_radius, 0.5)
    bins = max(1, int(math.ceil(2 * search_radius / cell)))
    counts, xedges, yedges = np.histogram2d(
        dx[near], dy[near], bins=bins, range=[[-search_radius, search_radius]] * 2
    )
    peak = np.unravel_index(np.argmax(counts), counts.shape)
    guess = np.array(
        [(xedges[peak[0]] + xedges[peak[0] + 1]) / 2, (yedges[peak[1]] + yedges[peak[1] + 1]) / 2]
    )
    offset = guess
    for _ in range(3):
        distance = np.hypot(dx - offset[0], dy - offset[1])
        pairs = np.argwhere(distance <= max(match_radius, cell))
        if len(pairs) == 0:
            return empty
        offset = np.array([np.median(dx[pairs[:, 0], pairs[:, 1]]), np.median(dy[pairs[:, 0], pairs[:, 1]])])
    distance = np.hypot(dx - offset[0], dy - offset[1])
    order = np.argsort(distance, axis=None)
    used_r, used_m, pairs = set(), set(), []
    for flat in order:
        r, m = np.unravel_index(flat, distance.shape)
        if distance[r, m] > match_radius:
            break
        if r in used_r or m in used_m:
            continue
        used_r.add(r)
        used_m.add(m)
        pairs.append((r, m))
    if not pairs:
        return empty
    pairs = np.array(pairs)
    offset = (float(np.median(dx[pairs[:, 0], pairs[:, 1]])), float(np.median(dy[pairs[:, 0], pairs[:, 1]])))
    return Match(offset, ri[pairs[:, 0]], mi[pairs[:, 1]])


def flux_ratio(
    reference: np.ndarray, member: np.ndarray, match: Match, min_snr: float
) -> tuple[float, int] | None:
    """Clipped, error-weighted mean of reference flux / member flux over matched sources with S/N
    above ``min_snr`` in both; with the number used, or None when fewer than three qualify."""
    fr, er = reference["flux"][match.reference_index], reference["flux_err"][match.reference_index]
    fm, em = member["flux"][match.member_index], member["flux_err"][match.member_index]
    clean = (
        (reference["flag"][match.reference_index] | member["flag"][match.member_index]) & FLUX_FLAGS
    ) == 0
    good = clean & (fr > min_snr * er) & (fm > min_snr * em) & (er > 0) & (em > 0)
    if good.sum() < 3:
        return None
    ratio = fr[good] / fm[good]
    sigma = ratio * np.hypot(er[good] / fr[good], em[good] / fm[good])
    keep = np.ones(len(ratio), dtype=bool)
    mean = float(np.median(ratio))
    for _ in range(5):
        w = 1.0 / sigma[keep] ** 2
        mean = float(np.sum(w * ratio[keep]) / np.sum(w))
        new = np.abs(ratio - mean) <= 3 * np.hypot(sigma, 0.01 * mean)
        if new.sum() < 3 or (new == keep).all():
            break
        keep = new
    return mean, int(keep.sum())


def photometric_reference(members: Sequence[MemberInfo], decisions: Sequence[MemberDecision]) -> int:
    """The member whose exposure a stack's electrons refer to: the included one with the longest
    exposure (the earliest on a tie)."""
    return max((k for k, d in enumerate(decisions) if d.included), key=lambda k: (members[k].exptime, -k))


def assess_members(
    members: Sequence[MemberInfo], grid: Grid, settings: StackSettings
) -> list[MemberDecision]:
    """Which members enter the stack, with their scales, background offsets and weights."""
    decisions = [MemberDecision(m.name, included=True) for m in members]
    # The astrometric reference: the member with the most usable sources (the earliest on a tie).
    wref = max(range(len(members)), key=lambda k: (len(_usable(members[k].sources)), -k))
    matches: dict[int, Match] = {}
    for k, member in enumerate(members):
        if k == wref:
            continue
        overlap = _bbox_overlap(grid.wcs, members[wref], member)
        if overlap < settings.min_overlap:
            decisions[k].included = False
            decisions[k].reason = (
                f"overlaps the reference {members[wref].name} by {overlap:.0%} "
                f"(at least {settings.min_overlap:.0%} needed)"
            )
            continue
        match = match_sources(
            members[wref].sources,
            member.sources,
            match_radius=settings.match_radius_arcsec,
            search_radius=settings.search_radius_arcsec,
        )
        decisions[k].matched = match.count
        if match.count < settings.min_matches:
            decisions[k].included = False
            decisions[k].reason = (
                f"{match.count} sources matched to the reference {members[wref].name} "
                f"(at least {settings.min_matches} needed to check its WCS)"
            )
            continue
        matches[k] = match
    offsets = {wref: (0.0, 0.0), **{k: m.offset for k, m in matches.items()}}
    consensus = (
        float(np.median([o[0] for o in offsets.values()])),
        float(np.median([o[1] for o in offsets.values()])),
    )
    for k, (ox, oy) in offsets.items():
        disagreement = math.hypot(ox - consensus[0], oy - consensus[1])
        decisions[k].wcs_offset_arcsec = disagreement
        if disagreement > settings.wcs_tolerance_arcsec:
            decisions[k].included = False
            decisions[k].reason = (
                f"WCS disagrees with the group's by {disagreement:.1f} arcsec (tolerance "
                f"{settings.wcs_tolerance_arcsec:g} arcsec, from {decisions[k].matched or 'all'} "
                f"matched sources)"
            )
    kept = [k for k, d in enumerate(decisions) if d.included]
    if not kept:
        return decisions
    pref = photometric_reference(members, decisions)
    ratio_to_wref: dict[int, tuple[float, int] | None] = {wref: (1.0, 0)}
    for k in kept:
        if k != wref:
            ratio_to_wref[k] = flux_ratio(
                members[wref].sources, members[k].sources, matches[k], settings.min_snr_for_scale
            )
    for k in kept:
        decision, member = decisions[k], members[k]
        if ratio_to_wref.get(k) is not None and ratio_to_wref.get(pref) is not None:
            decision.scale = ratio_to_wref[k][0] / ratio_to_wref[pref][0]
            decision.scale_method = "matched sources" if k != pref else "reference"
        else:
            decision.scale = members[pref].exptime / member.exptime
            decision.scale_method = "exposure time"
        decision.offset = members[pref].sky - decision.scale * member.sky
        decision.weight = 1.0 / (decision.scale**2 * max(member.sky_rms, 1e-6) ** 2)
    return decisions


@dataclass(frozen=True)
class MemberImage:
    """A member's planes: SCI and ERR (e-), DQ, and the WCS of SCI."""

    sci: np.ndarray
    err: np.ndarray
    dq: np.ndarray
    wcs: WCS


class MemoryPlanes:
    """``n`` planes of ``shape`` in memory, with the interface of ``scratch.DiskPlanes``."""

    def __init__(self, n: int, shape: tuple[int, int], dtype: np.dtype):
        self.data = np.empty((n, *shape), dtype=dtype)

    def write(self, k: int, plane: np.ndarray) -> None:
        self.data[k] = plane

    def rows(self, first: int, stop: int) -> np.ndarray:
        return self.data[:, first:stop]


@dataclass
class StackImage:
    """A stack's planes (see the module docstring for units) and what making it measured."""

    sci: np.ndarray
    err: np.ndarray
    dq: np.ndarray
    exposure: np.ndarray
    count: np.ndarray
    statistics: dict[str, float] = field(default_factory=dict)


def rows_per_block(n_members: int, width: int, memory_budget: int) -> int:
    """Output rows co-added at once: the (N, rows, W) float32 SCI and variance and uint16 DQ paged
    in from the scratch planes, plus the kernel's outputs, within ``memory_budget`` bytes."""
    per_row = width * (n_members * (4 + 4 + 2) + 4 * 4)
    return max(1, int(memory_budget // max(per_row, 1)))


@dataclass(frozen=True)
class ResampleJob:
    """One member's planes and where its pixels fall: what :func:`resample_member` needs. It may
    travel to a worker process, so it holds arrays only: a pickled astropy WCS is rebuilt from a
    header that keeps 14 digits of its parameters, enough to move results by an ulp."""

    sci: np.ndarray  # e-
    err: np.ndarray  # e-
    dq: np.ndarray
    mapping: PixelMap
    kernel: str


def resample_member(job: ResampleJob, out: Resampled | None = None) -> Resampled:
    """The member's SCI (e-), variance (e-^2) and DQ resampled onto the mapping's grid (into
    ``out`` when given)."""
    return resample(
        job.sci,
        job.mapping,
        variance=np.square(job.err, dtype=np.float32),
        dq=job.dq,
        kernel=job.kernel,
        ignore_bits=REJECT_BITS,
        no_data_bit=int(DQ.NO_DATA),
        out=out,
    )


Job = TypeVar("Job")
Result = TypeVar("Result")
# How members are resampled: (compute, items, prepare) -> (item, compute(prepare(item)) or the
# exception raised) in the items' order; ``reduction_assets.support.parallel.FramePool.map_in_order`` does it
# on worker processes.
MapInOrder = Callable[
    [Callable[[Job], Result], Iterable[int], Callable[[int], Job]], Iterator[tuple[int, Result | Exception]]
]


def map_here(
    compute: Callable[[Job], Result], items: Iterable[int], prepare: Callable[[int], Job]
) -> Iterator[tuple[int, Result]]:
    """:data:`MapInOrder` in this process, one item at a time (an exception propagates)."""
    for item in items:
        yield item, compute(prepare(item))


def stack_images(
    load: Sequence[Callable[[], MemberImage]],
    decisions: Sequence[MemberDecision],
    exptimes: Sequence[float],
    sky: Sequence[float],
    grid: Grid,
    settings: StackSettings,
    planes: Callable[[int, tuple[int, int], np.dtype], MemoryPlanes] = MemoryPlanes,
    on_member: Callable[[int], None] | None = None,
    map_members: MapInOrder | None = None,
) -> StackImage:
    """Resample the included members onto ``grid`` and co-add them.

    ``exptimes`` (s) and ``sky`` (e-) are the members'. ``load[k]()`` returns member k's planes;
    members are loaded here one at a time, resampled here (``map_members`` None) or by
    ``map_members`` (side by side on a pool of workers: the same planes bit for bit) into
    ``planes(n, shape, dtype)`` (in memory by default; ``reduction_assets.support.scratch.scratch_planes``
    gives disk-backed ones), then co-added in row blocks of ``settings.memory_budget``: with
    disk-backed planes, peak memory is a member per worker, one block of every member and the
    outputs, whatever the number of members.
    """
    included = [k for k, d in enumerate(decisions) if d.included]
    if not included:
        raise GroupRefused("no member left to stack")
    stored = [planes(len(included), grid.shape, np.dtype(t)) for t in (np.float32, np.float32, np.uint16)]
    mapping_error = _resample_into(stored, load, included, grid, settings, on_member, map_members)
    coadded = _coadd_stored(stored, decisions, included, exptimes, sky, grid, settings)
    del stored
    return _stack_image(coadded, len(included), mapping_error)


def _resample_into(
    stored: list[MemoryPlanes],
    load: Sequence[Callable[[], MemberImage]],
    included: list[int],
    grid: Grid,
    settings: StackSettings,
    on_member: Callable[[int], None] | None,
    map_members: MapInOrder | None,
) -> float:
    """Resample the included members onto the grid into ``stored`` (SCI, variance, DQ planes), in
    order; returns the largest pixel-mapping error met (pixels)."""
    mapping_error = 0.0

    def job(k: int) -> ResampleJob:
        nonlocal mapping_error
        image = load[k]()
        mapping = pixel_map(image.wcs, grid.wcs, grid.shape, max_error=settings.max_mapping_error)
        mapping_error = max(mapping_error, mapping.error)
        return ResampleJob(image.sci, image.err, image.dq, mapping, settings.kernel)

    if map_members is None:
        # One set of output planes for every member (no fresh pages to fault in per member): each
        # is stored before the next is resampled.
        reused = Resampled(
            sci=np.empty(grid.shape, np.float32), variance=np.empty(grid.shape, np.float32),
            dq=np.empty(grid.shape, np.uint16),
        )  # fmt: skip
        results = map_here(functools.partial(resample_member, out=reused), included, job)
    else:
        results = map_members(resample_member, included, job)
    for position, (k, resampled) in enumerate(results):
        if isinstance(resampled, Exception):
            raise resampled
        for target, plane in zip(stored, (resampled.sci, resampled.variance, resampled.dq)):
            target.write(position, plane)
        del resampled
        if on_member is not None:
            on_member(k)
    return mapping_error


@dataclass(frozen=True)
class _Coadded:
    """The co-added planes of a stack before the areas without data are settled, and the number of
    member values clipped."""

    sci: np.ndarray
    variance: np.ndarray
    exposure: np.ndarray
    count: np.ndarray
    rejected: int


def _coadd_stored(
    stored: list[MemoryPlanes],
    decisions: Sequence[MemberDecision],
    included: list[int],
    exptimes: Sequence[float],
    sky: Sequence[float],
    grid: Grid,
    settings: StackSettings,
) -> _Coadded:
    """Co-add the stored planes of the included members, row block by row block."""
    ny, nx = grid.shape
    sci = np.empty(grid.shape, np.float32)
    variance = np.empty(grid.shape, np.float32)
    exposure = np.empty(grid.shape, np.float32)
    count = np.empty(grid.shape, np.int16)
    rejected = 0
    rows = rows_per_block(len(included), nx, settings.memory_budget)
    # members' skies are matched to the reference's: the level star signal is counted from
    background = float(np.median([decisions[k].offset + decisions[k].scale * sky[k] for k in included]))
    for r0 in range(0, ny, rows):
        r1 = min(ny, r0 + rows)
        block = coadd(
            stored[0].rows(r0, r1),
            stored[1].rows(r0, r1),
            stored[2].rows(r0, r1),
            weights=np.array([decisions[k].weight for k in included]),
            scales=np.array([decisions[k].scale for k in included]),
            offsets=np.array([decisions[k].offset for k in included]),
            exptimes=np.array([exptimes[k] for k in included]),
            reject_bits=REJECT_BITS,
            kappa=settings.kappa,
            amplitude_fraction=settings.amplitude_fraction,
            max_iters=settings.max_iters,
            background=background,
        )
        sci[r0:r1], variance[r0:r1] = block.sci, block.variance
        exposure[r0:r1], count[r0:r1] = block.exposure, block.count
        rejected += int(block.rejected.sum())
    return _Coadded(sci, variance, exposure, count, rejected)


def _stack_image(coadded: _Coadded, n: int, mapping_error: float) -> StackImage:
    """The stack of ``n`` members: pixels no member covers flagged NO_DATA and set to 0, with what
    making it measured."""
    sci, count, exposure = coadded.sci, coadded.count, coadded.exposure
    dq = np.where(count == 0, np.uint16(DQ.NO_DATA), np.uint16(0)).astype(np.uint16)
    sci[count == 0] = 0.0
    covered = count > 0
    statistics = dict(
        members=float(n),
        covered_fraction=float(covered.mean()),
        clipped_values=float(coadded.rejected),
        mapping_error_px=mapping_error,
        exposure_max_s=float(exposure.max(initial=0.0)),
        nan_in_sci=float(np.count_nonzero(~np.isfinite(sci))),
    )
    return StackImage(
        sci=sci,
        err=np.sqrt(coadded.variance).astype(np.float32),
        dq=dq,
        exposure=exposure,
        count=count,
        statistics=statistics,
    )
