"""The POS-facing write API on a real SQLite file: seq, versions, transactions, ORM capture."""

from __future__ import annotations

import datetime as dt
import hashlib
import threading
import uuid
from collections.abc import Callable, Iterator
from decimal import Decimal
from pathlib import Path
from typing import TypeVar

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from cajasync import record, record_new_version, record_weekly_file, track
from cajasync.core.db import make_engine, upgrade
from cajasync.core.identity import TerminalIdentity, save_identity
from cajasync.core.terminal_tables import ACKED, PENDING, outbox, terminal
from cajasync.errors import ConfigError, NotInitialised, UnknownOperation
from outbox.orm import OP_NAMESPACE
from schemas import (
    CashPayment,
    OpEnvelope,
    Operation,
    Sale,
    SaleLine,
    SalePayment,
    SaleTotals,
    WeeklyFileChunk,
    decode_op,
)
from schemas.topics import CASH_PAYMENTS, SALES, WEEKLY_FILES

TERMINAL = "CAJA-07"
# Not just "run `terminal init`": a rebuilt till must not start again at seq 1 blindly.
SET_UP_HINT = r"`cajasync terminal init .*asks the server .*`cajasync terminal recover"
NOW = dt.datetime(2026, 3, 2, 12, 30, tzinfo=dt.UTC)

pos_metadata = sa.MetaData()
pos_ticket = sa.Table(
    "pos_ticket",
    pos_metadata,
    sa.Column("number", sa.Integer, primary_key=True),
    sa.Column("total_cents", sa.Integer, nullable=False),
)


class PosBase(DeclarativeBase):
    pass


class PosSale(PosBase):
    """A sale as a POS maps it in its own table, knowing nothing of cajasync."""

    __tablename__ = "pos_sale"

    id: Mapped[int] = mapped_column(primary_key=True)
    number: Mapped[int]
    total_cents: Mapped[int]
    voided: Mapped[bool] = mapped_column(default=False)


# Fixtures and helpers ------------------------------------------------------------------


@pytest.fixture
def database(tmp_path: Path) -> str:
    return str(tmp_path / "pos.db")


@pytest.fixture
def engine(database: str) -> Iterator[Engine]:
    """A terminal database as `cajasync terminal init` leaves it, with the POS's tables."""
    engine = make_engine(database)
    upgrade(engine, "terminal")
    with engine.begin() as connection:
        save_identity(connection, TerminalIdentity(TERMINAL, "SUC-1", "POS-3", "retail"))
        pos_metadata.create_all(connection)
        PosBase.metadata.create_all(connection)
    yield engine
    engine.dispose()


@pytest.fixture
def tracked(engine: Engine) -> Iterator[Callable[[], None]]:
    """PosSale tracked for the test; untracked afterwards whatever happens."""
    untrack = track(PosSale, _operation_of)
    untracked = False

    def stop() -> None:
        nonlocal untracked
        untracked = True
        untrack()

    yield stop
    if not untracked:
        untrack()


def _sale(number: int, *, cents: int = 1250, voided: bool = False) -> Sale:
    lines = [
        SaleLine(
            product="CAFE",
            quantity=Decimal(1),
            unit_price=Decimal(cents).scaleb(-2),
            tax_rate=Decimal(0),
        )
    ]
    totals = SaleTotals.of(lines)
    return Sale(
        book="0001-B",
        number=number,
        date=NOW,
        seller="ana",
        lines=lines,
        payments=[SalePayment(method="cash", amount=totals.total)],
        totals=totals,
        voided=voided,
    )


def _operation_of(sale: PosSale) -> Operation:
    return _sale(sale.number, cents=sale.total_cents, voided=sale.voided)


def _payment(amount: str = "300.00") -> CashPayment:
    return CashPayment(
        kind="transfer",
        payee_kind="supplier",
        payee="distribuidora-sur",
        amount=Decimal(amount),
        method="cash",
        date=NOW,
    )


def _rows(connectable: Engine | sa.Connection) -> list[sa.Row[tuple[int, str, int, str, str]]]:
    query = sa.select(
        outbox.c.seq, outbox.c.op_id, outbox.c.version, outbox.c.state, outbox.c.topic
    )
    if isinstance(connectable, sa.Connection):
        return list(connectable.execute(query.order_by(outbox.c.seq)))
    with connectable.connect() as connection:
        return list(connection.execute(query.order_by(outbox.c.seq)))


