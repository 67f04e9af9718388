"""A night's quality, measured: gathers the raw calibration frames, masters and reduced frames of a
night and instrument from the catalog and the stores, measures them with
:mod:`reduction_assets.reduction.quality`, judges them by the registry's thresholds, and draws them
(:mod:`reduction_assets.support.plots`). Shared by the quality assets, `reduction-assets plot` and
`reduction-assets report`; knows nothing of Dagster."""

from __future__ import annotations

import datetime as dt
import functools
from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np
from astropy.io import fits

from reduction_assets.catalog import Catalog
from reduction_assets.catalog.calibrations import calibration_groups, masters_of
from reduction_assets.catalog.quality import (
    MetricRow,
    earlier_values,
    latest_night,
    metric_series,
    record_partition_metrics,
)
from reduction_assets.catalog.raw import raw_frames_of
from reduction_assets.catalog.stacks import reduced_frames_of
from reduction_assets.fits.headers import parse_binning_label
from reduction_assets.fits.reading import read_image, read_master
from reduction_assets.instruments import Instrument
from reduction_assets.reduction.quality import (
    DRIFT_HISTORY_NIGHTS,
    MASTER_METRICS,
    METRICS,
    REDUCED_METRICS,
    Measurement,
    Reference,
    Verdict,
    bias_frame_metrics,
    flat_frame_metrics,
    master_metrics,
    missing,
    quality_verdicts,
    read_noise_from_pair,
    reduced_metrics,
)
from reduction_assets.storage import Integrity, ObjectStore, StoreError, write_object
from reduction_assets.support import plots
from reduction_assets.support.keys import quality_plot_key, trend_plot_key


@dataclass(frozen=True)
class Sources:
    """Where a night's inputs are: the catalog, the raw store and the product store."""

    catalog: Catalog
    raw: ObjectStore
    products: ObjectStore


@dataclass
class NightQuality:
    """What was measured in one night and instrument, and what to show of it."""

    instrument: Instrument
    night: dt.date
    rows: list[MetricRow] = field(default_factory=list)
    panels: list[plots.Panel] = field(default_factory=list)
    best_frame: plots.Panel | None = None
    best_sources: int = -1

    def add(self, measurements: list[Measurement], subject: str, kind: str, frame_type: str,
            filter_name: str | None, time: dt.datetime) -> None:  # fmt: skip
        self.rows += [
            MetricRow(
                instrument=self.instrument.name,
                night=self.night,
                subject=subject,
                subject_kind=kind,
                frame_type=frame_type,
                filter=filter_name or "",
                metric=m.metric,
                value=m.value,
                unit=m.unit,
                reason=m.reason,
                time=time,
            )
            for m in measurements
        ]

    def values(self) -> dict[str, list[tuple[float, str, str]]]:
        return values_by_metric(self.rows)


def _load(store: ObjectStore, key: str, checksum: str | None, recorded_at: dt.datetime, read):
    """``read(stream)`` of a stored object that still matches its catalog checksum; (result, None),
    or (None, the reason it cannot be measured). A damaged file is left to `verify`, never read."""
    state = store.check_since(key, checksum, recorded_at)
    if state is not Integrity.OK:
        return None, f"the stored file is {state.value} (`reduction-assets verify` repairs it)"
    try:
        with store.open(key) as stream:
            return read(stream), None
    except (OSError, KeyError, ValueError, StoreError) as err:
        return None, f"the stored file cannot be read: {type(err).__name__}: {err}"


def _raw_pixels(stream) -> np.ndarray:
    return read_image(stream)[1]


def _raw_readout(instrument: Instrument, store: ObjectStore, frame):
    """(pixels ADU, geometry, None) of a stored raw frame, or (None, None, why it cannot be measured)."""
    raw, reason = _load(store, frame.store_path, frame.checksum, frame.ingested_at, _raw_pixels)
    if raw is None:
        return None, None, reason
    geometry = instrument.geometry(raw.shape, parse_binning_label(frame.binning))
    if geometry is None:
        return None, None, f"shape {raw.shape} is not a readout of {instrument.name}"
    return raw, geometry, None


