"""The terminal relay against the real RabbitMQ, with a SQLite terminal database."""

from __future__ import annotations

import dataclasses
import socket
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.engine import Engine

from cajasync.core.identity import TerminalIdentity
from cajasync.core.settings import Settings
from cajasync.core.terminal_tables import outbox
from cajasync.errors import BrokerUnavailable
from cajasync.processes.terminal import drain, run_terminal
from cajasync.processes.terminal_init import init_terminal
from outbox.record import record
from schemas import decode_op
from schemas.envelope import ReplayRequest
from tests.integration.relay_support import (
    Tap,
    acked,
    blocking_channel,
    cash_payment,
    declare_server_topology,
    private_vhost,
    receipt,
    record_sales,
    rejected,
    rows,
    running_relay,
    send_down,
    states,
)
from tests.waiting import wait_for

pytestmark = pytest.mark.rabbitmq


@dataclasses.dataclass
class Terminal:
    id: str
    engine: Engine
    settings: Settings


@pytest.fixture(scope="session")
def relay_broker_url(broker_url: str) -> Iterator[str]:
    """A private vhost with the server topology (the shared one if rabbitmqctl is unusable)."""
    with private_vhost(broker_url, "relay") as url:
        target = url or broker_url
        declare_server_topology(target)
        yield target


@pytest.fixture
def broker_channel(relay_broker_url: str) -> Iterator[Any]:
    with blocking_channel(relay_broker_url) as channel:
        yield channel


@pytest.fixture
def make_terminal(
    tmp_path: Path, settings: Settings, new_terminal_id: Callable[[], str], relay_broker_url: str
) -> Iterator[Callable[..., Terminal]]:
    """Initialised terminals (database + queue) on the relay tests' vhost."""
    engines: list[Engine] = []

    def make(**overrides: Any) -> Terminal:
        terminal = new_terminal_id()
        own = settings.with_overrides(broker_url=relay_broker_url, **overrides)
        identity = TerminalIdentity(terminal, "L1", "PV1", "retail")
        engine = init_terminal(str(tmp_path / f"{terminal}.db"), identity, own)
        engines.append(engine)
        return Terminal(terminal, engine, own)

    yield make
    for engine in engines:
        engine.dispose()


@pytest.fixture
def terminal(make_terminal: Callable[..., Terminal]) -> Terminal:
    return make_terminal()


def test_rows_are_published_in_seq_order_with_routing_key_and_properties(
    terminal: Terminal, broker_channel: Any
) -> None:
    tap = Tap(broker_channel, terminal.id)
    record_sales(terminal.engine, 3)
    with terminal.engine.begin() as connection:
        record(connection, cash_payment())

    drain(terminal.engine, terminal.settings)

    messages = tap.take(4)
    outbox_rows = rows(terminal.engine)
    assert [props.headers["seq"] for _m, props, _b in messages] == [1, 2, 3, 4]
    for (method, props, body), row in zip(messages, outbox_rows, strict=True):
        assert method.exchange == "cajasync.up"
        assert method.routing_key == f"op.{terminal.id}.{row.topic}"
        assert body == row.body
        assert props.delivery_mode == 2
        assert props.content_type == "application/msgpack"
        assert props.message_id == f"{row.op_id}/{row.version}"
        assert props.user_id == "guest"
        assert props.headers == {"terminal": terminal.id, "seq": row.seq, "topic": row.topic}
        assert decode_op(body).seq == row.seq
    assert [row.topic for row in outbox_rows] == ["ventas", "ventas", "ventas", "pagos"]


def test_drain_confirms_every_pending_row_and_marks_it_sent(terminal: Terminal) -> None:
    record_sales(terminal.engine, 250)

    confirmed = drain(terminal.engine, terminal.settings)

    assert confirmed == 250
    assert {row.state for row in rows(terminal.engine)} == {"sent"}
    assert all(row.sent_at is not None and row.attempts == 1 for row in rows(terminal.engine))


def test_drain_publishes_a_backlog_larger_than_the_window(
    make_terminal: Callable[..., Terminal],
) -> None:
    terminal = make_terminal(publish_window=16, claim_batch=10)
    record_sales(terminal.engine, 100)

    assert drain(terminal.engine, terminal.settings) == 100
    assert set(states(terminal.engine).values()) == {"sent"}


def test_drain_with_nothing_pending_returns_zero(terminal: Terminal) -> None:
    assert drain(terminal.engine, terminal.settings) == 0


