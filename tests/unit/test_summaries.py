"""What a view shows of an operation: its summary, decoded without lines or chunk data."""

from __future__ import annotations

import datetime as dt
import uuid
from decimal import Decimal

from hypothesis import given

from outbox.views import worst
from schemas import CashPayment, OpEnvelope, Operation, Sale, WeeklyFileChunk, ZClose, encode
from schemas.codec import to_json
from schemas.summaries import (
    ChunkSummary,
    PaymentSummary,
    SaleSummary,
    TotalOnly,
    ZSummary,
    columns,
    headline,
    matches,
    summary_of_envelope,
    summary_of_json,
)
from tests.unit.strategies import cash_payments, envelopes, sales, weekly_file_chunks, z_closes

NOW = dt.datetime(2026, 3, 2, 12, 30, tzinfo=dt.UTC)


def _body(op: Operation) -> bytes:
    return encode(
        OpEnvelope(terminal="T1", seq=1, op_id=uuid.uuid4(), version=1, recorded_at=NOW, op=op)
    )


@given(sales())
def test_a_sale_summary_holds_its_ticket_total_and_customer(sale: Sale) -> None:
    summary = summary_of_envelope(_body(sale))
    assert isinstance(summary, SaleSummary)
    assert columns(summary) == {
        "book": sale.book,
        "number": sale.number,
        "date": sale.date,
        "total": sale.totals.total,
        "customer": sale.customer,
        "kind": sale.kind,
        "voided": sale.voided,
    }


@given(cash_payments)
def test_a_payment_summary_holds_its_payee_and_amount(payment: CashPayment) -> None:
    summary = summary_of_envelope(_body(payment))
    assert isinstance(summary, PaymentSummary)
    assert (summary.payee, summary.amount, summary.kind) == (
        payment.payee,
        payment.amount,
        payment.kind,
    )


@given(z_closes())
def test_a_z_close_summary_holds_its_number_period_and_total(close: ZClose) -> None:
    summary = summary_of_envelope(_body(close))
    assert isinstance(summary, ZSummary)
    assert (summary.number, summary.period_start, summary.sale_count, summary.total) == (
        close.number,
        close.period_start,
        close.sale_count,
        close.total,
    )


@given(weekly_file_chunks())
def test_a_chunk_summary_names_its_file_and_never_carries_its_data(chunk: WeeklyFileChunk) -> None:
    summary = summary_of_envelope(_body(chunk))
    assert isinstance(summary, ChunkSummary)
    assert "data" not in columns(summary)
    assert (summary.file_name, summary.sha256, summary.chunk_index) == (
        chunk.file_name,
        chunk.sha256,
        chunk.chunk_index,
    )


@given(envelopes())
def test_the_server_payload_summarises_as_the_outbox_body_does(envelope: OpEnvelope) -> None:
    assert summary_of_json(to_json(envelope.op)) == summary_of_envelope(encode(envelope))


def test_a_voided_return_reads_as_such_in_its_headline() -> None:
    summary = SaleSummary(
        book="B",
        number=7,
        date=NOW,
        totals=TotalOnly(total=Decimal("-5.00")),
        customer="C1",
        voided=True,
        kind="return",
    )
    assert headline(summary) == ("B-7 (return) (voided)", Decimal("-5.00"), "C1")


def test_customer_and_number_match_only_the_operations_that_have_them() -> None:
    sale = summary_of_json(
        b'{"topic":"ventas","book":"A","number":3,"date":"2026-03-02T12:30:00Z",'
        b'"totals":{"total":"1.00"},"customer":"C9"}'
    )
    payment = summary_of_json(
        b'{"topic":"pagos","kind":"advance","payee_kind":"employee","payee":"E1",'
        b'"amount":"1.00","method":"cash","date":"2026-03-02T12:30:00Z"}'
    )
    assert matches(sale, customer="C9", number=3)
    assert not matches(sale, customer="C8", number=None)
    assert not matches(sale, customer=None, number=4)
    assert matches(payment, customer=None, number=None)
    assert not matches(payment, customer="E1", number=None)


def test_a_file_shows_the_worst_state_of_its_chunks() -> None:
    assert worst({"acked", "pending", "sent"}) == "pending"
    assert worst({"acked", "rejected", "pending"}) == "rejected"
    assert worst({"acked", "sent"}) == "sent"
    assert worst({"acked", "purged"}) == "acked"
    assert worst({"purged"}) == "purged"
