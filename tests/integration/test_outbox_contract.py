"""The terminal outbox contract on SQLite, and its errors on a database never set up."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from cajasync.core.db import make_engine, upgrade
from cajasync.core.identity import TerminalIdentity, save_identity
from cajasync.core.terminal_tables import outbox
from cajasync.errors import NotInitialised
from outbox.outbox_store import OutboxStore, SqlOutboxStore
from outbox.pending import list_pending, outbox_counts, replay
from tests.contracts.outbox_contract import TERMINAL, OutboxContract, payment

SET_UP_HINT = r"no cajasync tables; set the till up with `cajasync terminal init"


@pytest.fixture
def terminal_engine(tmp_path: Path) -> Iterator[Engine]:
    """A terminal database as `cajasync terminal init` leaves it."""
    engine = make_engine(str(tmp_path / "pos.db"))
    upgrade(engine, "terminal")
    with engine.begin() as connection:
        save_identity(connection, TerminalIdentity(TERMINAL, "SUC-1", "POS-3", "retail"))
    yield engine
    engine.dispose()


class TestSqliteOutbox(OutboxContract):
    @pytest.fixture
    def store(self, terminal_engine: Engine) -> SqlOutboxStore:
        return SqlOutboxStore(terminal_engine)

    def settle(self, store: OutboxStore, seq: int, state: str) -> None:
        assert isinstance(store, SqlOutboxStore)
        with store._engine.begin() as connection:  # what inbox/receipts.py does, by hand
            connection.execute(outbox.update().where(outbox.c.seq == seq).values(state=state))


@pytest.fixture
def never_set_up(tmp_path: Path) -> Iterator[Engine]:
    engine = make_engine(str(tmp_path / "empty.db"))
    yield engine
    engine.dispose()


@pytest.mark.parametrize(
    "call",
    [
        pytest.param(lambda e: list_pending(e), id="list_pending"),
        pytest.param(lambda e: replay(e), id="replay"),
        pytest.param(lambda e: replay(e, [uuid.uuid4()]), id="replay-op"),
        pytest.param(lambda e: outbox_counts(e), id="counts"),
        pytest.param(lambda e: SqlOutboxStore(e).record(payment()), id="record"),
        pytest.param(
            lambda e: SqlOutboxStore(e).claim_pending(after_seq=0, limit=10), id="claim_pending"
        ),
        pytest.param(
            lambda e: SqlOutboxStore(e).claim_stale(sent_before=1.0, after_seq=0, limit=10),
            id="claim_stale",
        ),
        pytest.param(lambda e: SqlOutboxStore(e).mark_sent([1], now=1.0), id="mark_sent"),
        pytest.param(lambda e: SqlOutboxStore(e).mark_refused({1: "x"}), id="mark_refused"),
    ],
)
def test_the_outbox_of_a_database_never_set_up_raises_not_initialised_saying_what_to_run(
    never_set_up: Engine, call: Callable[[Engine], object]
) -> None:
    with pytest.raises(NotInitialised, match=SET_UP_HINT):
        call(never_set_up)

    assert sa.inspect(never_set_up).get_table_names() == []