def _seqs(engine: Engine) -> list[int]:
    return [row.seq for row in _rows(engine)]


def _envelopes(engine: Engine) -> list[OpEnvelope]:
    with engine.connect() as connection:
        bodies = connection.execute(sa.select(outbox.c.body).order_by(outbox.c.seq)).scalars()
        return [decode_op(body) for body in bodies]


def _last_seq(engine: Engine) -> int:
    with engine.connect() as connection:
        return int(connection.execute(sa.select(terminal.c.last_seq)).scalar_one())


def _incarnation(engine: Engine) -> uuid.UUID:
    with engine.connect() as connection:
        return uuid.UUID(connection.execute(sa.select(terminal.c.incarnation)).scalar_one())


def _tickets(engine: Engine) -> list[int]:
    with engine.connect() as connection:
        return list(connection.execute(sa.select(pos_ticket.c.number)).scalars())


def _pos_sales(engine: Engine) -> int:
    with engine.connect() as connection:
        return int(connection.execute(sa.select(sa.func.count()).select_from(PosSale)).scalar_one())


R = TypeVar("R")


def _rolled_back(engine: Engine, work: Callable[[sa.Connection], R]) -> R:
    """Run `work` in a POS transaction that the POS then rolls back."""
    with engine.connect() as connection:
        transaction = connection.begin()
        result = work(connection)
        transaction.rollback()
    return result


# seq -----------------------------------------------------------------------------------


def test_seq_is_contiguous_across_many_records(engine: Engine) -> None:
    for number in range(1, 41):
        with engine.begin() as connection:
            record(connection, _sale(number))
    with engine.begin() as connection:  # several in one POS transaction
        for _ in range(10):
            record(connection, _payment())
    assert _seqs(engine) == list(range(1, 51))
    assert _last_seq(engine) == 50
    envelopes = _envelopes(engine)
    assert [e.seq for e in envelopes] == list(range(1, 51))
    assert {e.terminal for e in envelopes} == {TERMINAL}
    assert {e.version for e in envelopes} == {1}
    assert len({e.op_id for e in envelopes}) == 50


def test_record_returns_where_the_operation_landed(engine: Engine) -> None:
    with engine.begin() as connection:
        recorded = record(connection, _sale(1), now=NOW)
    assert (recorded.seq, recorded.version) == (1, 1)
    [row] = _rows(engine)
    assert (row.op_id, row.state, row.topic) == (str(recorded.op_id), PENDING, SALES)
    [envelope] = _envelopes(engine)
    assert envelope == OpEnvelope(
        terminal=TERMINAL,
        seq=1,
        op_id=recorded.op_id,
        version=1,
        recorded_at=NOW,
        op=_sale(1),
        incarnation=_incarnation(engine),
    )


def test_rolled_back_sale_leaves_no_gap_in_seq(engine: Engine) -> None:
    with engine.begin() as connection:
        record(connection, _sale(1))
    _rolled_back(engine, lambda connection: record(connection, _sale(2)))
    with engine.begin() as connection:
        record(connection, _sale(3))
    assert _seqs(engine) == [1, 2]
    assert [e.op.number for e in _envelopes(engine) if isinstance(e.op, Sale)] == [1, 3]
    assert _last_seq(engine) == 2


# The POS's own transaction -------------------------------------------------------------


def test_sale_and_its_outbox_row_commit_together(engine: Engine) -> None:
    with engine.begin() as connection:
        connection.execute(pos_ticket.insert().values(number=1, total_cents=1250))
        record(connection, _sale(1))
    assert _tickets(engine) == [1]
    assert _seqs(engine) == [1]


def test_failed_pos_transaction_keeps_neither_sale_nor_outbox_row(engine: Engine) -> None:
    def sell(connection: sa.Connection) -> None:
        connection.execute(pos_ticket.insert().values(number=1, total_cents=1250))
        record(connection, _sale(1))

    _rolled_back(engine, sell)
    assert _tickets(engine) == []
    assert _seqs(engine) == []
    assert _last_seq(engine) == 0


def test_outbox_row_is_rolled_back_when_the_pos_insert_after_it_fails(engine: Engine) -> None:
    with engine.begin() as connection:
        connection.execute(pos_ticket.insert().values(number=1, total_cents=1250))

    def sell_with_a_duplicate_ticket(connection: sa.Connection) -> None:
        record(connection, _sale(1))
        connection.execute(pos_ticket.insert().values(number=1, total_cents=999))

    with pytest.raises(sa.exc.IntegrityError), engine.begin() as connection:
        sell_with_a_duplicate_ticket(connection)
    assert _seqs(engine) == []


