"""A till rebuilt, restored or copied: `terminal init` / `terminal recover` against the real
RabbitMQ and a running server (`serve`) on both server stores, counted op by op.

The CLI runs as a subprocess, as a technician runs it; the POS records through `record`
and the till relays with `run_terminal`, as in a store.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pika
import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from cajasync.broker.ports import REASON_HEADER
from cajasync.core import topology
from cajasync.core.db import open_database
from cajasync.core.identity import load_position
from cajasync.core.server_tables import operations, progress, received
from cajasync.core.settings import Settings
from cajasync.core.terminal_tables import ACKED, outbox
from cajasync.processes.terminal import drain, run_terminal
from outbox.record import Recorded
from tests.integration.down_support import Loop, Server, make_server
from tests.integration.relay_support import record_sales
from tests.waiting import wait_for

pytestmark = pytest.mark.rabbitmq

UNREACHABLE = "amqp://guest:guest@127.0.0.1:1/%2F"


def cajasync(*args: str, broker_url: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cli.main", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "CAJASYNC_BROKER_URL": broker_url},
    )


def init(db: Path, terminal: str, broker_url: str, *extra: str) -> subprocess.CompletedProcess[str]:
    return cajasync(
        "terminal",
        "init",
        "--db",
        str(db),
        "--id",
        terminal,
        "--location",
        "L1",
        "--pos",
        "PV1",
        *extra,
        broker_url=broker_url,
    )


@pytest.fixture
def server(server_db_url: str, settings: Settings, clean_broker: str) -> Iterator[Server]:
    """`serve` (ingest, requests, feed) running on a fresh server store."""
    server = make_server(server_db_url, settings)
    server.start()
    try:
        yield server
        server.finish()
    finally:
        assert server.loop is not None
        server.loop.stop_event.set()
        server.engine.dispose()


@pytest.fixture
def terminal(new_terminal_id: Callable[[], str]) -> str:
    return new_terminal_id()


class Till:
    """A till database the POS records into and the relay serves."""

    def __init__(self, path: Path, settings: Settings) -> None:
        self.path = path
        self.settings = settings
        self.engine: Engine = open_database(str(path), "terminal")

    def sell(self, count: int, *, first: int) -> list[Recorded]:
        return record_sales(self.engine, count, first=first)

    def relay_until_settled(self, server: Server) -> None:
        """Run the relay until every row has the server's verdict (acked or rejected)."""
        relay = Loop("till", lambda stop: run_terminal(self.engine, self.settings, stop=stop))
        assert server.loop is not None
        wait_for(lambda: not self.unsettled(), "every sale settled", relay, server.loop)
        relay.finish()

    def unsettled(self) -> list[int]:
        with self.engine.connect() as connection:
            query = sa.select(outbox.c.seq).where(outbox.c.state.in_(["pending", "sent"]))
            return list(connection.execute(query).scalars())

    def states(self) -> dict[int, str]:
        with self.engine.connect() as connection:
            query = sa.select(outbox.c.seq, outbox.c.state)
            return {seq: state for seq, state in connection.execute(query)}

    def close(self) -> None:
        self.engine.dispose()


def held(server: Server, terminal: str) -> dict[str, Any]:
    """What the server holds of a terminal, op by op."""
    with server.engine.connect() as connection:
        op_ids = connection.execute(
            sa.select(operations.c.op_id).where(operations.c.terminal == terminal)
        ).scalars()
        statuses = connection.execute(
            sa.select(received.c.status, sa.func.count())
            .where(received.c.terminal == terminal)
            .group_by(received.c.status)
        )
        mark = connection.execute(
            sa.select(progress.c.contiguous_seq, progress.c.max_seq).where(
                progress.c.terminal == terminal
            )
        ).one()
        return {
            "op_ids": set(op_ids),
            "statuses": {status: count for status, count in statuses},
            "contiguous_seq": mark.contiguous_seq,
            "max_seq": mark.max_seq,
        }


def ids(recorded: list[Recorded]) -> set[str]:
    return {str(r.op_id) for r in recorded}


def copy_database(source: Path, target: Path) -> None:
    for suffix in ("", "-wal"):
        if Path(f"{source}{suffix}").exists():
            shutil.copy(f"{source}{suffix}", f"{target}{suffix}")


def remove_database(path: Path) -> None:
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)


