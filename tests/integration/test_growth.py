"""Growth over time: the change log compacted to what the tills passed, operations of past
months archived; on both server stores (and the real broker where a till takes part)."""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import pytest
import sqlalchemy as sa

from cajasync.core.server_tables import (
    ACTIVE,
    REVOKED,
    change_log,
    operations,
    operations_archive,
    stream_heads,
    terminal_status,
    terminals,
)
from cajasync.core.settings import Settings
from cajasync.errors import ConfigError
from inbox.archive import archive, month_start
from inbox.ingest import run_ingest
from inbox.requests import RequestStats
from outbox import catalog
from outbox.compaction import Retention, compact
from schemas.codec import encode
from schemas.records import Product
from schemas.status import TerminalStatus
from tests.integration.down_support import Server, Terminal, differences, purge_terminal_queue
from tests.integration.ingest_support import (
    envelope,
    publish_op,
    take_receipt_items,
    tracking_rows,
)
from tests.waiting import wait_for

PRODUCTS = "productos"
STREAM = "productos:all"
HOUR_S = 3600.0
IDLE_S = 0.4


def product(n: int, price: str = "10.00") -> Product:
    return Product(key=f"{n:06d}", name=f"Producto {n}", price=Decimal(price), tax_rate=Decimal(21))


def write_changes(engine: sa.Engine, count: int) -> None:
    """`count` changes to productos:all, all published (as the feed relay would mark them)."""
    with engine.begin() as connection:
        for n in range(count):
            catalog.upsert(connection, product(n % 7, f"{10 + n}.00"))
        connection.execute(change_log.update().values(published_at=time.time()))


def report_status(
    engine: sa.Engine, terminal: str, position: int, *, registry: str | None, age_s: float = 0
) -> None:
    """A till's latest status holding `position` of productos:all, received `age_s` ago;
    registered as `registry` (active, revoked) or not at all (None)."""
    received_at = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=age_s)
    status = TerminalStatus(terminal=terminal, sent_at=received_at, streams={STREAM: position})
    with engine.begin() as connection:
        connection.execute(
            terminal_status.insert().values(
                terminal=terminal, sent_at=received_at, received_at=received_at, body=encode(status)
            )
        )
        if registry is not None:
            now = dt.datetime.now(dt.UTC)
            connection.execute(
                terminals.insert().values(
                    terminal=terminal,
                    location="L1",
                    pos="PV1",
                    kind="retail",
                    status=registry,
                    added_at=now,
                    updated_at=now,
                )
            )


def logged_seqs(engine: sa.Engine) -> list[int]:
    with engine.connect() as connection:
        query = sa.select(change_log.c.seq).where(change_log.c.stream == STREAM)
        return sorted(connection.execute(query).scalars())


def floor_of(engine: sa.Engine) -> int:
    with engine.connect() as connection:
        query = sa.select(stream_heads.c.compacted_to).where(stream_heads.c.stream == STREAM)
        return int(connection.execute(query).scalar_one())


# -- compaction --------------------------------------------------------------------------


def test_compaction_keeps_exactly_the_changes_the_lowest_registered_till_still_needs(
    engine: sa.Engine,
) -> None:
    write_changes(engine, 30)
    report_status(engine, "T1", 12, registry=ACTIVE)
    report_status(engine, "T2", 20, registry=ACTIVE)
    report_status(engine, "T3", 2, registry=REVOKED)  # revoked: holds nothing
    report_status(engine, "T4", 1, registry=ACTIVE, age_s=2 * HOUR_S)  # silent too long
    retention = Retention(keep_changes=5, keep_s=0, hold_s=HOUR_S)

    preview = compact(engine, retention, dry_run=True)
    assert logged_seqs(engine) == list(range(1, 31))  # a dry run drops nothing
    [stream] = preview.streams
    assert (stream.floor, stream.dropped, stream.held_by) == (12, 12, "terminal T1")

    done = compact(engine, retention)
    assert logged_seqs(engine) == list(range(13, 31))
    assert floor_of(engine) == 12
    assert (done.rows_before, done.rows_after, done.dropped) == (30, 18, 12)


def test_compaction_keeps_the_latest_changes_and_those_not_published_whatever_the_tills(
    engine: sa.Engine,
) -> None:
    write_changes(engine, 20)
    with engine.begin() as connection:
        connection.execute(
            change_log.update().where(change_log.c.seq > 17).values(published_at=None)
        )
    report_status(engine, "T1", 20, registry=None)  # unregistered, under the shared user
    compact(engine, Retention(keep_changes=5, keep_s=0, hold_s=HOUR_S))
    assert logged_seqs(engine) == list(range(16, 21))  # head 20 - 5
    compact(engine, Retention(keep_changes=0, keep_s=0, hold_s=HOUR_S))
    assert logged_seqs(engine) == [18, 19, 20]  # the feed relay has yet to publish them