def test_server_receipts_turn_sent_rows_acked_or_rejected(terminal: Terminal) -> None:
    record_sales(terminal.engine, 3)
    drain(terminal.engine, terminal.settings)

    with running_relay(terminal.engine, terminal.settings) as relay:
        send_down(
            terminal.settings.broker_url,
            terminal.id,
            receipt(
                terminal.id,
                acked(terminal.engine, 1),
                acked(terminal.engine, 2),
                rejected(terminal.engine, 3, "totals do not match"),
            ),
        )
        wait_for(lambda: "sent" not in states(terminal.engine).values(), "the receipt", relay)
        stats = relay.finish()

    by_seq = {row.seq: row for row in rows(terminal.engine)}
    assert [by_seq[seq].state for seq in (1, 2, 3)] == ["acked", "acked", "rejected"]
    assert by_seq[3].last_error == "totals do not match"
    assert all(row.settled_at is not None for row in by_seq.values())
    assert (stats.receipts, stats.acked, stats.rejected) == (1, 2, 1)


def test_the_relay_publishes_new_rows_and_applies_their_receipts_while_running(
    terminal: Terminal, broker_channel: Any
) -> None:
    tap = Tap(broker_channel, terminal.id)
    with running_relay(terminal.engine, terminal.settings) as relay:
        recorded = record_sales(terminal.engine, 5)
        assert tap.seqs(5) == [1, 2, 3, 4, 5]
        wait_for(lambda: set(states(terminal.engine).values()) == {"sent"}, "the confirms", relay)
        items = [acked(terminal.engine, r.seq) for r in recorded]
        send_down(terminal.settings.broker_url, terminal.id, receipt(terminal.id, *items))
        wait_for(lambda: set(states(terminal.engine).values()) == {"acked"}, "the receipts", relay)
        stats = relay.finish()

    assert (stats.published, stats.confirmed, stats.acked) == (5, 5, 5)


def test_a_replay_request_publishes_the_requested_rows_again(
    terminal: Terminal, broker_channel: Any
) -> None:
    record_sales(terminal.engine, 4)
    drain(terminal.engine, terminal.settings)
    tap = Tap(broker_channel, terminal.id)

    with running_relay(terminal.engine, terminal.settings) as relay:
        request = ReplayRequest(terminal=terminal.id, from_seq=2, to_seq=3)
        send_down(terminal.settings.broker_url, terminal.id, request)
        assert tap.seqs(2) == [2, 3]
        wait_for(lambda: set(states(terminal.engine).values()) == {"sent"}, "the confirms", relay)
        stats = relay.finish()

    assert stats.replays_requested == 1
    assert stats.published == 2
    assert [row.attempts for row in rows(terminal.engine)] == [1, 2, 2, 1]


def test_a_replay_request_sends_even_acked_rows_again(
    terminal: Terminal, broker_channel: Any
) -> None:
    record_sales(terminal.engine, 2)
    drain(terminal.engine, terminal.settings)
    tap = Tap(broker_channel, terminal.id)

    with running_relay(terminal.engine, terminal.settings) as relay:
        url = terminal.settings.broker_url
        send_down(
            url,
            terminal.id,
            receipt(terminal.id, acked(terminal.engine, 1), acked(terminal.engine, 2)),
        )
        wait_for(lambda: set(states(terminal.engine).values()) == {"acked"}, "the receipt", relay)
        send_down(url, terminal.id, ReplayRequest(terminal=terminal.id, from_seq=1, to_seq=2))
        assert tap.seqs(2) == [1, 2]


def test_rows_put_back_to_pending_by_hand_are_published_again_by_a_running_relay(
    terminal: Terminal, broker_channel: Any
) -> None:
    tap = Tap(broker_channel, terminal.id)
    with running_relay(terminal.engine, terminal.settings) as relay:
        record_sales(terminal.engine, 3)
        assert tap.seqs(3) == [1, 2, 3]
        wait_for(lambda: set(states(terminal.engine).values()) == {"sent"}, "the confirms", relay)
        with terminal.engine.begin() as connection:  # what `cajasync pending replay` does
            connection.execute(
                outbox.update().where(outbox.c.seq == 2).values(state="pending", sent_at=None)
            )
        assert tap.seqs(1) == [2]
        wait_for(lambda: states(terminal.engine)[2] == "sent", "the confirm", relay)


