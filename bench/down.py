"""Shared setup of the down-flow benchmarks: a seeded server store and initialised terminals."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy.engine import Engine

from bench import common
from bench.common import BROKER_URL
from cajasync.core.db import make_engine, upgrade
from cajasync.core.identity import TerminalIdentity
from cajasync.core.settings import Settings, load_settings


def settings() -> Settings:
    return load_settings(broker_url=BROKER_URL)


def server_store(url: str) -> Engine:
    engine = make_engine(url)
    upgrade(engine, "server")
    return engine


def terminals(directory: Path, count: int, tag: str) -> list[tuple[str, Engine]]:
    """`count` initialised terminals (queues declared and bound) in `directory`."""
    from cajasync.processes.terminal_init import init_terminal

    made = []
    for n in range(1, count + 1):
        identity = TerminalIdentity(common.made(f"B{tag}{n:02d}"), "L1", "PV1", "retail")
        path = str(directory / f"{identity.terminal}.db")
        made.append((path, init_terminal(path, identity, settings())))
    return made


def delete_queues(names: list[str]) -> None:
    import pika

    from cajasync.core import topology

    connection = pika.BlockingConnection(pika.URLParameters(BROKER_URL))
    channel = connection.channel()
    for path in names:
        channel.queue_delete(topology.terminal_queue(Path(path).stem))
    connection.close()
