"""What a dead letter says about itself: our headers when our code dead-lettered it,
RabbitMQ's `x-death` when the broker did (a delivery limit), else its routing key."""

from __future__ import annotations

import datetime as dt

import pika

from cajasync.broker.dead import Selection, dead_letter, letter_id
from cajasync.broker.ports import DEAD_AT_HEADER, QUEUE_HEADER, REASON_HEADER, USER_HEADER
from cajasync.core import topology

WHEN = dt.datetime(2026, 3, 2, 12, 30, tzinfo=dt.UTC)


def test_a_dead_letter_of_ours_is_described_by_our_headers() -> None:
    properties = pika.BasicProperties(
        message_id="op/2",
        headers={
            REASON_HEADER: "sale 1-2 paid 0 of 10",
            QUEUE_HEADER: topology.OPS_QUEUE,
            USER_HEADER: "CAJA-07",
            DEAD_AT_HEADER: WHEN.isoformat(),
        },
    )
    letter = dead_letter(properties, b"body", "op.CAJA-07.ventas")
    assert (letter.id, letter.queue, letter.terminal, letter.user_id) == (
        "op/2",
        topology.OPS_QUEUE,
        "CAJA-07",
        "CAJA-07",
    )
    assert (letter.reason, letter.dead_at, letter.size) == ("sale 1-2 paid 0 of 10", WHEN, 4)


def test_a_dead_letter_of_the_broker_is_described_by_x_death() -> None:
    death = {
        "queue": topology.REQUESTS_QUEUE,
        "reason": "delivery_limit",
        "exchange": topology.UP_EXCHANGE,
        "routing-keys": ["req.CAJA-09.snapshot"],
        "time": WHEN.replace(tzinfo=None),
        "count": 1,
    }
    properties = pika.BasicProperties(user_id="guest", headers={"x-death": [death]})
    letter = dead_letter(properties, b"x", "req.CAJA-09.snapshot")
    assert (letter.queue, letter.reason, letter.terminal, letter.dead_at) == (
        topology.REQUESTS_QUEUE,
        "delivery limit reached",
        "CAJA-09",
        WHEN,
    )


def test_a_dead_letter_without_headers_is_placed_by_its_routing_key() -> None:
    letter = dead_letter(pika.BasicProperties(), b"\xc1", "op.CAJA-01.pagos")
    assert (letter.queue, letter.terminal, letter.reason) == (
        topology.OPS_QUEUE,
        "CAJA-01",
        "unknown (no reason header)",
    )


def test_an_id_without_message_id_does_not_change_when_the_letter_is_listed_again() -> None:
    headers = {REASON_HEADER: "bad"}
    assert letter_id(None, b"a", headers) == letter_id(
        None, b"a", {**headers, "x-delivery-count": 3}
    )
    assert letter_id(None, b"a", headers) != letter_id(None, b"b", headers)


def test_a_reason_filter_is_a_case_insensitive_substring() -> None:
    letter = dead_letter(
        pika.BasicProperties(headers={REASON_HEADER: "X is a FLOAT"}), b"", "op.T.ventas"
    )
    assert Selection(reason="is a float").matches(letter)
    assert not Selection(reason="negative").matches(letter)
    assert not Selection(terminal="U").matches(letter)
