"""Reduced science frames: one calibrated, source-catalogued FITS per raw science frame."""

from collections import Counter

from dagster import (
    AssetCheckSpec,
    AssetDep,
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

from reduction_assets.catalog.calibrations import BEFORE
from reduction_assets.catalog.products import NOT_REDUCIBLE, REDUCED
from reduction_assets.instruments import MASTER_TYPES
from reduction_assets.orchestration.assets.common import OWNERS, check_result, retried_when_transient
from reduction_assets.orchestration.partitions import (
    backfill_policy,
    calibration_window_mapping,
    night_instrument_partitions,
    split_key,
)
from reduction_assets.orchestration.resources import ReductionHomeResource
from reduction_assets.tasks import schedule
from reduction_assets.tasks.common import VerifiedMasters
from reduction_assets.tasks.science import (
    UP_TO_DATE,
    PartitionReduced,
    ReductionSettings,
    frame_checks,
    reduce_partition,
)


class ReducedConfig(Config):
    full_refresh: bool = Field(default=False, description="reduce every frame again")
    detection_threshold: float = Field(default=5.0, description="source detection, x ERR")
    calibration_direction: str = Field(
        default=BEFORE,
        description="'before': masters of the frame's night or the nights before it (nightly work); "
        "'either': the nearest in time on either side, as BANZAI does (reprocessing an archive)",
    )
    frame_workers: int = Field(
        default=0,
        ge=0,
        description="worker processes reducing frames side by side; 0: as many as the cores and the "
        "memory budget allow (1: one frame at a time, in the step's process)",
    )
    memory_budget_mb: int = Field(
        default=4096, ge=1, description="peak memory of the frames reduced at once, MiB"
    )

    def settings(self) -> ReductionSettings:
        return ReductionSettings(
            full_refresh=self.full_refresh,
            detection_threshold=self.detection_threshold,
            calibration_direction=self.calibration_direction,
            frame_workers=self.frame_workers,
            memory_budget_mb=self.memory_budget_mb,
        )


FRAMES_SCHEMA = TableSchema(
    columns=[
        TableColumn("partition", "string"),
        TableColumn("frame", "string"),
        TableColumn("status", "string"),
        TableColumn("sources", "int"),
        TableColumn("ages", "string", description="nights between the frame and each master"),
        TableColumn("path", "string"),
        TableColumn("reason", "string", description="why it could not be reduced"),
    ]
)


def _assets_of_run(context: AssetExecutionContext):
    """The assets this run materializes (a backfill's selection, or the job's)."""
    return context.run.asset_selection or context.job_def.asset_layer.selected_asset_keys


@asset(
    partitions_def=night_instrument_partitions,
    backfill_policy=backfill_policy,
    owners=OWNERS,
    deps=[
        AssetKey("raw_frames"),
        *[
            AssetDep(f"master_{kind}", partition_mapping=calibration_window_mapping())
            for kind in ("bias", "dark", "flat")
        ],
    ],
    group_name="science",
    kinds={"fits"},
    tags={"reduction_assets/family": "science"},
    check_specs=[
        AssetCheckSpec(
            "sci_finite_where_clean",
            asset="reduced_frames",
            description="no NaN or inf in SCI where DQ is 0",
        ),
        AssetCheckSpec(
            "err_positive",
            asset="reduced_frames",
            description="ERR > 0 everywhere",
        ),
        AssetCheckSpec(
            "all_frames_reduced",
            asset="reduced_frames",
            description="every science frame of the partition reduced (the failing frames and reasons "
            "are listed)",
        ),
        AssetCheckSpec(
            "sky_and_sources_plausible",
            asset="reduced_frames",
            description="sky not negative beyond noise; at least one source, not absurdly many",
        ),
    ],
)
@retried_when_transient
def reduced_frames(
    context: AssetExecutionContext, config: ReducedConfig, home: ReductionHomeResource
) -> MaterializeResult:
    """Reduced science frames of one night and instrument (SCI e-, ERR, DQ, CAT), with provenance."""
    started = schedule.utc_now().replace(tzinfo=None)
    masters_ran = bool(set(_assets_of_run(context)) & {AssetKey(f"master_{kind}") for kind in MASTER_TYPES})
    stores = home.stores()
    masters = VerifiedMasters(stores.catalog, stores.products)
    done: list[tuple[str, PartitionReduced]] = []
    for key in context.partition_keys:
        instrument, night = split_key(key)
        reduced = reduce_partition(
            home.registry()[instrument], night, config.settings(), stores, masters, context.log,
            started=started, masters_ran=masters_ran,
        )  # fmt: skip
        done.append((str(key), reduced))
    return _report(done)


def _report(done: list[tuple[str, PartitionReduced]]) -> MaterializeResult:
    """The run's metadata: counts, the frames table, and the checks over every partition's rows."""
    outcomes = [(partition, o) for partition, reduced in done for o in reduced.outcomes]
    rows = [row for _, reduced in done for row in reduced.rows]
    counts = Counter(o.status for _, o in outcomes)
    metadata = {
        "reduced": MetadataValue.int(counts[REDUCED]),
        "up_to_date": MetadataValue.int(counts[UP_TO_DATE]),
        "not_reducible": MetadataValue.int(counts[NOT_REDUCIBLE]),
        "fallback_calibrations": MetadataValue.int(sum(1 for r in rows if r.fallback)),
        "frame_workers": MetadataValue.int(max([r.workers for _, r in done], default=1)),
        "frames": MetadataValue.table(
            [TableRecord({"partition": partition, **o.row()}) for partition, o in outcomes],
            schema=FRAMES_SCHEMA,
        ),
    }
    bugs = [f"{partition} {o.frame}: {o.reason}" for partition, o in outcomes if o.unexpected]
    if bugs:
        # Every other frame is reduced and recorded; the run fails so that the error is seen.
        raise Failure(
            description=f"{len(bugs)} frames failed with an unexpected error: " + "; ".join(bugs[:10]),
            metadata=metadata,
        )
    checks = [check_result(verdict, "reduced_frames") for verdict in frame_checks(rows)]
    return MaterializeResult(metadata=metadata, check_results=checks)
