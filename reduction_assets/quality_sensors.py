"""Sensors of the quality family: trends redrawn as nights are measured, and alerts for failed runs
and failed quality checks (sent by :mod:`reduction_assets.alerts`)."""

from __future__ import annotations

from dagster import (
    AssetKey,
    AssetRecordsFilter,
    DagsterEventType,
    DefaultSensorStatus,
    EventRecordsFilter,
    RunFailureSensorContext,
    RunRequest,
    SensorEvaluationContext,
    SensorResult,
    SkipReason,
    run_failure_sensor,
    sensor,
)

from reduction_assets.alerts import Alert, send
from reduction_assets.jobs import UPDATE_QUALITY_TRENDS, update_quality_trends
from reduction_assets.partitions import split_key
from reduction_assets.resources import AlertSinksResource
from reduction_assets.webserver import webserver_url

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


def run_failure_alert(context: RunFailureSensorContext) -> Alert:
    run = context.dagster_run
    partition = run.tags.get("dagster/partition")
    steps = [
        f"{event.step_key}: {event.event_specific_data.error.message.strip().splitlines()[-1]}"
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


def _latest_check_event(instance) -> int:
    records = instance.get_event_records(
        EventRecordsFilter(event_type=DagsterEventType.ASSET_CHECK_EVALUATION), limit=1, ascending=False
    )
    return records[0].storage_id if records else 0


def check_failure_alert(record, instance) -> Alert | None:
    """The alert of a failed check evaluation (None for a passed one)."""
    evaluation = record.event_log_entry.dagster_event.event_specific_data
    if evaluation is None or evaluation.passed:
        return None
    run_id = record.event_log_entry.run_id
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


@sensor(
    name=CHECK_FAILURE_ALERTS,
    minimum_interval_seconds=30,
    default_status=DefaultSensorStatus.RUNNING,
    description="Sends an alert (log, webhook, e-mail) for every failed asset check, warnings "
    "included (the first tick only notes where the event log is).",
)
def check_failure_alerts(context: SensorEvaluationContext, alerts: AlertSinksResource) -> SensorResult:
    if not context.cursor:
        return SensorResult(
            skip_reason=SkipReason("started: alerts for checks evaluated from now on"),
            cursor=str(_latest_check_event(context.instance)),
        )
    records = context.instance.get_event_records(
        EventRecordsFilter(
            event_type=DagsterEventType.ASSET_CHECK_EVALUATION, after_cursor=int(context.cursor)
        ),
        limit=BATCH,
        ascending=True,
    )
    if not records:
        return SensorResult(skip_reason=SkipReason("no check evaluated since the last tick"))
    sent = 0
    for record in records:
        alert = check_failure_alert(record, context.instance)
        if alert is not None:
            _deliver(alert, alerts, context.log)
            sent += 1
    cursor = str(max(record.storage_id for record in records))
    if not sent:
        return SensorResult(
            skip_reason=SkipReason(f"{len(records)} checks evaluated, all passed"), cursor=cursor
        )
    return SensorResult(cursor=cursor)


QUALITY_SENSORS = (quality_trends_sensor, run_failure_alerts, check_failure_alerts)