def test_compaction_keeps_changes_younger_than_the_time_retention_and_never_lowers_a_floor(
    engine: sa.Engine,
) -> None:
    write_changes(engine, 10)
    with engine.begin() as connection:
        old = time.time() - 3 * HOUR_S
        connection.execute(change_log.update().where(change_log.c.seq <= 4).values(created_at=old))
    compact(engine, Retention(keep_changes=0, keep_s=HOUR_S, hold_s=0))
    assert logged_seqs(engine) == list(range(5, 11))
    report_status(engine, "T1", 1, registry=ACTIVE)  # a till reporting late holds no more
    compact(engine, Retention(keep_changes=0, keep_s=HOUR_S, hold_s=HOUR_S))
    assert floor_of(engine) == 4


@pytest.mark.rabbitmq
def test_a_till_behind_the_compacted_log_is_refreshed_by_itself_and_ends_equal_to_the_catalog(
    server: Server, terminals: Callable[[str, str, str], Terminal], down_url: str
) -> None:
    with server.engine.begin() as connection:
        catalog.upsert_many(connection, [product(n) for n in range(1, 41)])
    serving = server.start()
    till = terminals("L1", "PV1", "retail")
    till.pull([PRODUCTS])
    before = till.positions()[STREAM]

    with server.engine.begin() as connection:  # prices change, a product goes
        catalog.upsert_many(connection, [product(n, "99.50") for n in range(1, 21)])
        catalog.delete(connection, PRODUCTS, "000030")
    wait_for(lambda: server.unpublished() == 0, "the changes in the queue", serving)
    assert purge_terminal_queue(down_url, till) > 0  # the till missed them all
    compacted = compact(server.engine, Retention(keep_changes=0, keep_s=0, hold_s=0))
    assert [s.floor for s in compacted.streams if s.stream == STREAM] == [server.heads()[STREAM]]
    with server.engine.begin() as connection:  # one more change: the till sees the gap
        catalog.upsert(connection, product(35, "1.25"))

    running = till.run()
    wait_for(
        lambda: till.positions().get(STREAM) == server.heads()[STREAM],
        "the till's position to reach the head",
        running,
        serving,
    )
    Terminal.finish(running)
    requests = server.finish().loops["requests"]

    assert isinstance(requests, RequestStats)
    assert requests.catch_ups >= 1  # answered with a refresh: the log no longer had them
    assert before < server.heads()[STREAM]
    assert differences(server.state(till.identity, [PRODUCTS]), till.state([PRODUCTS])) == []


# -- archive -----------------------------------------------------------------------------


def test_archive_refuses_a_month_not_over_and_a_malformed_one() -> None:
    today = dt.date(2026, 3, 15)
    assert month_start("2026-03", today=today) == dt.date(2026, 3, 1)
    with pytest.raises(ConfigError, match="already over"):
        month_start("2026-04", today=today)
    with pytest.raises(ConfigError, match="YYYY-MM"):
        month_start("2026-13", today=today)


@pytest.mark.rabbitmq
def test_archived_operations_leave_the_live_table_and_a_late_duplicate_is_still_deduplicated(
    engine: sa.Engine, settings: Settings, channel: Any, terminal: str
) -> None:
    first, second = envelope(terminal, 1), envelope(terminal, 2)  # recorded 2026-03-02
    for env in (first, second):
        publish_op(channel, env)
    run_ingest(engine, settings, until_idle=IDLE_S)
    take_receipt_items(channel, terminal)

    preview = archive(engine, dt.date(2026, 4, 1), dry_run=True)
    assert (preview.months, _live(engine, terminal)) == ({"2026-03": 2}, 2)
    assert archive(engine, dt.date(2026, 3, 1)).moved == 0  # nothing recorded before March
    done = archive(engine, dt.date(2026, 4, 1))
    assert done.months == {"2026-03": 2}
    assert (_live(engine, terminal), _archived(engine, terminal)) == (0, 2)

    publish_op(channel, first)  # a late duplicate of an archived operation
    stats = run_ingest(engine, settings, until_idle=IDLE_S)
    assert stats.duplicates >= 1
    assert _live(engine, terminal) == 0
    wait_for(lambda: take_receipt_items(channel, terminal) != [], "the duplicate's receipt")

    voided = envelope(terminal, 3, op_id=first.op_id, version=2)  # a newer version: live again
    publish_op(channel, voided)
    run_ingest(engine, settings, until_idle=IDLE_S)
    assert _live(engine, terminal) == 1
    assert [(seq, version) for seq, _op, version, _s in tracking_rows(engine, terminal)] == [
        (1, 1),
        (2, 1),
        (3, 2),
    ]


def _live(engine: sa.Engine, terminal: str) -> int:
    return _count(engine, operations, terminal)


def _archived(engine: sa.Engine, terminal: str) -> int:
    return _count(engine, operations_archive, terminal)


def _count(engine: sa.Engine, table: sa.Table, terminal: str) -> int:
    with engine.connect() as connection:
        query = sa.select(sa.func.count()).select_from(table).where(table.c.terminal == terminal)
        return int(connection.execute(query).scalar_one())
