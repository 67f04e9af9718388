"""Archive records: every raw frame, master, reduced frame and stack of a night, once per content."""

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

from reduction_assets.orchestration.assets.common import OWNERS, retried_when_transient
from reduction_assets.orchestration.jobs import NIGHT_ASSETS
from reduction_assets.orchestration.partitions import backfill_policy, night_instrument_partitions, split_key
from reduction_assets.orchestration.resources import ArchiveStoreResource, ReductionHomeResource
from reduction_assets.tasks.archive import (
    FAILED,
    INVALID,
    ArchivedFile,
    ArchiveNight,
    ArchiveSettings,
    ArchiveTally,
    archive_nights,
)
from reduction_assets.tasks.notify import Delivery, deliver_pending


class ArchiveConfig(Config):
    embargo_days: int = Field(default=365, description="days before science data are public")
    embargo_by_proposal: dict[str, int] = Field(
        default_factory=dict, description="embargo days per proposal (PROPID), overriding embargo_days"
    )


FILES_SCHEMA = TableSchema(
    columns=[
        TableColumn("partition", "string"),
        TableColumn("level", "string", description="raw, master, reduced or stack"),
        TableColumn("name", "string"),
        TableColumn("status", "string", description="archived, already_archived, invalid or failed"),
        TableColumn("version", "int"),
        TableColumn("object_key", "string"),
        TableColumn("reason", "string", description="why it was refused or failed"),
    ]
)


def _row(file: ArchivedFile) -> TableRecord:
    """One row of the files table."""
    outcome = file.outcome
    return TableRecord(
        {
            "partition": file.partition,
            "level": outcome.level,
            "name": outcome.name,
            "status": outcome.status,
            "version": outcome.version,
            "object_key": outcome.object_key,
            "reason": outcome.reason,
        }
    )


def _deliver(context: AssetExecutionContext, catalog, archive: ArchiveStoreResource) -> Delivery:
    """Publish the outbox's pending messages; a broker that is down leaves them for the next run."""
    delivery = deliver_pending(catalog, archive.broker_url, archive.exchange)
    if delivery.error:
        context.log.warning(
            "%d archive messages wait for the broker (%s); the next run delivers them",
            delivery.pending,
            delivery.error,
        )
    return delivery


@asset(
    partitions_def=night_instrument_partitions,
    backfill_policy=backfill_policy,
    owners=OWNERS,
    deps=[AssetKey(name) for name in NIGHT_ASSETS if name != "archive_records"],
    group_name="archive",
    kinds={"fits"},
    tags={"reduction_assets/family": "archive"},
    check_specs=[
        AssetCheckSpec(
            "all_files_valid",
            asset="archive_records",
            description="no file of the partition was refused (missing or deny-listed keywords, a file "
            "changed after it was catalogued); the refused are listed with their reasons",
        )
    ],
)
@retried_when_transient
def archive_records(
    context: AssetExecutionContext,
    config: ArchiveConfig,
    home: ReductionHomeResource,
    archive: ArchiveStoreResource,
) -> MaterializeResult:
    """Archive records of a night and instrument: each raw frame, master, reduced frame and stack
    validated, checksummed (MD5), uploaded to the archive store and recorded with its fields and a
    version; content already archived is not archived again."""
    catalog = home.catalog()
    stores = {"raw": home.raw_store(), "products": home.product_store()}
    archive_store = archive.store()
    settings = ArchiveSettings(config.embargo_days, dict(config.embargo_by_proposal))
    notify = bool(archive.broker_url)
    # what an earlier run could not deliver goes first
    earlier = _deliver(context, catalog, archive) if notify else None
    tally = archive_nights(
        [ArchiveNight(str(key), *split_key(key)) for key in context.partition_keys],
        registry=home.registry(),
        stores=stores,
        archive=archive_store,
        catalog=catalog,
        settings=settings,
        notify=notify,
        log=context.log,
    )
    delivery = _deliver(context, catalog, archive) if notify else None
    metadata = _metadata(archive, tally, earlier, delivery)
    failed = tally.with_status(FAILED)
    if failed:
        raise Failure(
            description=f"{len(failed)} files could not be uploaded (the others are archived): "
            + "; ".join(f"{o.name}: {o.reason}" for o in failed[:5]),
            metadata=metadata,
        )
    return MaterializeResult(metadata=metadata, check_results=[_validity_check(tally)])


def _metadata(
    archive: ArchiveStoreResource, tally: ArchiveTally, earlier: Delivery | None, delivery: Delivery | None
) -> dict:
    """The materialization's metadata: files per status, the store, messages sent, and every file."""
    return {
        **{status: MetadataValue.int(count) for status, count in tally.counts().items()},
        "store": MetadataValue.text(archive.kind),
        **(
            {
                "messages_delivered": MetadataValue.int(earlier.delivered + delivery.delivered),
                "messages_pending": MetadataValue.int(delivery.pending),
            }
            if earlier and delivery
            else {}
        ),
        "files": MetadataValue.table([_row(f) for f in tally.files], schema=FILES_SCHEMA),
    }


def _validity_check(tally: ArchiveTally) -> AssetCheckResult:
    """The all_files_valid check: the files refused, with their reasons."""
    invalid = [f"{o.name}: {o.reason}" for o in tally.with_status(INVALID)]
    return AssetCheckResult(
        check_name="all_files_valid",
        asset_key=AssetKey("archive_records"),
        passed=not invalid,
        severity=AssetCheckSeverity.WARN,
        description="; ".join(invalid[:10]) if invalid else f"{len(tally.files)} files valid",
        metadata={"refused": MetadataValue.int(len(invalid))},
    )