def _measure_raw(quality: NightQuality, sources: Sources) -> None:
    """Bias level and overscan noise of each bias frame, read noise of consecutive pairs, level of
    each flat frame."""
    instrument, store = quality.instrument, sources.raw
    with sources.catalog.session() as session:
        bias_groups = calibration_groups(session, instrument, quality.night, "bias")
        flats = raw_frames_of(session, instrument.name, quality.night, "flat", include_bad=False)
    for group in bias_groups:
        previous = None
        for frame in (f for f in group.frames if not f.bad):
            raw, geometry, reason = _raw_readout(instrument, store, frame)
            if raw is None:
                unmeasured = missing(("bias_level", "overscan_noise", "read_noise"), reason)
                quality.add(unmeasured, frame.store_path, "raw", "bias", None, frame.date_obs)
                previous = None
                continue
            measured = bias_frame_metrics(raw, geometry, instrument.gain)
            if previous is not None:
                measured.append(read_noise_from_pair(previous, raw, geometry, instrument.gain))
            quality.add(measured, frame.store_path, "raw", "bias", None, frame.date_obs)
            previous = raw
    for frame in flats:
        raw, geometry, reason = _raw_readout(instrument, store, frame)
        measured = (
            flat_frame_metrics(raw, geometry, instrument.gain)
            if raw is not None
            else missing(("flat_level",), reason)
        )
        quality.add(measured, frame.store_path, "raw", "flat", frame.filter, frame.date_obs)


def _measure_masters(quality: NightQuality, sources: Sources) -> None:
    with sources.catalog.session() as session:
        masters = masters_of(session, quality.instrument.name, quality.night)
    noon = dt.datetime.combine(quality.night, dt.time(12))
    for row in masters:
        master, reason = _load(sources.products, row.path, row.checksum, row.updated_at, read_master)
        if master is None:
            quality.add(
                missing(MASTER_METRICS[row.type], reason), row.path, "master", row.type, row.filter, noon
            )
            continue
        measured = master_metrics(row.type, master.data, master.dq, row.statistics, row.exptime)
        quality.add(measured, row.path, "master", row.type, row.filter, noon)
        label = " ".join(
            part for part in (row.type, row.binning, row.filter, row.exptime and f"{row.exptime:g}s") if part
        )
        quality.panels.append(plots.Panel(f"{label}{' (bad)' if row.bad else ''}", master.data))


def _reduced_planes(stream) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    with fits.open(stream, memmap=False) as hdul:
        return (
            np.asarray(hdul["SCI"].data, dtype=np.float32),
            np.asarray(hdul["ERR"].data, dtype=np.float32),
            np.asarray(hdul["DQ"].data, dtype=np.uint16),
            np.asarray(hdul["CAT"].data),
        )


def _measure_reduced(quality: NightQuality, sources: Sources, reference: Reference | None) -> None:
    instrument = quality.instrument
    with sources.catalog.session() as session:
        reduced = reduced_frames_of(session, instrument.name, quality.night)
    for product, frame in reduced:
        planes, reason = _load(
            sources.products, product.path, product.checksum, product.updated_at, _reduced_planes
        )
        if planes is None:
            unmeasured = missing(REDUCED_METRICS, reason)
            quality.add(unmeasured, product.path, "reduced", "science", frame.filter, frame.date_obs)
            continue
        sci, err, dq, catalogue = planes
        scale = (
            instrument.pixel_scale * parse_binning_label(frame.binning)[0] if instrument.pixel_scale else None
        )
        measured = reduced_metrics(
            sci, err, dq, catalogue, product.statistics,
            exptime=frame.exptime, filter_name=frame.filter, pixel_scale=scale,
            spectrum=instrument.science_mode(frame.header or {}).spectrum, reference=reference,
        )  # fmt: skip
        quality.add(measured, product.path, "reduced", "science", frame.filter, frame.date_obs)
        if len(catalogue) > quality.best_sources:
            quality.best_sources = len(catalogue)
            title = f"{frame.object or 'science'} {frame.filter or ''} {frame.exptime:g}s"
            quality.best_frame = plots.Panel(
                f"{title}: {len(catalogue)} sources", sci, catalogue["x"], catalogue["y"]
            )


