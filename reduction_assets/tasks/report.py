"""The nightly report: one self-contained HTML page (tables, and plots inline as PNG data URLs) with
what arrived in a night, what was quarantined and why, the masters and their checks, reduced frames
and stacks, the quality checks and metric trends. ``reduction-assets report NIGHT`` writes it."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import jinja2

import reduction_assets
from reduction_assets.catalog import Catalog
from reduction_assets.catalog.quality import metric_series, partition_metrics
from reduction_assets.catalog.reports import night_contents
from reduction_assets.instruments import Instrument
from reduction_assets.reduction.quality import QUALITY_CHECKS
from reduction_assets.storage import ObjectStore
from reduction_assets.support import plots
from reduction_assets.support.keys import quality_plot_key
from reduction_assets.tasks.quality import TrendPoint, metric_summary, night_verdicts, trend_figure

# The trends a report shows, over the nights before the report's night.
REPORT_TRENDS = ("bias_level", "read_noise", "dark_current", "hot_pixel_fraction", "sky", "fwhm_arcsec",
                 "zero_point")  # fmt: skip
TREND_NIGHTS = 30
NIGHT_PLOTS = ("frames", "histograms")


@dataclass
class InstrumentNight:
    """One instrument's part of the report."""

    instrument: str
    contents: dict[str, list[dict[str, Any]]]
    counts: dict[str, int]
    metrics: list[dict[str, Any]]
    checks: list[dict[str, Any]]
    plots: dict[str, str] = field(default_factory=dict)  # name: data URL
    trends: dict[str, str] = field(default_factory=dict)  # metric: data URL

    @property
    def has_data(self) -> bool:
        return any(self.contents[k] for k in ("raw", "quarantined", "masters"))


def _night_plots(products: ObjectStore, instrument: str, night: dt.date) -> dict[str, str]:
    found = {}
    for name in NIGHT_PLOTS:
        key = quality_plot_key(instrument, night, name)
        if products.exists(key):
            with products.open(key) as stream:
                found[name] = plots.data_url(stream.read())
    return found


def instrument_night(
    catalog: Catalog, products: ObjectStore, instrument: Instrument, night: dt.date
) -> InstrumentNight:
    """Gather one instrument's night from the catalog and the product store."""
    with catalog.session() as session:
        contents = night_contents(session, instrument.name, night)
        measured = partition_metrics(session, instrument.name, night)
        start = night - dt.timedelta(days=TREND_NIGHTS - 1)
        series = {m: [TrendPoint.of(r) for r in metric_series(session, m, start, night, [instrument.name])]
                  for m in REPORT_TRENDS}  # fmt: skip
        summary = metric_summary(measured)
    counts: dict[str, int] = {}
    for frame in contents["raw"]:
        counts[frame["type"]] = counts.get(frame["type"], 0) + 1
    checks = []
    if measured:
        for verdict in night_verdicts(catalog, instrument, night, measured):
            threshold = instrument.quality[QUALITY_CHECKS[verdict.check].threshold]
            checks.append(
                {
                    "check": verdict.check,
                    "passed": not verdict.failures,
                    "severity": threshold.severity,
                    "limit": threshold.limit,
                    "detail": "; ".join(verdict.failures) or verdict.summary,
                }
            )
    trends = {}
    for metric, rows in series.items():
        if rows:
            figure = trend_figure(instrument, metric, rows, start, night)
            trends[metric] = plots.data_url(plots.png(figure, dpi=70))
    return InstrumentNight(
        instrument=instrument.name,
        contents=contents,
        counts=counts,
        metrics=summary,
        checks=checks,
        plots=_night_plots(products, instrument.name, night),
        trends=trends,
    )


def render_report(
    night: dt.date, parts: Sequence[InstrumentNight], unassigned: Sequence[dict[str, Any]]
) -> str:
    """The HTML page of a night (``unassigned``: files quarantined without a night, shown apart)."""
    environment = jinja2.Environment(
        loader=jinja2.PackageLoader("reduction_assets.tasks", "templates"),
        autoescape=jinja2.select_autoescape(["html", "j2"]),
        undefined=jinja2.StrictUndefined,
    )
    template = environment.get_template("report.html.j2")
    return template.render(
        night=night.isoformat(),
        parts=[p for p in parts if p.has_data],
        empty=[p.instrument for p in parts if not p.has_data],
        unassigned=unassigned,
        generated=dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        trend_nights=TREND_NIGHTS,
        version=reduction_assets.__version__,
    )
