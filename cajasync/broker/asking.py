"""Questions to the server over RabbitMQ direct reply-to (`cajasync.broker.ports.Asking`).

The asker consumes the pseudo-queue `amq.rabbitmq.reply-to` (auto-ack) on a channel, then
publishes each question on that same channel to `cajasync.up` (`req.<terminal>.<kind>`,
confirmed, mandatory) with `reply_to` set and `correlation_id` = the question's
`request_id`; the server publishes the answers to the default exchange with the reply-to
address as routing key (`cajasync.broker.replies`). Nothing is declared and nothing is
left behind: the address dies with the channel. The question expires in the queue after
the asker's timeout, so a server that comes back later does not answer nobody.

Answers of an earlier, abandoned question on the same channel are dropped by correlation
id. pika's exceptions stop here: BrokerUnavailable, CajasyncError for a refused publish,
NoAnswer when the server is silent.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, Final

import pika
import pika.exceptions

from cajasync.broker.ports import CONTENT_TYPE, request_kind
from cajasync.broker.rabbitmq import broker_errors, close_quietly, connect, describe, username
from cajasync.core.identity import TerminalIdentity
from cajasync.core.settings import Settings
from cajasync.core.topology import UP_EXCHANGE, request_routing_key
from cajasync.errors import CajasyncError, NoAnswer
from schemas.codec import encode
from schemas.questions import Question

REPLY_TO: Final = "amq.rabbitmq.reply-to"
SLICE_S: Final = 0.25  # longest wait for broker events between checks of the deadline


def no_answer(timeout: float) -> NoAnswer:
    """The error of a server silent for `timeout` seconds."""
    return NoAnswer(
        f"the server did not answer within {timeout:g} s: is `cajasync server run` running "
        "and reachable?"
    )


def refused(kind: str, terminal: str, url: str, *, unroutable: bool) -> CajasyncError:
    """The error of a question the broker would not take."""
    if unroutable:
        return CajasyncError(
            f"the {kind} question of terminal {terminal} reached no queue: "
            "run `cajasync server init` against this broker"
        )
    return CajasyncError(
        f"RabbitMQ at {describe(url)} refused the {kind} question of terminal {terminal} "
        "(a queue is full or has no majority); try again"
    )


class PikaAsking:
    """One connection and channel asking questions of one terminal."""

    def __init__(self, settings: Settings, identity: TerminalIdentity) -> None:
        self._url = settings.broker_url
        self._terminal = identity.terminal
        self._user = username(self._url)
        self._doing = f"asking the server for terminal {identity.terminal}"
        self._answers: deque[tuple[str | None, bytes]] = deque()
        self._connection = connect(self._url, doing=self._doing)
        try:
            with broker_errors(self._url, self._doing):
                self._channel = self._connection.channel()
                self._channel.basic_consume(REPLY_TO, self._on_answer, auto_ack=True)
                self._channel.confirm_delivery()
        except BaseException:
            close_quietly(self._connection)
            raise

    def ask(self, question: Question, *, timeout: float, until: Callable[[bytes], bool]) -> int:
        body = encode(question)
        with broker_errors(self._url, self._doing):
            self._publish(question, body, timeout)
            deadline = time.monotonic() + timeout
            while True:
                while self._answers:
                    correlation_id, answer = self._answers.popleft()
                    if correlation_id == question.request_id and until(answer):
                        return len(body)
                left = deadline - time.monotonic()
                if left <= 0:
                    raise no_answer(timeout)
                self._connection.process_data_events(time_limit=min(left, SLICE_S))  # type: ignore[arg-type]

    def close(self) -> None:
        close_quietly(self._connection)

    def _publish(self, question: Question, body: bytes, timeout: float) -> None:
        kind = request_kind(question)
        properties = pika.BasicProperties(
            content_type=CONTENT_TYPE,
            user_id=self._user,
            reply_to=REPLY_TO,
            correlation_id=question.request_id,
            expiration=str(max(1, round(timeout * 1000))),
            headers={"terminal": self._terminal, "request": kind},
        )
        try:
            self._channel.basic_publish(
                UP_EXCHANGE,
                request_routing_key(self._terminal, kind),
                body,
                properties,
                mandatory=True,
            )
        except pika.exceptions.UnroutableError:
            raise refused(kind, self._terminal, self._url, unroutable=True) from None
        except pika.exceptions.NackError:
            raise refused(kind, self._terminal, self._url, unroutable=False) from None

    def _on_answer(self, _channel: Any, _method: Any, properties: Any, body: bytes) -> None:
        self._answers.append((properties.correlation_id, body))


@contextmanager
def pika_asking(settings: Settings, identity: TerminalIdentity) -> Iterator[PikaAsking]:
    """A question channel on its own connection (`cajasync.broker.ports.Askers`)."""
    asking = PikaAsking(settings, identity)
    try:
        yield asking
    finally:
        asking.close()
