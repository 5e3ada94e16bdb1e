"""Every till's status on the server, metrics endpoints and queue ages (issue 9, items 5-6),
against the real RabbitMQ and both server stores.

A till runs `run_terminal` in a thread; the server runs its request handler alone (so no
change reaches the till and its down lag stays what the catalog says) or the whole
`serve` (for metrics after ingest). What the operator sees is read through the CLI.
"""

from __future__ import annotations

import json
import shutil
import socket
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from click.testing import CliRunner
from prometheus_client.parser import text_string_to_metric_families

from cajasync.core import metrics
from cajasync.core.identity import TerminalIdentity
from cajasync.core.settings import Settings
from cajasync.processes.server import serve
from cajasync.processes.terminal import drain, run_terminal
from cajasync.processes.terminal_init import init_terminal
from cli.main import cli
from inbox.requests import run_requests
from outbox import catalog
from schemas.records import Product
from tests.integration.down_support import Loop
from tests.integration.relay_support import record_sales
from tests.waiting import wait_for

pytestmark = pytest.mark.rabbitmq


@pytest.fixture
def settings(settings: Settings) -> Settings:
    """Statuses every second (at most every few: processes/till_status.py), so a test sees
    the till's latest positions soon."""
    return settings.with_overrides(status_interval_s=1.0)


@pytest.fixture
def till(
    tmp_path: Path, settings: Settings, new_terminal_id: Callable[[], str], clean_broker: str
) -> Iterator[sa.Engine]:
    identity = TerminalIdentity(new_terminal_id(), "L1", "PV1", "retail")
    engine = init_terminal(str(tmp_path / "caja.db"), identity, settings)
    yield engine
    engine.dispose()


def terminal_of(till: sa.Engine) -> str:
    with till.connect() as connection:
        return str(connection.scalar(sa.text("SELECT terminal FROM cajasync_terminal")))


def terminals(server_db_url: str, *options: str) -> dict[str, dict[str, Any]]:
    """`cajasync server terminals --json`, by terminal."""
    result = CliRunner().invoke(
        cli, ["server", "terminals", "--db", server_db_url, "--json", *options]
    )
    assert result.exit_code == 0, result.output
    return {row["terminal"]: row for row in json.loads(result.output)["terminals"]}


def two_products(engine: sa.Engine) -> None:
    with engine.begin() as connection:
        for key in ("1", "2"):
            product = Product(key=key, name=f"P{key}", price=Decimal(5), tax_rate=Decimal(21))
            catalog.upsert(connection, product)


def test_a_running_till_reports_its_pending_operations_and_down_lag(
    till: sa.Engine, settings: Settings, engine: sa.Engine, server_db_url: str
) -> None:
    terminal = terminal_of(till)
    two_products(engine)  # productos:all at seq 2; the till never pulled
    record_sales(till, 3)
    handler = Loop("requests", lambda stop: run_requests(engine, settings, stop=stop))
    relay = Loop("till", lambda stop: run_terminal(till, settings, stop=stop))
    try:
        # no ingest runs: the three sales are broker-confirmed (sent), never acknowledged
        wait_for(
            lambda: (
                terminals(server_db_url).get(terminal, {}).get("pending_by_state") == {"sent": 3}
            ),
            "the till's status with its 3 sent operations",
            handler,
            relay,
        )
    finally:
        relay.finish()
        handler.finish()
    row = terminals(server_db_url)[terminal]
    assert row["state"] == "ok"
    assert row["pending"] == 3
    assert row["oldest_pending_age_s"] >= 0
    assert row["lag_by_topic"]["productos"] == 2
    assert row["lag"] == 2
    assert row["version"]
    assert terminal in terminals(server_db_url, "--behind")


def test_a_till_that_stopped_reporting_shows_as_silent(
    till: sa.Engine, settings: Settings, engine: sa.Engine, server_db_url: str
) -> None:
    terminal = terminal_of(till)
    handler = Loop("requests", lambda stop: run_requests(engine, settings, stop=stop))
    relay = Loop("till", lambda stop: run_terminal(till, settings, stop=stop))
    try:
        wait_for(lambda: terminal in terminals(server_db_url), "the till's first status", relay)
    finally:
        relay.finish()
        handler.finish()
    assert terminals(server_db_url, "--silent-for", "1h") == {}  # heard of just now
    wait_for(
        lambda: (
            terminals(server_db_url, "--silent-for", "1s").get(terminal, {}).get("state")
            == "silent"
        ),
        "the stopped till to show as silent",
    )


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of a /metrics page: (name, sorted labels) -> value."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(samples: dict[Any, float], name: str, **labels: str) -> float | None:
    return samples.get((name, tuple(sorted(labels.items()))))


