"""The feed relay's pika adapter: change events out to `cajasync.down`, on the broker session.

`FeedLink` is a `ConfirmSession` (one `pika.SelectConnection`, one channel in confirm mode)
that declares `cajasync.down` and publishes `Event`s; the relay (`outbox.feed_relay`) is its
`SessionHandler`. pika's exceptions stop here: `run()` raises BrokerUnavailable.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import pika
import pika.channel
from pika.exchange_type import ExchangeType

from cajasync.broker.rabbitmq import broker_errors
from cajasync.broker.session import CONTENT_TYPE, PERSISTENT, ConfirmSession, SessionHandler
from cajasync.core.settings import Settings
from cajasync.core.topology import DOWN_EXCHANGE


@dataclass(frozen=True)
class Event:
    """One message to publish: changes of one stream, in seq order."""

    routing_key: str
    stream: str
    first_seq: int
    last_seq: int
    ids: list[int]
    body: bytes


class FeedLink(ConfirmSession[SessionHandler]):
    """One publishing session on `cajasync.down`; `run()` blocks until closed or lost."""

    def __init__(self, settings: Settings, handler: SessionHandler) -> None:
        super().__init__(
            settings.broker_url,
            handler,
            connecting="connecting the feed relay",
            serving="publishing change events",
        )

    def publish(self, event: Event) -> None:
        """Publish one change event, persistent; not mandatory (no terminal bound is normal)."""
        properties = pika.BasicProperties(
            delivery_mode=PERSISTENT,
            content_type=CONTENT_TYPE,
            message_id=f"{event.stream}/{event.first_seq}-{event.last_seq}",
            timestamp=int(time.time()),
            headers={"stream": event.stream, "seq": event.last_seq},
        )
        with broker_errors(self._url, f"publishing {event.stream} seq {event.first_seq}"):
            self._open_channel().basic_publish(
                DOWN_EXCHANGE, event.routing_key, event.body, properties
            )

    def publish_heads(self, routing_key: str, body: bytes, *, ttl_s: float) -> None:
        """Publish a stream-heads message; it expires after `ttl_s` (a newer one follows, so
        the queue of a terminal that is offline does not keep piling them up)."""
        properties = pika.BasicProperties(
            content_type=CONTENT_TYPE,
            expiration=str(max(1, round(ttl_s * 1000))),
            timestamp=int(time.time()),
            headers={"heads": True},
        )
        with broker_errors(self._url, f"publishing stream heads to {routing_key}"):
            self._open_channel().basic_publish(DOWN_EXCHANGE, routing_key, body, properties)

    def _declare(self, channel: pika.channel.Channel, then: Callable[[], None]) -> None:
        channel.exchange_declare(
            DOWN_EXCHANGE, ExchangeType("topic"), durable=True, callback=lambda _f: then()
        )
