"""Three `server run` processes on one PostgreSQL store, one killed with SIGKILL mid-stream.

Five tills relay 1,000 sales each (half recorded before the servers start, half while they
run) while the back office keeps changing products and stock. The first server is killed
once the others have joined; it is the one that held the change-log relay, so the feed
moves to a survivor. A spy queue bound to every change routing key records what the
feed relays published, in broker order, to check each stream's order.
"""

from __future__ import annotations

import random
import re
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from decimal import Decimal
from pathlib import Path

import msgspec
import pika
import pytest
import sqlalchemy as sa

from cajasync.core import topology
from cajasync.core.db import make_engine, upgrade
from cajasync.core.identity import TerminalIdentity
from cajasync.core.server_tables import change_log, operations, received
from cajasync.core.settings import Settings
from cajasync.core.terminal_tables import outbox
from outbox import catalog
from schemas.feed import ChangeEvent
from schemas.records import Product, StockLevel
from tests.faults.harness import (
    all_acked,
    fill_outbox,
    kill9,
    ops_depth,
    server_op_versions,
    spawn,
    stop,
    terminal_op_ids,
)
from tests.integration.down_support import differences, make_server, make_terminal
from tests.waiting import wait_for

TILLS = 5
PER_TILL = 1_000
SERVERS = 3
REPLAYS_PER_TILL = 2  # replay requests a till may get: a gap asked for once, maybe twice
DOWN = ["productos", "stock"]


@pytest.fixture
def spy(clean_broker: str) -> Iterator[str]:
    """A queue bound to every change routing key: what the feed relays published."""
    name = f"test.spy.{uuid.uuid4().hex[:8]}"
    connection = pika.BlockingConnection(pika.URLParameters(clean_broker))
    channel = connection.channel()
    channel.queue_declare(name)
    channel.queue_bind(name, topology.DOWN_EXCHANGE, "chg.#")
    yield name
    channel.queue_delete(name)
    connection.close()


