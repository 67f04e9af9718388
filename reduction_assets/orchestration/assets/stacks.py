"""Stacks: one co-add per target, filter and binning of a night and instrument."""

from collections import Counter
from dataclasses import astuple

from dagster import (
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

from reduction_assets.catalog.stacks import FAILED, NOT_STACKED, STACKED
from reduction_assets.orchestration.assets.common import (
    OWNERS,
    STACKING_POOL,
    check_result,
    retried_when_transient,
)
from reduction_assets.orchestration.partitions import backfill_policy, night_instrument_partitions, split_key
from reduction_assets.orchestration.resources import ReductionHomeResource
from reduction_assets.reduction.stacking import StackSettings
from reduction_assets.support.scratch import remove_leftover_scratch, step_scratch
from reduction_assets.tasks.stacks import (
    UP_TO_DATE,
    PartitionStacked,
    StackRequest,
    stack_checks,
    stack_partition,
)


class StacksConfig(Config):
    full_refresh: bool = Field(default=False, description="make every stack again")
    kernel: str = Field(default="lanczos3", description="resampling kernel: lanczos3 or bilinear")
    max_area_factor: float = Field(
        default=4.0, description="refuse a group whose footprints cover more than this many frames"
    )
    wcs_tolerance_arcsec: float = Field(
        default=1.0, description="leave out a member whose WCS is further than this from the group's"
    )
    detection_threshold: float = Field(default=5.0, description="source detection on the stack, x ERR")
    frame_workers: int = Field(
        default=1,
        ge=1,
        description="worker processes resampling a group's members side by side, at most as many as "
        "the cores, the members and the memory budget allow; 1: one member at a time in the step's "
        "process, the resampling on numba threads over every core (faster than workers on 2 cores)",
    )
    memory_budget_mb: int = Field(
        default=4096, ge=1, description="peak memory of the members resampled at once by workers, MiB"
    )

    def request(self) -> StackRequest:
        return StackRequest(
            self.settings(),
            full_refresh=self.full_refresh,
            detection_threshold=self.detection_threshold,
            frame_workers=self.frame_workers,
            memory_budget_mb=self.memory_budget_mb,
        )

    def settings(self) -> StackSettings:
        if self.kernel not in ("lanczos3", "bilinear"):
            raise ValueError(f"kernel must be lanczos3 or bilinear; got {self.kernel!r}")
        return StackSettings(
            kernel=self.kernel,
            max_area_factor=self.max_area_factor,
            wcs_tolerance_arcsec=self.wcs_tolerance_arcsec,
        )


GROUPS_SCHEMA = TableSchema(
    columns=[
        TableColumn("partition", "string"),
        TableColumn("group", "string", description="target | filter | binning"),
        TableColumn("status", "string"),
        TableColumn("members", "int", description="reduced frames in the group"),
        TableColumn("used", "int", description="members that went into the stack"),
        TableColumn("sources", "int"),
        TableColumn("path", "string"),
        TableColumn("reason", "string", description="why the group, or some members, were not stacked"),
    ]
)


@asset(
    partitions_def=night_instrument_partitions,
    backfill_policy=backfill_policy,
    owners=OWNERS,
    deps=[AssetKey("reduced_frames")],
    group_name="stacks",
    kinds={"fits"},
    pool=STACKING_POOL,
    tags={"reduction_assets/family": "stacks"},
    check_specs=[
        AssetCheckSpec("stacks_finite", asset="stacks", description="no NaN or inf in any stack's SCI"),
        AssetCheckSpec(
            "all_groups_stacked",
            asset="stacks",
            description="no group failed for a reason outside its data (a member missing from the store)",
        ),
    ],
)
@retried_when_transient
def stacks(
    context: AssetExecutionContext, config: StacksConfig, home: ReductionHomeResource
) -> MaterializeResult:
    """Co-adds of a night's reduced frames, one per target, filter and binning (SCI e- at the
    reference exposure, ERR, DQ, EXPMAP, NIMAGES, CAT, MEMBERS), with the members in the catalog."""
    stores, request = home.stores(), config.request()
    root = home.layout().ensure().scratch
    for leftover in remove_leftover_scratch(root):  # of steps that were interrupted
        context.log.info("removed scratch %s (%d bytes) left by an interrupted step", *astuple(leftover))
    done: list[PartitionStacked] = []
    with step_scratch(root, context.run.run_id, "stacks") as scratch:
        for key in context.partition_keys:
            instrument, night = split_key(key)
            done.append(
                stack_partition(
                    home.registry()[instrument], night, str(key), request, stores, scratch, context.log
                )
            )
    return _report(done)


def _report(done: list[PartitionStacked]) -> MaterializeResult:
    """The run's metadata and checks; a group that failed (a member missing from the store) fails
    the run after every other group is stacked and recorded, so that the missing file is seen."""
    outcomes = [o for partition in done for o in partition.outcomes]
    rows = [row for partition in done for row in partition.rows]
    counts = Counter(o.status for o in outcomes)
    metadata = {
        "stacked": MetadataValue.int(counts[STACKED]),
        "up_to_date": MetadataValue.int(counts[UP_TO_DATE]),
        "not_stacked": MetadataValue.int(counts[NOT_STACKED]),
        "failed": MetadataValue.int(counts[FAILED]),
        "groups": MetadataValue.table([TableRecord(o.row()) for o in outcomes], schema=GROUPS_SCHEMA),
        "frame_workers": MetadataValue.int(max((o.workers for o in outcomes), default=1)),
    }
    failed = [o for o in outcomes if o.status == FAILED]
    if failed:
        raise Failure(description="; ".join(f"{o.group.key}: {o.reason}" for o in failed), metadata=metadata)
    return MaterializeResult(
        metadata=metadata, check_results=[check_result(v, "stacks") for v in stack_checks(rows)]
    )
