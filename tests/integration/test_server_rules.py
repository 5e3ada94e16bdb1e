"""Server ingest's pure rules (no broker, no database): classification, receipts, gap timing."""

from __future__ import annotations

import datetime as dt
import uuid
from decimal import Decimal

import msgspec
import pytest
import sqlalchemy as sa

from inbox.classify import Delivery, classify, sender
from inbox.gaps import GapTracker
from inbox.rabbitmq import receipts_of
from inbox.store import Accepted, Gap, Rejection, Verdict
from inbox.store.base import AMOUNT_DIGITS, AMOUNT_PLACES, storage_problem
from inbox.store.tables import operations
from schemas import CashPayment, OpEnvelope, Sale, SaleLine, SalePayment, SaleTotals, encode

NOW = dt.datetime(2026, 3, 2, 12, 30, tzinfo=dt.UTC)
OP_ID = uuid.UUID("0b6f3a52-6c77-4f1e-9a39-3f6ad9a4c001")


def sale() -> Sale:
    line = SaleLine(product="P1", quantity=Decimal(1), unit_price=Decimal(10), tax_rate=Decimal(0))
    totals = SaleTotals.of([line])
    return Sale(
        book="A",
        number=7,
        date=NOW,
        seller="S1",
        lines=[line],
        payments=[SalePayment(method="cash", amount=totals.total)],
        totals=totals,
    )


def envelope(
    terminal: str = "T1", seq: int = 4, op: Sale | CashPayment | None = None
) -> OpEnvelope:
    return OpEnvelope(
        terminal=terminal, seq=seq, op_id=OP_ID, version=2, recorded_at=NOW, op=op or sale()
    )


def delivery(
    body: bytes,
    *,
    routing_key: str = "op.T1.ventas",
    user_id: str | None = "guest",
    message_id: str | None = f"{OP_ID}/2",
) -> Delivery:
    return Delivery(
        delivery_tag=1,
        routing_key=routing_key,
        body=body,
        message_id=message_id,
        user_id=user_id,
        headers={"terminal": "T1", "seq": 4, "topic": "ventas"},
    )


def test_valid_operation_on_its_own_route_is_accepted() -> None:
    assert classify(delivery(encode(envelope()))) == Accepted(envelope())


def test_undecodable_body_is_rejected_with_what_the_properties_tell() -> None:
    rejection = classify(delivery(b"\xc1"))
    assert isinstance(rejection, Rejection)
    assert (rejection.terminal, rejection.seq, rejection.op_id, rejection.version) == (
        "T1",
        4,
        str(OP_ID),
        2,
    )
    assert rejection.topic == "ventas"
    assert "undecodable" in rejection.reason


def test_unparseable_message_id_leaves_the_op_unknown() -> None:
    rejection = classify(delivery(b"\xc1", message_id="nonsense"))
    assert isinstance(rejection, Rejection)
    assert (rejection.op_id, rejection.version, rejection.seq) == (None, None, 4)


def test_operation_failing_validation_is_rejected_with_the_rule() -> None:
    broken = msgspec.structs.replace(
        sale(), totals=SaleTotals(net=Decimal(1), tax=Decimal(0), total=Decimal(1))
    )
    rejection = classify(delivery(encode(envelope(op=broken))))
    assert isinstance(rejection, Rejection)
    assert "totals" in rejection.reason
    assert (rejection.terminal, rejection.seq) == ("T1", 4)


def test_operation_on_another_terminals_route_is_rejected() -> None:
    rejection = classify(delivery(encode(envelope("T2")), routing_key="op.T1.ventas"))
    assert isinstance(rejection, Rejection)
    assert "does not match" in rejection.reason
    assert (rejection.terminal, rejection.seq) == ("T1", 4)  # the route's seq, from the headers


def test_operation_under_another_topic_is_rejected() -> None:
    rejection = classify(delivery(encode(envelope()), routing_key="op.T1.pagos"))
    assert isinstance(rejection, Rejection)
    assert "does not match" in rejection.reason


