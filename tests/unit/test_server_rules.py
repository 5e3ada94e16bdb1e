"""Server ingest's pure rules (no broker, no database): classification, receipts, dead letters,
gap timing."""

from __future__ import annotations

import datetime as dt
import uuid
from decimal import Decimal

import msgspec
import pytest
import sqlalchemy as sa

from cajasync.broker.ports import Delivery
from cajasync.core.server_tables import operations
from cajasync.errors import InvalidMessage
from inbox.classify import authenticated_sender, classify
from inbox.gaps import GapTracker
from inbox.ingest import dead_letters
from inbox.ingest_receipts import receipts_of
from inbox.server_store import Accepted, Gap, Invalid, Rejection, Unreadable, Verdict
from inbox.server_store.base import digest_of, storage_problem
from schemas import (
    CashPayment,
    OpEnvelope,
    Sale,
    SaleLine,
    SalePayment,
    SaleTotals,
    WeeklyFileChunk,
    encode,
)
from schemas.limits import AMOUNT_DIGITS, MAX_INT, MAX_SIZE, MONEY_PLACES
from schemas.validation import validate

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
    terminal: str = "T1", seq: int = 4, op: Sale | CashPayment | WeeklyFileChunk | None = None
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


def test_valid_operation_on_its_own_route_is_accepted_with_the_digest_of_its_body() -> None:
    body = encode(envelope())
    assert classify(delivery(body)) == Accepted(envelope(), digest_of(body))


def test_undecodable_body_claims_no_seq_and_is_answered_to_nobody() -> None:
    rejection = classify(delivery(b"\xc1"))
    assert isinstance(rejection, Rejection)
    assert (rejection.terminal, rejection.seq, rejection.op_id, rejection.version) == (
        None,
        None,
        str(OP_ID),
        2,
    )
    assert rejection.topic == "ventas"
    assert "undecodable" in rejection.reason


def test_undecodable_body_from_the_terminals_own_broker_user_holds_the_seq_it_names() -> None:
    unreadable = classify(delivery(b"\xc1", user_id="T1"))
    assert isinstance(unreadable, Unreadable)
    assert unreadable == Unreadable(
        terminal="T1",
        seq=4,
        op_id=str(OP_ID),
        version=2,
        topic="ventas",
        reason=unreadable.reason,
        digest=digest_of(b"\xc1"),
    )
    assert "undecodable" in unreadable.reason


@pytest.mark.parametrize(
    ("seq", "routing_key"),
    [
        (None, "op.T1.ventas"),
        ("4", "op.T1.ventas"),
        (True, "op.T1.ventas"),
        (0, "op.T1.ventas"),
        (2**31, "op.T1.ventas"),
        (4, "op.T1.no-such-topic"),
    ],
)
def test_undecodable_body_of_an_authenticated_terminal_without_a_usable_seq_holds_none(
    seq: object, routing_key: str
) -> None:
    headers = {} if seq is None else {"seq": seq}
    message = Delivery(1, routing_key, b"\xc1", f"{OP_ID}/2", "T1", headers=headers)
    rejection = classify(message)
    assert isinstance(rejection, Rejection)
    assert (rejection.terminal, rejection.seq, rejection.op_id, rejection.version) == (
        "T1",
        None,
        str(OP_ID),
        2,
    )


def test_unparseable_message_id_leaves_the_op_unknown() -> None:
    for message_id in ("nonsense", f"{OP_ID}/0", f"{OP_ID}/{2**31}", f"{OP_ID}/x", None):
        rejection = classify(delivery(b"\xc1", user_id="T1", message_id=message_id))
        assert isinstance(rejection, Rejection)
        assert (rejection.op_id, rejection.version, rejection.seq) == (None, None, None)


def test_operation_failing_validation_is_invalid_and_keeps_its_own_seq() -> None:
    broken = msgspec.structs.replace(
        sale(), totals=SaleTotals(net=Decimal(1), tax=Decimal(0), total=Decimal(1))
    )
    body = encode(envelope(op=broken))
    invalid = classify(delivery(body))
    assert isinstance(invalid, Invalid)
    assert "totals" in invalid.reason
    assert (invalid.envelope, invalid.digest) == (envelope(op=broken), digest_of(body))


def test_operation_on_another_terminals_route_is_rejected_claiming_nothing() -> None:
    rejection = classify(delivery(encode(envelope("T2")), routing_key="op.T1.ventas"))
    assert isinstance(rejection, Rejection)
    assert "does not match" in rejection.reason
    assert (rejection.terminal, rejection.seq, rejection.op_id) == (None, None, str(OP_ID))


def test_operation_under_another_topic_is_rejected() -> None:
    rejection = classify(delivery(encode(envelope()), routing_key="op.T1.pagos"))
    assert isinstance(rejection, Rejection)
    assert "does not match" in rejection.reason


def test_broker_user_of_another_terminal_is_rejected_and_answered_to_nobody() -> None:
    rejection = classify(delivery(encode(envelope()), user_id="T9"))
    assert isinstance(rejection, Rejection)
    assert "broker user 'T9'" in rejection.reason
    assert (rejection.terminal, rejection.seq) == (None, None)


def test_broker_user_on_its_own_route_with_another_terminals_operation_is_told() -> None:
    rejection = classify(delivery(encode(envelope("T1")), routing_key="op.T9.ventas", user_id="T9"))
    assert isinstance(rejection, Rejection)
    assert (rejection.terminal, rejection.seq) == ("T9", None)


