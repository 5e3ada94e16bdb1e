"""The terminal outbox contract (outbox/outbox_store/base.py), written once for every adapter.

A subclass named Test... gives `store` (an empty outbox of terminal TERMINAL) and `settle`
(what a server receipt does to a row).
"""

from __future__ import annotations

import datetime as dt
import uuid
from decimal import Decimal

import pytest

from cajasync.core.terminal_tables import ACKED, PENDING, REJECTED, SENT
from cajasync.errors import ConfigError, InvalidMessage, UnknownOperation
from outbox.outbox_store import OutboxStore
from schemas import CashPayment, OpEnvelope, decode_op
from schemas.topics import CASH_PAYMENTS

TERMINAL = "CAJA-07"
NOW = dt.datetime(2026, 3, 2, 12, 30, tzinfo=dt.UTC)


def payment(cents: int = 1000) -> CashPayment:
    """A valid cash advance of `cents`."""
    return CashPayment(
        kind="advance",
        payee_kind="employee",
        payee="E1",
        amount=Decimal(cents).scaleb(-2),
        method="cash",
        date=NOW,
    )


class OutboxContract:
    """Every outbox adapter keeps these rules."""

    def settle(self, store: OutboxStore, seq: int, state: str) -> None:
        raise NotImplementedError

    def test_records_get_contiguous_seqs_from_one_and_version_one(self, store: OutboxStore) -> None:
        recorded = [store.record(payment(cents), now=NOW) for cents in (100, 200, 300)]

        assert [(r.seq, r.version) for r in recorded] == [(1, 1), (2, 1), (3, 1)]
        assert len({r.op_id for r in recorded}) == 3

    def test_recording_an_op_id_again_gives_its_next_version_at_the_next_seq(
        self, store: OutboxStore
    ) -> None:
        first = store.record(payment(100))
        store.record(payment(200))
        again = store.record(payment(150), op_id=first.op_id)

        assert (again.seq, again.op_id, again.version) == (3, first.op_id, 2)

    def test_an_operation_the_server_would_reject_takes_no_seq(self, store: OutboxStore) -> None:
        with pytest.raises(InvalidMessage, match="amount"):
            store.record(payment(-100))

        assert store.record(payment()).seq == 1

    def test_claimed_rows_carry_the_envelope_as_recorded(self, store: OutboxStore) -> None:
        recorded = store.record(payment(1234), now=NOW)

        (row,) = store.claim_pending(after_seq=0, limit=10)
        envelope = decode_op(row.body)

        assert (row.seq, row.op_id, row.version, row.topic) == (
            1,
            str(recorded.op_id),
            1,
            CASH_PAYMENTS,
        )
        assert isinstance(envelope, OpEnvelope)
        assert (envelope.terminal, envelope.seq, envelope.op_id) == (TERMINAL, 1, recorded.op_id)
        assert envelope.op == payment(1234)
        assert envelope.recorded_at == NOW

    def test_claim_pending_hands_out_pending_rows_above_a_seq_in_order_up_to_a_limit(
        self, store: OutboxStore
    ) -> None:
        for cents in range(100, 700, 100):
            store.record(payment(cents))
        store.mark_sent([3], now=1.0)

        claimed = store.claim_pending(after_seq=1, limit=3)

        assert [row.seq for row in claimed] == [2, 4, 5]

    def test_claim_stale_finds_sent_rows_confirmed_before_a_time(self, store: OutboxStore) -> None:
        for cents in (100, 200, 300, 400):
            store.record(payment(cents))
        store.mark_sent([1, 2], now=10.0)
        store.mark_sent([3], now=20.0)

        assert [r.seq for r in store.claim_stale(sent_before=15.0, after_seq=0, limit=10)] == [1, 2]
        assert [r.seq for r in store.claim_stale(sent_before=25.0, after_seq=1, limit=1)] == [2]
        assert store.claim_pending(after_seq=0, limit=10)[0].seq == 4

    def test_mark_sent_makes_rows_sent_clears_the_error_and_counts_the_attempt(
        self, store: OutboxStore
    ) -> None:
        store.record(payment(100))
        store.record(payment(200))
        store.mark_refused({1: "no route"})

        assert store.mark_sent([1, 2, 99], now=NOW.timestamp()) == 2

        rows = store.list_pending()
        assert [(r.seq, r.state, r.attempts, r.last_error) for r in rows] == [
            (1, SENT, 2, None),
            (2, SENT, 1, None),
        ]
        assert rows[0].sent_at == NOW

    def test_mark_refused_puts_rows_back_to_pending_with_the_reason(
        self, store: OutboxStore
    ) -> None:
        store.record(payment(100))
        store.record(payment(200))
        store.mark_sent([1, 2], now=1.0)

        assert store.mark_refused({1: "nacked", 2: "returned: no route"}) == 2

        assert [(r.state, r.attempts, r.last_error) for r in store.list_pending()] == [
            (PENDING, 2, "nacked"),
            (PENDING, 2, "returned: no route"),
        ]

    def test_rows_a_receipt_settled_are_left_alone_by_confirms_and_refusals(
        self, store: OutboxStore
    ) -> None:
        store.record(payment(100))
        store.record(payment(200))
        self.settle(store, 1, ACKED)
        self.settle(store, 2, REJECTED)

        assert store.mark_sent([1, 2], now=1.0) == 0
        assert store.mark_refused({1: "nacked", 2: "nacked"}) == 0
        assert store.counts() == {CASH_PAYMENTS: {ACKED: 1, REJECTED: 1}}

    def test_list_pending_lists_rows_not_acked_oldest_first_by_state_and_limit(
        self, store: OutboxStore
    ) -> None:
        for cents in (100, 200, 300, 400):
            store.record(payment(cents))
        self.settle(store, 2, ACKED)
        self.settle(store, 3, REJECTED)

        assert [r.seq for r in store.list_pending()] == [1, 3, 4]
        assert [r.seq for r in store.list_pending(state=REJECTED)] == [3]
        assert [r.seq for r in store.list_pending(topic="payments", limit=1)] == [1]
        assert store.list_pending(topic="sales") == []

    def test_list_pending_of_an_unknown_state_raises_config_error_naming_the_states(
        self, store: OutboxStore
    ) -> None:
        with pytest.raises(ConfigError, match="expected one of: pending, sent, acked, rejected"):
            store.list_pending(state="lost")

    def test_replay_of_an_operation_queues_every_version_again(self, store: OutboxStore) -> None:
        first = store.record(payment(100))
        store.record(payment(200))
        store.record(payment(150), op_id=first.op_id)
        store.mark_sent([1, 2, 3], now=1.0)
        self.settle(store, 1, ACKED)

        assert store.replay([first.op_id]) == 2

        assert [(r.seq, r.state) for r in store.list_pending()] == [
            (1, PENDING),
            (2, SENT),
            (3, PENDING),
        ]

    def test_replay_naming_an_unknown_operation_raises_and_changes_nothing(
        self, store: OutboxStore
    ) -> None:
        known = store.record(payment(100))
        store.mark_sent([1], now=1.0)
        unknown = uuid.uuid4()

        with pytest.raises(UnknownOperation, match=str(unknown)):
            store.replay([known.op_id, unknown])

        assert [r.state for r in store.list_pending()] == [SENT]

    def test_replay_of_everything_queues_every_row_not_acked(self, store: OutboxStore) -> None:
        for cents in (100, 200, 300):
            store.record(payment(cents))
        store.mark_sent([1, 2, 3], now=1.0)
        self.settle(store, 1, ACKED)
        self.settle(store, 2, REJECTED)

        assert store.replay() == 2

        assert store.counts() == {CASH_PAYMENTS: {ACKED: 1, PENDING: 2}}
        assert [r.sent_at for r in store.list_pending()] == [None, None]

    def test_an_empty_outbox_has_nothing_to_claim_list_or_count(self, store: OutboxStore) -> None:
        assert store.claim_pending(after_seq=0, limit=10) == []
        assert store.list_pending() == []
        assert store.counts() == {}
        assert store.replay() == 0
