"""Master calibration assets: master_bias, master_dark and master_flat per night and instrument."""

from collections import Counter

from dagster import (
    AssetCheckResult,
    AssetCheckSeverity,
    AssetCheckSpec,
    AssetDep,
    AssetExecutionContext,
    AssetKey,
    Config,
    MaterializeResult,
    MetadataValue,
    TableColumn,
    TableRecord,
    TableSchema,
    asset,
)
from pydantic import Field

from reduction_assets.orchestration.assets.common import OWNERS, STACKING_POOL, retried_when_transient
from reduction_assets.orchestration.partitions import (
    backfill_policy,
    calibration_window_mapping,
    night_instrument_partitions,
    split_key,
)
from reduction_assets.orchestration.resources import ReductionHomeResource
from reduction_assets.reduction.masters import MasterSettings
from reduction_assets.tasks.masters import (
    MADE,
    NOT_MADE,
    UP_TO_DATE,
    WAITING,
    Judgement,
    MasterOutcome,
    MasterRequest,
    Verdict,
    dark_verdict,
    flat_verdict,
    judge_masters,
    partition_masters,
    read_noise_verdict,
)


class MasterConfig(Config):
    min_frames: int = Field(default=3, description="fewer usable frames than this: no master")
    method: str = Field(default="sigma_clip", description="sigma_clip, median or mean")
    sigma: float = Field(default=3.0, description="clipping threshold, both sides")
    scale: str = Field(
        default="model",
        description="clipping scale: model (the known read and Poisson noise), mad or std (scatter of the "
        "frames)",
    )
    max_iters: int | None = Field(default=None, description="clipping iterations; empty: converge")
    memory_budget_mb: int = Field(default=512, description="peak memory of the stacking, MiB")
    outlier_sigma: float = Field(default=5.0, description="reject frames whose level is this far out")
    full_refresh: bool = Field(default=False, description="rebuild masters even if up to date")

    def request(self) -> MasterRequest:
        return MasterRequest(self.settings(), full_refresh=self.full_refresh)

    def settings(self) -> MasterSettings:
        return MasterSettings(
            method=self.method,
            sigma=self.sigma,
            scale=self.scale,
            max_iters=self.max_iters,
            min_frames=self.min_frames,
            memory_budget=self.memory_budget_mb * 2**20,
            outlier_sigma=self.outlier_sigma,
        )


# --- results and checks ---------------------------------------------------------------------------

# The blocking checks' bounds come from the instrument registry (`quality:`, Instrument.quality): a
# master outside them would poison everything reduced with it.


@retried_when_transient
def _masters_asset(
    context: AssetExecutionContext,
    kind: str,
    check_name: str,
    verdict: Verdict,
    config: MasterConfig,
    home: ReductionHomeResource,
) -> MaterializeResult:
    """The body shared by the three master assets, for the run's partition or partitions: build the
    masters, judge each with the blocking check's ``verdict``, and report."""
    stores, request = home.stores(), config.request()
    outcomes: list[tuple[str, MasterOutcome]] = []
    judgement = Judgement()
    for key in context.partition_keys:
        instrument_name, night = split_key(key)
        instrument = home.registry()[instrument_name]
        made = partition_masters(kind, instrument, night, request, stores, context.log)
        judge_masters(kind, check_name, verdict, instrument, made, stores.catalog, judgement)
        outcomes += [(str(key), outcome) for outcome in made]
    return _report(kind, check_name, outcomes, judgement)


