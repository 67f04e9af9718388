"""The one partitioning of the main assets: night x instrument.

The instrument dimension is generated from the instrument registry when the code location loads, so
adding a camera is a registry edit plus a reload.
"""

from __future__ import annotations

import datetime as dt

from dagster import (
    DailyPartitionsDefinition,
    MultiPartitionKey,
    MultiPartitionsDefinition,
    StaticPartitionsDefinition,
)

from reduction_assets.instruments import load_registry

# The oldest data this installation will ever ingest (the real ST-7 frames are from 2019-10-28).
FIRST_NIGHT = "2019-01-01"

# end_offset=1: tonight's partition exists while tonight's frames arrive.
night_partitions = DailyPartitionsDefinition(start_date=FIRST_NIGHT, end_offset=1)
instrument_partitions = StaticPartitionsDefinition(load_registry().names)
night_instrument_partitions = MultiPartitionsDefinition(
    {"night": night_partitions, "instrument": instrument_partitions}
)


def partition_key(instrument: str, night: dt.date | str) -> MultiPartitionKey:
    night_text = night.isoformat() if isinstance(night, dt.date) else night
    return MultiPartitionKey({"night": night_text, "instrument": instrument})


def night_in_range(night: dt.date) -> bool:
    """Whether a night has a partition (not before FIRST_NIGHT, not after tomorrow's date)."""
    first = dt.date.fromisoformat(FIRST_NIGHT)
    last = dt.datetime.now(dt.timezone.utc).date() + dt.timedelta(days=1)
    return first <= night <= last


def split_key(key) -> tuple[str, dt.date]:
    """(instrument, night) of a night x instrument partition key."""
    dims = key.keys_by_dimension
    return dims["instrument"], dt.date.fromisoformat(dims["night"])
