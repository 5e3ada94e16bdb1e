"""The one blocking consumer loop: server ingest and the request handler both run on it.

    loop = Consumer(broker, settings, what="server ingest", queue=OPS_QUEUE, ...)
    loop.run(consumer)   # a `Batches` consumer: on_session, on_batch, done

A run opens consume sessions with the broker reconnect policy (`reconnect_policy`: backoff
until `stop` is set, or for `until_idle` seconds), consumes `queue` with `prefetch`, gathers
deliveries and hands them over as one batch once there are `batch` of them, once the first
is `flush_s` old, or once nothing arrived for `flush_s`. The consumer acks a batch itself
(after its store committed) or nacks it back. Between deliveries the consumer says whether
it is `done`; a stop flushes what is gathered first. A broker that goes away is retried
with the policy; unacked deliveries come again on the next session.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from cajasync.broker.ports import Broker, ConsumeSession, Delivery, Outbound
from cajasync.broker.rabbitmq import reconnect_policy
from cajasync.core.settings import Settings
from cajasync.errors import BrokerUnavailable


class Batches(Protocol):
    """What a consumer does with its session and its deliveries."""

    def on_session(self, session: ConsumeSession) -> None:
        """A session opened (make its store waits serviced by `session.sleep`)."""

    def on_batch(self, deliveries: list[Delivery], out: Outbound) -> None:
        """Handle a batch, then ack it (or nack it back) through `out`."""

    def done(self, out: Outbound, *, holding: bool) -> bool:
        """Between deliveries: True to end the run (`holding`: a batch is being gathered)."""


@dataclass(frozen=True)
class Batching:
    """How deliveries are gathered: up to `size`, for at most `flush_s` seconds."""

    size: int
    flush_s: float


class Consumer:
    """Consume one queue in batches until stopped or done, reconnecting."""

    def __init__(
        self,
        broker: Broker,
        settings: Settings,
        *,
        what: str,
        queue: str,
        prefetch: int,
        batching: Batching,
        declare: Callable[[Any], object],
        stop: threading.Event | None = None,
        until_idle: float | None = None,
    ) -> None:
        self._broker = broker
        self._settings = settings
        self._what = what
        self._queue = queue
        self._prefetch = prefetch
        self._batching = batching
        self._declare = declare
        self._stop = stop
        self._until_idle = until_idle
        self.last_arrival = time.monotonic()

    def run(self, consumer: Batches) -> None:
        """Consume until `consumer` is done or `stop` is set; BrokerUnavailable if the broker
        stays away past `until_idle` (never while `stop` is unset and `until_idle` None)."""
        policy = reconnect_policy(
            self._settings, what=self._what, stop=self._stop, give_up_after=self._until_idle
        )
        try:
            policy(self._session, consumer)
        except BrokerUnavailable:
            if not self.stopping():
                raise

    def stopping(self) -> bool:
        return self._stop is not None and self._stop.is_set()

    def quiet(self) -> bool:
        """Nothing arrived for `until_idle` seconds."""
        return (
            self._until_idle is not None
            and time.monotonic() - self.last_arrival >= self._until_idle
        )

    def _session(self, consumer: Batches) -> None:
        with self._broker.consuming(
            self._queue,
            prefetch=self._prefetch,
            declare=self._declare,
            connecting=f"connecting {self._what}",
            stop=self._stop,
        ) as session:
            consumer.on_session(session)
            self._consume(session, consumer)

    def _consume(self, session: ConsumeSession, consumer: Batches) -> None:
        out = session.out
        size, flush_s = self._batching.size, self._batching.flush_s
        self.last_arrival = time.monotonic()
        pending: list[Delivery] = []
        first_at = 0.0
        for delivery in session.deliveries(timeout=flush_s):
            now = time.monotonic()
            if delivery is not None:
                first_at = first_at if pending else now
                pending.append(delivery)
                self.last_arrival = now
            idle = delivery is None
            if pending and (idle or len(pending) >= size or now - first_at >= flush_s):
                consumer.on_batch(pending, out)
                pending = []
            if self.stopping():
                if pending:
                    consumer.on_batch(pending, out)
                break
            if consumer.done(out, holding=bool(pending)):
                break
        session.cancel()
