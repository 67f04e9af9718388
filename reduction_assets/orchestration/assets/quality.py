"""Quality assets: quality_metrics (per night and instrument: the metrics of every raw calibration
frame, master and reduced frame, recorded as a time series, with plots and checks) and
quality_trends (per instrument: each metric across nights)."""

import warnings

from dagster import (
    AssetCheckResult,
    AssetCheckSeverity,
    AssetCheckSpec,
    AssetDep,
    AssetExecutionContext,
    AssetKey,
    BetaWarning,
    Config,
    MaterializeResult,
    MetadataValue,
    MultiToSingleDimensionPartitionMapping,
    TableColumn,
    TableRecord,
    TableSchema,
    asset,
)
from pydantic import Field

from reduction_assets.instruments import Instrument
from reduction_assets.orchestration.assets.common import OWNERS, retried_when_transient
from reduction_assets.orchestration.partitions import (
    backfill_policy,
    instrument_partitions,
    night_instrument_partitions,
    split_key,
)
from reduction_assets.orchestration.resources import ReductionHomeResource
from reduction_assets.reduction.quality import QUALITY_CHECKS, Verdict
from reduction_assets.support import plots
from reduction_assets.tasks.quality import (
    Sources,
    assess_night,
    draw_trend,
    metric_summary,
    trend_points,
)
from reduction_assets.tasks.reference import load_reference

QUALITY_GROUP = "quality"
# Nights whose plots are embedded in one materialization's metadata (a backfill run measures many;
# every night's full-size plots are in the product store either way).
EMBEDDED_NIGHTS = 2


class QualityConfig(Config):
    plots: bool = Field(default=True, description="draw the night's thumbnails and histograms")


class TrendConfig(Config):
    nights: int = Field(default=120, description="nights shown, up to the latest measured")


def _image_markdown(title: str, png: bytes) -> str:
    return f"**{title}**\n\n![{title}]({plots.data_url(png)})\n"


METRICS_SCHEMA = TableSchema(
    columns=[
        TableColumn("partition", "string"),
        TableColumn("metric", "string"),
        TableColumn("unit", "string"),
        TableColumn("measured", "int", description="subjects with a value"),
        TableColumn("missing", "int", description="subjects where it could not be measured"),
        TableColumn("median", "float"),
        TableColumn("reason", "string", description="why values are missing (the first reason)"),
    ]
)


def _check_results(judged: list[tuple[str, Instrument, list[Verdict]]]) -> list[AssetCheckResult]:
    """One result per quality check for the run's partitions: failed where any night failed, an
    error when a failing night's registry threshold says so."""
    results = []
    for name, check in QUALITY_CHECKS.items():
        failures, summaries, error = [], {}, False
        for partition, instrument, verdicts in judged:
            verdict = next(v for v in verdicts if v.check == name)
            summaries[partition] = verdict.summary
            if verdict.failures:
                failures += [f"{partition}: {failure}" for failure in verdict.failures]
                error = error or instrument.quality[check.threshold].severity == "error"
        results.append(
            AssetCheckResult(
                check_name=name,
                asset_key=AssetKey("quality_metrics"),
                passed=not failures,
                severity=AssetCheckSeverity.ERROR if error else AssetCheckSeverity.WARN,
                description="; ".join(failures)
                if failures
                else "; ".join(f"{p}: {s}" for p, s in summaries.items()),
                metadata={
                    "nights": MetadataValue.json(summaries),
                    "failures": MetadataValue.int(len(failures)),
                },
            )
        )
    return results


