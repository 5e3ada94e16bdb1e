"""Terminal incarnations: a rebuilt till is registered, a second live copy is refused.

One contract, run on the in-memory store and the SQL store on SQLite and PostgreSQL.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Iterator
from decimal import Decimal
from typing import Protocol

import pytest
import sqlalchemy as sa

from cajasync.core.db import make_engine
from inbox.server_store import Accepted, Incoming, MemoryServerStore, SqlServerStore, Verdict
from inbox.server_store.incarnations import Incarnation, summary
from schemas import CashPayment, OpEnvelope
from schemas.feed import HighWaterMark, HighWaterRequest, OutboxRef

NOW = dt.datetime(2026, 3, 2, 12, 30, tzinfo=dt.UTC)
OLD = uuid.UUID(int=1)  # the database that was lost (or is still running somewhere)
NEW = uuid.UUID(int=2)  # the rebuilt till
NEWER = uuid.UUID(int=3)
STRAY = uuid.UUID(int=4)  # a copy that never registered


class Store(Protocol):
    def apply(self, batch: list[Incoming]) -> list[Verdict]: ...
    def register(self, request: HighWaterRequest) -> HighWaterMark: ...
    def lineages(self) -> dict[str, list[Incarnation]]: ...


def op(
    seq: int, incarnation: uuid.UUID | None, *, terminal: str = "T1", op_id: uuid.UUID | None = None
) -> Accepted:
    payment = CashPayment(
        kind="advance",
        payee_kind="supplier",
        payee="SUP1",
        amount=Decimal(seq),
        method="cash",
        date=NOW,
    )
    envelope = OpEnvelope(
        terminal=terminal,
        seq=seq,
        op_id=op_id or uuid.uuid4(),
        version=1,
        recorded_at=NOW,
        op=payment,
        incarnation=incarnation,
    )
    return Accepted(envelope)


def ask(
    incarnation: uuid.UUID,
    *,
    terminal: str = "T1",
    last_seq: int = 0,
    rows: list[OutboxRef] | None = None,
) -> HighWaterRequest:
    return HighWaterRequest(
        terminal=terminal,
        request_id=str(uuid.uuid4()),
        incarnation=incarnation,
        last_seq=last_seq,
        rows=rows or [],
    )


def outcomes(verdicts: list[Verdict]) -> list[str]:
    return [verdict.outcome for verdict in verdicts]


class IncarnationContract:
    """Every store that registers incarnations keeps these rules."""

    def test_a_new_terminal_registers_at_zero(self, store: Store) -> None:
        mark = store.register(ask(NEW))
        assert (mark.max_seq, mark.contiguous_seq, mark.held, mark.start_seq) == (0, 0, 0, 0)
        assert mark.incarnation == NEW

    def test_a_rebuilt_till_continues_after_the_highest_seq_held(self, store: Store) -> None:
        store.apply([op(seq, OLD) for seq in (1, 2, 3, 5)])
        mark = store.register(ask(NEW))
        assert (mark.max_seq, mark.contiguous_seq, mark.held) == (5, 3, 4)
        assert (mark.incarnation, mark.start_seq) == (NEW, 5)
        assert outcomes(store.apply([op(6, NEW), op(7, NEW)])) == ["applied", "applied"]

    def test_an_old_op_in_flight_before_the_rebuild_is_applied(self, store: Store) -> None:
        store.apply([op(seq, OLD) for seq in (1, 2, 3, 5)])
        store.register(ask(NEW))
        [verdict] = store.apply([op(4, OLD)])
        assert (verdict.status, verdict.outcome) == ("acked", "applied")

    def test_an_old_op_after_the_rebuild_is_a_copy_and_takes_no_seq(self, store: Store) -> None:
        store.apply([op(seq, OLD) for seq in (1, 2, 3)])
        store.register(ask(NEW))
        copy = op(4, OLD)
        [refused, rebuilt] = store.apply([copy, op(4, NEW)])
        assert (refused.status, refused.outcome, refused.seq) == ("rejected", "copy", None)
        assert (refused.op_id, refused.version) == (str(copy.envelope.op_id), 1)
        assert refused.reason == (
            f"terminal T1: a second live copy (incarnation {OLD}, seq 4) after it was rebuilt "
            f"as incarnation {NEW} at seq 3; not merged: stop that copy (its operations are on "
            "its own database)"
        )
        assert (rebuilt.status, rebuilt.outcome) == ("acked", "applied")
        [again] = store.apply([copy])  # resent: refused again, never merged
        assert again.outcome == "copy"
        assert summary(store.lineages()["T1"]) == {
            "incarnation": str(NEW),
            "restarted_after_seq": 3,
            "incarnations": 1,  # OLD predates registration: never registered
            "copies": 1,
            "copy_ops_rejected": 2,
        }

    def test_a_copy_never_registered_is_refused_above_the_first_start(self, store: Store) -> None:
        store.apply([op(seq, None) for seq in (1, 2)])
        store.register(ask(NEW))
        verdicts = store.apply([op(2, STRAY), op(3, STRAY), op(3, NEW)])
        assert [(v.status, v.outcome) for v in verdicts] == [
            ("rejected", "conflict"),  # at or below the start: its seq is held by another
            ("rejected", "copy"),
            ("acked", "applied"),
        ]
        assert "held by another operation" in verdicts[0].reason
        assert "incarnation " + str(STRAY) in verdicts[1].reason

    def test_before_any_registration_every_incarnation_is_accepted(self, store: Store) -> None:
        verdicts = store.apply([op(1, OLD), op(2, STRAY), op(3, None)])
        assert outcomes(verdicts) == ["applied"] * 3

    def test_operations_without_an_incarnation_are_accepted_as_before(self, store: Store) -> None:
        store.apply([op(1, OLD)])
        store.register(ask(NEW))
        assert outcomes(store.apply([op(2, None), op(3, None)])) == ["applied", "applied"]

    def test_a_second_rebuild_bounds_each_old_database_at_its_own_end(self, store: Store) -> None:
        store.apply([op(seq, OLD) for seq in (1, 2)])
        store.register(ask(NEW))
        store.apply([op(seq, NEW) for seq in (3, 5)])  # 4 still in flight
        store.register(ask(NEWER))
        verdicts = store.apply([op(3, OLD), op(4, NEW), op(6, NEW), op(6, NEWER)])
        assert outcomes(verdicts) == ["copy", "applied", "copy", "applied"]
        assert f"rebuilt as incarnation {NEW} at seq 2" in verdicts[0].reason
        assert f"rebuilt as incarnation {NEWER} at seq 5" in verdicts[2].reason

    def test_the_start_is_at_least_the_tills_own_last_seq(self, store: Store) -> None:
        store.apply([op(seq, OLD) for seq in (1, 2, 3)])
        mark = store.register(ask(NEW, last_seq=9))
        assert (mark.max_seq, mark.start_seq) == (3, 9)
        assert outcomes(store.apply([op(7, OLD), op(10, OLD)])) == ["applied", "copy"]

    def test_a_repeated_request_changes_nothing(self, store: Store) -> None:
        store.apply([op(1, OLD)])
        request = ask(NEW)
        first = store.register(request)
        store.apply([op(2, NEW)])
        again = store.register(request)
        assert (again.incarnation, again.start_seq, again.max_seq) == (NEW, 1, 2)
        assert first.start_seq == 1

    def test_a_late_request_of_a_replaced_database_does_not_bring_it_back(
        self, store: Store
    ) -> None:
        store.register(ask(NEW))
        store.register(ask(NEWER))
        late = store.register(ask(NEW))
        assert late.incarnation == NEWER
        assert outcomes(store.apply([op(1, NEW), op(1, NEWER)])) == ["copy", "applied"]

    def test_held_rows_name_what_the_server_holds_at_asked_seqs_and_ids(self, store: Store) -> None:
        kept, moved = uuid.uuid4(), uuid.uuid4()
        store.apply([op(1, OLD, op_id=kept), op(2, OLD), op(3, OLD, op_id=moved)])
        rows = [
            OutboxRef(seq=1, op_id=str(kept), version=1),  # held as it is
            OutboxRef(seq=2, op_id=str(uuid.uuid4()), version=1),  # seq held by another op
            OutboxRef(seq=7, op_id=str(moved), version=1),  # held at another seq
            OutboxRef(seq=8, op_id=str(uuid.uuid4()), version=1),  # unknown
        ]
        mark = store.register(ask(NEW, last_seq=8, rows=rows))
        assert [(r.seq, r.op_id) for r in mark.held_rows] == [
            (1, str(kept)),
            (2, mark.held_rows[1].op_id),
            (3, str(moved)),
        ]
        assert mark.held_rows[1].op_id != rows[1].op_id

    def test_terminals_do_not_share_incarnations(self, store: Store) -> None:
        store.apply([op(1, OLD, terminal="T1"), op(1, OLD, terminal="T2")])
        store.register(ask(NEW, terminal="T1"))
        verdicts = store.apply([op(2, OLD, terminal="T1"), op(2, OLD, terminal="T2")])
        assert outcomes(verdicts) == ["copy", "applied"]
        assert set(store.lineages()) == {"T1"}


class TestMemoryStore(IncarnationContract):
    @pytest.fixture
    def store(self) -> Store:
        return MemoryServerStore()


class TestSqlStore(IncarnationContract):
    @pytest.fixture
    def engine(self, server_db_url: str) -> Iterator[sa.Engine]:
        engine = make_engine(server_db_url)
        yield engine
        engine.dispose()

    @pytest.fixture
    def store(self, engine: sa.Engine) -> Store:
        return SqlServerStore(engine)