def test_broker_user_of_another_terminal_is_rejected_and_answered_to_that_user() -> None:
    rejection = classify(delivery(encode(envelope()), user_id="T9"))
    assert isinstance(rejection, Rejection)
    assert "broker user 'T9'" in rejection.reason
    assert rejection.terminal == "T9"


def test_terminals_own_broker_user_is_accepted() -> None:
    assert isinstance(classify(delivery(encode(envelope()), user_id="T1")), Accepted)


def test_sender_ignores_routing_keys_that_are_not_terminal_ids() -> None:
    odd = Delivery(delivery_tag=1, routing_key="op.a b.ventas", body=b"", headers={})
    assert sender(odd) is None


def test_seq_beyond_the_store_columns_is_rejected() -> None:
    rejection = classify(delivery(encode(envelope(seq=2**40))))
    assert isinstance(rejection, Rejection)
    assert "exceed" in rejection.reason


def cash_payment(amount: str) -> CashPayment:
    return CashPayment(
        kind="advance",
        payee_kind="supplier",
        payee="SUP1",
        amount=Decimal(amount),
        method="cash",
        date=NOW,
    )


@pytest.mark.parametrize(
    "amount", ["99999999999999.999", "99999999999999.995", "-99999999999999.995"]
)
def test_amount_that_rounds_to_ten_to_the_fourteen_at_cents_does_not_fit_the_store(
    amount: str,
) -> None:
    problem = storage_problem(envelope(op=cash_payment(amount)))
    assert problem is not None
    assert "rounds to" in problem


@pytest.mark.parametrize("amount", ["99999999999999.994", "-99999999999999.99", "0.001"])
def test_amount_that_fits_at_cents_fits_the_store(amount: str) -> None:
    assert storage_problem(envelope(op=cash_payment(amount))) is None


def test_amount_limits_are_the_amount_columns() -> None:
    column = operations.c.amount.type
    assert isinstance(column, sa.Numeric)
    assert (column.precision, column.scale) == (AMOUNT_DIGITS, AMOUNT_PLACES)


def test_one_receipt_per_terminal_keeps_the_batch_order() -> None:
    verdicts = [
        Verdict("T2", 1, str(OP_ID), 1, "acked"),
        Verdict("T1", 5, None, None, "rejected", "bad", "rejected"),
        Verdict(None, None, None, None, "rejected", "who?", "rejected"),
        Verdict("T2", 2, "not-a-uuid", 1, "acked", "", "duplicate"),
    ]
    receipts = receipts_of(verdicts)
    assert [(r.terminal, [i.seq for i in r.items]) for r in receipts] == [
        ("T1", [5]),
        ("T2", [1, 2]),
    ]
    assert receipts[1].items[0].op_id == OP_ID
    assert receipts[1].items[1].op_id is None
    assert receipts[0].items[0].reason == "bad"


def test_gap_is_requested_only_after_its_grace_period() -> None:
    tracker = GapTracker(grace=5)
    gap = Gap("T1", 3, 4)
    assert tracker.due([gap], now=100) == []
    assert tracker.waiting()
    assert tracker.due([gap], now=104) == []
    assert tracker.due([gap], now=105) == [gap]
    assert not tracker.waiting()


def test_open_gap_is_requested_again_every_grace_period() -> None:
    tracker = GapTracker(grace=5)
    gap = Gap("T1", 3, 4)
    tracker.due([gap], now=0)
    assert tracker.due([gap], now=5) == [gap]
    assert tracker.due([gap], now=9) == []
    assert tracker.due([gap], now=10) == [gap]


def test_closed_gap_is_forgotten() -> None:
    tracker = GapTracker(grace=5)
    tracker.due([Gap("T1", 3, 4)], now=0)
    assert tracker.due([], now=3) == []
    assert not tracker.waiting()
    assert tracker.due([Gap("T1", 3, 4)], now=6) == []  # reopened: a new grace period
