"""Sensors of the quality family: trends redrawn as nights are measured, and alerts for failed runs
and failed quality checks (sent by :mod:`reduction_assets.tasks.alerts`)."""

from __future__ import annotations

import json

from dagster import (
    AssetCheckKey,
    AssetKey,
    AssetRecordsFilter,
    DefaultSensorStatus,
    RunFailureSensorContext,
    RunRequest,
    SensorEvaluationContext,
    SensorResult,
    SkipReason,
    run_failure_sensor,
    sensor,
)

from reduction_assets.orchestration.jobs import UPDATE_QUALITY_TRENDS, update_quality_trends
from reduction_assets.orchestration.partitions import split_key
from reduction_assets.orchestration.resources import AlertSinksResource
from reduction_assets.orchestration.webserver import webserver_url
from reduction_assets.tasks.alerts import Alert, send

QUALITY_TRENDS_SENSOR = "quality_trends_sensor"
RUN_FAILURE_ALERTS = "run_failure_alerts"
CHECK_FAILURE_ALERTS = "check_failure_alerts"
BATCH = 500  # events read per tick; the cursor takes the rest next tick


@sensor(
    name=QUALITY_TRENDS_SENSOR,
    jobs=[update_quality_trends],
    minimum_interval_seconds=60,
    default_status=DefaultSensorStatus.RUNNING,
    description="Redraws an instrument's quality trends after any of its nights' quality_metrics "
    "was materialized.",
)
def quality_trends_sensor(context: SensorEvaluationContext) -> SensorResult:
    after = int(context.cursor) if context.cursor else None
    records = context.instance.fetch_materializations(
        AssetRecordsFilter(asset_key=AssetKey("quality_metrics"), after_storage_id=after),
        limit=BATCH,
        ascending=True,
    ).records
    if not records:
        return SensorResult(skip_reason=SkipReason("no night was measured since the last trends"))
    latest = max(record.storage_id for record in records)
    instruments = sorted({split_key(r.partition_key)[0] for r in records if r.partition_key})
    return SensorResult(
        run_requests=[
            RunRequest(
                run_key=f"trends:{instrument}:{latest}",
                job_name=UPDATE_QUALITY_TRENDS,
                partition_key=instrument,
                tags={"reduction_assets/trigger": QUALITY_TRENDS_SENSOR},
            )
            for instrument in instruments
        ],
        cursor=str(latest),
    )


def _deliver(alert: Alert, alerts: AlertSinksResource, log) -> None:
    """Send to every sink; a sink that stays unreachable is logged, never raised."""
    for delivery in send(alert, alerts.sinks(log)):
        if not delivery.delivered:
            log.warning("alert %r not delivered to %s: %s", alert.subject, delivery.sink, delivery.error)


def _root_cause(error) -> str:
    """The innermost cause's last line (Dagster wraps what the step raised in its own errors)."""
    while error.cause is not None:
        error = error.cause
    lines = error.message.strip().splitlines()
    return lines[-1] if lines else error.cls_name or "error"


def run_failure_alert(context: RunFailureSensorContext) -> Alert:
    run = context.dagster_run
    partition = run.tags.get("dagster/partition")
    steps = [
        f"{event.step_key}: {_root_cause(event.event_specific_data.error)}"
        for event in context.get_step_failure_events()
        if event.event_specific_data is not None and event.event_specific_data.error is not None
    ]
    message = context.failure_event.message or "run failed"
    return Alert(
        kind="run_failure",
        severity="error",
        subject=f"run {run.run_id[:8]} of {run.job_name}{f' ({partition})' if partition else ''} failed",
        text="\n".join([message, *steps]),
        details={
            "run_id": run.run_id,
            "job": run.job_name,
            "partition": partition,
            "url": f"{webserver_url()}/runs/{run.run_id}",
        },
    )