def test_three_servers_on_one_store_apply_every_operation_once_with_one_killed(
    pg_url: str,
    settings: Settings,
    env: dict[str, str],
    new_terminal_id: Callable[[], str],
    spy: str,
    clean_broker: str,
    tmp_path: Path,
) -> None:
    store = make_engine(pg_url)
    upgrade(store, "server")
    store.dispose()
    tills = [_till(new_terminal_id(), tmp_path, settings) for _ in range(TILLS)]
    for n, (_, path) in enumerate(tills):
        fill_outbox(path, PER_TILL // 2, seed=n)
    gap_till, gap_path = tills[0]
    _lose_in_transit(gap_path, range(10, 15))
    server_env = {**env, "CAJASYNC_GAP_GRACE_S": "1"}
    servers = [_server(pg_url, server_env, tmp_path, 1)]
    wait_for(lambda: _leading(pg_url), "the first server to take the lease", timeout=60)
    servers += [_server(pg_url, server_env, tmp_path, n) for n in (2, 3)]
    wait_for(lambda: _consumers(clean_broker) == SERVERS, "every server consuming", timeout=60)
    till_env = {**env, "CAJASYNC_RESEND_AFTER_S": "3600"}  # replays, not resends, fill gaps
    relays = [
        spawn("terminal", "run", "--db", str(path), env=till_env, log=tmp_path / f"{terminal}.log")
        for terminal, path in tills
    ]
    writer = _BackOffice(pg_url)
    try:
        writer.start()
        for n, (_, path) in enumerate(tills):  # the rest of the day, while they all ingest
            fill_outbox(path, PER_TILL // 2, seed=100 + n)
        wait_for(lambda: _applied(pg_url) >= TILLS * PER_TILL // 2, "half applied", timeout=120)
        kill9(servers[0])  # mid-stream, and it held the change-log relay
        logged = _changes(pg_url)
        wait_for(lambda: _changes(pg_url) >= logged + 200, "changes after the kill", timeout=60)
        writer.finish()
        for _, path in tills:
            wait_for(lambda p=path: all_acked(p, PER_TILL), f"{path.name} acked", timeout=240)
        wait_for(lambda: ops_depth(clean_broker) == 0, "the ops queue drained", timeout=60)
        wait_for(lambda: _unpublished(pg_url) == 0, "the change log published", timeout=60)
        server = make_server(pg_url, settings)
        for terminal, path in tills:
            till = make_terminal(str(path), _identity(terminal), settings)
            wait_for(
                lambda t=till: not differences(server.state(t.identity, DOWN), t.state(DOWN)),
                f"{terminal}'s replica equal to the catalog",
                timeout=60,
            )
            till.engine.dispose()
        server.engine.dispose()
    finally:
        writer.finish()
        for process in relays + servers:
            stop(process)

    for terminal, path in tills:
        assert server_op_versions(pg_url, terminal) == terminal_op_ids(path)
    assert _seqs_held_twice(pg_url) == []
    assert _received_per_terminal(pg_url) == {terminal: PER_TILL for terminal, _ in tills}
    replays = {terminal: _stopped_count(tmp_path / f"{terminal}.log") for terminal, _ in tills}
    print(f"replay requests per till: {replays}")
    assert all(n <= REPLAYS_PER_TILL for n in replays.values()), replays
    assert replays[gap_till] >= 1, replays  # the lost seqs came back by a replay
    logs = "".join(p.read_text() for p in tmp_path.glob("server*.log"))
    assert not re.search("deadlock", logs, re.IGNORECASE), logs[-3000:]
    _assert_streams_in_order(clean_broker, spy)


# -- the parts ---------------------------------------------------------------------------


def _till(terminal: str, tmp_path: Path, settings: Settings) -> tuple[str, Path]:
    from cajasync.processes.terminal_init import init_terminal

    path = tmp_path / f"{terminal}.db"
    init_terminal(str(path), _identity(terminal), settings).dispose()
    return terminal, path


def _consumers(broker_url: str) -> int:
    """How many ingest consumers the ops queue has."""
    connection = pika.BlockingConnection(pika.URLParameters(broker_url))
    try:
        declared = connection.channel().queue_declare(topology.OPS_QUEUE, passive=True)
        return int(declared.method.consumer_count)
    finally:
        connection.close()


def _leading(url: str) -> bool:
    """Whether a server process holds the store's lease (an advisory lock)."""
    return (
        _scalar(
            url,
            sa.select(sa.func.count())
            .select_from(sa.text("pg_locks"))
            .where(sa.text("locktype = 'advisory' and granted")),
        )
        > 0
    )


def _lose_in_transit(path: Path, seqs: range) -> None:
    """Mark these seqs sent though the broker never got them: only a replay brings them."""
    engine = make_engine(str(path))
    with engine.begin() as connection:
        connection.execute(
            outbox.update()
            .where(outbox.c.seq.between(seqs.start, seqs.stop - 1))
            .values(state="sent", sent_at=time.time())
        )
    engine.dispose()


def _identity(terminal: str) -> TerminalIdentity:
    return TerminalIdentity(terminal, "L1", "PV1", "retail")


def _server(url: str, env: dict[str, str], tmp_path: Path, n: int) -> subprocess.Popen[bytes]:
    return spawn("-v", "server", "run", "--db", url, env=env, log=tmp_path / f"server{n}.log")


class _BackOffice:
    """Price and stock changes in small transactions until finished."""

    def __init__(self, url: str) -> None:
        self._engine = make_engine(url)
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.error: BaseException | None = None

    def start(self) -> None:
        self._thread.start()

    def finish(self) -> None:
        self._done.set()
        if self._thread.is_alive():
            self._thread.join(timeout=30)
        if self.error is not None:
            raise self.error

    def _run(self) -> None:
        rng = random.Random(7)
        serial = 0
        try:
            while not self._done.wait(0.05):  # pacing, not synchronisation
                with self._engine.begin() as connection:
                    for _ in range(10):
                        serial += 1
                        key = f"{rng.randrange(300):06d}"
                        price = Decimal(serial) / 100 + 1
                        catalog.upsert(
                            connection,
                            Product(key=key, name=f"P{key}", price=price, tax_rate=Decimal(21)),
                        )
                        catalog.upsert(
                            connection,
                            StockLevel(key=f"L1/{key}", product=key, quantity=Decimal(serial)),
                            scope="loc.L1",
                        )
        except BaseException as exc:
            self.error = exc
        finally:
            self._engine.dispose()


# -- what the store holds ----------------------------------------------------------------


def _scalar(url: str, query: sa.Select[tuple[int]]) -> int:
    engine = make_engine(url)
    with engine.connect() as connection:
        value = int(connection.execute(query).scalar_one())
    engine.dispose()
    return value


def _applied(url: str) -> int:
    return _scalar(url, sa.select(sa.func.count()).select_from(operations))


def _changes(url: str) -> int:
    return _scalar(url, sa.select(sa.func.count()).select_from(change_log))


def _unpublished(url: str) -> int:
    c = change_log.c
    return _scalar(url, sa.select(sa.func.count()).where(c.published_at.is_(None)))


def _seqs_held_twice(url: str) -> list[tuple[str, int]]:
    engine = make_engine(url)
    with engine.connect() as connection:
        rows = connection.execute(
            sa.select(received.c.terminal, received.c.seq)
            .group_by(received.c.terminal, received.c.seq)
            .having(sa.func.count() > 1)
        ).all()
    engine.dispose()
    return [(t, int(s)) for t, s in rows]


def _received_per_terminal(url: str) -> dict[str, int]:
    engine = make_engine(url)
    with engine.connect() as connection:
        rows = connection.execute(
            sa.select(received.c.terminal, sa.func.count()).group_by(received.c.terminal)
        ).all()
    engine.dispose()
    return {t: int(n) for t, n in rows}


def _stopped_count(log: Path, name: str = "replays requested") -> int:
    """A counter of the line a `terminal run` prints when it stops ("terminal stopped:
    published 1,000, ..., replays requested 1, ..."; a counter still at zero is left out)."""
    lines = [line for line in log.read_text().splitlines() if "terminal stopped:" in line]
    assert lines, log.read_text()[-2000:]
    found = re.search(rf"\b{name} ([\d,]+)", lines[-1])
    return int(found.group(1).replace(",", "")) if found else 0


def _assert_streams_in_order(broker_url: str, queue: str) -> None:
    """Per stream, every event starts at or below the next seq not yet seen (a jump ahead
    is a gap the tills must ask for), every seq up to the stream's last was published, and
    changes already seen were published again at most once in a row: when the killed
    server's relay handed over (a relay publishing beside another repeats again and again)."""
    connection = pika.BlockingConnection(pika.URLParameters(broker_url))
    channel = connection.channel()
    seen: dict[str, int] = {}
    repeating: dict[str, bool] = {}
    rewinds: dict[str, int] = {}
    try:
        while True:
            method, _, body = channel.basic_get(queue, auto_ack=True)
            if method is None:
                break
            event = msgspec.msgpack.decode(body, type=ChangeEvent)
            for change in event.changes:
                last = seen.get(change.stream, 0)
                assert change.seq <= last + 1, f"{change.stream}: {change.seq} after {last}"
                again = change.seq <= last
                if again and not repeating.get(change.stream, False):
                    rewinds[change.stream] = rewinds.get(change.stream, 0) + 1
                repeating[change.stream] = again
                seen[change.stream] = max(last, change.seq)
    finally:
        connection.close()
    assert seen, "no change event published"
    assert all(n <= 1 for n in rewinds.values()), f"streams published again: {rewinds}"