def test_recording_through_a_session_uses_the_sessions_transaction(engine: Engine) -> None:
    with Session(engine) as session:
        session.execute(pos_ticket.insert().values(number=1, total_cents=1250))
        record(session, _sale(1))
        session.rollback()
        session.execute(pos_ticket.insert().values(number=2, total_cents=800))
        record(session, _sale(2, cents=800))
        session.commit()
    assert _tickets(engine) == [2]
    assert _seqs(engine) == [1]


# Versions ------------------------------------------------------------------------------


def test_new_version_gets_the_next_version_and_seq_and_is_pending_again_after_an_ack(
    engine: Engine,
) -> None:
    with engine.begin() as connection:
        first = record(connection, _sale(1))
        record(connection, _payment())
    with engine.begin() as connection:  # the relay got the server's receipt
        connection.execute(outbox.update().where(outbox.c.seq == first.seq).values(state=ACKED))
    with engine.begin() as connection:
        voided = record_new_version(connection, first.op_id, _sale(1, voided=True))
    assert (voided.op_id, voided.version, voided.seq) == (first.op_id, 2, 3)
    rows = _rows(engine)
    assert [(r.seq, r.version, r.state) for r in rows if r.op_id == str(first.op_id)] == [
        (1, 1, ACKED),
        (3, 2, PENDING),
    ]
    latest = _envelopes(engine)[-1]
    assert isinstance(latest.op, Sale)
    assert (latest.version, latest.op.voided) == (2, True)


def test_each_correction_gets_the_next_version(engine: Engine) -> None:
    with engine.begin() as connection:
        op_id = record(connection, _sale(1)).op_id
    for expected in (2, 3, 4):
        with engine.begin() as connection:
            recorded = record_new_version(connection, op_id, _sale(1, cents=1000 + expected))
        assert recorded.version == expected
    assert [(r.seq, r.version) for r in _rows(engine)] == [(1, 1), (2, 2), (3, 3), (4, 4)]


def test_new_version_of_an_unknown_operation_raises_unknown_operation(engine: Engine) -> None:
    missing = uuid.uuid4()
    with pytest.raises(UnknownOperation, match=str(missing)), engine.begin() as connection:
        record_new_version(connection, missing, _sale(1, voided=True))
    assert _seqs(engine) == []
    assert _last_seq(engine) == 0


def test_new_version_of_a_rolled_back_operation_raises_unknown_operation(engine: Engine) -> None:
    op_id = _rolled_back(engine, lambda connection: record(connection, _sale(1))).op_id
    with pytest.raises(UnknownOperation), engine.begin() as connection:
        record_new_version(connection, op_id, _sale(1, voided=True))


# Before `terminal init` ----------------------------------------------------------------


@pytest.fixture
def migrated_without_identity(database: str) -> Iterator[Engine]:
    engine = make_engine(database)
    upgrade(engine, "terminal")
    yield engine
    engine.dispose()


@pytest.fixture
def empty_database(database: str) -> Iterator[Engine]:
    engine = make_engine(database)
    yield engine
    engine.dispose()


@pytest.mark.parametrize("state", ["migrated_without_identity", "empty_database"])
@pytest.mark.parametrize(
    "write",
    [
        pytest.param(lambda c: record(c, _payment()), id="record"),
        pytest.param(lambda c: record(c, _payment(), op_id=uuid.uuid4()), id="record-with-op-id"),
        pytest.param(
            lambda c: record_weekly_file(c, week="2026-W09", file_name="f", content=b"x"),
            id="weekly-file",
        ),
    ],
)
def test_recording_before_terminal_init_raises_not_initialised_saying_what_to_run(
    request: pytest.FixtureRequest, state: str, write: Callable[[sa.Connection], object]
) -> None:
    engine: Engine = request.getfixturevalue(state)
    with (
        pytest.raises(NotInitialised, match=SET_UP_HINT),
        engine.begin() as connection,
    ):
        write(connection)
    if state == "migrated_without_identity":
        assert _seqs(engine) == []


def test_new_version_before_terminal_init_raises_not_initialised(empty_database: Engine) -> None:
    with (
        pytest.raises(NotInitialised, match=SET_UP_HINT),
        empty_database.begin() as connection,
    ):
        record_new_version(connection, uuid.uuid4(), _payment())


