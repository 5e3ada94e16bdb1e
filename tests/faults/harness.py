"""Processes and counts for the fault tests: real `cajasync` processes, real signals."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pika
import sqlalchemy as sa

from cajasync.broker.rabbitmq import username
from cajasync.core import topology
from cajasync.core.db import make_engine
from cajasync.core.server_tables import operations, received
from cajasync.core.terminal_tables import ACKED, outbox


def spawn(
    *args: str, env: dict[str, str] | None = None, log: Path | None = None
) -> subprocess.Popen[bytes]:
    """Start `cajasync ARGS` as its own process (so SIGKILL hits only it), output to `log`."""
    command = [sys.executable, "-m", "cli.main", *args]
    full_env = {**os.environ, **(env or {})}
    if log is None:
        return subprocess.Popen(
            command, env=full_env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
    with open(log, "ab") as out:  # the child keeps its own copy of the descriptor
        return subprocess.Popen(command, env=full_env, stdout=out, stderr=out)


def kill9(process: subprocess.Popen[bytes]) -> None:
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=10)


def stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            kill9(process)


def outbox_states(path: Path) -> dict[str, int]:
    engine = make_engine(str(path))
    with engine.connect() as connection:
        rows = connection.execute(
            sa.select(outbox.c.state, sa.func.count()).group_by(outbox.c.state)
        ).all()
    engine.dispose()
    return {state: int(count) for state, count in rows}


def all_acked(path: Path, total: int) -> bool:
    return outbox_states(path).get(ACKED, 0) == total


def server_counts(url: str, terminal: str) -> tuple[int, int]:
    """(operations held, tracking rows) for one terminal."""
    engine = make_engine(url)
    with engine.connect() as connection:
        ops = connection.execute(
            sa.select(sa.func.count())
            .select_from(operations)
            .where(operations.c.terminal == terminal)
        ).scalar_one()
        rows = connection.execute(
            sa.select(sa.func.count()).select_from(received).where(received.c.terminal == terminal)
        ).scalar_one()
    engine.dispose()
    return int(ops), int(rows)


def terminal_op_ids(path: Path) -> dict[str, int]:
    """op_id -> highest version recorded on the terminal."""
    engine = make_engine(str(path))
    with engine.connect() as connection:
        rows = connection.execute(
            sa.select(outbox.c.op_id, sa.func.max(outbox.c.version)).group_by(outbox.c.op_id)
        ).all()
    engine.dispose()
    return {op_id: int(version) for op_id, version in rows}


def server_op_versions(url: str, terminal: str) -> dict[str, int]:
    engine = make_engine(url)
    with engine.connect() as connection:
        rows = connection.execute(
            sa.select(operations.c.op_id, operations.c.version).where(
                operations.c.terminal == terminal
            )
        ).all()
    engine.dispose()
    return {op_id: int(version) for op_id, version in rows}


def queue_depth(broker_url: str, queue: str) -> int:
    connection = pika.BlockingConnection(pika.URLParameters(broker_url))
    try:
        return int(connection.channel().queue_declare(queue, passive=True).method.message_count)
    finally:
        connection.close()


def ops_depth(broker_url: str) -> int:
    return queue_depth(broker_url, topology.OPS_QUEUE)


def rabbitmqctl(*args: str) -> None:
    subprocess.run(["rabbitmqctl", *args], check=True, capture_output=True, timeout=120)


def fill_outbox(path: Path, count: int, seed: int = 3) -> int:
    """Record `count` realistic sales in one transaction (fast setup for big outboxes)."""
    from cajasync.samples.simulate import TicketMaker
    from outbox.record import record

    engine = make_engine(str(path))
    with engine.begin() as connection:
        for sale in TicketMaker(seed=seed).sales(count):
            record(connection, sale)
    engine.dispose()
    return count


def publish_raw(broker_url: str, terminal: str, bodies: list[tuple[int, str, bytes]]) -> None:
    """Publish outbox bodies as the relay would (seq, topic, body, user id), with confirms."""
    connection = pika.BlockingConnection(pika.URLParameters(broker_url))
    channel = connection.channel()
    channel.confirm_delivery()
    for seq, topic, body in bodies:
        channel.basic_publish(
            topology.UP_EXCHANGE,
            topology.op_routing_key(terminal, topic),
            body,
            pika.BasicProperties(
                delivery_mode=2,
                content_type="application/msgpack",
                user_id=username(broker_url),
                headers={"terminal": terminal, "seq": seq, "topic": topic},
            ),
            mandatory=True,
        )
    connection.close()


def outbox_rows(path: Path) -> list[tuple[int, str, bytes]]:
    engine = make_engine(str(path))
    with engine.connect() as connection:
        rows = connection.execute(
            sa.select(outbox.c.seq, outbox.c.topic, outbox.c.body).order_by(outbox.c.seq)
        ).all()
    engine.dispose()
    return [(int(r.seq), str(r.topic), bytes(r.body)) for r in rows]