def test_sent_rows_without_a_receipt_are_published_again_after_resend_after_s(
    make_terminal: Callable[..., Terminal], broker_channel: Any
) -> None:
    terminal = make_terminal(resend_after_s=0.3)
    record_sales(terminal.engine, 3)
    drain(terminal.engine, terminal.settings)
    tap = Tap(broker_channel, terminal.id)

    with running_relay(terminal.engine, terminal.settings) as relay:
        assert sorted(tap.seqs(3)) == [1, 2, 3]
        send_down(
            terminal.settings.broker_url,
            terminal.id,
            receipt(terminal.id, *(acked(terminal.engine, s) for s in (1, 2, 3))),
        )
        wait_for(lambda: set(states(terminal.engine).values()) == {"acked"}, "the receipt", relay)
        stats = relay.finish()

    assert stats.resent >= 3
    assert all(row.attempts >= 2 for row in rows(terminal.engine))


def test_an_undecodable_server_message_is_dropped_without_blocking_the_receipts_behind_it(
    terminal: Terminal, broker_channel: Any
) -> None:
    record_sales(terminal.engine, 1)
    drain(terminal.engine, terminal.settings)
    url = terminal.settings.broker_url

    with running_relay(terminal.engine, terminal.settings) as relay:
        send_down(url, terminal.id, b"\xc1 not msgpack")
        send_down(url, terminal.id, receipt("SOMEONE-ELSE", acked(terminal.engine, 1)))
        send_down(url, terminal.id, receipt(terminal.id, acked(terminal.engine, 1)))
        wait_for(lambda: states(terminal.engine) == {1: "acked"}, "the receipt", relay)

    queue = broker_channel.queue_declare(f"cajasync.t.{terminal.id}", passive=True)
    assert queue.method.message_count == 0  # nothing requeued


def test_nacked_ops_stay_pending_with_the_reason_and_are_retried(
    terminal: Terminal, broker_channel: Any
) -> None:
    full = {"x-max-length": 0, "x-overflow": "reject-publish"}
    Tap(broker_channel, terminal.id, arguments=full)
    record_sales(terminal.engine, 2)

    confirmed = drain(terminal.engine, terminal.settings)

    assert confirmed == 0
    for row in rows(terminal.engine):
        assert row.state == "pending"
        assert row.attempts == 1
        assert "nacked by the broker" in row.last_error


def test_a_stopped_relay_returns_its_stats(terminal: Terminal) -> None:
    record_sales(terminal.engine, 2)
    with running_relay(terminal.engine, terminal.settings) as relay:
        wait_for(lambda: set(states(terminal.engine).values()) == {"sent"}, "the confirms", relay)
        stats = relay.finish()

    assert (stats.published, stats.confirmed, stats.reconnects) == (2, 2, 0)


def test_until_idle_ends_the_run_once_everything_is_sent_and_quiet(terminal: Terminal) -> None:
    record_sales(terminal.engine, 5)

    stats = run_terminal(terminal.engine, terminal.settings, until_idle=0.5)

    assert stats.confirmed == 5
    assert set(states(terminal.engine).values()) == {"sent"}


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_an_unreachable_broker_is_retried_until_stopped_while_the_pos_keeps_recording(
    terminal: Terminal,
) -> None:
    offline = terminal.settings.with_overrides(
        broker_url=f"amqp://guest:guest@127.0.0.1:{_closed_port()}/%2F",
        retry_initial_s=0.05,
        retry_max_s=0.2,
    )

    with running_relay(terminal.engine, offline) as relay:
        record_sales(terminal.engine, 3)
        wait_for(lambda: relay.latest.reconnects >= 3, "reconnect attempts", relay)
        record_sales(terminal.engine, 2, first=4)
        stats = relay.finish()

    assert stats.reconnects >= 3
    assert stats.published == 0
    assert list(states(terminal.engine).values()) == ["pending"] * 5


def test_rows_recorded_while_the_broker_was_unreachable_go_out_once_it_is_back(
    terminal: Terminal,
) -> None:
    offline = terminal.settings.with_overrides(
        broker_url=f"amqp://guest:guest@127.0.0.1:{_closed_port()}/%2F"
    )
    with running_relay(terminal.engine, offline) as relay:
        record_sales(terminal.engine, 3)
        wait_for(lambda: relay.latest.reconnects >= 1, "a reconnect attempt", relay)

    assert drain(terminal.engine, terminal.settings) == 3


def test_until_idle_with_an_unreachable_broker_raises_broker_unavailable(
    terminal: Terminal,
) -> None:
    offline = terminal.settings.with_overrides(
        broker_url=f"amqp://guest:guest@127.0.0.1:{_closed_port()}/%2F", retry_max_s=0.2
    )
    record_sales(terminal.engine, 1)

    with pytest.raises(BrokerUnavailable, match="unreachable while connecting"):
        run_terminal(terminal.engine, offline, until_idle=0.5)

    assert states(terminal.engine) == {1: "pending"}
