"""`reduction-assets status`: what the home's Dagster instance is doing, from its run storage."""

import json

from dagster import DagsterRunStatus
from dagster._core.test_utils import create_run_for_test

from reduction_assets.orchestration.process import instance_for
from reduction_assets_tests.test_cli import cli


def add_run(instance, job, partition, status):
    return create_run_for_test(instance, job_name=job, status=status, tags={"dagster/partition": partition})


def test_status_lists_running_queued_and_still_failed_runs_and_sensor_states(home, capsys):
    instance = instance_for(home)
    try:
        running = add_run(instance, "process_night", "lcosim|2026-11-20", DagsterRunStatus.STARTED)
        queued = add_run(instance, "process_night", "lcosim|2026-11-21", DagsterRunStatus.NOT_STARTED)
        still_failed = add_run(instance, "process_night", "noirsim|2026-11-20", DagsterRunStatus.FAILURE)
        add_run(instance, "reduce_frames", "st7|2019-10-28", DagsterRunStatus.FAILURE)
        add_run(instance, "reduce_frames", "st7|2019-10-28", DagsterRunStatus.SUCCESS)  # fixed since
    finally:
        instance.dispose()
    code, out = cli(capsys, "--home", str(home.root), "status", "--json")
    report = json.loads(out)
    assert code == 0
    assert [(r["run_id"], r["partition"], r["status"]) for r in report["running"]] == [
        (running.run_id, "lcosim|2026-11-20", "STARTED")
    ]
    assert [r["run_id"] for r in report["queued"]] == [queued.run_id]
    assert [(r["run_id"], r["job"]) for r in report["failed"]] == [(still_failed.run_id, "process_night")]
    assert all(
        r["age_seconds"] is not None and r["age_seconds"] >= 0 for r in report["running"] + report["failed"]
    )
    assert report["backfills"] == []
    assert {s["sensor"]: (s["running"], s["set_by"]) for s in report["sensors"]} == {
        "landing_sensor": (True, "default"),
        "calibration_sensor": (True, "default"),
        "quality_trends_sensor": (True, "default"),
        "run_failure_alerts": (True, "default"),
        "check_failure_alerts": (True, "default"),
    }
    code, out = cli(capsys, "--home", str(home.root), "status")
    assert "running runs: 1" in out and "failed runs (last 7 days, not succeeded since): 1" in out
    assert "noirsim|2026-11-20" in out and "landing_sensor" in out


def test_status_of_a_fresh_home_is_empty(home, capsys):
    code, out = cli(capsys, "--home", str(home.root), "status", "--json")
    report = json.loads(out)
    assert code == 0 and report["running"] == report["queued"] == report["failed"] == []


def test_a_queued_run_counts_as_in_flight_for_the_sensors_and_process(home):
    from reduction_assets.orchestration.runs import RUN_KEY_TAG, run_key_in_flight

    instance = instance_for(home)
    try:
        create_run_for_test(
            instance, job_name="process_night", status=DagsterRunStatus.NOT_STARTED, tags={RUN_KEY_TAG: "k1"}
        )
        assert run_key_in_flight(instance, "k1")
    finally:
        instance.dispose()