@run_failure_sensor(
    name=RUN_FAILURE_ALERTS,
    default_status=DefaultSensorStatus.RUNNING,
    minimum_interval_seconds=30,
    description="Sends an alert (log, webhook, e-mail) for every failed run of this code location.",
)
def run_failure_alerts(context: RunFailureSensorContext, alerts: AlertSinksResource) -> None:
    _deliver(run_failure_alert(context), alerts, context.log)


def check_failure_alert(evaluation, run_id: str, instance) -> Alert:
    """The alert of a failed check evaluation."""
    run = instance.get_run_by_id(run_id)
    partition = run.tags.get("dagster/partition") if run is not None else None
    asset = evaluation.asset_key.to_user_string()
    severity = "error" if evaluation.severity.value == "ERROR" else "warn"
    return Alert(
        kind="check_failure",
        severity=severity,
        subject=f"check {evaluation.check_name} of {asset}{f' ({partition})' if partition else ''} failed",
        text=evaluation.description or "",
        details={
            "check": evaluation.check_name,
            "asset": asset,
            "severity": severity,
            "partition": partition,
            "run_id": run_id,
            "url": f"{webserver_url()}/runs/{run_id}",
        },
    )


def _name(key: AssetCheckKey) -> str:
    return f"{key.asset_key.to_user_string()}:{key.name}"


def _executions_after(storage, key: AssetCheckKey, after: int) -> list:
    """The check's executions with an id above ``after`` (the history comes newest first, a page at a
    time: a backfill may evaluate a check more often between two ticks than one page holds)."""
    found, page_cursor = [], None
    while True:
        page = storage.get_asset_check_execution_history(key, limit=BATCH, cursor=page_cursor)
        newer = [record for record in page if record.id > after]
        found += newer
        if len(newer) < len(page) or len(page) < BATCH:
            return found
        page_cursor = page[-1].id


def _latest_execution(instance, key: AssetCheckKey) -> int:
    records = instance.event_log_storage.get_asset_check_execution_history(key, limit=1)
    return records[0].id if records else 0


@sensor(
    name=CHECK_FAILURE_ALERTS,
    minimum_interval_seconds=30,
    default_status=DefaultSensorStatus.RUNNING,
    description="Sends an alert (log, webhook, e-mail) for every failed asset check, warnings "
    "included (the first tick only notes where each check's history is).",
)
def check_failure_alerts(context: SensorEvaluationContext, alerts: AlertSinksResource) -> SensorResult:
    # Read per check from the checks' execution history (an index every event-log storage keeps,
    # run-sharded SQLite included), after the last execution id seen of each.
    keys = sorted(context.repository_def.asset_graph.asset_check_keys, key=_name)
    storage = context.instance.event_log_storage
    seen = json.loads(context.cursor) if context.cursor else None
    if seen is None:
        cursor = {_name(key): _latest_execution(context.instance, key) for key in keys}
        return SensorResult(
            skip_reason=SkipReason("started: alerts for checks evaluated from now on"),
            cursor=json.dumps(cursor),
        )
    cursor, evaluated, sent = dict(seen), 0, 0
    for key in keys:
        after = seen.get(_name(key), 0)
        records = _executions_after(storage, key, after)
        for record in sorted(records, key=lambda r: r.id):
            if record.status.value == "PLANNED":
                break  # still running: looked at again next tick
            cursor[_name(key)] = record.id
            evaluated += 1
            if record.status.value == "FAILED" and record.evaluation is not None:
                _deliver(
                    check_failure_alert(record.evaluation, record.run_id, context.instance),
                    alerts,
                    context.log,
                )
                sent += 1
    if not sent:
        reason = (
            f"{evaluated} checks evaluated, all passed"
            if evaluated
            else "no check evaluated since the last tick"
        )
        return SensorResult(skip_reason=SkipReason(reason), cursor=json.dumps(cursor))
    return SensorResult(cursor=json.dumps(cursor))


QUALITY_SENSORS = (quality_trends_sensor, run_failure_alerts, check_failure_alerts)
