"""The server request handler: consume `cajasync.requests`, answer each terminal request.

Snapshots and refreshes, catch-ups and image requests are heavy reads, so they have their
own queue and a small prefetch, away from the ingest path. Each request is checked first
(inbox/answers.py): one that does not decode, or names a topic or stream its terminal is
not entitled to, goes to `cajasync.dlx` with its reason (confirmed) and is acked. Otherwise
its replies are read from one catalog snapshot and published to `t.<terminal>` with
confirms; the request is acked once they are all confirmed. The consume loop, with its
broker reconnects, is `cajasync.broker.consumer.Consumer` (an unacked request is delivered
again). A database that is away is waited for with `cajasync.core.store_faults.store_retry`
and the request answered then; a request whose reads the database refuses is dead-lettered with the
reason; a broken store, or an outage longer than `store_give_up_s`, gives the request
back to the queue and stops the handler.

A high-water request (a till set up again asks where its seqs continue) is answered by the
inbox store instead, which registers the till's new incarnation in the same transaction.

A question (counts, held operations, digests: schemas/questions.py) is answered from one
read snapshot of the server store (inbox/questions.py) to the asker's direct reply-to
address, never to the terminal's queue (`terminal run` may be consuming it). One without a
reply-to address is dead-lettered; one dead-lettered for any other reason also gets a
`Refused` answer, so its asker hears why at once instead of waiting for its timeout.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
from dataclasses import dataclass
from typing import Final

from sqlalchemy.engine import Engine

from cajasync.broker.consumer import Batching, Consumer
from cajasync.broker.ports import Broker, ConsumeSession, Delivery, Outbound, Replies
from cajasync.broker.rabbitmq import RabbitBroker
from cajasync.core.counters import counters_text
from cajasync.core.settings import Settings
from cajasync.core.store_faults import store_retry
from cajasync.core.topology import REQUESTS_QUEUE, declare_server
from cajasync.errors import (
    InvalidMessage,
    StoreDataError,
    StoreError,
    StoreUnavailable,
)
from inbox.answers import (
    CatchUpPlan,
    HighWaterPlan,
    ImagePlan,
    Plan,
    ReplayReportPlan,
    SnapshotPlan,
    StatusPlan,
    Tally,
    high_water_reply,
    plan,
    replies,
)
from inbox.catalog_reads import read_snapshot, reading_engine
from inbox.questions import EntryCache, QuestionPlan, question_answers
from inbox.registry import Lookup
from inbox.server_store.sql import SqlServerStore
from inbox.status import record_status
from inbox.zreconcile import record_replay_report
from schemas.codec import encode
from schemas.questions import Refused

log = logging.getLogger(__name__)

PREFETCH: Final = 4
POLL_S: Final = 0.05


@dataclass(slots=True)
class RequestStats:
    """What the request handler did so far."""

    received: int = 0
    snapshots: int = 0
    catch_ups: int = 0
    image_requests: int = 0
    high_water: int = 0  # high-water requests answered (new incarnations registered)
    replay_reports: int = 0  # tills saying which sales of a Z they have none for
    questions: int = 0  # counts, held, digest and entries questions answered
    statuses: int = 0  # till statuses kept (answered by nothing)
    dead_lettered: int = 0
    undeliverable: int = 0  # answered requests whose terminal has no queue
    replies_sent: int = 0  # confirmed and delivered to a terminal's queue
    records_sent: int = 0
    changes_sent: int = 0
    images_sent: int = 0

    def count(self, plan: Plan, tally: Tally) -> None:
        """Add one answered request."""
        match plan:
            case SnapshotPlan():
                self.snapshots += 1
            case CatchUpPlan():
                self.catch_ups += 1
            case ImagePlan():
                self.image_requests += 1
            case HighWaterPlan():
                self.high_water += 1
            case QuestionPlan():
                self.questions += 1
            case StatusPlan():
                self.statuses += 1
        self.records_sent += tally.records
        self.changes_sent += tally.changes
        self.images_sent += tally.images

    def __str__(self) -> str:
        return counters_text(self)


def run_requests(
    engine: Engine,
    settings: Settings,
    *,
    stop: threading.Event | None = None,
    until_idle: float | None = None,
    broker: Broker | None = None,
) -> RequestStats:
    """Answer requests until `stop` is set, or until none arrived for `until_idle` seconds."""
    reader = reading_engine(engine)
    try:
        handler = RequestHandler(
            reader, settings, stop=stop, until_idle=until_idle, writer=engine, broker=broker
        )
        return handler.run()
    finally:
        if reader is not engine:
            reader.dispose()


class RequestHandler:
    """One consumer of `cajasync.requests` over a server store, on any broker (RabbitMQ by
    default)."""

    def __init__(
        self,
        engine: Engine,
        settings: Settings,
        *,
        stop: threading.Event | None = None,
        until_idle: float | None = None,
        writer: Engine | None = None,
        broker: Broker | None = None,
    ) -> None:
        self.stats = RequestStats()
        self._engine = engine
        self._writer = writer or engine
        self._store = SqlServerStore(self._writer)  # registers incarnations
        self._registry = Lookup(self._writer, allow_shared=settings.allow_shared_user)
        self._settings = settings
        self._stop = stop
        self._until_idle = until_idle
        self._last_handled = time.monotonic()
        self._retry = store_retry(settings, what="request handler", stop=stop)
        self._answers: Replies | None = None
        self._entries = EntryCache()  # a diff's entries, reused between its rounds
        self._loop = Consumer(
            broker or RabbitBroker(settings.broker_url),
            settings,
            what="the request handler",
            queue=REQUESTS_QUEUE,
            prefetch=PREFETCH,
            batching=Batching(1, POLL_S),
            declare=declare_server,
            stop=stop,
            until_idle=until_idle,
        )

    def run(self) -> RequestStats:
        """Consume until done, reconnecting with the broker reconnect policy."""
        self._loop.run(self)
        return self.stats

    # -- cajasync.broker.consumer.Batches ---------------------------------------------------

    def on_session(self, session: ConsumeSession) -> None:
        self._answers = session.replies()
        self._retry = store_retry(  # waits for the store without starving the broker session
            self._settings, what="request handler", stop=self._stop, sleep=session.sleep
        )
        self._last_handled = time.monotonic()

    def on_batch(self, deliveries: list[Delivery], out: Outbound) -> None:
        assert self._answers is not None
        for delivery in deliveries:
            self._handle(out, self._answers, delivery)
        self._last_handled = time.monotonic()

    def done(self, out: Outbound, *, holding: bool) -> bool:
        """True once no request arrived for `until_idle` seconds after the last one."""
        return (
            self._until_idle is not None
            and time.monotonic() - self._last_handled >= self._until_idle
        )

    def _handle(self, out: Outbound, answers: Replies, delivery: Delivery) -> None:
        """Answer one request, or dead-letter it; then ack it."""
        self.stats.received += 1
        try:
            checked = self._retry(
                plan, delivery.body, delivery.routing_key, delivery.user_id, self._registry
            )
            if isinstance(checked, QuestionPlan) and not (
                delivery.reply_to and delivery.correlation_id
            ):
                raise InvalidMessage("a question needs reply_to and correlation_id to answer to")
        except InvalidMessage as exc:
            out.dead_letter(delivery, exc.reason)
            self._refuse(answers, delivery, exc.reason)
            self.stats.dead_lettered += 1
        else:
            try:
                self._retry(self._answer, answers, checked, delivery)
            except StoreDataError as exc:
                out.dead_letter(delivery, f"the server store refused its reads ({exc.reason})")
                self.stats.dead_lettered += 1
            except StoreError as exc:
                out.nack(delivery.delivery_tag)
                if isinstance(exc, StoreUnavailable) and self._stopping():
                    log.warning("request handler stopped while the store was away; requeued")
                    return
                raise
        out.ack(delivery.delivery_tag)

    def _answer(self, answers: Replies, checked: Plan, delivery: Delivery) -> None:
        """Send a checked request's replies from one catalog snapshot; return once the broker
        confirmed them all."""
        terminal = checked.request.terminal
        if isinstance(checked, ReplayReportPlan):  # recorded; nothing goes back
            record_replay_report(self._writer, self._settings, checked.request)
            self.stats.replay_reports += 1
            return
        tally = Tally()
        sent = 0
        if isinstance(checked, StatusPlan):  # kept, not answered
            record_status(self._writer, checked.request, now=dt.datetime.now(dt.UTC))
            self.stats.count(checked, tally)
            return
        if isinstance(checked, QuestionPlan):
            assert delivery.reply_to is not None
            assert delivery.correlation_id is not None
            with read_snapshot(self._engine, doing=f"answering terminal {terminal}") as reader:
                for body in question_answers(checked, reader.connection, self._entries):
                    answers.reply(delivery.reply_to, delivery.correlation_id, body)
                    sent += 1
        elif isinstance(checked, HighWaterPlan):
            sent = int(answers.send(terminal, high_water_reply(checked, self._store)))
        else:
            with read_snapshot(self._engine, doing=f"answering terminal {terminal}") as reader:
                for body in replies(checked, reader, tally):
                    if not answers.send(terminal, body):
                        break
                    sent += 1
        if answers.settle():
            self.stats.replies_sent += sent
            self.stats.count(checked, tally)
        else:
            self.stats.undeliverable += 1

    def _refuse(self, answers: Replies, delivery: Delivery, reason: str) -> None:
        """Tell a question's asker why it will get no answer (nothing for other requests)."""
        if not (delivery.reply_to and delivery.correlation_id):
            return
        refusal = Refused(request_id=delivery.correlation_id, reason=reason)
        answers.reply(delivery.reply_to, delivery.correlation_id, encode(refusal))
        answers.settle()

    def _stopping(self) -> bool:
        return self._loop.stopping()
