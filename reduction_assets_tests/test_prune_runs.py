"""Run retention: superseded failed runs and old step logs go; the only record of a failure stays."""

import datetime as dt
import uuid

from dagster import DagsterRun, DagsterRunStatus, instance_for_test

from reduction_assets.orchestration.runs import PARTITION_TAG, prune_runs


def add(instance, status, partition="lcosim|2026-11-20", job="process_night"):
    tags = {PARTITION_TAG: partition} if partition else {}
    run = DagsterRun(job_name=job, run_id=str(uuid.uuid4()), status=status, tags=tags)
    instance.add_run(run)
    return run.run_id


def future(days=1):
    return dt.datetime.now(dt.UTC) + dt.timedelta(days=days)


def test_a_failed_run_whose_partition_later_succeeded_is_deleted_with_its_logs():
    with instance_for_test() as instance:
        failed = add(instance, DagsterRunStatus.FAILURE)
        succeeded = add(instance, DagsterRunStatus.SUCCESS)
        report = prune_runs(instance, future())
        assert report.runs == [failed] and succeeded in report.compute_logs
        assert instance.get_run_by_id(failed) is None and instance.get_run_by_id(succeeded) is not None


def test_a_failure_with_nothing_after_it_is_kept():
    with instance_for_test() as instance:
        add(instance, DagsterRunStatus.SUCCESS)
        failed = add(instance, DagsterRunStatus.FAILURE)  # the latest word on its partition
        other_job = add(instance, DagsterRunStatus.FAILURE, job="rebuild_masters")
        add(instance, DagsterRunStatus.SUCCESS, partition="lcosim|2026-11-21")
        report = prune_runs(instance, future())
        assert report.runs == [] and report.kept_failed == 2
        assert instance.get_run_by_id(failed) and instance.get_run_by_id(other_job)


def test_recent_runs_and_dry_runs_are_left_alone():
    with instance_for_test() as instance:
        failed = add(instance, DagsterRunStatus.FAILURE)
        add(instance, DagsterRunStatus.SUCCESS)
        assert prune_runs(instance, dt.datetime.now(dt.UTC) - dt.timedelta(days=1)).runs == []
        assert prune_runs(instance, future(), dry_run=True).runs == [failed]
        assert instance.get_run_by_id(failed) is not None
