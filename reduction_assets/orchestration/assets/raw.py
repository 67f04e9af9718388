"""Raw-frame ingestion assets: landing files into the raw store and the catalog."""

from dagster import (
    AssetExecutionContext,
    Config,
    MaterializeResult,
    MetadataValue,
    asset,
)
from pydantic import Field

from reduction_assets.catalog.landing import forget_routes, known_routes, remember_routes
from reduction_assets.catalog.reports import partition_counts
from reduction_assets.orchestration.assets.common import OWNERS, retried_when_transient
from reduction_assets.orchestration.partitions import (
    backfill_policy,
    night_in_range,
    night_instrument_partitions,
    split_key,
)
from reduction_assets.orchestration.resources import ReductionHomeResource
from reduction_assets.tasks.ingest import Ingestor, IngestReport
from reduction_assets.tasks.landing import (
    decode_name,
    encode_name,
    route_landing_file,
    route_with_index,
    scan_landing,
)


class RawFramesConfig(Config):
    files: list[str] | None = Field(
        default=None,
        description="Landing-relative files to ingest (set by the landing sensor). Empty: scan the "
        "whole landing area for this partition's files, as a manual or backfill run does.",
    )


class LandingRejectsConfig(Config):
    files: list[str] = Field(
        default_factory=list,
        description="Landing files the sensor could not route to a partition; each is validated "
        "again and quarantined with its reason.",
    )


def _ingestor(home: ReductionHomeResource) -> Ingestor:
    layout = home.layout()
    return Ingestor(
        landing=layout.landing,
        registry=home.registry(),
        catalog=home.catalog(),
        raw_store=home.raw_store(),
        quarantine_store=home.quarantine_store(),
        night_in_range=night_in_range,
        settle_seconds=home.settle_seconds,
    )


def _report_metadata(report: IngestReport) -> dict:
    by_type_filter = [
        {"frame_type": frame_type, "filter": filt, "count": count}
        for (frame_type, filt), count in sorted(report.by_type_filter.items())
    ]
    metadata = {key: MetadataValue.int(value) for key, value in report.summary().items()}
    metadata["by_type_filter"] = MetadataValue.json(by_type_filter)
    if report.duplicates:
        metadata["duplicate_files"] = MetadataValue.json(
            [{"file": name, "duplicate_of": original} for name, original in report.duplicates]
        )
    if report.quarantined:
        metadata["quarantined_files"] = MetadataValue.json(
            [
                {"file": name, "reason": reason, "message": message}
                for name, reason, message in report.quarantined
            ]
        )
    return metadata


@asset(
    partitions_def=night_instrument_partitions,
    backfill_policy=backfill_policy,
    owners=OWNERS,
    group_name="raw",
    kinds={"fits"},
    tags={"reduction_assets/family": "raw"},
)
@retried_when_transient
def raw_frames(
    context: AssetExecutionContext, config: RawFramesConfig, home: ReductionHomeResource
) -> MaterializeResult:
    """Raw frames of one night and instrument: validated, checksummed, stored and catalogued."""
    ingestor = _ingestor(home)
    partitions = [split_key(key) for key in context.partition_keys]
    if config.files is not None and len(partitions) == 1:
        wanted = {partitions[0]: [decode_name(name) for name in config.files]}
    else:  # a manual run or a backfill: what landing/ holds for these partitions
        wanted = _partition_files(ingestor, set(partitions))
        context.log.info("scanned landing/: %d files belong to %d partitions", sum(map(len, wanted.values())),
                         len(partitions))  # fmt: skip
    report = IngestReport()
    for partition in partitions:
        report.merge(ingestor.ingest(wanted.get(partition, []), partition=partition))
    for name, reason, message in report.quarantined:
        context.log.warning("quarantined %s [%s]: %s", name, reason, message)
    for name, original in report.duplicates:
        context.log.info("duplicate: %s has the same content as %s", name, original)
    with ingestor.catalog.session() as session:
        totals = [partition_counts(session, instrument, night) for instrument, night in partitions]
    metadata = _report_metadata(report)
    metadata["total_frames"] = MetadataValue.int(sum(t["raw"] for t in totals))
    return MaterializeResult(metadata=metadata)


def _partition_files(ingestor: Ingestor, partitions: set) -> dict[tuple, list[str]]:
    """The landing files of each of ``partitions``: one listing of landing/, and the headers of only
    the file versions the catalog has not routed before (a backfill of 30 nights costs 30 partitions
    of work, not 30 readings of every header)."""
    files = scan_landing(ingestor.landing).files
    with ingestor.catalog.session() as session:
        known = known_routes(session)
        routes, new = route_with_index(
            files, known, lambda name: route_landing_file(ingestor.landing, name, ingestor.registry)
        )
        remember_routes(session, new)
        gone = set(known) - {encode_name(name) for name in files}
        forget_routes(session, gone)
    found: dict[tuple, list[str]] = {}
    for name, route in routes.items():
        # unroutable files (None) are the landing_rejects asset's business
        if route is not None and (route.instrument, route.night) in partitions:
            found.setdefault((route.instrument, route.night), []).append(name)
    return found


@asset(group_name="raw", owners=OWNERS, tags={"reduction_assets/family": "raw"})
@retried_when_transient
def landing_rejects(
    context: AssetExecutionContext, config: LandingRejectsConfig, home: ReductionHomeResource
) -> MaterializeResult:
    """Landing files that could not be routed to a night and instrument, quarantined with reasons."""
    report = _ingestor(home).ingest([decode_name(name) for name in config.files])
    for name, reason, message in report.quarantined:
        context.log.warning("quarantined %s [%s]: %s", name, reason, message)
    return MaterializeResult(metadata=_report_metadata(report))