def test_metrics_endpoints_answer_with_the_named_series_after_ingest(
    till: sa.Engine, settings: Settings, engine: sa.Engine
) -> None:
    terminal = terminal_of(till)
    two_products(engine)
    record_sales(till, 4)
    dead_before = sum(
        sample.value
        for family in metrics.DEAD_LETTERED.collect()
        for sample in family.samples
        if sample.name == "cajasync_ingest_dead_lettered_total"
        and sample.labels.get("topic") == "ventas"
    )
    server_port, till_port = free_port(), free_port()
    server = Loop(
        "server", lambda stop: serve(engine, settings, stop=stop, metrics_port=server_port)
    )
    relay = Loop(
        "till", lambda stop: run_terminal(till, settings, stop=stop, metrics_port=till_port)
    )
    try:

        def settled() -> bool:
            try:
                on_till, on_server = scrape(till_port), scrape(server_port)
            except urllib.error.URLError:  # the endpoints start with their loops
                return False
            pending = value(on_till, "cajasync_pending_operations", terminal=terminal, state="sent")
            waiting = value(
                on_till, "cajasync_pending_operations", terminal=terminal, state="pending"
            )
            lag = value(on_server, "cajasync_terminal_down_lag", terminal=terminal)
            return (pending, waiting, lag) == (0, 0, 0)

        wait_for(settled, "the sales acknowledged and the products applied", server, relay)
        on_server, on_till = scrape(server_port), scrape(till_port)
    finally:
        relay.finish()
        server.finish()
    applied = value(
        on_server, "cajasync_ingest_operations_total", topic="ventas", outcome="applied"
    )
    assert applied is not None
    assert applied >= 4, {k: v for k, v in on_server.items() if "ingest" in k[0]}
    assert (value(on_server, "cajasync_ingest_batch_seconds_count") or 0) >= 1
    assert (value(on_server, "cajasync_receipts_total", side="server") or 0) >= 1
    assert value(on_server, "cajasync_replay_requests_total", side="server") is not None
    # the counters are the process's: earlier tests in this process may have dead-lettered
    dead_after = value(on_server, "cajasync_ingest_dead_lettered_total", topic="ventas")
    assert (dead_after or 0) == dead_before
    head = value(on_server, "cajasync_changelog_head")
    assert head is not None
    assert head >= 2
    assert value(on_server, "cajasync_feed_relay_position") == head
    assert value(on_server, "cajasync_terminal_silent_seconds", terminal=terminal) is not None
    for state in ("pending", "sent", "rejected"):
        assert (
            value(on_server, "cajasync_terminal_pending_operations", terminal=terminal, state=state)
            is not None
        )
    assert (value(on_server, "cajasync_relay_confirm_seconds_count", relay="feed") or 0) >= 1
    assert (value(on_till, "cajasync_relay_confirm_seconds_count", relay="terminal") or 0) >= 4
    assert (value(on_till, "cajasync_receipts_total", side="terminal") or 0) >= 1
    assert value(on_till, "cajasync_oldest_pending_seconds", terminal=terminal) == 0


def test_queues_json_gives_the_age_of_each_queue_s_oldest_message(
    till: sa.Engine, settings: Settings
) -> None:
    record_sales(till, 2)
    assert drain(till, settings, timeout=30) == 2  # in cajasync.ops, nobody consuming
    local = shutil.which("rabbitmq-queues") is not None  # a broker on this machine is peeked

    def queues() -> dict[str, dict[str, Any]]:
        result = CliRunner().invoke(cli, ["queues", "--json", "--broker-url", settings.broker_url])
        assert result.exit_code == 0, result.output
        return {row["name"]: row for row in json.loads(result.output)}

    def aged() -> bool:  # the management API's counts lag a few seconds behind
        ops = queues()["cajasync.ops"]
        return bool(ops["ready"] >= 2 and (ops["age_s"] is not None or not local))

    wait_for(aged, "cajasync.ops to show its 2 messages and their age")
    rows = queues()
    assert all("age_s" in row for row in rows.values())
    age = rows["cajasync.ops"]["age_s"]
    assert age is None or age >= 0