def test_a_rebuilt_till_continues_after_the_servers_high_water_and_every_sale_is_applied(
    server: Server, settings: Settings, terminal: str, tmp_path: Path
) -> None:
    db = tmp_path / "caja.db"
    first = init(db, terminal, settings.broker_url)
    assert first.returncode == 0, first.stderr
    assert f"terminal {terminal} is new to the server: this till starts at seq 1" in first.stdout
    till = Till(db, settings)
    before = till.sell(30, first=1)
    till.relay_until_settled(server)
    assert set(till.states().values()) == {ACKED}
    till.close()

    remove_database(db)  # the disk died; a new one, the same till id
    again = init(db, terminal, settings.broker_url)
    assert again.returncode == 0, again.stderr
    assert (
        f"terminal {terminal} is known to the server up to seq 30: this till continues at 31"
        in again.stdout
    )
    till = Till(db, settings)
    after = till.sell(20, first=31)
    assert [r.seq for r in after] == list(range(31, 51))
    till.relay_until_settled(server)
    assert set(till.states().values()) == {ACKED}
    till.close()

    assert held(server, terminal) == {
        "op_ids": ids(before) | ids(after),
        "statuses": {"applied": 50},
        "contiguous_seq": 50,
        "max_seq": 50,
    }


def test_init_refuses_in_one_line_when_the_broker_cannot_be_reached(
    terminal: str, tmp_path: Path
) -> None:
    db = tmp_path / "caja.db"
    result = init(db, terminal, UNREACHABLE, "--timeout", "2")
    assert result.returncode != 0
    [line] = result.stderr.strip().splitlines()
    assert f"terminal {terminal} not set up: cannot ask the server" in line
    assert "127.0.0.1:1" in line
    assert "retry when the network is back, or add --offline" in line
    assert not db.exists()


def test_init_refuses_in_one_line_when_no_server_answers(
    terminal: str, tmp_path: Path, clean_broker: str
) -> None:
    db = tmp_path / "caja.db"
    result = init(db, terminal, clean_broker, "--timeout", "1.5")
    assert result.returncode != 0
    [line] = result.stderr.strip().splitlines()
    assert "the server did not answer within 1.5 s" in line
    assert "add --offline" in line
    assert not db.exists()


def test_offline_init_starts_at_one_and_says_what_it_risks(terminal: str, tmp_path: Path) -> None:
    db = tmp_path / "caja.db"
    result = init(db, terminal, UNREACHABLE, "--offline")
    assert result.returncode == 0, result.stderr
    assert "without asking the server: it starts at seq 1" in result.stdout
    assert f"cajasync terminal recover --db {db} --id {terminal}" in result.stdout
    engine = open_database(str(db), "terminal")
    with engine.connect() as connection:
        assert load_position(connection).last_seq == 0
    engine.dispose()


def test_recover_of_a_database_restored_from_an_old_backup_loses_and_doubles_nothing(
    server: Server, settings: Settings, terminal: str, tmp_path: Path
) -> None:
    db, backup = tmp_path / "caja.db", tmp_path / "backup.db"
    assert init(db, terminal, settings.broker_url).returncode == 0
    till = Till(db, settings)
    acked_before_backup = till.sell(10, first=1)
    till.relay_until_settled(server)
    in_flight_at_backup = till.sell(5, first=11)  # seqs 11-15, not sent yet
    till.close()
    copy_database(db, backup)
    till = Till(db, settings)
    till.relay_until_settled(server)
    later = till.sell(10, first=16)  # seqs 16-25: only on the lost disk
    till.relay_until_settled(server)
    till.close()

    remove_database(db)
    copy_database(backup, db)  # the restore; the POS sells before anyone runs recover
    till = Till(db, settings)
    after_restore = till.sell(2, first=26)  # seqs 16-17 again, other sales
    assert [r.seq for r in after_restore] == [16, 17]
    till.close()

    result = cajasync(
        "terminal", "recover", "--db", str(db), "--id", terminal, broker_url=settings.broker_url
    )
    assert result.returncode == 0, result.stderr
    assert (
        f"terminal {terminal}: the server holds up to seq 25 (contiguous 25, 25 held); this "
        "database was at seq 17 and continues at 28" in result.stdout
    )
    assert "renumbered 2 unacknowledged operation(s)" in result.stdout
    assert "16->26, 17->27" in result.stdout
    assert "5 unacknowledged operation(s) keep their seq (5 already held" in result.stdout

    till = Till(db, settings)
    till.relay_until_settled(server)
    assert set(till.states().values()) == {ACKED}
    assert sorted(till.states()) == [*range(1, 16), 26, 27]
    till.close()
    everything = acked_before_backup + in_flight_at_backup + later + after_restore
    assert held(server, terminal) == {
        "op_ids": ids(everything),
        "statuses": {"applied": 27},
        "contiguous_seq": 27,
        "max_seq": 27,
    }


