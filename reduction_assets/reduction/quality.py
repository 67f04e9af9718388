"""Quality metrics of raw frames, masters and reduced frames: what an instrument scientist trends.

Pure functions of arrays and plain values. Each returns :class:`Measurement` values: a number with
its unit, or None with the reason it could not be measured (a metric that cannot be computed is
recorded as missing, never as a zero that looks like a measurement).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import sep
from astropy.coordinates import SkyCoord
from astropy.stats import sigma_clipped_stats

from reduction_assets.instruments import Geometry
from reduction_assets.kernels.apertures import APERTURE_TRUNCATED, flux_radius
from reduction_assets.kernels.peaks import any_flagged_in_box
from reduction_assets.kernels.select import median
from reduction_assets.reduction.sources import subtract_sky


@dataclass(frozen=True)
class Metric:
    name: str
    unit: str
    description: str


# The metric vocabulary: every metric recorded, plotted, checked or reported is one of these.
METRICS: dict[str, Metric] = {
    m.name: m
    for m in (
        Metric(
            "bias_level", "ADU", "raw bias frame: clipped mean of the overscan (imaging area without one)"
        ),
        Metric("overscan_noise", "e-", "raw bias frame: clipped scatter of the overscan x gain"),
        Metric("read_noise", "e-", "pair of raw bias frames: clipped scatter of their difference / sqrt 2"),
        Metric("flat_level", "e-", "raw flat frame: median signal above the overscan x gain"),
        Metric("master_bias_level", "e-", "master bias: median after overscan subtraction"),
        Metric("master_read_noise", "e-", "master bias: read noise measured while stacking"),
        Metric("dark_current", "e-/s", "master dark: median dark current"),
        Metric("hot_pixel_fraction", "fraction", "master dark: fraction of hot pixels"),
        Metric("flat_illuminated_level", "ratio", "master flat: illuminated level (1 when normalised)"),
        Metric("flat_corner_ratio", "ratio", "master flat: corners / centre, the illumination shape"),
        Metric("flat_bad_fraction", "fraction", "master flat: fraction of flagged pixels"),
        Metric("sky", "e-/s", "reduced frame: sky level per pixel and second"),
        Metric("fwhm", "pixel", "reduced frame: median FWHM of well-measured stars"),
        Metric("fwhm_arcsec", "arcsec", "reduced frame: median FWHM of well-measured stars"),
        Metric("ellipticity", "1-b/a", "reduced frame: median ellipticity of well-measured stars"),
        Metric("sources", "count", "reduced frame: sources detected"),
        Metric("cosmic_rays", "pixels", "reduced frame: pixels flagged as cosmic rays"),
        Metric("flagged_fraction", "fraction", "reduced frame: fraction of pixels with a DQ flag"),
        Metric("zero_point", "mag", "reduced frame: magnitude of 1 e-/s against a reference catalogue"),
    )
}

# What each kind of subject is measured for (a subject that cannot be read is missing all of them).
MASTER_METRICS = {
    "bias": ("master_bias_level", "master_read_noise"),
    "dark": ("dark_current", "hot_pixel_fraction"),
    "flat": ("flat_illuminated_level", "flat_corner_ratio", "flat_bad_fraction"),
}
REDUCED_METRICS = (
    "cosmic_rays", "flagged_fraction", "sky", "sources", "fwhm", "fwhm_arcsec", "ellipticity", "zero_point",
)  # fmt: skip

MIN_STARS = 3  # fewer well-measured stars give no FWHM, ellipticity or zero point
STAR_THRESHOLD = 20.0  # x ERR: stars bright enough for shapes and photometry
MATCH_RADIUS_ARCSEC = 1.5


@dataclass(frozen=True)
class Measurement:
    """A metric's value (in the unit of :data:`METRICS`), or None and the reason it is missing."""

    metric: str
    value: float | None
    reason: str | None = None

    def __post_init__(self) -> None:
        if self.metric not in METRICS:
            raise ValueError(f"unknown metric {self.metric!r}")
        if self.value is not None and not math.isfinite(self.value):
            object.__setattr__(self, "reason", f"not finite ({self.value})")
            object.__setattr__(self, "value", None)
        elif self.value is not None:
            object.__setattr__(self, "reason", None)  # a reason only ever explains a missing value
        elif not self.reason:
            object.__setattr__(self, "reason", "not measured")

    @property
    def unit(self) -> str:
        return METRICS[self.metric].unit


