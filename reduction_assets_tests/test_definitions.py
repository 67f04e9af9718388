"""The code location loads, validates, and the deployment configs are sound."""

import datetime as dt
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
import yaml
from dagster import AssetKey, DagsterInstance
from dagster._core.scheduler.instigation import InstigatorType, TickStatus
from sqlalchemy import create_engine, text

from reduction_assets.orchestration.definitions import defs
from reduction_assets.orchestration.partitions import night_instrument_partitions
from reduction_assets_tests.catalog_fixtures import POSTGRES_URL, postgres_available
from reduction_assets_tests.conftest import require

ROOT = Path(__file__).resolve().parents[1]
DEFS = defs()


def test_definitions_hold_the_raw_assets_and_a_running_landing_sensor():
    keys = {spec.key for spec in DEFS.resolve_all_asset_specs()}
    assert {
        AssetKey(name)
        for name in (
            "raw_frames",
            "landing_rejects",
            "master_bias",
            "master_dark",
            "master_flat",
            "reduced_frames",
        )
    } <= keys
    assert DEFS.resolve_sensor_def("calibration_sensor").default_status.value == "RUNNING"
    sensor = DEFS.resolve_sensor_def("landing_sensor")
    assert sensor.default_status.value == "RUNNING"


def test_partitions_are_night_by_instrument_from_the_first_real_night():
    keys = night_instrument_partitions.get_partition_keys()
    assert "st7|2019-10-28" in keys and "lcosim|2026-11-20" in keys
    assert not any(key.endswith("|2018-12-31") for key in keys)


