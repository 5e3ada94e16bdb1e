"""Receipts and replay requests applied to a terminal outbox (SQLite, no broker)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from cajasync.core.db import make_engine, upgrade
from cajasync.core.identity import TerminalIdentity, save_identity
from cajasync.core.terminal_tables import outbox
from inbox.receipts import apply_receipt, apply_replay
from outbox.claims import mark_sent
from outbox.record import Recorded
from schemas.envelope import Receipt, ReceiptItem, ReplayRequest
from tests.integration.relay_support import record_sales, rows, states

TERMINAL = "T001"


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Engine]:
    engine = make_engine(str(tmp_path / "terminal.db"))
    upgrade(engine, "terminal")
    with engine.begin() as connection:
        save_identity(connection, TerminalIdentity(TERMINAL, "L1", "PV1", "retail"))
    yield engine
    engine.dispose()


@pytest.fixture
def recorded(engine: Engine) -> list[Recorded]:
    """Four sales, all broker-confirmed (sent)."""
    made = record_sales(engine, 4)
    with engine.begin() as connection:
        mark_sent(connection, [r.seq for r in made], now=1.0)
    return made


def item(
    status: str,
    *,
    seq: int | None = None,
    op_id: uuid.UUID | None = None,
    version: int | None = None,
    reason: str = "",
) -> ReceiptItem:
    return ReceiptItem(op_id=op_id, version=version, seq=seq, status=status, reason=reason)  # type: ignore[arg-type]


def answer(row: Recorded, status: str, reason: str = "") -> ReceiptItem:
    """The item a server sends for an outbox row: its seq, op id and version."""
    return item(status, seq=row.seq, op_id=row.op_id, version=row.version, reason=reason)


def apply(engine: Engine, *items: ReceiptItem) -> tuple[int, int]:
    with engine.begin() as connection:
        return apply_receipt(connection, Receipt(terminal=TERMINAL, items=list(items)))


def replay(engine: Engine, from_seq: int, to_seq: int) -> int:
    with engine.begin() as connection:
        request = ReplayRequest(terminal=TERMINAL, from_seq=from_seq, to_seq=to_seq)
        return apply_replay(connection, request)


def test_an_acked_item_settles_the_row_it_names(engine: Engine, recorded: list[Recorded]) -> None:
    assert apply(engine, answer(recorded[1], "acked")) == (1, 0)

    row = rows(engine)[1]
    assert (row.seq, row.state, row.last_error) == (2, "acked", None)
    assert row.settled_at is not None
    assert states(engine) == {1: "sent", 2: "acked", 3: "sent", 4: "sent"}


def test_a_rejected_item_keeps_the_servers_reason(engine: Engine, recorded: list[Recorded]) -> None:
    assert apply(engine, answer(recorded[2], "rejected", "totals do not match")) == (0, 1)

    row = rows(engine)[2]
    assert (row.state, row.last_error) == ("rejected", "totals do not match")


def test_a_receipt_settles_pending_rows_too(engine: Engine) -> None:
    [row] = record_sales(engine, 1)  # still pending: the receipt beat the confirm bookkeeping

    assert apply(engine, answer(row, "acked")) == (1, 0)
    assert states(engine) == {1: "acked"}


def test_an_item_without_a_seq_matches_by_op_id_and_version(
    engine: Engine, recorded: list[Recorded]
) -> None:
    target = recorded[3]

    assert apply(engine, item("acked", op_id=target.op_id, version=target.version)) == (1, 0)
    assert states(engine)[target.seq] == "acked"


def test_an_item_with_a_seq_and_another_op_id_settles_nothing(
    engine: Engine, recorded: list[Recorded]
) -> None:
    assert apply(engine, item("acked", seq=1, op_id=uuid.uuid4(), version=1)) == (0, 0)
    assert states(engine)[1] == "sent"


def test_an_item_naming_only_a_seq_settles_nothing(
    engine: Engine, recorded: list[Recorded]
) -> None:
    assert apply(engine, item("rejected", seq=3, reason="held by another operation")) == (0, 0)
    assert apply(engine, item("acked", seq=2)) == (0, 0)
    assert states(engine) == {1: "sent", 2: "sent", 3: "sent", 4: "sent"}


def test_an_item_with_the_rows_op_id_and_version_but_another_seq_settles_nothing(
    engine: Engine, recorded: list[Recorded]
) -> None:
    target = recorded[0]
    wrong_seq = item("rejected", seq=2, op_id=target.op_id, version=target.version)
    assert apply(engine, wrong_seq) == (0, 0)
    assert states(engine)[1] == "sent"


def test_items_naming_no_known_row_are_ignored(engine: Engine, recorded: list[Recorded]) -> None:
    counts = apply(
        engine,
        item("acked", seq=99),
        item("acked", op_id=uuid.uuid4(), version=1),
        item("rejected", op_id=recorded[0].op_id),  # no version: names no single row
        item("rejected", seq=2, version=1),  # no op id
        answer(recorded[0], "acked"),
    )

    assert counts == (1, 0)
    assert states(engine) == {1: "acked", 2: "sent", 3: "sent", 4: "sent"}


def test_an_acked_row_stays_acked_when_a_rejection_arrives_later(
    engine: Engine, recorded: list[Recorded]
) -> None:
    apply(engine, answer(recorded[0], "acked"))

    assert apply(engine, answer(recorded[0], "rejected", "late duplicate")) == (0, 0)
    assert rows(engine)[0].state == "acked"
    assert rows(engine)[0].last_error is None


def test_an_acked_row_is_not_counted_again_when_its_receipt_is_redelivered(
    engine: Engine, recorded: list[Recorded]
) -> None:
    apply(engine, answer(recorded[0], "acked"))

    assert apply(engine, answer(recorded[0], "acked")) == (0, 0)


def test_a_rejected_row_becomes_acked_when_the_server_later_accepts_it(
    engine: Engine, recorded: list[Recorded]
) -> None:
    apply(engine, answer(recorded[1], "rejected", "unknown seller"))

    assert apply(engine, answer(recorded[1], "acked")) == (1, 0)
    assert (rows(engine)[1].state, rows(engine)[1].last_error) == ("acked", None)


def test_a_late_broker_confirm_does_not_turn_a_settled_row_back_to_sent(
    engine: Engine, recorded: list[Recorded]
) -> None:
    apply(engine, answer(recorded[0], "acked"), answer(recorded[1], "rejected", "bad"))

    with engine.begin() as connection:
        assert mark_sent(connection, [1, 2, 3], now=2.0) == 1

    assert states(engine) == {1: "acked", 2: "rejected", 3: "sent", 4: "sent"}


def test_one_receipt_settles_many_rows_in_one_go(engine: Engine) -> None:
    made = record_sales(engine, 300)
    items = [answer(r, "acked") for r in made[:-1]]

    assert apply(engine, *items, answer(made[-1], "rejected", "bad")) == (299, 1)


def test_a_replay_request_puts_every_row_in_its_range_back_to_pending(
    engine: Engine, recorded: list[Recorded]
) -> None:
    apply(engine, answer(recorded[1], "acked"), answer(recorded[2], "rejected", "bad"))

    assert replay(engine, 2, 3) == 2

    assert states(engine) == {1: "sent", 2: "pending", 3: "pending", 4: "sent"}
    replayed = rows(engine)[1]
    assert replayed.settled_at is None
    assert replayed.last_error == "server asked to replay seq 2..3"


def test_a_replay_request_beyond_the_last_seq_touches_only_existing_rows(
    engine: Engine, recorded: list[Recorded]
) -> None:
    assert replay(engine, 4, 10) == 1
    assert replay(engine, 50, 60) == 0


def test_receipts_apply_inside_the_callers_transaction(
    engine: Engine, recorded: list[Recorded]
) -> None:
    with engine.connect() as connection:
        connection.begin()
        apply_receipt(connection, Receipt(terminal=TERMINAL, items=[answer(recorded[0], "acked")]))
        connection.rollback()

    with engine.connect() as connection:
        state = connection.execute(sa.select(outbox.c.state).where(outbox.c.seq == 1)).scalar()
    assert state == "sent"
