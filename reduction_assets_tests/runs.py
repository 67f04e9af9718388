"""Materializing a partition in tests the way the landing sensor's runs do, and a night built once."""

import shutil
from dataclasses import dataclass

from dagster import AssetKey, materialize

from reduction_assets.orchestration.definitions import ASSETS
from reduction_assets.orchestration.jobs import NIGHT_ASSETS
from reduction_assets.orchestration.partitions import partition_key
from reduction_assets.orchestration.resources import ArchiveStoreResource, ReductionHomeResource
from reduction_assets.support.home import Home
from reduction_assets_tests.conftest import NIGHT

ALL = ASSETS
# What the landing sensor requests for a partition.
PARTITION = [AssetKey(n) for n in NIGHT_ASSETS]


def resources(home) -> dict:
    """The resources of a partition run in ``home``: the home and its local archive."""
    return {
        "home": ReductionHomeResource(home=str(home.root), settle_seconds=0),
        "archive": ArchiveStoreResource(kind="local", home=str(home.root)),
    }


def run_asset(home, asset: str, archive=None, night=NIGHT, instrument="lcosim", **config):
    """One asset alone on a partition (what a re-materialization from the UI does), with ``config``
    as its run config and, when given, another archive resource; failures are returned."""
    return materialize(
        ALL,
        selection=[asset],
        partition_key=partition_key(instrument, night),
        resources={**resources(home), **({"archive": archive} if archive is not None else {})},
        run_config={"ops": {asset: {"config": config}}},
        raise_on_error=False,
    )


def run_partition(
    home,
    names=None,
    night=NIGHT,
    instrument="lcosim",
    master_config=None,
    raise_on_error=True,
    selection=PARTITION,
):
    config = {"ops": {"raw_frames": {"config": {"files": names} if names is not None else {}}}}
    for name in ("master_bias", "master_dark", "master_flat"):
        config["ops"][name] = {"config": master_config or {}}
    return materialize(
        ALL,
        selection=selection,
        partition_key=partition_key(instrument, night),
        resources=resources(home),
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


def processed_home(folder, night) -> Home:
    """A home where ``night`` went through `process` (the landing sensor's logic and its runs, on
    the home's own Dagster instance), for a module's tests to copy."""
    from reduction_assets.orchestration.process import process_landing
    from reduction_assets_tests.conftest import deliver

    home = Home(folder / "home").ensure()
    deliver(night.frames, home.landing)
    outcome = process_landing(home, settle_seconds=0, echo=lambda line: None)
    assert not outcome.failed and len(outcome.runs) == 1
    return home


def copy_of(home: Home, folder) -> Home:
    """A copy of a home (its catalog, stores and Dagster instance) that a test may change."""
    copy = Home(folder / "home")
    shutil.copytree(home.root, copy.root, symlinks=True)
    return copy.ensure()
