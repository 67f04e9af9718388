"""Alerts: a failed run and a failed quality check reach a local HTTP webhook and a local SMTP server
(aiosmtpd) with the run or check named; unreachable sinks are logged and retried, never raised, and
their secrets never shown."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest
from aiosmtpd.controller import Controller
from dagster import (
    AssetCheckResult,
    AssetCheckSeverity,
    AssetCheckSpec,
    DagsterEventType,
    DagsterInstance,
    Definitions,
    MaterializeResult,
    asset,
    build_run_status_sensor_context,
    build_sensor_context,
    job,
    materialize,
    op,
)

from reduction_assets.orchestration.quality_sensors import check_failure_alerts, run_failure_alerts
from reduction_assets.orchestration.resources import AlertSinksResource
from reduction_assets.tasks.alerts import Alert, SmtpSink, WebhookSink, send
from reduction_assets_tests.sinks import SECRET_TOKEN, Mailbox, Webhook, free_port

SMTP_PASSWORD = "hunter2-smtp"


@pytest.fixture
def webhook():
    with Webhook() as hook:
        yield hook


@pytest.fixture
def mailbox():
    box = Mailbox()
    controller = Controller(box, hostname="127.0.0.1", port=free_port())
    controller.start()
    box.port = controller.port
    yield box
    controller.stop()


def sinks(webhook, mailbox) -> AlertSinksResource:
    return AlertSinksResource(
        webhook_url=webhook.url,
        host="127.0.0.1",
        port=str(mailbox.port),
        sender="pipeline@observatory.example",
        recipients="night-ops@observatory.example, scientist@observatory.example",
    )


@op
def reduce_nothing():
    raise RuntimeError("the flat is upside down")


@job
def doomed():
    reduce_nothing()


def failed_run_context(instance, alerts):
    result = doomed.execute_in_process(
        instance=instance, raise_on_error=False, tags={"dagster/partition": "lcosim|2026-11-20"}
    )
    assert not result.success
    failure = next(e for e in result.all_events if e.event_type == DagsterEventType.RUN_FAILURE)
    run = instance.get_run_by_id(result.run_id)
    context = build_run_status_sensor_context(
        sensor_name="run_failure_alerts", dagster_event=failure, dagster_instance=instance, dagster_run=run,
        resources={"alerts": alerts},
    )  # fmt: skip
    return context.for_run_failure(), result.run_id


def test_a_failed_run_reaches_the_webhook_and_the_mailbox_naming_the_run(webhook, mailbox):
    with DagsterInstance.ephemeral() as instance:
        context, run_id = failed_run_context(instance, sinks(webhook, mailbox))
        run_failure_alerts(context)
    (post,) = webhook.received
    payload = post["json"]
    assert payload["kind"] == "run_failure" and payload["severity"] == "error"
    assert payload["details"]["run_id"] == run_id and payload["details"]["job"] == "doomed"
    assert payload["details"]["partition"] == "lcosim|2026-11-20"
    assert "the flat is upside down" in payload["text"]
    (message,) = mailbox.messages
    assert message.rcpt_tos == ["night-ops@observatory.example", "scientist@observatory.example"]
    body = message.content.decode()
    assert f"run {run_id[:8]} of doomed (lcosim|2026-11-20) failed" in body
    assert "the flat is upside down" in body


@asset(check_specs=[AssetCheckSpec("seeing_within_limit", asset="night_quality")])
def night_quality():
    return MaterializeResult(
        check_results=[
            AssetCheckResult(
                check_name="seeing_within_limit",
                passed=False,
                severity=AssetCheckSeverity.WARN,
                description="gp: median fwhm_arcsec 4.10 arcsec over 6 frames",
            )
        ]
    )


def ticker(alerts):
    """Evaluate the check-failure sensor of a code location holding ``night_quality``."""
    definitions = Definitions(
        assets=[night_quality], sensors=[check_failure_alerts], resources={"alerts": alerts}
    )

    def tick(instance, cursor=None):
        context = build_sensor_context(
            instance=instance, cursor=cursor, definitions=definitions, resources={"alerts": alerts}
        )
        return check_failure_alerts(context)

    return tick


def test_a_failed_check_reaches_the_webhook_and_the_mailbox_naming_the_check(webhook, mailbox):
    tick = ticker(sinks(webhook, mailbox))
    with DagsterInstance.ephemeral() as instance:
        first = tick(instance)
        assert json.loads(first.cursor) == {"night_quality:seeing_within_limit": 0}  # only notes where it is
        assert not webhook.received
        assert materialize([night_quality], instance=instance).success
        result = tick(instance, first.cursor)
        assert json.loads(result.cursor)["night_quality:seeing_within_limit"] > 0
        again = tick(instance, result.cursor)
    assert again.skip_reason is not None  # each evaluation alerts once
    (post,) = webhook.received
    assert post["json"]["kind"] == "check_failure" and post["json"]["severity"] == "warn"
    assert post["json"]["details"]["check"] == "seeing_within_limit"
    assert post["json"]["details"]["asset"] == "night_quality"
    (message,) = mailbox.messages
    body = message.content.decode()
    assert "check seeing_within_limit of night_quality failed" in body and "4.10 arcsec" in body


def test_every_failed_evaluation_since_the_last_tick_alerts_however_many(webhook, monkeypatch):
    import reduction_assets.orchestration.quality_sensors as quality_sensors

    monkeypatch.setattr(quality_sensors, "BATCH", 2)  # a history page smaller than the backlog
    tick = ticker(AlertSinksResource(webhook_url=webhook.url))
    with DagsterInstance.ephemeral() as instance:
        first = tick(instance)
        for _ in range(5):
            assert materialize([night_quality], instance=instance).success
        tick(instance, first.cursor)
    assert len(webhook.received) == 5
    assert len({post["json"]["details"]["run_id"] for post in webhook.received}) == 5


ALERT = Alert("run_failure", "error", "run abc of process_night failed", "boom", {"run_id": "abc"})


def closed_port() -> int:
    return free_port()  # nothing listens there once the probe is closed


def test_an_unreachable_webhook_and_smtp_server_are_retried_then_reported():
    port = closed_port()
    attempts = []

    class Counted:
        def send(self, alert):
            attempts.append(self.name)
            super().send(alert)

    class CountedWebhook(Counted, WebhookSink): ...

    class CountedSmtp(Counted, SmtpSink): ...

    webhook = CountedWebhook(f"http://127.0.0.1:{port}/hooks/{SECRET_TOKEN}", timeout=1)
    smtp = CountedSmtp("127.0.0.1", port, "a@b", ["c@d"], user="ops", password=SMTP_PASSWORD, timeout=1)
    deliveries = send(ALERT, [webhook, smtp], attempts=3, wait=lambda state: 0.01)
    assert [d.delivered for d in deliveries] == [False, False]
    assert attempts == [webhook.name] * 3 + [smtp.name] * 3
    assert deliveries[0].error.startswith(f"webhook http://127.0.0.1:{port}: ConnectionError")
    assert deliveries[1].error.startswith(f"smtp 127.0.0.1:{port}: ConnectionRefusedError")
    for delivery in deliveries:
        assert SECRET_TOKEN not in delivery.error and SMTP_PASSWORD not in delivery.error


def test_an_unreachable_sink_never_fails_the_sensor_and_keeps_secrets_out_of_the_log(capfd):
    port = closed_port()
    alerts = AlertSinksResource(
        webhook_url=f"http://127.0.0.1:{port}/hooks/{SECRET_TOKEN}",
        host="127.0.0.1",
        port=str(port),
        recipients="ops@observatory.example",
        user="ops",
        password=SMTP_PASSWORD,
    )
    with DagsterInstance.ephemeral() as instance:
        context, _ = failed_run_context(instance, alerts)
        run_failure_alerts(context)  # does not raise
    logged = capfd.readouterr().err
    assert "not delivered to webhook http://127.0.0.1" in logged
    assert f"not delivered to smtp 127.0.0.1:{port}" in logged
    assert "ALERT run_failure" in logged  # the log sink always has it
    assert SECRET_TOKEN not in logged and SMTP_PASSWORD not in logged


def test_a_webhook_that_answers_with_an_error_is_not_a_delivery():
    class Refusing(BaseHTTPRequestHandler):
        def do_POST(self):
            self.send_response(503)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = HTTPServer(("127.0.0.1", 0), Refusing)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        sink = WebhookSink(f"http://127.0.0.1:{server.server_port}/x")
        (delivery,) = send(ALERT, [sink], attempts=2, wait=lambda state: 0.01)
    finally:
        server.shutdown()
        server.server_close()
    assert not delivery.delivered and "HTTP 503" in delivery.error


def test_a_webhook_url_that_is_not_http_is_refused_without_echoing_it():
    with pytest.raises(ValueError) as refused:
        WebhookSink(f"ftp://example.org/{SECRET_TOKEN}")
    assert SECRET_TOKEN not in str(refused.value)
