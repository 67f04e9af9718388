"""The one partitioning of the main assets: night x instrument.

The instrument dimension is generated from the instrument registry when the code location loads, so
adding a camera is a registry edit plus a reload.
"""

from __future__ import annotations

import datetime as dt
import warnings

from dagster import (
    BackfillPolicy,
    BetaWarning,
    DailyPartitionsDefinition,
    DimensionPartitionMapping,
    IdentityPartitionMapping,
    MultiPartitionKey,
    MultiPartitionMapping,
    MultiPartitionsDefinition,
    StaticPartitionsDefinition,
    TimeWindowPartitionMapping,
)

from reduction_assets.instruments import load_registry
from reduction_assets.support.keys import NightPartition
from reduction_assets.tasks.common import CALIBRATION_WINDOW_NIGHTS

# The oldest data this installation will ever ingest (the real ST-7 frames are from 2019-10-28).
FIRST_NIGHT = "2019-01-01"

# end_offset=1: tonight's partition exists while tonight's frames arrive.
night_partitions = DailyPartitionsDefinition(start_date=FIRST_NIGHT, end_offset=1)
instrument_partitions = StaticPartitionsDefinition(load_registry().names)
night_instrument_partitions = MultiPartitionsDefinition(
    {"night": night_partitions, "instrument": instrument_partitions}
)


# Backfills run up to a month of partitions per run: a backfill of up to 30 nights of one instrument is
# one run of every asset (the window mappings let assets share a run only when a run can hold all
# the partitions they target); longer ones are cut in runs of this size, asset by asset.
PARTITIONS_PER_BACKFILL_RUN = 31
backfill_policy = BackfillPolicy.multi_run(max_partitions_per_run=PARTITIONS_PER_BACKFILL_RUN)


def calibration_window_mapping(nights: int = CALIBRATION_WINDOW_NIGHTS) -> MultiPartitionMapping:
    """night x instrument partition N depends on nights N-k..N of the same instrument."""
    # Both are beta in Dagster 1.13 and checked for this use in DAGSTER_NOTES.md; the warning at
    # every code-location load tells operators nothing they can act on.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", BetaWarning)
        return MultiPartitionMapping(
            {
                "night": DimensionPartitionMapping(
                    "night",
                    TimeWindowPartitionMapping(
                        start_offset=-nights, end_offset=0, allow_nonexistent_upstream_partitions=True
                    ),
                ),
                "instrument": DimensionPartitionMapping("instrument", IdentityPartitionMapping()),
            }
        )


def partition_key(instrument: str, night: dt.date | str) -> MultiPartitionKey:
    night_text = night.isoformat() if isinstance(night, dt.date) else night
    return MultiPartitionKey({"night": night_text, "instrument": instrument})


def night_in_range(night: dt.date) -> bool:
    """Whether a night has a partition now (from FIRST_NIGHT to tonight's)."""
    return night_partitions.has_partition_key(night.isoformat())


def night_not_yet_open(night: dt.date) -> bool:
    """A night just past the last partition: sites far east of Greenwich start their night before
    UTC midnight brings its partition. Such frames wait; they are not bad."""
    today = dt.datetime.now(dt.UTC).date()
    return today < night <= today + dt.timedelta(days=1)


def split_key(key: MultiPartitionKey | str) -> tuple[str, dt.date]:
    """(instrument, night) of a night x instrument partition key, whichever way the run was launched
    (a plain ``"instrument|night"`` string comes from API launches that only set the partition tag)."""
    partition = partition_of(key)
    return partition.instrument, partition.night


def partition_of(key: MultiPartitionKey | str) -> NightPartition:
    """The partition a night x instrument key names."""
    if isinstance(key, MultiPartitionKey):
        dims = key.keys_by_dimension
        return NightPartition(dims["instrument"], dt.date.fromisoformat(dims["night"]))
    return NightPartition.parse(str(key))