def missing(metrics: Iterable[str], reason: str) -> list[Measurement]:
    return [Measurement(name, None, reason) for name in metrics]


def _overscan_and_imaging(raw: np.ndarray, geometry: Geometry) -> tuple[np.ndarray | None, np.ndarray]:
    overscan = raw[geometry.overscan].astype(np.float64) if geometry.overscan is not None else None
    return overscan, raw[geometry.imaging].astype(np.float64)


def bias_frame_metrics(raw: np.ndarray, geometry: Geometry, gain: float) -> list[Measurement]:
    """A raw bias frame (ADU): its level (overscan median, ADU) and overscan noise (e-)."""
    overscan, imaging = _overscan_and_imaging(raw, geometry)
    if overscan is None or overscan.size == 0:
        return [
            Measurement("bias_level", _clipped(imaging)[0]),
            Measurement("overscan_noise", None, "the camera has no overscan"),
        ]
    level, noise = _clipped(overscan)
    return [Measurement("bias_level", level), Measurement("overscan_noise", noise * gain)]


def _clipped(values: np.ndarray) -> tuple[float, float]:
    """Mean and standard deviation clipped at 4 sigma: unlike the median and the MAD, unbiased for
    integer counts whose scatter is a few ADU."""
    mean, _, std = sigma_clipped_stats(values, sigma=4.0, maxiters=5)
    return float(mean), float(std)


def read_noise_from_pair(
    first: np.ndarray, second: np.ndarray, geometry: Geometry, gain: float
) -> Measurement:
    """Read noise (e-) from two raw bias frames of one readout: the scatter (clipped at 4 sigma) of
    their imaging areas' difference, where the fixed pattern cancels, / sqrt 2; each frame is first
    made level with its overscan."""
    if first.shape != second.shape:
        return Measurement("read_noise", None, f"bias pair of shapes {first.shape} and {second.shape}")
    overscan_a, a = _overscan_and_imaging(first, geometry)
    overscan_b, b = _overscan_and_imaging(second, geometry)
    difference = a - b
    if overscan_a is not None and overscan_a.size:
        difference -= np.median(overscan_a) - np.median(overscan_b)
    return Measurement("read_noise", _clipped(difference)[1] / math.sqrt(2.0) * gain)


def flat_frame_metrics(raw: np.ndarray, geometry: Geometry, gain: float) -> list[Measurement]:
    """A raw flat frame: the median signal (e-) above its overscan (its bias level without one)."""
    overscan, imaging = _overscan_and_imaging(raw, geometry)
    if overscan is None or overscan.size == 0:
        return [Measurement("flat_level", None, "the camera has no overscan to subtract")]
    return [Measurement("flat_level", (median(imaging) - median(overscan)) * gain)]


