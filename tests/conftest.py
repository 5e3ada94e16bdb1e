"""Shared fixtures: the real RabbitMQ and PostgreSQL of this machine (or containers).

A service is taken from its URL variable when set, else from the local default when it
answers, else from a testcontainers container when a Docker engine exists. Under CI
(CI=true) a missing service fails the run instead of skipping: no broker or PostgreSQL
test is ever skipped in CI.
"""

from __future__ import annotations

import os
import shutil
import socket
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pika
import pytest
import sqlalchemy as sa

from cajasync.core import topology
from cajasync.core.db import make_engine, upgrade
from cajasync.core.settings import Settings, load_settings

DEFAULT_BROKER = "amqp://guest:guest@127.0.0.1:5672/%2F"
DEFAULT_PG = "postgresql+psycopg://postgres@127.0.0.1:5432/test"


def _reachable(url: str, default_port: int) -> bool:
    parts = urlsplit(url)
    try:
        with socket.create_connection(
            (parts.hostname or "127.0.0.1", parts.port or default_port), 2
        ):
            return True
    except OSError:
        return False


def _missing(what: str, hint: str) -> None:
    message = f"{what} is not reachable: {hint}"
    if os.environ.get("CI"):
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


def _docker_available() -> bool:
    return shutil.which("docker") is not None and Path("/var/run/docker.sock").exists()


@pytest.fixture(scope="session")
def broker_url() -> Iterator[str]:
    url = os.environ.get("CAJASYNC_TEST_BROKER_URL", DEFAULT_BROKER)
    if _reachable(url, 5672):
        yield url
        return
    if _docker_available():
        from testcontainers.rabbitmq import RabbitMqContainer

        with RabbitMqContainer("rabbitmq:3.13-management") as container:
            params = container.get_connection_params()
            yield f"amqp://guest:guest@{params.host}:{params.port}/%2F"
        return
    _missing("RabbitMQ", f"{url} (start it with `rabbitmq-server -detached`)")


@pytest.fixture(scope="session")
def pg_admin_url() -> Iterator[str]:
    url = os.environ.get("CAJASYNC_TEST_PG_URL", DEFAULT_PG)
    if _reachable(url.replace("+psycopg", ""), 5432):
        yield url
        return
    if _docker_available():
        from testcontainers.postgres import PostgresContainer

        with PostgresContainer("postgres:16", driver="psycopg") as container:
            yield container.get_connection_url()
        return
    _missing("PostgreSQL", f"{url} (start it with pg_ctlcluster ... main start)")


@pytest.fixture
def pg_url(pg_admin_url: str) -> Iterator[str]:
    """A fresh, empty PostgreSQL database for one test, dropped afterwards."""
    name = f"cajasync_t_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(pg_admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    base = pg_admin_url.rsplit("/", 1)[0]
    try:
        yield f"{base}/{name}"
    finally:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def server_db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A migrated, empty server store: embedded SQLite and the real PostgreSQL."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'server.db'}"
    else:
        url = request.getfixturevalue("pg_url")
    engine = make_engine(url)
    upgrade(engine, "server")
    engine.dispose()
    return url


@pytest.fixture
def settings(broker_url: str) -> Settings:
    """Settings pointed at the test broker, with short timeouts for tests."""
    return load_settings(
        broker_url=broker_url,
        resend_after_s=5.0,
        gap_grace_s=0.5,
        retry_initial_s=0.1,
        retry_max_s=1.0,
    )


@pytest.fixture
def channel(broker_url: str) -> Iterator[Any]:
    connection = pika.BlockingConnection(pika.URLParameters(broker_url))
    try:
        yield connection.channel()
    finally:
        if connection.is_open:
            connection.close()


@pytest.fixture
def clean_broker(broker_url: str) -> Iterator[str]:
    """Declared server topology with the shared queues emptied before and after the test."""

    def purge() -> None:
        connection = pika.BlockingConnection(pika.URLParameters(broker_url))
        channel = connection.channel()
        topology.declare_server(channel)
        for queue in (topology.OPS_QUEUE, topology.REQUESTS_QUEUE, topology.DEAD_QUEUE):
            channel.queue_purge(queue)
        channel.exchange_delete(topology.STORE_EXCHANGE)  # each test's store claims anew
        connection.close()

    purge()
    yield broker_url
    purge()


@pytest.fixture
def new_terminal_id(broker_url: str) -> Iterator[Callable[[], str]]:
    """Unique terminal ids for one test; their broker queues are deleted afterwards."""
    made: list[str] = []

    def make() -> str:
        made.append(f"T{uuid.uuid4().hex[:8].upper()}")
        return made[-1]

    yield make
    if made:
        connection = pika.BlockingConnection(pika.URLParameters(broker_url))
        channel = connection.channel()
        for terminal in made:
            channel.queue_delete(topology.terminal_queue(terminal))
        connection.close()
