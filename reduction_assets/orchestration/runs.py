"""Runs in the Dagster instance: which partitions have work in flight, and runs whose worker died.

`reduction-assets process` executes runs inside its own process. When that process is killed
(``kill -9``, power loss) its run stays STARTED in the instance and keeps the concurrency slots of
its pools, so every later run waits for a slot that is never freed. Runs of `process` therefore
carry its host, home and pid; whoever holds the home's lock knows no `process` is alive on it and
marks such runs failed and frees their slots (:func:`reap_dead_process_runs`).
"""

from __future__ import annotations

import datetime as dt
import os
import socket
from dataclasses import dataclass

from dagster import DagsterInstance, DagsterRunStatus, RunsFilter

from reduction_assets.support.home import Home, HomeBusy

RUN_KEY_TAG = "dagster/run_key"
SENSOR_NAME_TAG = "dagster/sensor_name"
PARTITION_TAG = "dagster/partition"
MAX_RETRIES_TAG = "dagster/max_retries"
LAUNCHED_BY_TAG = "reduction_assets/launched_by"
HOST_TAG = "reduction_assets/host"
HOME_TAG = "reduction_assets/home"
PID_TAG = "reduction_assets/pid"
PROCESS_LAUNCHER = "process"

FINISHED_STATUSES = [DagsterRunStatus.SUCCESS, DagsterRunStatus.FAILURE, DagsterRunStatus.CANCELED]
# Runs waiting for a worker, and runs that hold one (and concurrency slots).
QUEUED_STATUSES = [DagsterRunStatus.QUEUED, DagsterRunStatus.NOT_STARTED]
RUNNING_STATUSES = [DagsterRunStatus.STARTING, DagsterRunStatus.STARTED, DagsterRunStatus.CANCELING]
# Runs that hold, or are about to hold, a worker and concurrency slots.
IN_FLIGHT_STATUSES = [*QUEUED_STATUSES, *RUNNING_STATUSES]


def process_run_tags(home: Home) -> dict[str, str]:
    """Tags that identify a run executed by this `process` invocation."""
    return {
        # `process` asks again for the files of its failed runs at its next invocation; the daemon
        # could not re-execute these runs anyway (they have no code location).
        MAX_RETRIES_TAG: "0",
        LAUNCHED_BY_TAG: PROCESS_LAUNCHER,
        HOST_TAG: socket.gethostname(),
        HOME_TAG: str(home.root),
        PID_TAG: str(os.getpid()),
    }


def partitions_in_flight(instance: DagsterInstance) -> set[str]:
    """Partition keys (``instrument|night``) that a queued or running run is working on."""
    runs = instance.get_runs(filters=RunsFilter(statuses=IN_FLIGHT_STATUSES))
    return {run.tags[PARTITION_TAG] for run in runs if PARTITION_TAG in run.tags}


def run_key_in_flight(instance: DagsterInstance, run_key: str) -> bool:
    return bool(
        instance.get_runs(
            filters=RunsFilter(tags={RUN_KEY_TAG: run_key}, statuses=IN_FLIGHT_STATUSES), limit=1
        )
    )


def run_key_succeeded(instance: DagsterInstance, run_key: str) -> bool:
    return bool(
        instance.get_runs(
            filters=RunsFilter(tags={RUN_KEY_TAG: run_key}, statuses=[DagsterRunStatus.SUCCESS]), limit=1
        )
    )


RUN_SUCCEEDED = "succeeded"
RUN_FAILED = "failed"
RUN_IN_FLIGHT = "in_flight"
WILL_RETRY_TAG = "dagster/will_retry"


@dataclass(frozen=True)
class RunOutcome:
    """Where the runs of one run key stand: ``status`` is RUN_SUCCEEDED, RUN_FAILED or RUN_IN_FLIGHT."""

    status: str
    run_id: str


def run_key_outcome(instance: DagsterInstance, run_key: str) -> RunOutcome | None:
    """The outcome of the runs launched under ``run_key`` (automatic run retries carry the key of the
    run they retry), or None when no run has it. A failed run that the daemon will retry counts as
    in flight."""
    runs = instance.get_runs(filters=RunsFilter(tags={RUN_KEY_TAG: run_key}))
    if not runs:
        return None
    for run in runs:
        if run.status == DagsterRunStatus.SUCCESS:
            return RunOutcome(RUN_SUCCEEDED, run.run_id)
    for run in runs:
        if run.status in IN_FLIGHT_STATUSES:
            return RunOutcome(RUN_IN_FLIGHT, run.run_id)
    newest = runs[0]
    if newest.tags.get(WILL_RETRY_TAG) == "true":
        return RunOutcome(RUN_IN_FLIGHT, newest.run_id)
    return RunOutcome(RUN_FAILED, newest.run_id)


