"""Finding the messages a database refuses in a batch, without giving up the others."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Sequence
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cajasync.errors import StoreDataError, StoreUnavailable
from inbox.isolate import apply_isolating
from inbox.server_store import Accepted, Incoming, MemoryServerStore, Rejection, Verdict
from schemas import CashPayment, OpEnvelope

NOW = dt.datetime(2026, 3, 2, 12, 30, tzinfo=dt.UTC)
REFUSED_AMOUNT = Decimal(666)


def payment(seq: int, amount: Decimal) -> Accepted:
    op = CashPayment(
        kind="transfer", payee_kind="employee", payee="E1", amount=amount, method="cash", date=NOW
    )
    return Accepted(
        OpEnvelope(terminal="T1", seq=seq, op_id=uuid.uuid4(), version=1, recorded_at=NOW, op=op)
    )


class RefusingStore(MemoryServerStore):
    """A store whose database refuses any transaction holding a payment of 666."""

    def __init__(self) -> None:
        super().__init__()
        self.transactions = 0

    def apply(self, batch: Sequence[Incoming]) -> list[Verdict]:
        self.transactions += 1
        for incoming in batch:
            if isinstance(incoming, Accepted) and _amount(incoming) == REFUSED_AMOUNT:
                raise StoreDataError("refused", "numeric field overflow")
        return super().apply(batch)


def _amount(incoming: Accepted) -> Decimal | None:
    op = incoming.envelope.op
    return op.amount if isinstance(op, CashPayment) else None


def batch_of(refused: set[int], size: int) -> list[Incoming]:
    return [
        payment(seq, REFUSED_AMOUNT if seq in refused else Decimal(seq))
        for seq in range(1, size + 1)
    ]


def test_refused_message_is_rejected_with_the_database_reason_and_the_rest_applied() -> None:
    store = RefusingStore()
    batch = batch_of({5}, 8)
    applied = apply_isolating(store.apply, batch)
    assert [v.status for v in applied.verdicts] == ["acked"] * 4 + ["rejected"] + ["acked"] * 3
    assert list(applied.refused) == [4]
    assert "numeric field overflow" in applied.refused[4]
    assert applied.verdicts[4].reason == applied.refused[4]
    [stats] = store.stats()
    assert (stats.contiguous_seq, stats.topics) == (8, {"pagos": 7})  # its seq is held


def test_a_batch_the_database_takes_is_one_transaction() -> None:
    store = RefusingStore()
    applied = apply_isolating(store.apply, batch_of(set(), 64))
    assert (store.transactions, applied.refused) == (1, {})


def test_one_refused_message_costs_a_few_transactions_not_one_per_message() -> None:
    store = RefusingStore()
    apply_isolating(store.apply, batch_of({37}, 64))
    assert store.transactions <= 2 * 6 + 2  # two halves per level, then its rejection


@given(st.sets(st.integers(1, 40)), st.integers(1, 40))
def test_every_refused_message_and_only_those_are_rejected(refused: set[int], size: int) -> None:
    store = RefusingStore()
    applied = apply_isolating(store.apply, batch_of(refused, size))
    expected = {seq - 1 for seq in refused if seq <= size}
    assert set(applied.refused) == expected
    assert [v.seq for v in applied.verdicts] == list(range(1, size + 1))
    assert all((v.status == "rejected") == (v.seq - 1 in expected) for v in applied.verdicts)


def test_a_rejection_the_database_refuses_too_is_answered_without_being_stored() -> None:
    class RefusesEverything(MemoryServerStore):
        def apply(self, batch: Sequence[Incoming]) -> list[Verdict]:
            raise StoreDataError("refused", "value too long")

    rejection = Rejection("T1", 3, None, None, "ventas", "undecodable")
    applied = apply_isolating(RefusesEverything().apply, [payment(1, Decimal(1)), rejection])
    assert [(v.seq, v.status) for v in applied.verdicts] == [(1, "rejected"), (3, "rejected")]
    assert applied.verdicts[1].reason == "undecodable"
    assert list(applied.refused) == [0]  # the rejection was dead-lettered already


def test_an_outage_is_not_the_batchs_fault() -> None:
    class Away(MemoryServerStore):
        def apply(self, batch: Sequence[Incoming]) -> list[Verdict]:
            raise StoreUnavailable("connection refused")

    with pytest.raises(StoreUnavailable):  # the caller waits for the store, then tries again
        apply_isolating(Away().apply, batch_of(set(), 4))