def test_a_second_live_copy_is_refused_reported_and_never_merged(
    server: Server, settings: Settings, terminal: str, tmp_path: Path
) -> None:
    old_db, new_db = tmp_path / "old.db", tmp_path / "new.db"
    assert init(old_db, terminal, settings.broker_url).returncode == 0
    old = Till(old_db, settings)
    sold_before = old.sell(5, first=1)
    old.relay_until_settled(server)

    running = Loop("old till", lambda stop: run_terminal(old.engine, settings, stop=stop))
    wait_for(lambda: _consumers(settings.broker_url, terminal) == 1, "the old till consuming")
    busy = init(new_db, terminal, settings.broker_url)
    running.finish()
    assert busy.returncode != 0
    assert "already has 1 consumer(s)" in busy.stderr
    assert not new_db.exists()

    rebuilt = init(new_db, terminal, settings.broker_url)  # the old one is not consuming now
    assert rebuilt.returncode == 0, rebuilt.stderr
    assert "up to seq 5: this till continues at 6" in rebuilt.stdout
    copies = old.sell(3, first=6)  # the old database keeps selling: seqs 6-8
    assert drain(old.engine, settings, timeout=30) == 3
    assert server.loop is not None
    wait_for(lambda: _copy_ops_rejected(server, terminal) == 3, "3 copies refused", server.loop)

    new = Till(new_db, settings)
    sold_after = new.sell(4, first=9)
    assert [r.seq for r in sold_after] == [6, 7, 8, 9]
    new.relay_until_settled(server)
    assert set(new.states().values()) == {ACKED}

    assert held(server, terminal) == {
        "op_ids": ids(sold_before) | ids(sold_after),
        "statuses": {"applied": 9},
        "contiguous_seq": 9,
        "max_seq": 9,
    }
    reasons = _dead_letter_reasons(settings.broker_url, terminal)
    assert len(reasons) == 3
    assert all(f"terminal {terminal}: a second live copy (incarnation" in r for r in reasons)
    stats = cajasync(
        "server", "stats", "--db", _db_url(server), "--json", broker_url=settings.broker_url
    )
    [mine] = [t for t in json.loads(stats.stdout)["terminals"] if t["terminal"] == terminal]
    assert (mine["copies"], mine["copy_ops_rejected"], mine["restarted_after_seq"]) == (1, 3, 5)
    assert ids(copies).isdisjoint(held(server, terminal)["op_ids"])
    old.close()
    new.close()


def test_a_terminal_command_on_an_empty_file_points_at_init_and_recover(tmp_path: Path) -> None:
    empty = tmp_path / "caja.db"
    empty.touch()
    result = cajasync("pending", "list", "--db", str(empty), broker_url=UNREACHABLE)
    assert result.returncode != 0
    [line] = result.stderr.strip().splitlines()
    assert "is not a cajasync terminal database" in line
    assert "init asks the server where a terminal id it already knows continues" in line
    assert f"`cajasync terminal recover --db {empty} --id ...`" in line


def _db_url(server: Server) -> str:
    return server.engine.url.render_as_string(hide_password=False)


def _copy_ops_rejected(server: Server, terminal: str) -> int:
    from inbox.ingest import server_stats

    for row in server_stats(server.engine)["terminals"]:
        if row["terminal"] == terminal:
            return int(row["copy_ops_rejected"])
    return 0


def _consumers(broker_url: str, terminal: str) -> int:
    connection = pika.BlockingConnection(pika.URLParameters(broker_url))
    try:
        queue = topology.terminal_queue(terminal)
        declared: Any = connection.channel().queue_declare(queue, passive=True)
        return int(declared.method.consumer_count)
    finally:
        connection.close()


def _dead_letter_reasons(broker_url: str, terminal: str) -> list[str]:
    connection = pika.BlockingConnection(pika.URLParameters(broker_url))
    try:
        channel: Any = connection.channel()
        reasons: list[str] = []
        while True:
            method, properties, _body = channel.basic_get(topology.DEAD_QUEUE, auto_ack=True)
            if method is None:
                return reasons
            if method.routing_key.startswith(f"op.{terminal}."):
                reasons.append(str(properties.headers[REASON_HEADER]))
    finally:
        connection.close()