@dataclass(frozen=True)
class ReapedRun:
    run_id: str
    status: str
    pid: str
    freed_slots: int


def reap_dead_process_runs(instance: DagsterInstance, home: Home, *, holding_lock: bool) -> list[ReapedRun]:
    """Mark runs of dead `process` invocations on this home failed and free their pool slots.

    A run qualifies when it was executed by `process` on this host for this home and is still in
    flight. With ``holding_lock`` the caller holds the home's lock, so no `process` is alive on it;
    otherwise the lock is tried without waiting and nothing is done if another process holds it.
    """
    if not holding_lock:
        try:
            with home.lock():
                return reap_dead_process_runs(instance, home, holding_lock=True)
        except HomeBusy:
            return []
    tags = {LAUNCHED_BY_TAG: PROCESS_LAUNCHER, HOST_TAG: socket.gethostname(), HOME_TAG: str(home.root)}
    reaped = []
    for run in instance.get_runs(filters=RunsFilter(tags=tags, statuses=IN_FLIGHT_STATUSES)):
        pid = run.tags.get(PID_TAG, "?")
        if pid == str(os.getpid()):
            continue  # our own run, in flight in this very process
        instance.report_run_failed(
            run,
            f"the `reduction-assets process` that executed this run (pid {pid} on "
            f"{run.tags.get(HOST_TAG)}) is no longer alive; its pool slots are freed",
        )
        reaped.append(ReapedRun(run.run_id, run.status.value, pid, free_slots(instance, run.run_id)))
    return reaped


def claimed_slots(instance: DagsterInstance, run_id: str | None = None) -> list[tuple[str, str]]:
    """(pool, run id) of every claimed concurrency slot, of one run or all."""
    storage = instance.event_log_storage
    return [
        (key, slot.run_id)
        for key in sorted(storage.get_concurrency_keys())
        for slot in storage.get_concurrency_info(key).claimed_slots
        if run_id is None or slot.run_id == run_id
    ]


def free_slots(instance: DagsterInstance, run_id: str) -> int:
    """Free every pool slot a run holds or waits for; returns how many it held."""
    held = len(claimed_slots(instance, run_id))
    instance.event_log_storage.free_concurrency_slots_for_run(run_id)
    return held


@dataclass
class PruneReport:
    """What :func:`prune_runs` deleted (or, dry, would delete)."""

    runs: list[str]  # failed or canceled runs whose partition and job later succeeded
    compute_logs: list[str]  # runs whose step logs were deleted
    kept_failed: int  # old failed runs kept: nothing succeeded after them, their record is the only one


def prune_runs(instance: DagsterInstance, before: dt.datetime, *, dry_run: bool = False) -> PruneReport:
    """Dagster has no run retention setting: delete what an operator no longer needs, older than
    ``before`` (UTC).

    - Failed and canceled runs of a partition whose same job succeeded later: the later run
      materialized everything they did, so deleting their events loses no asset history. Failed
      runs with nothing after them stay, as do backfill runs and runs of no partition.
    - The step logs (stdout/stderr) of every finished run; the events, with the metadata the UI
      shows, stay.
    """
    report = PruneReport(runs=[], compute_logs=[], kept_failed=0)
    failed = instance.get_runs(
        filters=RunsFilter(
            statuses=[DagsterRunStatus.FAILURE, DagsterRunStatus.CANCELED], updated_before=before
        )
    )
    for run in failed:
        partition = run.tags.get(PARTITION_TAG)
        record = instance.get_run_record_by_id(run.run_id)
        later = partition and instance.get_runs(
            filters=RunsFilter(
                job_name=run.job_name,
                tags={PARTITION_TAG: partition},
                statuses=[DagsterRunStatus.SUCCESS],
                created_after=record.create_timestamp,
            ),
            limit=1,
        )
        if later:
            report.runs.append(run.run_id)
        else:
            report.kept_failed += 1
    finished = instance.get_runs(filters=RunsFilter(statuses=FINISHED_STATUSES, updated_before=before))
    report.compute_logs = [run.run_id for run in finished if run.run_id not in report.runs]
    if not dry_run:
        for run_id in report.runs + report.compute_logs:
            instance.compute_log_manager.delete_logs(prefix=[run_id])
        for run_id in report.runs:
            instance.delete_run(run_id)
    return report