def measure_night(
    sources: Sources, instrument: Instrument, night: dt.date, reference: Reference | None
) -> NightQuality:
    """Every metric of a night and instrument (raw calibration frames, masters, reduced frames)."""
    quality = NightQuality(instrument, night)
    _measure_raw(quality, sources)
    _measure_masters(quality, sources)
    _measure_reduced(quality, sources, reference)
    return quality


def night_verdicts(catalog: Catalog, instrument: Instrument, night: dt.date, rows: Iterable) -> list[Verdict]:
    """The quality checks of one night's measurements (``rows``: :class:`MetricRow` or catalog rows;
    the bias level is compared with the catalog's earlier nights)."""
    with catalog.session() as session:
        history = earlier_values(session, "bias_level", instrument.name, night, DRIFT_HISTORY_NIGHTS)
    return quality_verdicts(
        values_by_metric(rows),
        history,
        read_noise=instrument.read_noise,
        thresholds=instrument.quality.thresholds,
        zero_points=instrument.quality.zero_points,
    )


def values_by_metric(rows: Iterable) -> dict[str, list[tuple[float, str, str]]]:
    """Measured values per metric as (value, filter, subject); missing ones left out."""
    found: dict[str, list[tuple[float, str, str]]] = {}
    for row in rows:
        if row.value is not None:
            found.setdefault(row.metric, []).append((row.value, row.filter, row.subject))
    return found


@dataclass(frozen=True)
class NightPlots:
    """PNG bytes of a night's plots: full size (for the product store) and small (for metadata)."""

    full: dict[str, bytes]
    small: dict[str, bytes]


def night_plots(quality: NightQuality) -> NightPlots:
    """Thumbnails of the masters and of the reduced frame with the most sources (circled), and
    histograms of the reduced frames' sky and FWHM."""
    label = f"{quality.instrument.name} {quality.night.isoformat()}"
    figures = {}
    panels = quality.panels + ([quality.best_frame] if quality.best_frame is not None else [])
    if panels:
        figures["frames"] = plots.thumbnails(panels, f"{label}: masters and a reduced frame")
    values = quality.values()
    figures["histograms"] = plots.histograms(
        {name: ([v for v, _, _ in values.get(name, ())], METRICS[name].unit) for name in ("sky", "fwhm")},
        f"{label}: reduced frames",
    )
    return NightPlots(
        full={name: plots.png(figure) for name, figure in figures.items()},
        small={name: plots.small_png(figure) for name, figure in figures.items()},
    )


def trend_series(rows, metric: str, prefix: str = "") -> list[plots.Series]:
    """Per filter (one series when the metric has none), one point per night: the night's values."""
    by_label: dict[str, dict[dt.date, list[float]]] = {}
    for row in rows:
        if row.metric != metric or row.value is None:
            continue
        label = (row.filter or "no filter") if metric in FILTER_METRICS else "all"
        label = f"{prefix} {label}" if prefix else label
        by_label.setdefault(label, {}).setdefault(row.night, []).append(row.value)
    return [
        plots.Series(label, sorted(nights), [nights[n] for n in sorted(nights)])
        for label, nights in sorted(by_label.items())
    ]


# Metrics that differ by filter by nature: their trends have a line per filter.
FILTER_METRICS = {"flat_level", "flat_illuminated_level", "flat_corner_ratio", "flat_bad_fraction", "sky",
                  "fwhm", "fwhm_arcsec", "ellipticity", "sources", "zero_point"}  # fmt: skip


def trend_limits(instrument: Instrument, metric: str) -> plots.Limits | None:
    """The check's bounds drawn on a metric's trend, where a check has fixed ones."""
    limits = instrument.quality
    if metric == "fwhm_arcsec":
        return plots.Limits(high=limits["fwhm"].limit)
    if metric == "hot_pixel_fraction":
        return plots.Limits(high=limits["hot_pixels"].limit)
    if metric in ("read_noise", "master_read_noise"):
        tolerance = limits["read_noise"].limit
        return plots.Limits(instrument.read_noise * (1 - tolerance), instrument.read_noise * (1 + tolerance))
    if metric == "dark_current":
        return plots.Limits(high=limits["dark_current"].limit)
    return None


def trend_figure(instrument: Instrument, metric: str, rows, start: dt.date, end: dt.date):
    """The trend of one metric of one instrument on nights ``start``..``end``."""
    return plots.trend(
        metric,
        METRICS[metric].unit,
        trend_series(rows, metric),
        f"{instrument.name} {metric}, {start.isoformat()} to {end.isoformat()}",
        trend_limits(instrument, metric),
    )


