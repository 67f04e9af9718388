"""Runs as the daemon and the API launch them, on a persistent Dagster instance: what the UI shows
for a partition whose master failed its blocking check, and runs launched with nothing but the
partition tag (GraphQL ``launchRun``, ``DagsterGraphQLClient.submit_job_execution``) and re-executed."""

import datetime as dt

from dagster import AssetCheckKey, AssetKey, instance_for_test
from dagster._core.storage.asset_check_execution_record import AssetCheckExecutionRecordStatus
from dagster._core.storage.partition_status_cache import AssetPartitionStatus

from reduction_assets.catalog import Calibration, Catalog, Product
from reduction_assets.orchestration.definitions import build_definitions
from reduction_assets.orchestration.partitions import night_instrument_partitions, partition_key
from reduction_assets.orchestration.resources import ReductionHomeResource
from reduction_assets_tests.assets.test_calibrations import noisy_biases
from reduction_assets_tests.conftest import NIGHT, deliver, frames_of, with_header

KEY = str(partition_key("lcosim", NIGHT))


def rows(home, table):
    catalog = Catalog(home.catalog_url())
    try:
        with catalog.session() as session:
            return session.query(table).all()
    finally:
        catalog.dispose()


def execute(home, instance, job_name, key=KEY, tags_only=False, **kwargs):
    job = build_definitions(ReductionHomeResource(home=str(home.root), settle_seconds=0)).resolve_job_def(
        job_name
    )
    where = {"tags": {"dagster/partition": key}} if tags_only else {"partition_key": key}
    return job.execute_in_process(instance=instance, raise_on_error=False, **where, **kwargs)


def test_a_master_failing_its_check_shows_on_its_partition_and_is_never_used(home, lcosim_night, tmp_path):
    names = deliver(noisy_biases(lcosim_night, tmp_path) + frames_of(lcosim_night, "dark"), home.landing)
    with instance_for_test() as instance:
        run = execute(home, instance, "process_night", run_config={
            "ops": {"raw_frames": {"config": {"files": names}}}})  # fmt: skip
        assert not run.success
        # The failed check, and the partition's own materialization, say so (per-partition check
        # results are a preview feature in Dagster 1.13 and lose their partition in backfill runs).
        check = AssetCheckKey(AssetKey("master_bias"), "read_noise_consistent")
        (record,) = instance.event_log_storage.get_asset_check_execution_history(check, limit=5)
        assert record.status == AssetCheckExecutionRecordStatus.FAILED
        assert instance.get_run_by_id(record.run_id).tags["dagster/partition"] == KEY
        latest = instance.fetch_materializations(AssetKey("master_bias"), limit=1).records[0]
        assert latest.partition_key == KEY
        metadata = latest.asset_materialization.metadata
        assert (
            metadata["failed_check"].value == 1 and "failed read_noise_consistent" in metadata["status"].value
        )
        # What would have used it is a failed partition, not a missing or green one.
        for asset in ("master_dark", "reduced_frames"):
            status = instance.get_status_by_partition(AssetKey(asset), [KEY], night_instrument_partitions)
            assert status == {KEY: AssetPartitionStatus.FAILED}, asset
        (bias,) = rows(home, Calibration)
        assert bias.bad

        # The next night's science frames, with no bias of their own, are not reduced with it.
        next_night = NIGHT + dt.timedelta(days=1)
        science = [
            with_header(p, tmp_path / "n2" / p.name, DAY_OBS="20261121")
            for p in frames_of(lcosim_night, "science")[:2]
        ]
        later = deliver(science, home.landing, [f"n2_{p.name}" for p in science])
        execute(home, instance, "process_night", key=str(partition_key("lcosim", next_night)),
                run_config={"ops": {"raw_frames": {"config": {"files": later}}}})  # fmt: skip
    products = rows(home, Product)
    assert len(products) == 2 and all(p.bias_id is None and p.status == "not_reducible" for p in products)


def test_a_run_launched_with_only_the_partition_tag_runs_its_partition(home, lcosim_night, tmp_path):
    deliver(frames_of(lcosim_night, "bias"), home.landing)
    with instance_for_test() as instance:
        run = execute(home, instance, "process_night", tags_only=True)
        assert run.success, run.get_step_failure_events()
        assert instance.get_run_by_id(run.run_id).tags["dagster/partition"] == KEY
        assert len(rows(home, Calibration)) == 1  # ingested and stacked: the partition was understood