RANGE_TAGS = ("dagster/asset_partition_range_start", "dagster/asset_partition_range_end")


def _partition_of(run) -> str | None:
    if PARTITION_TAG in run.tags:
        return run.tags[PARTITION_TAG]
    start, end = (run.tags.get(tag) for tag in RANGE_TAGS)
    return f"{start}...{end}" if start and end else None


def _run_row(instance: DagsterInstance, run, now: float) -> dict:
    record = instance.get_run_record_by_id(run.run_id)
    since = record.start_time or record.create_timestamp.timestamp() if record else None
    return {
        "run_id": run.run_id,
        "job": run.job_name,
        "partition": _partition_of(run),
        "status": run.status.value,
        "age_seconds": round(now - since) if since else None,
        "backfill": run.tags.get("dagster/backfill"),
    }


def status_report(
    instance: DagsterInstance,
    sensor_defaults: dict[str, bool],
    *,
    failed_days: float = 7.0,
    now: float | None = None,
) -> dict:
    """What the instance is doing: runs in flight and queued, runs that failed in the last
    ``failed_days`` days and were not run successfully since (same job and partition), pending
    backfills, and each sensor's state (``sensor_defaults``: name -> running by default)."""
    import time

    now = time.time() if now is None else now
    running = instance.get_runs(filters=RunsFilter(statuses=RUNNING_STATUSES))
    queued = instance.get_runs(filters=RunsFilter(statuses=QUEUED_STATUSES))
    failed = _failed_since(instance, dt.datetime.fromtimestamp(now - failed_days * 86400, dt.UTC))
    backfills = _backfill_rows(instance, now)
    sensors = _sensor_rows(instance, sensor_defaults)
    return {
        "running": [_run_row(instance, run, now) for run in running],
        "queued": [_run_row(instance, run, now) for run in queued],
        "failed": [_run_row(instance, run, now) for run in failed],
        "backfills": backfills,
        "sensors": sensors,
    }


def _failed_since(instance: DagsterInstance, since: dt.datetime) -> list:
    """Runs created after ``since`` that failed and whose job and partition have not succeeded since."""
    recent = instance.get_runs(
        filters=RunsFilter(statuses=[DagsterRunStatus.FAILURE, DagsterRunStatus.SUCCESS], created_after=since)
    )
    latest: dict[tuple[str, str | None], object] = {}
    for run in recent:  # newest first: the first run of a job and partition is its latest word
        latest.setdefault((run.job_name, _partition_of(run)), run)
    return [run for run in latest.values() if run.status == DagsterRunStatus.FAILURE]


def _backfill_rows(instance: DagsterInstance, now: float) -> list[dict]:
    """One row per backfill still requested."""
    from reduction_assets.orchestration.dagster_internals import BulkActionStatus

    return [
        {
            "backfill_id": backfill.backfill_id,
            "status": backfill.status.value,
            "age_seconds": round(now - backfill.backfill_timestamp),
            "title": backfill.title,
        }
        for backfill in instance.get_backfills(status=BulkActionStatus.REQUESTED)
    ]


def _sensor_rows(instance: DagsterInstance, sensor_defaults: dict[str, bool]) -> list[dict]:
    """Each sensor, whether it runs, and whether an operator started or stopped it or its default holds."""
    from reduction_assets.orchestration.dagster_internals import InstigatorStatus, InstigatorType

    stored = {
        state.instigator_name: state.status
        for state in instance.all_instigator_state(instigator_type=InstigatorType.SENSOR)
    }
    sensors = []
    for name, default_running in sorted(sensor_defaults.items()):
        state = stored.get(name)
        if state in (InstigatorStatus.RUNNING, InstigatorStatus.AUTOMATICALLY_RUNNING):
            running_now, source = True, "started"
        elif state == InstigatorStatus.STOPPED:
            running_now, source = False, "stopped"
        else:
            running_now, source = default_running, "default"
        sensors.append({"sensor": name, "running": running_now, "set_by": source})
    return sensors
