"""The relay's claims and settlements on a terminal outbox (SQLite, no broker)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from cajasync.broker.confirms import Window
from cajasync.core.db import make_engine, upgrade
from cajasync.core.identity import TerminalIdentity, save_identity
from cajasync.core.settings import Settings
from cajasync.errors import StoreError
from inbox.receipts import apply_replay
from outbox.claimer import Claimer
from outbox.claims import claim_pending, claim_stale, mark_refused, mark_sent, store_errors
from outbox.holds import Holds
from schemas.envelope import ReplayRequest
from tests.integration.relay_support import record_sales, rows, states


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Engine]:
    engine = make_engine(str(tmp_path / "terminal.db"))
    upgrade(engine, "terminal")
    with engine.begin() as connection:
        save_identity(connection, TerminalIdentity("T001", "L1", "PV1", "retail"))
    record_sales(engine, 6)
    yield engine
    engine.dispose()


def test_pending_rows_are_claimed_in_seq_order_after_the_cursor(engine: Engine) -> None:
    with engine.connect() as connection:
        first = claim_pending(connection, after_seq=0, limit=4)
        rest = claim_pending(connection, after_seq=first[-1].seq, limit=4)

    assert [row.seq for row in first] == [1, 2, 3, 4]
    assert [row.seq for row in rest] == [5, 6]
    assert first[0].body == rows(engine)[0].body
    assert (first[0].topic, first[0].version) == ("ventas", 1)


def test_rows_already_sent_are_not_claimed_as_pending(engine: Engine) -> None:
    with engine.begin() as connection:
        mark_sent(connection, [1, 2, 5], now=100.0)
    with engine.connect() as connection:
        claimed = claim_pending(connection, after_seq=0, limit=10)

    assert [row.seq for row in claimed] == [3, 4, 6]


def test_confirmed_rows_become_sent_with_the_time_and_one_more_attempt(engine: Engine) -> None:
    with engine.begin() as connection:
        assert mark_sent(connection, [2, 1], now=123.5) == 2

    first = rows(engine)[0]
    assert (first.state, first.sent_at, first.attempts, first.last_error) == (
        "sent",
        123.5,
        1,
        None,
    )
    assert states(engine)[3] == "pending"


def test_marking_more_rows_sent_than_one_statement_takes_works(tmp_path: Path) -> None:
    engine = make_engine(str(tmp_path / "big.db"))
    upgrade(engine, "terminal")
    with engine.begin() as connection:
        save_identity(connection, TerminalIdentity("T002", "L1", "PV1", "retail"))
    record_sales(engine, 12_000)

    with engine.begin() as connection:
        assert mark_sent(connection, range(1, 12_001), now=1.0) == 12_000
    engine.dispose()


def test_sent_rows_confirmed_before_the_cutoff_are_claimed_as_stale(engine: Engine) -> None:
    with engine.begin() as connection:
        mark_sent(connection, [1, 2], now=100.0)
        mark_sent(connection, [3], now=200.0)
    with engine.connect() as connection:
        stale = claim_stale(connection, sent_before=150.0, after_seq=0, limit=10)
        later = claim_stale(connection, sent_before=150.0, after_seq=1, limit=10)

    assert [row.seq for row in stale] == [1, 2]
    assert [row.seq for row in later] == [2]


def test_refused_rows_stay_pending_with_the_reason_and_one_more_attempt(engine: Engine) -> None:
    with engine.begin() as connection:
        mark_sent(connection, [2], now=1.0)
        changed = mark_refused(connection, {1: "unroutable: …", 2: "nacked", 3: "nacked"})

    assert changed == 3
    by_seq = {row.seq: row for row in rows(engine)}
    assert (by_seq[1].state, by_seq[1].attempts, by_seq[1].last_error) == (
        "pending",
        1,
        "unroutable: …",
    )
    assert (by_seq[2].state, by_seq[2].attempts, by_seq[2].last_error) == ("pending", 2, "nacked")


def test_database_errors_become_store_errors_naming_the_terminal() -> None:
    with (
        pytest.raises(StoreError, match="terminal T9: claiming failed: database is locked"),
        store_errors("T9", "claiming"),
    ):
        raise sa.exc.OperationalError("SELECT", {}, Exception("database is locked"))


def claimer_for(
    settings: Settings, *, resend: bool = False, hold_s: float = 1000.0
) -> tuple[Claimer, Window[int], Holds]:
    window, holds = Window[int](size=100), Holds(initial_s=hold_s, max_s=hold_s)
    return Claimer(settings, window, holds, resend=resend), window, holds


def claim(engine: Engine, claimer: Claimer, window: Window[int], space: int = 100) -> list[int]:
    """Claim like the relay does and put what was claimed in flight."""
    with engine.connect() as connection:
        stale, fresh = claimer.claim(connection, space)
    for row in [*stale, *fresh]:
        window.add(row.seq)
    return [row.seq for row in [*stale, *fresh]]


@pytest.fixture
def no_wrap_delay(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("outbox.claimer.MIN_WRAP_S", 0.0)


def test_the_claimer_hands_out_pending_rows_once_while_they_are_in_flight(
    engine: Engine, no_wrap_delay: None
) -> None:
    claimer, window, _holds = claimer_for(Settings())

    assert claim(engine, claimer, window, space=4) == [1, 2, 3, 4]
    assert claim(engine, claimer, window) == [5, 6]
    assert claim(engine, claimer, window) == []


def refuse_row_3(engine: Engine, claimer: Claimer, window: Window[int], holds: Holds) -> None:
    """Publish all six rows; the broker confirms all but 3, which it returns."""
    claim(engine, claimer, window)
    window.reset()
    with engine.begin() as connection:
        mark_sent(connection, [1, 2, 4, 5, 6], now=1.0)
    claimer.held_until(holds.hold(3, now=time.monotonic()))


def test_the_claimer_leaves_a_refused_row_alone_while_it_is_held(
    engine: Engine, no_wrap_delay: None
) -> None:
    claimer, window, holds = claimer_for(Settings(), hold_s=1000.0)
    refuse_row_3(engine, claimer, window, holds)

    assert claim(engine, claimer, window) == []


def test_the_claimer_goes_back_for_a_refused_row_once_its_hold_is_over(
    engine: Engine, no_wrap_delay: None
) -> None:
    claimer, window, holds = claimer_for(Settings(), hold_s=0.0)
    refuse_row_3(engine, claimer, window, holds)

    assert claim(engine, claimer, window) == [3]


def test_the_claimer_rewinds_to_rows_the_server_asked_for_again(engine: Engine) -> None:
    claimer, window, _holds = claimer_for(Settings())
    claim(engine, claimer, window)
    window.reset()
    with engine.begin() as connection:
        mark_sent(connection, range(1, 7), now=1.0)
        apply_replay(connection, ReplayRequest(terminal="T001", from_seq=2, to_seq=3))

    claimer.rewind(2)

    assert claim(engine, claimer, window) == [2, 3]


def test_the_claimer_offers_sent_rows_without_a_receipt_for_resending(engine: Engine) -> None:
    claimer, window, _holds = claimer_for(Settings(resend_after_s=0.001), resend=True)
    with engine.begin() as connection:
        mark_sent(connection, [1, 2], now=1.0)

    assert claim(engine, claimer, window) == [1, 2, 3, 4, 5, 6]
    assert claim(engine, claimer, window) == []  # all in flight
