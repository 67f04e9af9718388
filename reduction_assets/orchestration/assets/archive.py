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

from reduction_assets.catalog.archive import archive_candidates
from reduction_assets.orchestration.assets.common import OWNERS, retried_when_transient
from reduction_assets.orchestration.jobs import NIGHT_ASSETS
from reduction_assets.orchestration.partitions import backfill_policy, night_instrument_partitions, split_key
from reduction_assets.orchestration.resources import ArchiveStoreResource, ReductionHomeResource
from reduction_assets.storage import StoreError
from reduction_assets.support.progress import progress
from reduction_assets.tasks.archive import (
    ALREADY_ARCHIVED,
    ARCHIVED,
    FAILED,
    INVALID,
    ArchiveSettings,
    Outcome,
    archive_one,
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


def _row(partition: str, outcome: Outcome) -> TableRecord:
    return TableRecord(
        {
            "partition": partition,
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
    outcomes: list[tuple[str, Outcome]] = []
    for key in context.partition_keys:
        instrument_name, night = split_key(key)
        instrument = home.registry()[instrument_name]
        with catalog.session() as session:
            candidates = archive_candidates(session, instrument_name, night)
        for candidate in progress(candidates, f"archiving {instrument_name} {night}", "file"):
            try:
                outcome = archive_one(
                    candidate,
                    source=stores[candidate.store],
                    archive=archive_store,
                    catalog=catalog,
                    instrument=instrument,
                    settings=settings,
                    notify=notify,
                )
            except StoreError as err:  # the archive store failed (after its retries): this file only
                outcome = Outcome(candidate.name, candidate.level, FAILED, reason=str(err))
            if outcome.status in (INVALID, FAILED):
                context.log.warning("%s not archived: %s", candidate.name, outcome.reason)
            outcomes.append((str(key), outcome))
    counts = {
        s: sum(1 for _, o in outcomes if o.status == s) for s in (ARCHIVED, ALREADY_ARCHIVED, INVALID, FAILED)
    }
    delivery = _deliver(context, catalog, archive) if notify else None
    metadata = {
        **{status: MetadataValue.int(count) for status, count in counts.items()},
        "store": MetadataValue.text(archive.kind),
        **(
            {
                "messages_delivered": MetadataValue.int(earlier.delivered + delivery.delivered),
                "messages_pending": MetadataValue.int(delivery.pending),
            }
            if earlier and delivery
            else {}
        ),
        "files": MetadataValue.table([_row(p, o) for p, o in outcomes], schema=FILES_SCHEMA),
    }
    failed = [o for _, o in outcomes if o.status == FAILED]
    if failed:
        raise Failure(
            description=f"{len(failed)} files could not be uploaded (the others are archived): "
            + "; ".join(f"{o.name}: {o.reason}" for o in failed[:5]),
            metadata=metadata,
        )
    invalid = [f"{o.name}: {o.reason}" for _, o in outcomes if o.status == INVALID]
    check = AssetCheckResult(
        check_name="all_files_valid",
        asset_key=AssetKey("archive_records"),
        passed=not invalid,
        severity=AssetCheckSeverity.WARN,
        description="; ".join(invalid[:10]) if invalid else f"{len(outcomes)} files valid",
        metadata={"refused": MetadataValue.int(len(invalid))},
    )
    return MaterializeResult(metadata=metadata, check_results=[check])
