"""Server-side faults: duplicates, poison, a killed consumer, a seq gap, versions out of order."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pika
import sqlalchemy as sa

from cajasync.core import topology
from cajasync.core.db import make_engine
from cajasync.core.server_tables import operations
from cajasync.core.terminal_tables import outbox
from inbox.ingest import server_stats
from tests.faults.harness import (
    all_acked,
    fill_outbox,
    kill9,
    ops_depth,
    outbox_rows,
    outbox_states,
    publish_raw,
    server_counts,
    server_op_versions,
    spawn,
    stop,
    terminal_op_ids,
)
from tests.waiting import wait_for


def _run_server_until_idle(
    server_db_url: str, env: dict[str, str], log: Path, idle: float = 3
) -> None:
    server = spawn(
        "server", "run", "--db", server_db_url, "--until-idle", str(idle), env=env, log=log
    )
    assert server.wait(timeout=120) == 0, log.read_text()


def test_same_message_delivered_three_times_is_applied_once(
    make_terminal: Callable[..., tuple[str, Path]],
    server_db_url: str,
    env: dict[str, str],
    clean_broker: str,
    tmp_path: Path,
) -> None:
    terminal, path = make_terminal(sales=5)
    rows = outbox_rows(path)
    publish_raw(clean_broker, terminal, rows + rows + rows)

    _run_server_until_idle(server_db_url, env, tmp_path / "server.log")

    assert server_counts(server_db_url, terminal) == (len(terminal_op_ids(path)), len(rows))
    assert server_op_versions(server_db_url, terminal) == terminal_op_ids(path)


def test_poison_message_goes_dead_with_its_reason_and_the_rest_are_applied(
    make_terminal: Callable[..., tuple[str, Path]],
    server_db_url: str,
    env: dict[str, str],
    clean_broker: str,
    tmp_path: Path,
) -> None:
    terminal, path = make_terminal()
    total = fill_outbox(path, 20)
    engine = make_engine(str(path))
    with engine.begin() as connection:  # a corrupt local row: its bytes are no operation at all
        connection.execute(
            outbox.update().where(outbox.c.seq == 10).values(body=b"\x93not msgpack")
        )
    engine.dispose()

    server = spawn("server", "run", "--db", server_db_url, env=env, log=tmp_path / "server.log")
    relay = spawn("terminal", "run", "--db", str(path), env=env, log=tmp_path / "relay.log")
    try:
        wait_for(lambda: outbox_states(path).get("acked") == total - 1, "19 acked", timeout=60)
        wait_for(lambda: ops_depth(clean_broker) == 0, "the ops queue drained", timeout=30)
    finally:
        stop(relay)
        stop(server)

    # Under the shared broker user nothing proves the garbage came from this till: it claims
    # no seq and gets no receipt; the server keeps asking for seq 10 (a gap it reports).
    held, _ = server_counts(server_db_url, terminal)
    assert held == total - 1
    assert outbox_states(path).get("rejected", 0) == 0
    dead = _get_one(clean_broker, topology.DEAD_QUEUE)
    assert dead is not None
    properties, body = dead
    assert body == b"\x93not msgpack"
    assert "undecodable" in str(properties.headers["x-cajasync-reason"])
    server_engine = make_engine(server_db_url)
    [mine] = [t for t in server_stats(server_engine)["terminals"] if t["terminal"] == terminal]
    server_engine.dispose()
    assert (mine["contiguous_seq"], mine["max_seq"]) == (9, total)


def test_server_killed_with_a_full_prefetch_window_in_flight_loses_nothing(
    make_terminal: Callable[..., tuple[str, Path]],
    server_db_url: str,
    env: dict[str, str],
    clean_broker: str,
    tmp_path: Path,
) -> None:
    terminal, path = make_terminal()
    total = fill_outbox(path, 5_000)
    relay = spawn("terminal", "run", "--db", str(path), env=env, log=tmp_path / "relay.log")
    try:
        wait_for(
            lambda: ops_depth(clean_broker) >= total,
            "every operation queued for the server",
            timeout=60,
        )
        slow = {**env, "CAJASYNC_PREFETCH": "1000", "CAJASYNC_INGEST_BATCH": "100"}
        server = spawn(
            "server", "run", "--db", server_db_url, env=slow, log=tmp_path / "server1.log"
        )
        wait_for(
            lambda: server_counts(server_db_url, terminal)[0] >= 200,
            "the server to apply a batch",
            timeout=60,
        )
        kill9(server)
        assert server_counts(server_db_url, terminal)[0] < total

        server = spawn(
            "server", "run", "--db", server_db_url, env=env, log=tmp_path / "server2.log"
        )
        wait_for(lambda: all_acked(path, total), f"all {total} operations acked", timeout=180)
        stop(server)
    finally:
        stop(relay)
    assert server_counts(server_db_url, terminal) == (total, total)
    assert server_op_versions(server_db_url, terminal) == terminal_op_ids(path)


def test_missing_seq_range_is_detected_replayed_and_filled(
    make_terminal: Callable[..., tuple[str, Path]],
    server_db_url: str,
    env: dict[str, str],
    clean_broker: str,
    tmp_path: Path,
) -> None:
    terminal, path = make_terminal()
    total = fill_outbox(path, 30)
    engine = make_engine(str(path))
    with engine.begin() as connection:  # 10..14 "sent", but the broker never got them
        connection.execute(
            outbox.update()
            .where(outbox.c.seq.between(10, 14))
            .values(state="sent", sent_at=time.time())
        )
    engine.dispose()
    no_resend = {**env, "CAJASYNC_RESEND_AFTER_S": "3600"}  # only a replay request can recover them

    server = spawn(
        "server", "run", "--db", server_db_url, env=no_resend, log=tmp_path / "server.log"
    )
    relay = spawn("terminal", "run", "--db", str(path), env=no_resend, log=tmp_path / "relay.log")
    try:
        wait_for(lambda: all_acked(path, total), "the gap 10..14 replayed and acked", timeout=60)
    finally:
        stop(relay)
        stop(server)
    held, _ = server_counts(server_db_url, terminal)
    assert held == total
    server = make_engine(server_db_url)
    stats = server_stats(server)
    server.dispose()
    mine = next(t for t in stats["terminals"] if t["terminal"] == terminal)
    assert mine["contiguous_seq"] == total


def test_voided_sale_arriving_before_the_original_leaves_the_void_on_the_server(
    make_terminal: Callable[..., tuple[str, Path]],
    server_db_url: str,
    env: dict[str, str],
    clean_broker: str,
    tmp_path: Path,
) -> None:
    from cajasync.samples.simulate import PosSimulator

    terminal, path = make_terminal()
    engine = make_engine(str(path))
    pos = PosSimulator(engine, seed=9)
    op_id = pos.sale().op_id
    pos.void(op_id)
    engine.dispose()
    first, void = outbox_rows(path)
    publish_raw(clean_broker, terminal, [void, first])  # version 2 overtakes version 1

    _run_server_until_idle(server_db_url, env, tmp_path / "server.log")

    assert server_op_versions(server_db_url, terminal) == {str(op_id): 2}
    server = make_engine(server_db_url)
    with server.connect() as connection:
        voided = connection.execute(
            sa.select(operations.c.voided).where(operations.c.op_id == str(op_id))
        ).scalar_one()
    server.dispose()
    assert voided is True


def _get_one(broker_url: str, queue: str) -> tuple[pika.BasicProperties, bytes] | None:
    connection = pika.BlockingConnection(pika.URLParameters(broker_url))
    try:
        method, properties, body = connection.channel().basic_get(queue, auto_ack=True)
        return None if method is None else (properties, body)
    finally:
        connection.close()