def test_terminal_id_with_a_trailing_newline_is_refused_at_init(
    migrated_without_identity: Engine,
) -> None:
    with pytest.raises(ConfigError, match="terminal"), migrated_without_identity.begin() as c:
        save_identity(c, TerminalIdentity("CAJA-07\n", "SUC-1", "POS-3", "retail"))


# Weekly files --------------------------------------------------------------------------


def _chunks(engine: Engine) -> list[WeeklyFileChunk]:
    chunks = [e.op for e in _envelopes(engine)]
    assert all(isinstance(chunk, WeeklyFileChunk) for chunk in chunks)
    return [chunk for chunk in chunks if isinstance(chunk, WeeklyFileChunk)]


@pytest.mark.parametrize(
    ("size", "chunk_size", "count"),
    [(1000, 300, 4), (900, 300, 3), (1, 300, 1), (0, 300, 1), (600 * 1024, None, 3)],
)
def test_weekly_file_is_split_into_chunks_whose_reassembly_matches_its_sha256(
    engine: Engine, size: int, chunk_size: int | None, count: int
) -> None:
    content = (hashlib.sha256(b"seed").digest() * (size // 32 + 1))[:size]
    options = {} if chunk_size is None else {"chunk_size": chunk_size}
    with engine.begin() as connection:
        connection.execute(pos_ticket.insert().values(number=1, total_cents=1250))
        recorded = record_weekly_file(
            connection, week="2026-W09", file_name="SEMANAL_0003.txt", content=content, **options
        )
    assert [r.seq for r in recorded] == list(range(1, count + 1))
    assert len({r.op_id for r in recorded}) == count
    assert {r.topic for r in _rows(engine)} == {WEEKLY_FILES}
    chunks = _chunks(engine)
    assert [c.chunk_index for c in chunks] == list(range(count))
    assert {(c.chunk_count, c.size, c.week, c.file_name) for c in chunks} == {
        (count, size, "2026-W09", "SEMANAL_0003.txt")
    }
    reassembled = b"".join(c.data for c in sorted(chunks, key=lambda c: c.chunk_index))
    assert reassembled == content
    assert {c.sha256 for c in chunks} == {hashlib.sha256(reassembled).hexdigest()}


def test_weekly_file_in_a_rolled_back_transaction_leaves_no_chunk(engine: Engine) -> None:
    _rolled_back(
        engine,
        lambda c: record_weekly_file(
            c, week="2026-W09", file_name="f", content=b"x" * 9, chunk_size=3
        ),
    )
    assert _seqs(engine) == []
    assert _last_seq(engine) == 0


# ORM capture ---------------------------------------------------------------------------


def test_inserting_a_tracked_sale_writes_its_outbox_row_in_the_same_flush(
    engine: Engine, tracked: Callable[[], None]
) -> None:
    with Session(engine) as session:
        sale = PosSale(number=1, total_cents=1250)
        session.add(sale)
        session.flush()
        assert [(r.seq, r.version) for r in _rows(session.connection())] == [(1, 1)]
        session.commit()
        sale_id = sale.id
    [envelope] = _envelopes(engine)
    assert envelope.op == _sale(1)
    assert envelope.op_id == uuid.uuid5(OP_NAMESPACE, f"{TERMINAL}:pos_sale:{sale_id}")


def test_rolled_back_tracked_insert_leaves_neither_sale_nor_outbox_row(
    engine: Engine, tracked: Callable[[], None]
) -> None:
    with Session(engine) as session:
        session.add(PosSale(number=1, total_cents=1250))
        session.flush()
        session.rollback()
    assert _pos_sales(engine) == 0
    assert _seqs(engine) == []
    assert _last_seq(engine) == 0


def test_failing_flush_of_a_tracked_sale_leaves_neither(
    engine: Engine, tracked: Callable[[], None]
) -> None:
    with Session(engine) as session:
        session.add(PosSale(id=1, number=1, total_cents=1250))
        session.commit()
    with Session(engine) as session:
        session.add(PosSale(id=2, number=2, total_cents=800))
        session.add(PosSale(id=1, number=3, total_cents=1))  # the POS's own bug: same key
        with pytest.raises(sa.exc.IntegrityError):
            session.commit()
    assert _pos_sales(engine) == 1
    assert _seqs(engine) == [1]


def test_voiding_a_tracked_sale_records_version_two(
    engine: Engine, tracked: Callable[[], None]
) -> None:
    with Session(engine) as session:
        sale = PosSale(number=1, total_cents=1250)
        session.add(sale)
        session.commit()
        sale.voided = True
        session.commit()
    first, second = _envelopes(engine)
    assert (second.op_id, second.version, second.seq) == (first.op_id, 2, 2)
    assert isinstance(second.op, Sale)
    assert second.op.voided is True
    assert [r.state for r in _rows(engine)] == [PENDING, PENDING]


def test_flush_without_net_changes_records_nothing(
    engine: Engine, tracked: Callable[[], None]
) -> None:
    with Session(engine) as session:
        sale = PosSale(number=1, total_cents=1250)
        session.add(sale)
        session.commit()
        assert sale.voided is False  # loaded again after the commit
        sale.voided = False
        sale.total_cents = 999
        sale.total_cents = 1250  # and back
        assert sale in session.dirty
        session.commit()
    assert _seqs(engine) == [1]


def test_setting_an_expired_attribute_to_its_same_value_records_nothing(
    engine: Engine, tracked: Callable[[], None]
) -> None:
    with Session(engine) as session:  # expire_on_commit: the old value is unknown in memory
        sale = PosSale(number=1, total_cents=1250)
        session.add(sale)
        session.commit()
        sale.voided = False
        session.commit()
        sale.voided = True
        session.commit()
        sale.voided = True
        session.commit()
    assert [(r.seq, r.version) for r in _rows(engine)] == [(1, 1), (2, 2)]


def test_untracked_class_records_nothing(engine: Engine, tracked: Callable[[], None]) -> None:
    with Session(engine) as session:
        sale = PosSale(number=1, total_cents=1250)
        session.add(sale)
        session.commit()
        tracked()
        sale.voided = True
        session.add(PosSale(number=2, total_cents=800))
        session.commit()
    assert _pos_sales(engine) == 2
    assert _seqs(engine) == [1]


def test_tracked_class_can_skip_updates_and_choose_its_op_id(engine: Engine) -> None:
    untrack = track(
        PosSale,
        _operation_of,
        op_id=lambda sale: uuid.UUID(int=sale.number),
        record_updates=False,
    )
    try:
        with Session(engine) as session:
            sale = PosSale(number=77, total_cents=1250)
            session.add(sale)
            session.commit()
            sale.voided = True
            session.commit()
    finally:
        untrack()
    [row] = _rows(engine)
    assert row.op_id == str(uuid.UUID(int=77))


def test_tracked_sales_mixed_with_direct_records_share_one_contiguous_seq(
    engine: Engine, tracked: Callable[[], None]
) -> None:
    with Session(engine) as session:
        session.add_all([PosSale(number=n, total_cents=100 * n) for n in range(1, 4)])
        record(session, _payment())
        session.commit()
    assert _seqs(engine) == [1, 2, 3, 4]
    assert sorted(r.topic for r in _rows(engine)) == [CASH_PAYMENTS, SALES, SALES, SALES]


# Concurrency ---------------------------------------------------------------------------


@pytest.mark.parametrize("rollback_every", [0, 3])
def test_two_threads_recording_at_once_get_contiguous_unique_seqs(
    engine: Engine, database: str, rollback_every: int
) -> None:
    per_thread = 40
    start = threading.Barrier(2)
    errors: list[BaseException] = []
    committed: list[int] = []
    lock = threading.Lock()

    def pos(worker: int) -> None:
        own = make_engine(database)  # its own connection, as a second process would have
        try:
            start.wait()
            for attempt in range(1, per_thread + 1):
                with own.connect() as connection, connection.begin() as transaction:
                    recorded = record(connection, _sale(worker * 1000 + attempt))
                    if rollback_every and attempt % rollback_every == 0:
                        transaction.rollback()
                        continue
                with lock:
                    committed.append(recorded.seq)
        except BaseException as exc:  # reported to the test thread below
            errors.append(exc)
        finally:
            own.dispose()

    threads = [threading.Thread(target=pos, args=(worker,)) for worker in (1, 2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not errors
    expected = 2 * (per_thread - (per_thread // rollback_every if rollback_every else 0))
    assert sorted(committed) == list(range(1, expected + 1))
    assert _seqs(engine) == list(range(1, expected + 1))
    assert _last_seq(engine) == expected
    envelopes = _envelopes(engine)
    assert len({e.op_id for e in envelopes}) == expected
    numbers = {e.op.number for e in envelopes if isinstance(e.op, Sale)}
    assert {n // 1000 for n in numbers} == {1, 2}
