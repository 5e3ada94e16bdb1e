"""The server store contract on SQLite and PostgreSQL, and what the SQL rows hold."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal

import pytest
import sqlalchemy as sa

from cajasync.core.db import make_engine
from cajasync.core.server_tables import operations, received
from inbox.server_store import Incoming, ServerStore, SqlServerStore
from tests.contracts.store_contract import (
    StoreContract,
    invalid,
    op,
    payment,
    sale,
    sha256,
    unreadable,
)


class TestSqlStore(StoreContract):
    @pytest.fixture
    def engine(self, server_db_url: str) -> Iterator[sa.Engine]:
        engine = make_engine(server_db_url)
        yield engine
        engine.dispose()

    @pytest.fixture
    def store(self, engine: sa.Engine) -> ServerStore:
        return SqlServerStore(engine)

    def test_operation_row_holds_amount_voided_and_payload(
        self, store: ServerStore, engine: sa.Engine
    ) -> None:
        op_id = uuid.uuid4()
        store.apply([op("T1", 1, sale("12.10"), op_id=op_id)])
        store.apply([op("T1", 2, sale("12.10", voided=True), op_id=op_id, version=2)])
        with engine.connect() as connection:
            row = connection.execute(sa.select(operations)).one()
        assert (row.op_id, row.version, row.seq, row.topic) == (str(op_id), 2, 2, "ventas")
        assert (row.amount, row.voided) == (Decimal("12.10"), True)
        assert '"voided":true' in row.payload

    def test_tracking_rows_record_applied_stale_and_rejected(
        self, store: ServerStore, engine: sa.Engine
    ) -> None:
        op_id = uuid.uuid4()
        v2 = op("T1", 2, payment(), op_id=op_id, version=2)
        wrong = invalid("T1", 3, "why")
        bad = unreadable("T1", 4)
        store.apply([v2, wrong, bad])
        v1 = op("T1", 1, payment(), op_id=op_id, version=1)
        store.apply([v1])
        r = received.c
        with engine.connect() as connection:
            rows = connection.execute(
                sa.select(r.seq, r.op_id, r.version, r.status, r.reason, r.digest).order_by("seq")
            ).all()
        assert [tuple(row) for row in rows] == [
            (1, str(op_id), 1, "stale", "", sha256(v1)),
            (2, str(op_id), 2, "applied", "", sha256(v2)),
            (3, str(wrong.envelope.op_id), 1, "rejected", "why", sha256(wrong)),
            (4, bad.op_id, 1, "rejected", bad.reason, bad.digest),
        ]

    def test_batch_of_thousands_is_applied(self, store: ServerStore) -> None:
        batch: list[Incoming] = [op(f"T{s % 10}", s // 10 + 1, sale()) for s in range(3000)]
        verdicts = store.apply(batch + batch[:100])
        assert sum(v.outcome == "applied" for v in verdicts) == 3000
        assert sum(v.outcome == "duplicate" for v in verdicts) == 100
        assert {s.contiguous_seq for s in store.stats()} == {300}

    def test_two_writers_taking_turns_at_one_terminals_seqs_hold_each_once_with_no_gap(
        self, store: ServerStore, engine: sa.Engine
    ) -> None:
        """Two ingest processes on one ops queue: each gets runs of one till's seqs, in
        turn, and some of the other's again (a redelivery after a crash); contiguity is
        walked to the end whoever commits last, and nothing is held twice."""
        work: list[Incoming] = [op("T1", seq, sale(number=seq)) for seq in range(1, 1001)]
        runs = [work[start : start + 40] for start in range(0, len(work), 40)]
        mine, theirs = runs[0::2], runs[1::2]
        mine += [run[:10] for run in theirs[::5]]
        theirs += [run[:10] for run in mine[::5]]

        def write(part: list[list[Incoming]]) -> list[str]:
            return [v.outcome for run in part for v in store.apply(run)]

        with ThreadPoolExecutor(2) as pool:
            outcomes = [
                o for done in [pool.submit(write, p) for p in (mine, theirs)] for o in done.result()
            ]
        assert outcomes.count("applied") == 1000
        assert set(outcomes) == {"applied", "duplicate"}
        assert [(s.contiguous_seq, s.max_seq) for s in store.stats()] == [(1000, 1000)]
        assert store.gaps() == []
        with engine.connect() as connection:
            held = connection.execute(sa.select(sa.func.count()).select_from(operations))
            assert held.scalar_one() == 1000
