"""The server's PostgreSQL database goes away: the server waits for it, loses nothing, and
stops (with the cause) only when it stays away past `store_give_up_s`.

The outage is one database refusing connections (`ALLOW_CONNECTIONS false`, its sessions
terminated), never a restart of the shared PostgreSQL cluster.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pika
import pytest
import sqlalchemy as sa

from cajasync.core import topology
from cajasync.core.db import make_engine, upgrade
from cajasync.core.server_tables import operations
from cajasync.core.settings import Settings
from cajasync.errors import StoreUnavailable
from cajasync.processes.server import ServerStats, serve
from schemas import ReceiptItem, encode
from schemas.feed import SnapshotDone, SnapshotRequest
from tests.integration.test_server_ingest import (
    _held,
    dead_letters,
    envelope,
    publish,
    receipt_items,
    received_down,
)

OUTAGE_S = 10


@pytest.fixture
def engine(pg_url: str) -> Iterator[sa.Engine]:
    engine = make_engine(pg_url)
    upgrade(engine, "server")
    yield engine
    engine.dispose()


@pytest.fixture
def terminal(clean_broker: str, channel: Any, new_terminal_id: Callable[[], str]) -> str:
    terminal = new_terminal_id()
    topology.declare_terminal(channel, terminal, "L1", "PV1", "retail")
    return terminal


@contextmanager
def refusing_connections(pg_admin_url: str, database: str) -> Iterator[None]:
    """The database refuses new connections and loses its open ones, until the block ends."""
    admin = sa.create_engine(pg_admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.exec_driver_sql(f'ALTER DATABASE "{database}" ALLOW_CONNECTIONS false')
        connection.execute(
            sa.text(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = :name AND pid <> pg_backend_pid()"
            ),
            {"name": database},
        )
    try:
        yield
    finally:
        with admin.connect() as connection:
            connection.exec_driver_sql(f'ALTER DATABASE "{database}" ALLOW_CONNECTIONS true')
        admin.dispose()


class Server:
    """`serve()` (ingest, requests, feed relay) in a thread, as `server run` runs it."""

    def __init__(self, engine: sa.Engine, settings: Settings) -> None:
        self.stop = threading.Event()
        self.stats = ServerStats()
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, args=(engine, settings))
        self._thread.start()

    def alive(self) -> bool:
        return self._thread.is_alive()

    def applied(self) -> int:
        ingest = self.stats.loops.get("ingest")
        return 0 if ingest is None else int(ingest.applied)

    def wait(self, condition: Callable[[], bool], what: str, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            assert self.alive(), f"the server stopped: {self.error!r}"
            assert time.monotonic() < deadline, f"timed out waiting for {what}"
            time.sleep(0.1)

    def finish(self, timeout: float = 30) -> None:
        self.stop.set()
        self._thread.join(timeout)

    def _run(self, engine: sa.Engine, settings: Settings) -> None:
        try:
            serve(engine, settings, stop=self.stop, on_progress=self._progress)
        except BaseException as exc:
            self.error = exc

    def _progress(self, stats: ServerStats) -> None:
        self.stats = stats


def snapshot_request(terminal: str) -> SnapshotRequest:
    return SnapshotRequest(
        terminal=terminal,
        location="L1",
        pos="PV1",
        terminal_kind="retail",
        request_id=uuid.uuid4().hex,
        topics=["productos"],
    )


def publish_request(channel: Any, request: SnapshotRequest) -> None:
    channel.basic_publish(
        topology.UP_EXCHANGE,
        f"req.{request.terminal}.snapshot",
        encode(request),
        pika.BasicProperties(delivery_mode=2, content_type="application/msgpack", user_id="guest"),
    )


def operation_counts(engine: sa.Engine, terminal: str) -> dict[str, int]:
    """op id -> version of every operation the store holds for `terminal`."""
    with engine.connect() as connection:
        rows = connection.execute(
            sa.select(operations.c.op_id, operations.c.version).where(
                operations.c.terminal == terminal
            )
        ).all()
    return {str(op_id): int(version) for op_id, version in rows}


def test_server_waits_out_a_database_outage_and_applies_everything_once(
    engine: sa.Engine,
    pg_url: str,
    pg_admin_url: str,
    settings: Settings,
    channel: Any,
    terminal: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING)
    before = [envelope(terminal, seq) for seq in (1, 2)]
    during = [envelope(terminal, seq) for seq in range(3, 13)]
    server = Server(engine, settings.with_overrides(store_give_up_s=120.0))
    try:
        for env in before:
            publish(channel, env)
        server.wait(lambda: server.applied() >= 2, "the first two operations")

        with refusing_connections(pg_admin_url, pg_url.rsplit("/", 1)[1]):
            for env in during:
                publish(channel, env)
            request = snapshot_request(terminal)
            publish_request(channel, request)
            outage_ends = time.monotonic() + OUTAGE_S
            server.wait(lambda: time.monotonic() >= outage_ends, "the outage to end")

        server.wait(lambda: server.applied() >= 12, "every operation to be applied")
        messages = received_down(
            channel,
            terminal,
            lambda m: any(isinstance(x, SnapshotDone) for x in m) and len(receipt_items(m)) >= 12,
        )
        assert server.alive()
    finally:
        server.finish()
    assert server.error is None

    assert operation_counts(engine, terminal) == {
        str(env.op_id): 1 for env in before + during
    }  # each applied once
    assert _held(engine, terminal)["contiguous_seq"] == 12
    assert dead_letters(channel, terminal) == []
    done = [m for m in messages if isinstance(m, SnapshotDone)]
    assert [d.request_id for d in done] == [request.request_id]
    items: list[ReceiptItem] = receipt_items(messages)
    assert {(i.op_id, i.status) for i in items} == {(e.op_id, "acked") for e in before + during}
    for loop in ("server ingest", "request handler", "feed relay"):
        assert f"{loop}: server store unreachable" in caplog.text, loop


def test_server_stops_with_the_cause_when_the_database_stays_away_too_long(
    engine: sa.Engine,
    pg_url: str,
    pg_admin_url: str,
    settings: Settings,
    channel: Any,
    terminal: str,
) -> None:
    impatient = settings.with_overrides(store_give_up_s=2.0)
    ops = [envelope(terminal, seq) for seq in (1, 2, 3)]
    with refusing_connections(pg_admin_url, pg_url.rsplit("/", 1)[1]):
        for env in ops:
            publish(channel, env)
        with pytest.raises(StoreUnavailable, match="stayed unreachable for 2s") as stopped:
            serve(engine, impatient)
    assert "not currently accepting connections" in str(stopped.value)
    assert dead_letters(channel, terminal) == []  # nothing was rejected for the outage

    serve(engine, settings, until_idle=1.0)  # restarted once the database is back
    assert operation_counts(engine, terminal) == {str(env.op_id): 1 for env in ops}