def test_operation_without_user_id_is_rejected_whoever_sent_it() -> None:
    rejection = classify(delivery(encode(envelope()), user_id=None))
    assert isinstance(rejection, Rejection)
    assert rejection.reason.startswith("no user_id: ")
    assert (rejection.terminal, rejection.seq) == (None, None)


def test_terminals_own_broker_user_is_accepted() -> None:
    assert isinstance(classify(delivery(encode(envelope()), user_id="T1")), Accepted)


def test_authenticated_sender_is_a_non_shared_user_on_its_own_route() -> None:
    def sender_of(routing_key: str, user_id: str | None) -> str | None:
        odd = Delivery(1, routing_key=routing_key, body=b"", user_id=user_id)
        return authenticated_sender(odd)

    assert sender_of("op.T1.ventas", "T1") == "T1"
    assert sender_of("op.T1.ventas", "guest") is None
    assert sender_of("op.T1.ventas", None) is None
    assert sender_of("op.T1.ventas", "T2") is None
    assert sender_of("op.a b.ventas", "a b") is None
    assert sender_of("T1", "T1") is None


def test_seq_beyond_the_store_columns_is_rejected_without_holding_it() -> None:
    rejection = classify(delivery(encode(envelope(seq=2**40))))
    assert isinstance(rejection, Rejection)
    assert "exceed" in rejection.reason
    assert (rejection.terminal, rejection.seq) == ("T1", 2**40)


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


def chunk(**fields: object) -> WeeklyFileChunk:
    values: dict[str, object] = {
        "week": "2026-W10",
        "file_name": "semana.bin",
        "size": 1,
        "sha256": "0" * 64,
        "chunk_index": 0,
        "chunk_count": 1,
        "data": b"x",
    }
    return WeeklyFileChunk(**{**values, **fields})  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "odd",
    [
        envelope(seq=MAX_INT + 1),
        msgspec.structs.replace(envelope(), version=MAX_INT + 1),
        envelope(op=chunk(chunk_count=MAX_INT + 1)),
        envelope(op=chunk(size=MAX_SIZE + 1)),
        envelope(op=chunk(file_name="semana\x00.bin")),
    ],
    ids=["seq", "version", "chunk-count", "size", "nul-name"],
)
def test_the_store_refuses_what_validation_refuses_in_the_same_words(odd: OpEnvelope) -> None:
    """One rule, one definition: the store's last line is schemas/validation.py's."""
    with pytest.raises(InvalidMessage) as refused:
        validate(odd)
    problem = storage_problem(odd)
    assert problem is not None
    assert problem in refused.value.reason


def test_amount_limits_are_the_amount_columns() -> None:
    column = operations.c.amount.type.impl  # NUMERIC(16, 2); integer cents on SQLite
    assert isinstance(column, sa.Numeric)
    assert (column.precision, column.scale) == (AMOUNT_DIGITS, MONEY_PLACES)


def test_one_receipt_per_terminal_keeps_the_batch_order() -> None:
    verdicts = [
        Verdict("T2", 1, str(OP_ID), 1, "acked"),
        Verdict("T1", 5, str(OP_ID), 3, "rejected", "bad", "rejected", "bad"),
        Verdict(None, None, str(OP_ID), 1, "rejected", "who?", "rejected", "who?"),
        Verdict("T2", None, str(OP_ID), 2, "acked", "held", "conflict", "other content"),
    ]
    receipts = receipts_of(verdicts)
    assert [(r.terminal, [(i.seq, i.version) for i in r.items]) for r in receipts] == [
        ("T1", [(5, 3)]),
        ("T2", [(1, 1), (None, 2)]),
    ]
    assert receipts[1].items[0].op_id == OP_ID
    assert receipts[0].items[0].reason == "bad"
    assert receipts[1].items[1].reason == ""  # an ack carries no reason


def test_receipt_items_always_name_an_op_id_and_version() -> None:
    verdicts = [
        Verdict("T1", 5, None, None, "rejected", "bad", "rejected"),
        Verdict("T1", 6, "not-a-uuid", 1, "rejected", "bad", "rejected"),
        Verdict("T1", 7, str(OP_ID), None, "rejected", "bad", "rejected"),
    ]
    assert receipts_of(verdicts) == []


def test_dead_letters_are_the_deliveries_whose_verdict_says_why() -> None:
    deliveries = [delivery(b"", message_id=str(n)) for n in range(3)]
    verdicts = [
        Verdict("T1", 1, str(OP_ID), 1, "acked"),
        Verdict("T1", 1, str(OP_ID), 1, "acked", "", "conflict", "other content"),
        Verdict(None, None, None, None, "rejected", "undecodable", "rejected", "undecodable"),
    ]
    assert dead_letters(deliveries, verdicts) == [
        (deliveries[1], "other content"),
        (deliveries[2], "undecodable"),
    ]


def test_gap_is_requested_only_after_its_grace_period() -> None:
    tracker = GapTracker(grace=5, cap=300)
    gap = Gap("T1", 3, 4)
    assert tracker.due([gap], now=100) == []
    assert tracker.waiting()
    assert tracker.due([gap], now=104) == []
    assert tracker.due([gap], now=105) == [gap]
    assert not tracker.waiting()


def test_closed_gap_is_forgotten() -> None:
    tracker = GapTracker(grace=5, cap=300)
    tracker.due([Gap("T1", 3, 4)], now=0)
    assert tracker.due([], now=3) == []
    assert not tracker.waiting()
    assert tracker.due([Gap("T1", 3, 4)], now=6) == []  # reopened: a new grace period
