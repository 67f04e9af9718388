"""A partition travels as a NightPartition; its text is Dagster's key of the multi-partition."""

import datetime as dt

import pytest

from reduction_assets.orchestration.partitions import partition_key, partition_of, split_key
from reduction_assets.support.keys import NightPartition

NIGHT = dt.date(2026, 11, 20)


def test_the_key_is_the_text_dagster_gives_the_multi_partition():
    assert NightPartition("lcosim", NIGHT).key == str(partition_key("lcosim", NIGHT)) == "lcosim|2026-11-20"


def test_a_key_reads_back_from_its_text_and_from_dagsters_key():
    assert NightPartition.parse("lcosim|2026-11-20") == NightPartition("lcosim", NIGHT)
    assert partition_of(partition_key("noirsim", NIGHT)) == NightPartition("noirsim", NIGHT)
    assert split_key("st7|2026-11-20") == ("st7", NIGHT)


@pytest.mark.parametrize("text", ["lcosim", "lcosim|20261120", "|2026-11-20", "2026-11-20|lcosim", ""])
def test_anything_else_is_refused_with_what_a_key_looks_like(text):
    with pytest.raises(ValueError, match="not a partition key instrument"):
        NightPartition.parse(text)
