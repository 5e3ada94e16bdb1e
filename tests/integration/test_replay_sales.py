"""ReplaySales applied to a terminal outbox (SQLite, no broker): the rows of exactly the sales
named go back to pending, acked or not, and the numbers without a sale are reported."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import msgspec
import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from cajasync.core.db import make_engine, upgrade
from cajasync.core.identity import TerminalIdentity, save_identity
from cajasync.core.terminal_tables import ACKED, PENDING, outbox
from inbox.receipts import apply_replay_sales
from outbox.record import record
from schemas.envelope import ReplayReport, ReplaySales
from tests.integration.relay_support import record_sales, sale, states

TERMINAL = "T001"


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Engine]:
    engine = make_engine(str(tmp_path / "terminal.db"))
    upgrade(engine, "terminal")
    with engine.begin() as connection:
        save_identity(connection, TerminalIdentity(TERMINAL, "L1", "PV1", "retail"))
    yield engine
    engine.dispose()


def test_replay_sales_requeues_every_version_of_the_named_sales_and_reports_the_rest(
    engine: Engine,
) -> None:
    made = record_sales(engine, 5)
    with engine.begin() as connection:
        void = record(
            connection, msgspec.structs.replace(sale(2), voided=True), op_id=made[1].op_id
        )
        connection.execute(outbox.update().values(state=ACKED))

    request = ReplaySales(terminal=TERMINAL, z_number=1, numbers=[2, 4, 9])
    with engine.begin() as connection:
        replayed = apply_replay_sales(connection, request)

    assert replayed.from_seq == made[1].seq
    assert replayed.rows == 3  # sale 2 (both versions) and sale 4
    pending = {seq for seq, state in states(engine).items() if state == PENDING}
    assert pending == {made[1].seq, void.seq, made[3].seq}
    assert replayed.report == ReplayReport(terminal=TERMINAL, z_number=1, missing=[9])


def test_replay_sales_finding_every_number_reports_nothing(engine: Engine) -> None:
    record_sales(engine, 3)
    with engine.begin() as connection:
        replayed = apply_replay_sales(
            connection, ReplaySales(terminal=TERMINAL, z_number=1, numbers=[1, 3])
        )
    assert replayed.report is None
    with engine.connect() as connection:
        errors = set(connection.execute(sa.select(outbox.c.last_error)).scalars())
    assert "server asked to replay sales of Z 1" in errors
