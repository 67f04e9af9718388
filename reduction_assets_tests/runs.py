"""Materializing a partition in tests the way the landing sensor's runs do, and a night built once."""

import shutil
from dataclasses import dataclass

from dagster import AssetKey, materialize

from reduction_assets.assets.calibrations import master_bias, master_dark, master_flat
from reduction_assets.assets.raw import landing_rejects, raw_frames
from reduction_assets.assets.science import reduced_frames
from reduction_assets.assets.stacks import stacks
from reduction_assets.home import Home
from reduction_assets.partitions import partition_key
from reduction_assets.resources import ReductionHomeResource
from reduction_assets_tests.conftest import NIGHT

ALL = [raw_frames, landing_rejects, master_bias, master_dark, master_flat, reduced_frames, stacks]
# What the landing sensor requests for a partition.
PARTITION = [
    AssetKey(n)
    for n in ("raw_frames", "master_bias", "master_dark", "master_flat", "reduced_frames", "stacks")
]


def run_partition(
    home, names=None, night=NIGHT, instrument="lcosim", master_config=None, raise_on_error=True
):
    config = {"ops": {"raw_frames": {"config": {"files": names} if names is not None else {}}}}
    for name in ("master_bias", "master_dark", "master_flat"):
        config["ops"][name] = {"config": master_config or {}}
    return materialize(
        ALL,
        selection=PARTITION,
        partition_key=partition_key(instrument, night),
        resources={"home": ReductionHomeResource(home=str(home.root), settle_seconds=0)},
        run_config=config,
        raise_on_error=raise_on_error,
    )


def metadata(result, asset):
    return result.asset_materializations_for_node(asset)[0].metadata


@dataclass(frozen=True)
class BuiltNight:
    """A home where a night went through the whole partition run, and that run's result."""

    home: Home
    result: object

    def copy_into(self, home: Home):
        """Copy the built home into ``home`` (each test mutates its own copy); returns the result."""
        shutil.copytree(self.home.root, home.root, symlinks=True, dirs_exist_ok=True)
        return self.result