def _report(
    kind: str, check_name: str, outcomes: list[tuple[str, MasterOutcome]], judgement: Judgement
) -> MaterializeResult:
    """The run's metadata (counts, status, the summary table) and its blocking check's result."""
    counts = Counter(o.status for _, o in outcomes)
    failures = judgement.failures
    check = AssetCheckResult(
        check_name=check_name,
        asset_key=AssetKey(f"master_{kind}"),
        passed=not failures,
        severity=AssetCheckSeverity.ERROR if judgement.blocking or not failures else AssetCheckSeverity.WARN,
        description="; ".join(failures) if failures else f"{len(judgement.detail)} master(s) checked",
        metadata={"detail": MetadataValue.json(judgement.detail)},
    )
    status = "; ".join(
        f"{partition} {o.group}: {o.status}" + (f" ({o.reason})" if o.reason else "")
        for partition, o in outcomes
    )
    return MaterializeResult(
        metadata={
            "masters": MetadataValue.int(counts[MADE] + counts[UP_TO_DATE]),
            "not_made": MetadataValue.int(counts[NOT_MADE]),
            "waiting": MetadataValue.int(counts[WAITING]),
            "failed_check": MetadataValue.int(len(failures)),
            "status": MetadataValue.text(status),
            "summary": MetadataValue.table(
                [TableRecord({"partition": partition, **outcome.row()}) for partition, outcome in outcomes],
                schema=SUMMARY_SCHEMA,
            ),
        },
        check_results=[check],
    )


SUMMARY_SCHEMA = TableSchema(
    columns=[
        TableColumn("partition", "string"),
        TableColumn("group", "string"),
        TableColumn("status", "string"),
        TableColumn("id", "int"),
        TableColumn("inputs", "int"),
        TableColumn("rejected", "int"),
        TableColumn("path", "string"),
        TableColumn("reason", "string", description="why it was not made, or failed its check"),
        TableColumn(
            "notes", "string", description="which masters it was made with, when not its own night's"
        ),
    ]
)


# Shared by the three masters: stacking is memory-heavy, so its steps share the STACKING_POOL.
_MASTER_ASSET = dict(
    partitions_def=night_instrument_partitions,
    backfill_policy=backfill_policy,
    owners=OWNERS,
    group_name="calibrations",
    kinds={"fits"},
    tags={"reduction_assets/family": "calibrations"},
    pool=STACKING_POOL,
)


@asset(
    **_MASTER_ASSET,
    deps=[AssetKey("raw_frames")],
    check_specs=[
        AssetCheckSpec(
            "read_noise_consistent",
            asset="master_bias",
            blocking=True,
            description="bias read noise within the registry's quality.read_noise fraction of the "
            "instrument's",
        )
    ],
)
def master_bias(
    context: AssetExecutionContext, config: MasterConfig, home: ReductionHomeResource
) -> MaterializeResult:
    """Master bias frames (e-) of one night and instrument, one per binning."""
    return _masters_asset(context, "bias", "read_noise_consistent", read_noise_verdict, config, home)


@asset(
    **_MASTER_ASSET,
    deps=[AssetKey("raw_frames"), AssetDep("master_bias", partition_mapping=calibration_window_mapping())],
    check_specs=[
        AssetCheckSpec(
            "dark_current_plausible",
            asset="master_dark",
            blocking=True,
            description="median dark current not negative beyond noise and below the registry's "
            "quality.dark_current (e-/s)",
        )
    ],
)
def master_dark(
    context: AssetExecutionContext, config: MasterConfig, home: ReductionHomeResource
) -> MaterializeResult:
    """Master darks of one night and instrument: e-/s per binning, or e- per exposure time for
    cameras whose darks include the bias (with, from two or more exposure times, a pedestal fit: a
    synthetic bias and a rate dark)."""
    return _masters_asset(context, "dark", "dark_current_plausible", dark_verdict, config, home)


@asset(
    **_MASTER_ASSET,
    deps=[
        AssetKey("raw_frames"),
        AssetDep("master_bias", partition_mapping=calibration_window_mapping()),
        AssetDep("master_dark", partition_mapping=calibration_window_mapping()),
    ],
    check_specs=[
        AssetCheckSpec(
            "flat_normalised",
            asset="master_flat",
            blocking=True,
            description="illuminated level 1 within the registry's quality.flat_level and at most "
            "quality.flat_bad_pixels bad pixels",
        )
    ],
)
def master_flat(
    context: AssetExecutionContext, config: MasterConfig, home: ReductionHomeResource
) -> MaterializeResult:
    """Master flats (normalised to 1) of one night and instrument, per binning and filter."""
    return _masters_asset(context, "flat", "flat_normalised", flat_verdict, config, home)