def corner_ratio(flat: np.ndarray, dq: np.ndarray, box_fraction: float = 0.1) -> float:
    """Median of the four corner boxes over the median of the central box (each ``box_fraction`` of
    the side): 1 for a flat field, below 1 for vignetting."""
    ny, nx = flat.shape
    by, bx = max(int(ny * box_fraction), 1), max(int(nx * box_fraction), 1)
    good = np.where(dq == 0, flat, np.nan)
    corners = [good[:by, :bx], good[:by, -bx:], good[-by:, :bx], good[-by:, -bx:]]
    centre = good[(ny - by) // 2 : (ny + by) // 2, (nx - bx) // 2 : (nx + bx) // 2]
    return float(np.nanmedian(np.concatenate([c.ravel() for c in corners])) / np.nanmedian(centre))


def master_metrics(
    kind: str, data: np.ndarray, dq: np.ndarray, statistics: Mapping[str, float], exptime: float
) -> list[Measurement]:
    """Metrics of a master (``kind`` bias, dark or flat) from its pixels and the statistics its
    stacking recorded. ``exptime`` is 0 for masters that scale with exposure time."""
    if kind == "bias":
        noise = statistics.get("read_noise_e")
        # A synthetic bias (the pedestal of a fit through darks) shares the fit's statistics, whose
        # median is the dark rate's.
        level = (
            statistics.get("median_pedestal_e") if statistics.get("synthetic") else statistics.get("median")
        )
        return [
            Measurement("master_bias_level", level),
            Measurement("master_read_noise", noise, None if noise is not None else "a pedestal fit"),
        ]
    if kind == "dark":
        hot = statistics.get("hot_pixels")
        rate = statistics.get("median")
        return [
            Measurement("dark_current", rate)
            if not exptime
            else Measurement("dark_current", None, f"a dark with its bias ({exptime:g} s): no rate"),
            Measurement("hot_pixel_fraction", hot / data.size if hot is not None else None, "not counted"),
        ]
    return [
        Measurement("flat_illuminated_level", statistics.get("illuminated_level")),
        Measurement("flat_corner_ratio", corner_ratio(data, dq)),
        Measurement("flat_bad_fraction", statistics.get("bad_fraction")),
    ]


SHAPE_METRICS = ("fwhm", "fwhm_arcsec", "ellipticity")


def star_shapes(
    sci: np.ndarray, err: np.ndarray, dq: np.ndarray, pixel_scale: float | None
) -> list[Measurement]:
    """Median FWHM (pixels, and arcsec when the pixel scale is known) and ellipticity 1 - b/a of the
    well-measured stars of a reduced frame: detected above :data:`STAR_THRESHOLD` x ERR, unflagged by
    sep, clear of flagged pixels and not saturated."""
    mask = dq != 0
    signal, _, _ = subtract_sky(sci, mask)
    # ERR holds float32 values: sep gets the same ones from the plane as from a float64 copy.
    objects = sep.extract(signal, STAR_THRESHOLD, err=np.ascontiguousarray(err), mask=mask, minarea=5)
    if len(objects):
        # The 7 x 7 pixels about the pixel each position falls in (truncated, as int() does).
        near_flag = any_flagged_in_box(mask, objects["y"].astype(np.int64), objects["x"].astype(np.int64), 3)
        objects = objects[(objects["flag"] == 0) & ~near_flag]
    if len(objects) < MIN_STARS:
        return missing(SHAPE_METRICS, f"{len(objects)} well-measured stars, fewer than {MIN_STARS}")
    # Within 3 a (99 % of a Gaussian's light) a neighbour is less often in the aperture than within
    # the 6 a Source Extractor uses: in a crowded field of bad seeing that inflates the radius.
    radius, flag = flux_radius(
        signal, objects["x"], objects["y"], 3.0 * objects["a"], 0.5, mask=mask, subpix=5
    )
    # A masked pixel far out in the wings does not spoil a half-light radius; an image edge does.
    good = ((flag & APERTURE_TRUNCATED) == 0) & np.isfinite(radius) & (radius > 0)
    if good.sum() < MIN_STARS:
        return missing(SHAPE_METRICS, f"{int(good.sum())} stars with a half-light radius")
    fwhm = float(np.median(2.0 * radius[good]))
    ellipticity = float(np.median(1.0 - objects["b"][good] / objects["a"][good]))
    return [
        Measurement("fwhm", fwhm),
        Measurement("fwhm_arcsec", fwhm * pixel_scale)
        if pixel_scale
        else Measurement("fwhm_arcsec", None, "no pixel scale in the instrument registry"),
        Measurement("ellipticity", ellipticity),
    ]


@dataclass(frozen=True)
class Reference:
    """A photometric reference catalogue: positions (deg) and magnitudes per filter name."""

    ra: np.ndarray
    dec: np.ndarray
    magnitudes: Mapping[str, np.ndarray]


def zero_point(
    sources: np.ndarray, exptime: float, filter_name: str | None, reference: Reference | None
) -> Measurement:
    """Zero point (mag of 1 e-/s) of a reduced frame: the median of ``m_ref + 2.5 log10(flux / t)``
    over unflagged sources with a signal-to-noise above 20 matched within 1.5 arcsec to a reference
    star of the frame's filter (``sources``: the CAT table, flux in e- and ra/dec in degrees)."""
    if reference is None:
        return Measurement("zero_point", None, "no reference catalogue")
    if not filter_name or filter_name not in reference.magnitudes:
        return Measurement("zero_point", None, f"the reference catalogue has no magnitudes in {filter_name}")
    if exptime <= 0:
        return Measurement("zero_point", None, "no exposure time")
    usable = (
        (sources["flag"] == 0)
        & np.isfinite(sources["ra"])
        & (sources["flux"] > 0)
        & (sources["flux"] > STAR_THRESHOLD * sources["flux_err"])
    )
    stars = sources[usable]
    if len(stars) < MIN_STARS:
        return Measurement("zero_point", None, f"{len(stars)} usable stars with sky positions")
    mags = np.asarray(reference.magnitudes[filter_name], dtype=np.float64)
    known = np.isfinite(mags)
    catalogue = SkyCoord(reference.ra[known], reference.dec[known], unit="deg")
    if len(catalogue) == 0:
        return Measurement("zero_point", None, f"no reference magnitudes in {filter_name}")
    index, separation, _ = SkyCoord(stars["ra"], stars["dec"], unit="deg").match_to_catalog_sky(catalogue)
    matched = separation.arcsec < MATCH_RADIUS_ARCSEC
    if matched.sum() < MIN_STARS:
        return Measurement("zero_point", None, f"{int(matched.sum())} stars matched to the reference")
    values = mags[known][index[matched]] + 2.5 * np.log10(stars["flux"][matched] / exptime)
    return Measurement("zero_point", float(np.median(values)))


def reduced_metrics(
    sci: np.ndarray,
    err: np.ndarray,
    dq: np.ndarray,
    sources: np.ndarray,
    statistics: Mapping[str, float],
    *,
    exptime: float,
    filter_name: str | None,
    pixel_scale: float | None,
    spectrum: bool,
    reference: Reference | None,
) -> list[Measurement]:
    """The metrics of a reduced frame (SCI and ERR in e-, DQ, its source catalogue and the
    statistics its reduction recorded); ``pixel_scale`` in arcsec per (binned) pixel."""
    values = [
        Measurement("cosmic_rays", statistics.get("cosmic_ray_pixels")),
        Measurement("flagged_fraction", float(np.mean(dq != 0))),
    ]
    if spectrum:
        return values + missing(
            ("sky", "sources", *SHAPE_METRICS, "zero_point"), "a spectrum: no sky or stars to measure"
        )
    sky = statistics.get("sky_e")
    values += [
        Measurement("sky", sky / exptime if sky is not None and exptime > 0 else None, "no exposure time"),
        Measurement("sources", float(len(sources))),
        *star_shapes(sci, err, dq, pixel_scale),
        zero_point(sources, exptime, filter_name, reference),
    ]
    return values


# --- checks ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class QualityCheck:
    name: str
    threshold: str  # the registry's quality threshold (Instrument.quality) it is judged by
    description: str


QUALITY_CHECKS: dict[str, QualityCheck] = {
    c.name: c
    for c in (
        QualityCheck(
            "read_noise_nominal",
            "read_noise",
            "read noise from pairs of bias frames within the registry's quality.read_noise fraction of "
            "the instrument's",
        ),
        QualityCheck(
            "bias_level_stable",
            "bias_level_drift",
            "the night's raw bias level within quality.bias_level_drift ADU of the earlier nights' median",
        ),
        QualityCheck(
            "hot_pixels_normal",
            "hot_pixels",
            "fraction of hot pixels in each master dark at most quality.hot_pixels",
        ),
        QualityCheck(
            "seeing_within_limit",
            "fwhm",
            "the night's median stellar FWHM at most quality.fwhm arcsec, per filter",
        ),
        QualityCheck(
            "zero_point_nominal",
            "zero_point",
            "the night's median zero point within quality.zero_point mag of quality.zero_points, per filter",
        ),
    )
}
DRIFT_HISTORY_NIGHTS = 10  # the bias level is compared with the median of this many earlier nights


@dataclass(frozen=True)
class Verdict:
    """A quality check's outcome for one night: failures (empty: passed) and what was judged."""

    check: str
    failures: tuple[str, ...]
    summary: str


def _median(values: Iterable[float]) -> float | None:
    values = [v for v in values if v is not None]
    return float(np.median(values)) if values else None


# A night's measured (value, filter, subject) per metric, and a check's limit by check name.
_NightValues = Mapping[str, Sequence[tuple[float, str, str]]]
_Limit = Callable[[str], float]


def quality_verdicts(
    values: Mapping[str, Sequence[tuple[float, str, str]]],
    earlier_bias_levels: Mapping[object, Sequence[float]],
    *,
    read_noise: float,
    thresholds: Mapping[str, object],
    zero_points: Mapping[str, float],
) -> list[Verdict]:
    """Judge one night. ``values``: per metric, the measured (value, filter, subject) of the night;
    ``earlier_bias_levels``: raw bias levels (ADU) of earlier nights, by night; ``read_noise``: the
    registry's (e-); ``thresholds``: the instrument's :class:`~reduction_assets.instruments.Threshold`
    per name; ``zero_points``: nominal per filter (mag)."""

    def limit(check: str) -> float:
        return thresholds[QUALITY_CHECKS[check].threshold].limit

    return [
        _read_noise_verdict(values, read_noise, limit),
        _bias_level_verdict(values, earlier_bias_levels, limit),
        _hot_pixels_verdict(values, limit),
        _per_filter_verdict(
            "seeing_within_limit",
            "fwhm_arcsec",
            values,
            zero_points,
            lambda f, m: m > limit("seeing_within_limit"),
        ),
        _per_filter_verdict(
            "zero_point_nominal",
            "zero_point",
            values,
            zero_points,
            lambda f, m: f in zero_points and abs(m - zero_points[f]) > limit("zero_point_nominal"),
        ),
    ]


def _read_noise_verdict(values: _NightValues, read_noise: float, limit: _Limit) -> Verdict:
    """The read noise of the night's bias pairs against the registry's."""
    pairs = [v for v, _, _ in values.get("read_noise", ())]
    measured = _median(pairs)
    if measured is None:
        return Verdict("read_noise_nominal", (), "no pair of bias frames")
    off = abs(measured / read_noise - 1)
    return Verdict(
        "read_noise_nominal",
        (f"read noise {measured:.2f} e- from {len(pairs)} bias pairs vs {read_noise:g} e-",)
        if off > limit("read_noise_nominal")
        else (),
        f"{measured:.2f} e- from {len(pairs)} pairs ({read_noise:g} e- nominal)",
    )


def _bias_level_verdict(
    values: _NightValues,
    earlier_bias_levels: Mapping[object, Sequence[float]],
    limit: _Limit,
) -> Verdict:
    """The night's raw bias level against the median of the earlier nights'."""
    level = _median(v for v, _, _ in values.get("bias_level", ()))
    history = _median(_median(night) for night in earlier_bias_levels.values())
    if level is None:
        return Verdict("bias_level_stable", (), "no bias frames")
    if history is None:
        return Verdict("bias_level_stable", (), f"{level:.1f} ADU; no earlier nights to compare")
    jump = level - history
    return Verdict(
        "bias_level_stable",
        (f"bias level {level:.1f} ADU, {jump:+.1f} ADU from the earlier nights' {history:.1f} ADU",)
        if abs(jump) > limit("bias_level_stable")
        else (),
        f"{level:.1f} ADU vs {history:.1f} ADU over {len(earlier_bias_levels)} earlier nights",
    )


def _hot_pixels_verdict(values: _NightValues, limit: _Limit) -> Verdict:
    """The fraction of hot pixels of each master dark of the night against the limit."""
    hot = values.get("hot_pixel_fraction", ())
    return Verdict(
        "hot_pixels_normal",
        tuple(
            f"{subject}: {100 * v:.2f}% hot pixels" for v, _, subject in hot if v > limit("hot_pixels_normal")
        ),
        ", ".join(f"{100 * v:.3f}%" for v, _, _ in hot) or "no master dark",
    )


def _per_filter_verdict(
    check: str,
    metric: str,
    values: _NightValues,
    zero_points: Mapping[str, float],
    fails: Callable[[str, float], bool],
) -> Verdict:
    """A check of the night's median ``metric`` per filter: ``fails(filter, median)`` says which fail."""
    by_filter: dict[str, list[float]] = {}
    for value, filter_name, _ in values.get(metric, ()):
        by_filter.setdefault(filter_name, []).append(value)
    medians = {f: float(np.median(v)) for f, v in sorted(by_filter.items())}
    unit = METRICS[metric].unit
    return Verdict(
        check,
        tuple(
            f"{f or 'no filter'}: median {metric} {m:.2f} {unit} over {len(by_filter[f])} frames"
            + (f" vs {zero_points[f]:g} nominal" if metric == "zero_point" else "")
            for f, m in medians.items()
            if fails(f, m)
        ),
        ", ".join(f"{f or '-'} {m:.2f} {unit}" for f, m in medians.items()) or f"no {metric} measured",
    )