@asset(
    partitions_def=night_instrument_partitions,
    backfill_policy=backfill_policy,
    owners=OWNERS,
    group_name=QUALITY_GROUP,
    kinds={"png"},
    tags={"reduction_assets/family": "quality"},
    deps=[
        AssetKey("raw_frames"),
        AssetKey("master_bias"),
        AssetKey("master_dark"),
        AssetKey("master_flat"),
        AssetKey("reduced_frames"),
    ],
    check_specs=[
        AssetCheckSpec(check.name, asset="quality_metrics", description=check.description)
        for check in QUALITY_CHECKS.values()
    ],
)
@retried_when_transient
def quality_metrics(
    context: AssetExecutionContext, config: QualityConfig, home: ReductionHomeResource
) -> MaterializeResult:
    """The night's quality metrics (bias level, read noise, dark current, hot pixels, flat level and
    shape, sky, FWHM, ellipticity, sources, cosmic rays, flagged pixels, zero point) recorded in the
    catalog's time series, with thumbnails and histograms, and judged by the registry's thresholds."""
    reference = load_reference(home.layout().reference)
    judged, summary, markdown, written, missing_count = [], [], [], 0, 0
    store = home.product_store()
    sources = Sources(home.catalog(), home.raw_store(), store)
    for index, key in enumerate(sorted(context.partition_keys, key=lambda k: split_key(k)[1], reverse=True)):
        instrument_name, night = split_key(key)
        instrument = home.registry()[instrument_name]
        assessed = assess_night(sources, instrument, night, reference, draw=config.plots)
        rows = assessed.quality.rows
        judged.append((str(key), instrument, assessed.verdicts))
        written += assessed.written
        summary += [TableRecord({"partition": str(key), **row}) for row in metric_summary(rows)]
        missing_count += sum(1 for row in rows if row.value is None)
        if not rows:
            markdown.append(f"**{key}**: no frames measured (nothing ingested or reduced for this night)\n")
        elif index < EMBEDDED_NIGHTS:
            markdown += [
                _image_markdown(f"{key} {name}", data) for name, data in assessed.small_plots.items()
            ]
    return MaterializeResult(
        metadata={
            "measurements": MetadataValue.int(written),
            "missing": MetadataValue.int(missing_count),
            "metrics": MetadataValue.table(summary, schema=METRICS_SCHEMA),
            "plots": MetadataValue.md("\n".join(markdown) or "no plots"),
        },
        check_results=_check_results(judged),
    )


# --- trends -----------------------------------------------------------------------------------------


TREND_SCHEMA = TableSchema(
    columns=[
        TableColumn("metric", "string"),
        TableColumn("nights", "int"),
        TableColumn("latest", "string"),
        TableColumn("latest_median", "float"),
        TableColumn("path", "string"),
    ]
)
with warnings.catch_warnings():
    warnings.simplefilter("ignore", BetaWarning)  # beta in Dagster 1.13; nothing operators can act on
    _BY_INSTRUMENT = MultiToSingleDimensionPartitionMapping(partition_dimension_name="instrument")
# Trends embedded in the metadata (all are in the product store).
EMBEDDED_TRENDS = ("bias_level", "read_noise", "dark_current", "fwhm_arcsec", "sky", "zero_point")


@asset(
    partitions_def=instrument_partitions,
    owners=OWNERS,
    group_name=QUALITY_GROUP,
    kinds={"png"},
    tags={"reduction_assets/family": "quality"},
    deps=[AssetDep("quality_metrics", partition_mapping=_BY_INSTRUMENT)],
)
@retried_when_transient
def quality_trends(
    context: AssetExecutionContext, config: TrendConfig, home: ReductionHomeResource
) -> MaterializeResult:
    """Per metric, the instrument's values across nights (a point per night: its median and range),
    with the checks' limits; redrawn whenever a night's quality_metrics is materialized."""
    instrument = home.registry()[context.partition_key]
    store = home.product_store()
    points = trend_points(home.catalog(), instrument, config.nights)
    drawn = [
        draw_trend(store, instrument, metric, rows, small=metric in EMBEDDED_TRENDS)
        for metric, rows in points.items()
    ]
    table = [
        TableRecord(
            {
                "metric": trend.metric,
                "nights": trend.nights,
                "latest": trend.latest.isoformat(),
                "latest_median": trend.latest_median,
                "path": trend.key,
            }
        )
        for trend in drawn
    ]
    markdown = [_image_markdown(t.metric, t.small_png) for t in drawn if t.small_png is not None]
    return MaterializeResult(
        metadata={
            "metrics": MetadataValue.int(len(table)),
            "trends": MetadataValue.table(table, schema=TREND_SCHEMA),
            "plots": MetadataValue.md("\n".join(markdown) or "no metrics measured yet"),
        }
    )


QUALITY_ASSETS = [quality_metrics, quality_trends]