@dataclass(frozen=True)
class TrendPoint:
    """A metric value detached from its catalog session (trends are drawn after it closes)."""

    instrument: str
    night: dt.date
    metric: str
    filter: str
    value: float

    @staticmethod
    def of(row) -> TrendPoint:
        return TrendPoint(row.instrument, row.night, row.metric, row.filter, row.value)


def metric_summary(rows: Iterable) -> list[dict]:
    """Per metric (in :data:`METRICS` order): its unit, how many subjects have a value and how many
    are missing, the median and the first reason a value is missing."""
    by_metric: dict[str, list] = {}
    for row in rows:
        by_metric.setdefault(row.metric, []).append(row)
    summary = []
    for metric in (m for m in METRICS if m in by_metric):
        values = [r.value for r in by_metric[metric] if r.value is not None]
        reasons = [r.reason for r in by_metric[metric] if r.value is None]
        summary.append(
            {
                "metric": metric,
                "unit": METRICS[metric].unit,
                "measured": len(values),
                "missing": len(reasons),
                "median": float(np.median(values)) if values else None,
                "reason": reasons[0] if reasons else None,
            }
        )
    return summary


def _write(data: bytes, stream) -> None:
    stream.write(data)


@dataclass(frozen=True)
class AssessedNight:
    """A night measured, judged and recorded: its measurements, the quality checks' verdicts, the
    catalog rows written, and the small plots drawn (the full-size ones are in the product store)."""

    quality: NightQuality
    verdicts: list[Verdict]
    written: int
    small_plots: dict[str, bytes]


def assess_night(
    sources: Sources, instrument: Instrument, night: dt.date, reference: Reference | None, *, draw: bool
) -> AssessedNight:
    """Measure a night (:func:`measure_night`), judge it, record its metrics in the catalog's time
    series and, with ``draw``, write its plots to the product store when anything was measured."""
    quality = measure_night(sources, instrument, night, reference)
    verdicts = night_verdicts(sources.catalog, instrument, night, quality.rows)
    with sources.catalog.session() as session:
        written = record_partition_metrics(session, instrument.name, night, quality.rows)
    small: dict[str, bytes] = {}
    if draw and quality.rows:
        drawn = night_plots(quality)
        for name, data in drawn.full.items():
            key = quality_plot_key(instrument.name, night, name)
            write_object(sources.products, key, functools.partial(_write, data))
        small = drawn.small
    return AssessedNight(quality, verdicts, written, small)


def trend_points(catalog: Catalog, instrument: Instrument, nights: int) -> dict[str, list[TrendPoint]]:
    """Per metric with values (in :data:`METRICS` order), the instrument's values on the ``nights``
    nights up to the latest measured."""
    points: dict[str, list[TrendPoint]] = {}
    with catalog.session() as session:
        end = latest_night(session, instrument.name)
        for metric in METRICS if end is not None else ():
            rows = metric_series(session, metric, end - dt.timedelta(days=nights - 1), end, [instrument.name])
            if rows:
                points[metric] = [TrendPoint.of(r) for r in rows]
    return points


@dataclass(frozen=True)
class DrawnTrend:
    """A metric's trend written to the product store under ``key``: the nights it spans, the latest
    of them and the median of its values, and a small PNG when one was asked for."""

    metric: str
    key: str
    nights: int
    latest: dt.date
    latest_median: float
    small_png: bytes | None


def draw_trend(
    store: ObjectStore, instrument: Instrument, metric: str, points: list[TrendPoint], *, small: bool
) -> DrawnTrend:
    """Draw a metric's trend from its ``points`` (at least one) and write it to ``store``."""
    nights = sorted({p.night for p in points})
    figure = trend_figure(instrument, metric, points, nights[0], nights[-1])
    key = trend_plot_key(instrument.name, metric)
    write_object(store, key, functools.partial(_write, plots.png(figure)))
    small_png = plots.small_png(figure, 40_000) if small else None
    latest = [p.value for p in points if p.night == nights[-1]]
    return DrawnTrend(metric, key, len(nights), nights[-1], float(np.median(latest)), small_png)
