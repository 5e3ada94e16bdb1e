"""`terminal recover` on a real SQLite till database: which rows keep their seq, which move.

The server's answer is built by hand here; tests/integration/test_rebuilt_till.py runs the
whole exchange against the real broker and server.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from sqlalchemy.engine import Engine

from cajasync.core.db import VERSION_TABLES, make_engine, script_location, upgrade
from cajasync.core.identity import TerminalIdentity, load_position
from cajasync.core.settings import Settings
from cajasync.core.terminal_tables import ACKED, PENDING, REJECTED, SENT, outbox
from cajasync.processes.recover import Recovery, settle_rows, unacknowledged
from cajasync.processes.terminal_init import init_terminal
from schemas import decode_op
from schemas.feed import HighWaterMark, OutboxRef
from tests.integration.relay_support import record_sales

NEW = uuid.UUID(int=2)


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Engine]:
    identity = TerminalIdentity("T1", "L1", "PV1", "retail")
    engine = init_terminal(str(tmp_path / "caja.db"), identity, Settings(), declare=False)
    yield engine
    engine.dispose()


def set_states(engine: Engine, states: dict[int, str]) -> None:
    with engine.begin() as connection:
        for seq, state in states.items():
            connection.execute(outbox.update().where(outbox.c.seq == seq).values(state=state))


def rows(engine: Engine) -> dict[int, tuple[str, str]]:
    """seq -> (op_id, state)."""
    with engine.connect() as connection:
        query = sa.select(outbox.c.seq, outbox.c.op_id, outbox.c.state)
        return {seq: (op_id, state) for seq, op_id, state in connection.execute(query)}


def bodies(engine: Engine) -> dict[int, bytes]:
    with engine.connect() as connection:
        query = sa.select(outbox.c.seq, outbox.c.body)
        return {seq: body for seq, body in connection.execute(query)}


def mark(start_seq: int, held: list[tuple[int, str]]) -> HighWaterMark:
    return HighWaterMark(
        request_id="r1",
        terminal="T1",
        max_seq=start_seq,
        contiguous_seq=start_seq,
        held=start_seq,
        incarnation=NEW,
        start_seq=start_seq,
        held_rows=[OutboxRef(seq=seq, op_id=op_id, version=1) for seq, op_id in held],
    )


def settle(engine: Engine, answer: HighWaterMark, asked_at: int) -> Recovery:
    with engine.begin() as connection:
        return settle_rows(connection, answer, asked_at, NEW)


def test_a_restored_backup_moves_only_the_rows_whose_seq_the_server_holds_for_another_op(
    engine: Engine,
) -> None:
    # The backup: 1-4 acked, 5-6 sent (the server got them later), 7-8 recorded after the
    # restore (the server holds other ops at 7 and 8), 9 in a gap the server never filled.
    record_sales(engine, 9)
    set_states(engine, {1: ACKED, 2: ACKED, 3: ACKED, 4: ACKED, 5: SENT, 6: SENT})
    before = rows(engine)
    held = [(seq, before[seq][0]) for seq in range(1, 7)]
    held += [(7, str(uuid.uuid4())), (8, str(uuid.uuid4()))]
    held += [(seq, str(uuid.uuid4())) for seq in range(10, 13)]

    done = settle(engine, mark(12, held), asked_at=9)

    after = rows(engine)
    assert done.renumbered == [(7, 13), (8, 14)]
    assert (done.was_at, done.now_at, done.kept, done.already_held) == (9, 14, 3, 2)
    assert {seq: after[seq] for seq in range(1, 7)} == {seq: before[seq] for seq in range(1, 7)}
    assert after[9] == before[9]  # fills the server's gap at 9
    assert (after[13], after[14]) == ((before[7][0], PENDING), (before[8][0], PENDING))
    assert sorted(after) == [1, 2, 3, 4, 5, 6, 9, 13, 14]
    with engine.connect() as connection:
        assert load_position(connection).last_seq == 14
        assert load_position(connection).incarnation == NEW


def test_every_unacknowledged_row_carries_the_new_incarnation_and_its_own_seq(
    engine: Engine,
) -> None:
    record_sales(engine, 4)
    set_states(engine, {1: ACKED, 2: REJECTED})
    acked_body = bodies(engine)[1]
    settle(engine, mark(10, [(3, str(uuid.uuid4()))]), asked_at=4)
    envelopes = {seq: decode_op(body) for seq, body in bodies(engine).items()}
    assert bodies(engine)[1] == acked_body  # acked rows are never touched
    assert {seq: (e.seq, e.incarnation) for seq, e in envelopes.items() if seq != 1} == {
        2: (2, NEW),
        4: (4, NEW),
        11: (11, NEW),  # seq 3 was the server's: renumbered after the new start
    }


def test_rows_recorded_after_the_request_up_to_the_new_start_are_renumbered(
    engine: Engine,
) -> None:
    record_sales(engine, 3)  # asked about seqs 1-3 ...
    record_sales(engine, 2, first=4)  # ... then the POS sold seqs 4 and 5
    done = settle(engine, mark(4, []), asked_at=3)
    assert done.renumbered == [(4, 6)]  # 5 is above the start: nobody else holds it
    assert sorted(rows(engine)) == [1, 2, 3, 5, 6]
    assert done.now_at == 6


def test_the_last_seq_never_moves_down(engine: Engine) -> None:
    record_sales(engine, 5)
    done = settle(engine, mark(2, []), asked_at=5)
    assert (done.now_at, done.renumbered) == (5, [])
    with engine.connect() as connection:
        assert load_position(connection).last_seq == 5


def test_unacknowledged_lists_pending_sent_and_rejected_rows_by_seq(engine: Engine) -> None:
    recorded = record_sales(engine, 4)
    set_states(engine, {1: ACKED, 2: SENT, 3: REJECTED})
    with engine.connect() as connection:
        refs = unacknowledged(connection)
    assert refs == [
        OutboxRef(seq=r.seq, op_id=str(r.op_id), version=r.version) for r in recorded[1:]
    ]


def test_a_database_from_before_incarnations_gets_one_when_migrated(tmp_path: Path) -> None:
    engine = make_engine(str(tmp_path / "old.db"))
    config = Config()
    config.set_main_option("script_location", script_location("terminal"))
    config.set_main_option("version_table", VERSION_TABLES["terminal"])
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, "t0003")
        connection.exec_driver_sql(
            "INSERT INTO cajasync_terminal (id, terminal, location, pos, kind, last_seq, "
            "created_at) VALUES (1, 'T1', 'L1', 'PV1', 'retail', 41, '2026-03-02 12:30:00')"
        )
    upgrade(engine, "terminal")
    [recorded] = record_sales(engine, 1)
    with engine.connect() as connection:
        position = load_position(connection)
        body = connection.execute(sa.select(outbox.c.body)).scalar_one()
    engine.dispose()
    assert position.incarnation is not None
    assert (recorded.seq, decode_op(body).incarnation) == (42, position.incarnation)
