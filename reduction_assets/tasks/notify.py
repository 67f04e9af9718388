"""Archive notifications: the outbox's pending messages published to an AMQP exchange (kombu).

A message is written to the catalog's outbox in the same transaction as its archive record, so a
broker that is down loses nothing: whatever is pending is published by the next delivery (every
archive run starts and ends with one). Publishing waits for the broker's confirmation before the
message is marked delivered; each message carries its record id as ``message_id``, so the rare
duplicate after a crash between the two is recognisable.
"""

from __future__ import annotations

from dataclasses import dataclass

import kombu
from kombu.exceptions import KombuError, OperationalError

from reduction_assets.catalog import Catalog
from reduction_assets.catalog.archive import mark_attempt_failed, mark_delivered, pending_messages
from reduction_assets.support.secrets import without_credentials

EXCHANGE_TYPE = "topic"  # routing key <level>.<instrument>: consumers bind what they want


@dataclass(frozen=True)
class Delivery:
    delivered: int
    pending: int
    error: str | None = None


def redacted(text: str, broker_url: str) -> str:
    """``text`` without the broker URL's credentials (user:password@ anywhere in it)."""
    return without_credentials(text.replace(broker_url, "<broker>"))


def deliver_pending(
    catalog: Catalog, broker_url: str, exchange: str, *, connect_timeout: float = 5.0, limit: int = 1000
) -> Delivery:
    """Publish the outbox's pending messages (oldest first) to ``exchange``; what cannot be
    published stays pending with the error recorded (never the URL's credentials)."""
    with catalog.session() as session:
        messages = pending_messages(session, limit)
    if not messages:
        return Delivery(0, 0)
    delivered = 0
    try:
        with kombu.Connection(
            broker_url, connect_timeout=connect_timeout, transport_options={"confirm_publish": True}
        ) as connection:
            connection.ensure_connection(max_retries=2, interval_start=0.2, interval_step=0.5)
            target = kombu.Exchange(exchange, type=EXCHANGE_TYPE, durable=True)
            producer = connection.Producer(exchange=target, serializer="json", auto_declare=True)
            for message in messages:
                payload = message.payload
                producer.publish(
                    payload,
                    routing_key=f"{payload['level']}.{payload['instrument']}",
                    message_id=str(payload["record_id"]),
                    delivery_mode=2,  # persistent
                    retry=True,
                    retry_policy={"max_retries": 2, "interval_start": 0.2, "interval_step": 0.5},
                )
                with catalog.session() as session:
                    mark_delivered(session, message.id)
                delivered += 1
    except (OperationalError, KombuError, OSError, ConnectionError) as err:
        error = redacted(f"{type(err).__name__}: {err}", broker_url)
        with catalog.session() as session:
            mark_attempt_failed(session, [m.id for m in messages[delivered:]], error)
        return Delivery(delivered, len(messages) - delivered, error)
    return Delivery(delivered, 0)
