"""Questions and their answers on the stub broker: the request handler answers to the
asker's reply-to address, never to the terminal's queue, and refuses what it dead-letters."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from cajasync.broker.ports import REASON_HEADER
from cajasync.broker.stub import Message, StubBroker
from cajasync.core import topology
from cajasync.core.db import make_engine, upgrade
from cajasync.core.identity import TerminalIdentity
from cajasync.core.settings import Settings
from cajasync.errors import CajasyncError, NoAnswer
from cajasync.processes.questions import ask
from inbox.requests import RequestHandler
from schemas.codec import encode
from schemas.questions import CountsAnswer, CountsQuestion
from tests.waiting import wait_for

SETTINGS = Settings(retry_initial_s=0.01, retry_max_s=0.05)
T1 = TerminalIdentity("T1", "L1", "PV1", "retail")


@pytest.fixture
def broker() -> StubBroker:
    broker = StubBroker()
    topology.declare_server(broker.channel())
    topology.declare_terminal(broker.channel(), "T1", "L1", "PV1", "retail")
    return broker


@pytest.fixture
def handler(broker: StubBroker, tmp_path: Path) -> Iterator[RequestHandler]:
    """The request handler running in a thread over a migrated SQLite store."""
    engine = make_engine(f"sqlite:///{tmp_path / 'server.db'}")
    upgrade(engine, "server")
    stop = threading.Event()
    handler = RequestHandler(engine, SETTINGS, stop=stop, broker=broker)
    thread = threading.Thread(target=handler.run, daemon=True)
    thread.start()
    yield handler
    stop.set()
    thread.join(10)
    engine.dispose()


def counts(terminal: str = "T1", topics: list[str] | None = None) -> CountsQuestion:
    return CountsQuestion(
        terminal=terminal,
        location="L1",
        pos="PV1",
        terminal_kind="retail",
        request_id=uuid.uuid4().hex,
        topics=topics or ["ventas", "productos"],
    )


def test_a_counts_question_is_answered_to_the_askers_address_not_the_terminals_queue(
    broker: StubBroker, handler: RequestHandler
) -> None:
    with broker.asking(SETTINGS, T1) as asking:
        answers = ask(asking, counts(), timeout=10)
    [answer] = answers
    assert isinstance(answer, CountsAnswer)
    assert [(c.topic, c.count) for c in answer.counts] == [("ventas", 0), ("productos", 0)]
    assert broker.messages(topology.terminal_queue("T1")) == []
    wait_until(lambda: handler.stats.questions == 1, "the question counted")


def test_a_question_naming_an_unknown_topic_is_dead_lettered_and_refused_at_once(
    broker: StubBroker, handler: RequestHandler
) -> None:
    with broker.asking(SETTINGS, T1) as asking, pytest.raises(CajasyncError, match="bogus"):
        ask(asking, counts(topics=["bogus"]), timeout=10)
    [dead] = broker.messages(topology.DEAD_QUEUE)
    assert "bogus" in dead.headers[REASON_HEADER]


def test_a_question_without_a_reply_address_is_dead_lettered(
    broker: StubBroker, handler: RequestHandler
) -> None:
    routing_key = topology.request_routing_key("T1", "counts")
    broker.publish(Message(topology.UP_EXCHANGE, routing_key, encode(counts()), user_id="guest"))
    wait_until(lambda: bool(broker.messages(topology.DEAD_QUEUE)), "the dead letter")
    [dead] = broker.messages(topology.DEAD_QUEUE)
    assert "reply_to" in dead.headers[REASON_HEADER]


def test_a_silent_server_is_no_answer_naming_server_run(broker: StubBroker) -> None:
    with broker.asking(SETTINGS, T1) as asking, pytest.raises(NoAnswer, match="server run"):
        ask(asking, counts(), timeout=0.2)


def wait_until(condition: Callable[[], bool], what: str) -> None:
    wait_for(condition, what, timeout=10)
