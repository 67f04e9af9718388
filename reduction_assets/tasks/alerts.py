"""Alerts to the people on duty: a failed run or a failed quality check sent to the configured sinks,
the log always, an HTTP webhook (a JSON POST) and e-mail over SMTP when configured.

A sink that cannot be reached is retried a few times with backoff (tenacity) and then logged: an alert
never fails the run or the sensor it reports on. Webhook URLs often carry a token in their path and
SMTP logins a password: neither ever appears in a log line, an error or an alert.
"""

from __future__ import annotations

import logging
import smtplib
import ssl
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from email.message import EmailMessage
from typing import Any
from urllib.parse import urlsplit

import requests
from tenacity import RetryError, Retrying, stop_after_attempt, wait_exponential

WEBHOOK_ENV = "REDUCTION_ALERT_WEBHOOK_URL"
SMTP_ENV = {
    "host": "REDUCTION_ALERT_SMTP_HOST",
    "port": "REDUCTION_ALERT_SMTP_PORT",
    "sender": "REDUCTION_ALERT_SMTP_FROM",
    "recipients": "REDUCTION_ALERT_SMTP_TO",
    "user": "REDUCTION_ALERT_SMTP_USER",
    "password": "REDUCTION_ALERT_SMTP_PASSWORD",
    "starttls": "REDUCTION_ALERT_SMTP_STARTTLS",
}
ATTEMPTS = 3
TIMEOUT_SECONDS = 5.0


@dataclass(frozen=True)
class Alert:
    """What happened, for people: ``kind`` is ``run_failure`` or ``check_failure``; ``subject`` one
    line naming the run or check; ``details`` what a receiver may filter or link on."""

    kind: str
    severity: str  # error | warn
    subject: str
    text: str
    details: dict[str, Any] = field(default_factory=dict)

    def payload(self) -> dict[str, Any]:
        return {"source": "reduction_assets", **asdict(self)}


@dataclass(frozen=True)
class Delivery:
    sink: str
    delivered: bool
    error: str | None = None


class Sink:
    name = "sink"

    def send(self, alert: Alert) -> None:
        raise NotImplementedError


class LogSink(Sink):
    """Every alert goes to the log (the sensor's, so it shows in the UI's tick history)."""

    name = "log"

    def __init__(self, log: logging.Logger | Any):
        self.log = log

    def send(self, alert: Alert) -> None:
        method = self.log.error if alert.severity == "error" else self.log.warning
        method(f"ALERT {alert.kind}: {alert.subject}\n{alert.text}")


class WebhookSink(Sink):
    """A JSON POST of :meth:`Alert.payload`; any 2xx answer is a delivery."""

    def __init__(self, url: str, timeout: float = TIMEOUT_SECONDS):
        self.url = url
        self.timeout = timeout
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"{WEBHOOK_ENV}: not an http(s) URL")
        # Shown in logs: scheme, host and port only (the path often holds the token).
        self.name = f"webhook {parts.scheme}://{parts.hostname}{f':{parts.port}' if parts.port else ''}"

    def send(self, alert: Alert) -> None:
        try:
            response = requests.post(self.url, json=alert.payload(), timeout=self.timeout)
        except requests.RequestException as err:
            raise SinkError(f"{self.name}: {type(err).__name__}") from None
        if not 200 <= response.status_code < 300:
            raise SinkError(f"{self.name}: HTTP {response.status_code}")


class SmtpSink(Sink):
    """An e-mail from ``sender`` to ``recipients`` over SMTP (STARTTLS and a login when given)."""

    def __init__(self, host: str, port: int, sender: str, recipients: Sequence[str], *,
                 user: str | None = None, password: str | None = None, starttls: bool = False,
                 timeout: float = TIMEOUT_SECONDS):  # fmt: skip
        if not recipients:
            raise ValueError(f"{SMTP_ENV['recipients']}: no recipient")
        self.host, self.port, self.sender, self.recipients = host, port, sender, list(recipients)
        self.user, self.password, self.starttls, self.timeout = user, password, starttls, timeout
        self.name = f"smtp {host}:{port}"

    def send(self, alert: Alert) -> None:
        message = EmailMessage()
        message["Subject"] = f"[reduction_assets {alert.severity}] {alert.subject}"
        message["From"] = self.sender
        message["To"] = ", ".join(self.recipients)
        message.set_content(
            alert.text + "\n\n" + "\n".join(f"{key}: {value}" for key, value in alert.details.items())
        )
        try:
            with smtplib.SMTP(self.host, self.port, timeout=self.timeout) as smtp:
                if self.starttls:
                    smtp.starttls(context=ssl.create_default_context())
                if self.user:
                    smtp.login(self.user, self.password or "")
                smtp.send_message(message)
        except (OSError, smtplib.SMTPException) as err:
            # The exception text of a failed login can echo the credentials: only its type is kept.
            raise SinkError(f"{self.name}: {type(err).__name__}") from None


class SinkError(Exception):
    """A sink refused or could not be reached (the message names the sink, never a secret)."""


def send(alert: Alert, sinks: Sequence[Sink], *, attempts: int = ATTEMPTS,
         wait: Callable[[int], float] | None = None) -> list[Delivery]:  # fmt: skip
    """Send ``alert`` to every sink, each tried up to ``attempts`` times with exponential backoff;
    never raises: what could not be delivered is in the returned deliveries."""
    deliveries = []
    for sink in sinks:
        retrying = Retrying(
            stop=stop_after_attempt(attempts),
            wait=wait or wait_exponential(multiplier=0.5, max=4.0),
            reraise=False,
        )
        try:
            for attempt in retrying:
                with attempt:
                    sink.send(alert)
            deliveries.append(Delivery(sink.name, True))
        except RetryError as err:
            cause = err.last_attempt.exception()
            deliveries.append(Delivery(sink.name, False, f"{cause} (after {attempts} attempts)"))
    return deliveries


def sinks_from_settings(settings: dict[str, Any], log) -> list[Sink]:
    """The log sink and the sinks configured in ``settings`` (the keys of :data:`SMTP_ENV` and
    ``webhook_url``; empty values: not configured)."""
    sinks: list[Sink] = [LogSink(log)]
    if settings.get("webhook_url"):
        sinks.append(WebhookSink(settings["webhook_url"]))
    if settings.get("host"):
        sinks.append(
            SmtpSink(
                settings["host"],
                int(settings.get("port") or 25),
                settings.get("sender") or "reduction-assets@localhost",
                [r.strip() for r in (settings.get("recipients") or "").split(",") if r.strip()],
                user=settings.get("user") or None,
                password=settings.get("password") or None,
                starttls=str(settings.get("starttls") or "").lower() in ("1", "true", "yes"),
            )
        )
    return sinks