def test_dagster_definitions_validate_passes_without_warnings_about_the_instance(tmp_path):
    from reduction_assets.support.home import Home

    home = Home(tmp_path / "home").ensure()
    env = {**os.environ, "REDUCTION_HOME": str(home.root), "DAGSTER_HOME": str(home.dagster)}
    dagster = Path(sys.executable).parent / "dagster"
    result = subprocess.run(
        [str(dagster), "definitions", "validate", "-w", "workspace.yaml"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    # Nothing in the repository's root makes every `dagster` command there warn about the instance.
    assert "dagster.yaml" not in result.stderr and "WARNING" not in result.stderr, result.stderr
    assert "Validation successful for code location reduction_assets" in result.stdout + result.stderr


def test_the_code_location_has_one_name_in_development_and_production():
    names = [
        entry[kind]["location_name"]
        for path in (ROOT / "workspace.yaml", ROOT / "deploy" / "workspace.yaml")
        for entry in yaml.safe_load(path.read_text())["load_from"]
        for kind in entry
    ]
    assert names == ["reduction_assets", "reduction_assets"]


def test_production_instance_config_names_the_psycopg2_scheme():
    config = yaml.safe_load((ROOT / "deploy" / "dagster.yaml").read_text())
    assert config["storage"]["postgres"]["postgres_db"]["scheme"] == "postgresql+psycopg2"
    database = config["storage"]["postgres"]["postgres_db"]
    # Connection settings, the password above all, come from the environment, never the file.
    assert all(
        database[key] == {"env": f"DAGSTER_PG_{name}"}
        for key, name in [
            ("username", "USERNAME"),
            ("password", "PASSWORD"),
            ("hostname", "HOST"),
            ("db_name", "DB"),
            ("port", "PORT"),
        ]
    )


@pytest.mark.postgres
def test_production_instance_config_starts_on_postgresql(tmp_path, monkeypatch):
    require(postgres_available(), f"PostgreSQL is not reachable at {POSTGRES_URL}")
    db = f"dagster_{uuid.uuid4().hex[:10]}"
    admin = create_engine(POSTGRES_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'create database "{db}"'))
    try:
        for key, value in {
            "DAGSTER_PG_USERNAME": "postgres",
            "DAGSTER_PG_PASSWORD": "",
            "DAGSTER_PG_HOST": "127.0.0.1",
            "DAGSTER_PG_DB": db,
            "DAGSTER_PG_PORT": "5432",
            "DAGSTER_COMPUTE_LOG_DIR": str(tmp_path / "compute_logs"),
        }.items():
            monkeypatch.setenv(key, value)
        (tmp_path / "dagster.yaml").write_text((ROOT / "deploy" / "dagster.yaml").read_text())
        instance = DagsterInstance.from_config(str(tmp_path))
        try:
            assert type(instance.run_storage).__name__ == "PostgresRunStorage"
            assert instance.get_runs() == []
            assert instance.compute_log_manager._base_dir == str(tmp_path / "compute_logs")
        finally:
            instance.dispose()
    finally:
        with admin.connect() as connection:
            connection.execute(text(f'drop database "{db}" with (force)'))
        admin.dispose()


def test_masters_declare_the_calibration_window_on_earlier_nights():
    graph = DEFS.resolve_asset_graph()
    dark = graph.get(AssetKey("master_dark"))
    assert {AssetKey("raw_frames"), AssetKey("master_bias")} <= set(dark.parent_keys)
    upstream = graph.get_parent_partition_keys_for_child(
        "lcosim|2026-11-20", AssetKey("master_bias"), AssetKey("master_dark")
    ).partitions_subset.get_partition_keys()
    assert set(upstream) == {f"lcosim|2026-11-{day}" for day in range(13, 21)}


def test_every_master_has_a_blocking_check():
    from reduction_assets.orchestration.assets.calibrations import master_bias, master_dark, master_flat

    checks = {
        spec.name: spec.blocking
        for asset in (master_bias, master_dark, master_flat)
        for spec in asset.check_specs
    }
    assert checks == {"read_noise_consistent": True, "dark_current_plausible": True, "flat_normalised": True}


def test_reduced_frames_declare_the_window_on_all_three_masters():
    graph = DEFS.resolve_asset_graph()
    parents = set(graph.get(AssetKey("reduced_frames")).parent_keys)
    assert parents == {AssetKey(n) for n in ("raw_frames", "master_bias", "master_dark", "master_flat")}
    upstream = graph.get_parent_partition_keys_for_child(
        "noirsim|2026-11-20", AssetKey("master_flat"), AssetKey("reduced_frames")
    ).partitions_subset.get_partition_keys()
    assert len(upstream) == 8 and "noirsim|2026-11-13" in upstream


def test_both_instance_configs_free_the_slots_of_dead_runs(tmp_path):
    from reduction_assets.support.home import Home

    for path in (ROOT / "dagster.yaml", ROOT / "deploy" / "dagster.yaml"):
        monitoring = yaml.safe_load(path.read_text())["run_monitoring"]
        assert monitoring["enabled"] and monitoring["free_slots_after_run_end_seconds"] <= 60, path
        assert monitoring["start_timeout_seconds"] > 0 and monitoring["max_runtime_seconds"] > 0, path
    home = Home(tmp_path / "home").ensure()
    instance = DagsterInstance.from_config(str(home.dagster))
    assert instance.run_monitoring_enabled
    assert instance.run_monitoring_settings["free_slots_after_run_end_seconds"] == 30


def test_both_instance_configs_bound_tick_history_and_retry_crashed_runs_only(tmp_path, monkeypatch):
    from reduction_assets.support.home import Home

    for path in (ROOT / "dagster.yaml", ROOT / "deploy" / "dagster.yaml"):
        config = yaml.safe_load(path.read_text())
        ticks = config["retention"]["sensor"]["purge_after_days"]
        assert 0 < ticks["skipped"] <= 7 and ticks["failure"] > 0 and ticks["success"] > 0, path
        retries = config["run_retries"]
        assert retries["enabled"] and retries["max_retries"] >= 1, path
        assert retries["retry_on_asset_or_op_failure"] is False, path
    home = Home(tmp_path / "home").ensure()
    instance = DagsterInstance.from_config(str(home.dagster))
    assert instance.run_retries_enabled and instance.run_retries_max_retries == 2
    assert not instance.run_retries_retry_on_asset_or_op_failure
    assert instance.get_tick_retention_settings(InstigatorType.SENSOR)[TickStatus.SKIPPED] == 7


def test_the_embedded_deployment_finds_its_home_through_the_environment(tmp_path, monkeypatch, lcosim_night):
    from dagster import AssetKey, materialize

    from reduction_assets.orchestration.assets.raw import landing_rejects, raw_frames
    from reduction_assets.orchestration.definitions import resources_for
    from reduction_assets.support.home import Home
    from reduction_assets_tests.conftest import deliver, frames_of

    home = Home(tmp_path / "from_env").ensure()
    deliver(frames_of(lcosim_night, "bias"), home.landing)
    monkeypatch.setenv("REDUCTION_HOME", str(home.root))
    result = materialize(
        [raw_frames, landing_rejects],
        selection=[AssetKey("raw_frames")],
        partition_key="lcosim|2026-11-20",
        resources=resources_for("embedded"),
    )
    assert result.asset_materializations_for_node("raw_frames")[0].metadata["ingested"].value == 5


def test_an_unknown_deployment_is_refused_by_name(monkeypatch):
    monkeypatch.setenv("REDUCTION_DEPLOYMENT", "staging")
    with pytest.raises(
        ValueError, match="REDUCTION_DEPLOYMENT='staging': expected 'embedded' or 'production'"
    ):
        defs()


def test_a_partition_key_given_as_plain_text_is_understood():
    from reduction_assets.orchestration.partitions import split_key

    assert split_key("st7|2019-10-28") == ("st7", dt.date(2019, 10, 28))


def test_the_executor_is_chosen_per_deployment(monkeypatch):
    from reduction_assets.orchestration.definitions import executor_for

    assert executor_for("in_process").name == "in_process"
    assert executor_for("multiprocess").name == "multiprocess"  # steps in processes: test_deployment
    assert executor_for("celery").name == "celery"  # steps on Celery workers: test_production
    with pytest.raises(
        ValueError, match="REDUCTION_EXECUTOR='dask': expected 'in_process', 'multiprocess' or 'celery'"
    ):
        executor_for("dask")
    monkeypatch.setenv("REDUCTION_EXECUTOR", "multiprocess")
    assert defs().resolve_job_def("process_night").executor_def.name == "multiprocess"


def test_memory_heavy_steps_share_the_stacking_pool():
    from reduction_assets.orchestration.assets.calibrations import master_bias, master_dark, master_flat
    from reduction_assets.orchestration.assets.science import reduced_frames
    from reduction_assets.orchestration.assets.stacks import stacks

    assert {asset.op.pool for asset in (master_bias, master_dark, master_flat, stacks)} == {"stacking"}
    assert reduced_frames.op.pool is None


def test_the_archive_store_is_chosen_per_deployment_with_secrets_through_env_vars(monkeypatch, tmp_path):
    from dagster import EnvVar

    from reduction_assets.orchestration.definitions import archive_for
    from reduction_assets.orchestration.resources import ReductionHomeResource

    home = ReductionHomeResource(home=str(tmp_path))
    assert archive_for("local", home).kind == "local"
    s3 = archive_for("s3", home)
    assert s3.kind == "s3"
    assert isinstance(s3.aws_secret_access_key, EnvVar) and isinstance(s3.bucket, EnvVar)
    with pytest.raises(ValueError, match="REDUCTION_ARCHIVE_STORE"):
        archive_for("ftp", home)
    monkeypatch.setenv("REDUCTION_ARCHIVE_STORE", "s3")
    assert defs().resolve_job_def("process_night") is not None  # loads without the secrets set
