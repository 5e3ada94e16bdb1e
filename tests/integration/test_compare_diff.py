"""Compare, diff and prune against the real RabbitMQ and both server stores: a till and the
server synced, then differences injected on either side by hand."""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable, Iterator
from decimal import Decimal
from pathlib import Path

import pytest
import sqlalchemy as sa
from click.testing import CliRunner

from cajasync.broker.queues import terminal_queue
from cajasync.core import topology
from cajasync.core.db import make_engine, upgrade
from cajasync.core.identity import TerminalIdentity
from cajasync.core.periods import Period
from cajasync.core.server_tables import operations
from cajasync.core.settings import Settings
from cajasync.core.terminal_tables import ACKED, outbox, replica
from cajasync.errors import BrokerUnavailable
from cajasync.processes.diff import diff, prune
from cajasync.processes.questions import ask_held, compare, local_counts
from cajasync.processes.till_status import last_activity
from inbox.replica_store.sql import SqlReplicaStore
from outbox import catalog
from outbox.record import record
from schemas.feed import Change
from schemas.records import Product
from tests.integration.down_support import (
    Server,
    Terminal,
    make_server,
    make_terminal,
    purge,
    vhost_for,
)
from tests.integration.relay_support import (
    declare_server_topology,
    rabbitmqctl_missing,
    sale,
)
from tests.waiting import wait_for

pytestmark = pytest.mark.rabbitmq

PRODUCTS = 40
SALES = 6


@pytest.fixture(scope="module")
def compare_url(broker_url: str) -> Iterator[str]:
    with vhost_for(broker_url, "compare") as url:
        if url is None:
            rabbitmqctl_missing("the compare tests")
            return
        declare_server_topology(url)
        yield url


@pytest.fixture
def compare_settings(settings: Settings, compare_url: str) -> Settings:
    return settings.with_overrides(broker_url=compare_url)


@pytest.fixture
def server(server_db_url: str, compare_settings: Settings, compare_url: str) -> Iterator[Server]:
    purge(compare_url, topology.OPS_QUEUE, topology.REQUESTS_QUEUE, topology.DEAD_QUEUE)
    server = make_server(server_db_url, compare_settings)
    server.start()
    try:
        yield server
    finally:
        server.finish()
        server.engine.dispose()


@pytest.fixture
def synced(
    server: Server,
    tmp_path: Path,
    compare_settings: Settings,
    new_terminal_id: Callable[[], str],
) -> Iterator[Terminal]:
    """A till with SALES sales acknowledged and PRODUCTS products pulled; its relay stopped."""
    with server.engine.begin() as connection:
        for index in range(PRODUCTS):
            catalog.upsert(connection, product(f"P{index:03d}"))
    identity = TerminalIdentity(new_terminal_id(), "L1", "PV1", "retail")
    till = make_terminal(str(tmp_path / f"{identity.terminal}.db"), identity, compare_settings)
    with till.engine.begin() as connection:
        for number in range(1, SALES + 1):
            record(connection, sale(number))
    loop = till.run()
    wait_for(lambda: acked(till) == SALES, "every sale acknowledged", loop, server.loop)  # type: ignore[arg-type]
    till.finish(loop)
    till.pull(["productos"])
    try:
        yield till
    finally:
        till.stop_all()
        till.engine.dispose()


def product(key: str, price: str = "10.00") -> Product:
    return Product(key=key, name=f"Producto {key}", price=Decimal(price), tax_rate=Decimal(21))


def acked(till: Terminal) -> int:
    with till.engine.connect() as connection:
        query = sa.select(sa.func.count()).where(outbox.c.state == ACKED)
        return int(connection.execute(query.select_from(outbox)).scalar_one())


def op_ids(till: Terminal) -> list[str]:
    with till.engine.connect() as connection:
        return sorted(connection.execute(sa.select(outbox.c.op_id)).scalars())


def inject_differences(server: Server, till: Terminal) -> dict[str, object]:
    """A sale deleted on the server, a product missing on the till, a stray product on the
    till, a product the till holds a version behind."""
    gone_sale = op_ids(till)[0]
    with server.engine.begin() as connection:
        connection.execute(sa.delete(operations).where(operations.c.op_id == gone_sale))
        catalog.upsert(connection, product("P002", "12.50"))  # the till is not running
    with till.engine.begin() as connection:
        connection.execute(
            sa.delete(replica).where(replica.c.topic == "productos", replica.c.key == "P001")
        )
    stray = product("ZZ-STRAY")
    change = Change(
        stream="productos:all",
        seq=10_000,
        topic="productos",
        key=stray.key,
        version=1,
        record=stray,
    )
    SqlReplicaStore(till.engine).apply([change], time.time())
    return {"sale": gone_sale}


def test_compare_is_equal_after_a_clean_sync(synced: Terminal, compare_settings: Settings) -> None:
    result = compare(synced.engine, compare_settings, None, Period(), timeout=20)
    by_topic = {row.topic: row for row in result.topics}
    assert result.equal, [row for row in result.topics if not row.equal]
    assert by_topic["ventas"].terminal == by_topic["ventas"].server == SALES
    assert by_topic["ventas"].states == {ACKED: SALES}
    assert by_topic["productos"].terminal == by_topic["productos"].server == PRODUCTS


def test_local_counts_are_compare_s_till_side_without_asking(
    server: Server, synced: Terminal, compare_settings: Settings
) -> None:
    inject_differences(server, synced)
    with synced.engine.begin() as connection:
        void = record(connection, sale(1))  # a pending sale: counted once
        record(connection, sale(1), op_id=void.op_id)  # and its new version: still once
    with synced.engine.connect() as connection:
        query = sa.select(outbox.c.recorded_at).where(outbox.c.op_id == str(void.op_id))
        since = min(connection.execute(query).scalars()).replace(tzinfo=dt.UTC)

    for period, sales in ((Period(), SALES + 1), (Period(since=since), 1)):
        result = compare(synced.engine, compare_settings, None, period, timeout=20)
        counts = local_counts(synced.engine, period)
        assert counts == {row.topic: row.terminal for row in result.topics}
        assert counts["ventas"] == sales
        assert counts["productos"] == PRODUCTS  # one gone, one stray


def test_compare_and_diff_find_exactly_the_injected_differences(
    server: Server, synced: Terminal, compare_settings: Settings
) -> None:
    injected = inject_differences(server, synced)

    result = compare(synced.engine, compare_settings, ["ventas", "products"], Period(), timeout=20)
    by_topic = {row.topic: row for row in result.topics}
    assert not result.equal
    assert (by_topic["ventas"].terminal, by_topic["ventas"].server) == (SALES, SALES - 1)
    assert not by_topic["ventas"].equal
    assert "acknowledged here but not on the server" in by_topic["ventas"].hint
    assert by_topic["productos"].equal  # one missing, one stray: the counts agree

    sales = diff(synced.engine, compare_settings, "ventas", Period(), timeout=20)
    assert sales.missing_on_server == [injected["sale"]]
    assert sales.states == {injected["sale"]: ACKED}
    assert sales.missing_on_terminal == []
    assert sales.version_differs == []

    products = diff(synced.engine, compare_settings, "productos", Period(), timeout=20)
    assert products.missing_on_server == ["ZZ-STRAY"]
    assert products.missing_on_terminal == ["P001"]
    assert [(row.key, row.terminal, row.server) for row in products.version_differs] == [
        ("P002", 1, 2)
    ]
    assert products.bytes_moved > 0


def test_prune_removes_exactly_the_records_gone_from_the_server(
    server: Server, synced: Terminal, compare_settings: Settings
) -> None:
    inject_differences(server, synced)

    dry = prune(synced.engine, compare_settings, "productos", apply=False, timeout=20)
    assert (dry.keys, dry.pruned) == (["ZZ-STRAY"], 0)
    assert SqlReplicaStore(synced.engine).record("productos", "ZZ-STRAY") is not None

    done = prune(synced.engine, compare_settings, "productos", apply=True, timeout=20)
    assert (done.keys, done.pruned) == (["ZZ-STRAY"], 1)
    store = SqlReplicaStore(synced.engine)
    assert store.record("productos", "ZZ-STRAY") is None
    assert store.record("productos", "P000") is not None
    after = diff(synced.engine, compare_settings, "productos", Period(), timeout=20)
    assert after.missing_on_server == []
    assert after.missing_on_terminal == ["P001"]


def test_the_till_queue_shows_a_running_relay_and_the_database_its_last_activity(
    synced: Terminal, compare_settings: Settings, tmp_path: Path
) -> None:
    def consumers() -> int:
        info = terminal_queue(compare_settings, synced.id)
        assert info is not None
        return info.consumers

    assert consumers() == 0
    loop = synced.run()
    try:
        wait_for(lambda: consumers() == 1, "the relay consuming the till's queue", loop)
    finally:
        synced.finish(loop)
    wait_for(lambda: consumers() == 0, "no consumer once the relay stopped")
    assert terminal_queue(compare_settings, "TNOQUEUE") is None
    unreachable = compare_settings.with_overrides(broker_url="amqp://guest:guest@127.0.0.1:1/%2F")
    with pytest.raises(BrokerUnavailable, match="unreachable"):
        terminal_queue(unreachable, synced.id)

    with synced.engine.connect() as connection:
        last = last_activity(connection)
    assert last is not None
    assert dt.timedelta(0) <= dt.datetime.now(dt.UTC) - last < dt.timedelta(minutes=5)
    fresh = make_engine(str(tmp_path / "fresh.db"))
    upgrade(fresh, "terminal")
    with fresh.connect() as connection:
        assert last_activity(connection) is None
    fresh.dispose()


def test_held_says_which_operations_the_server_holds(
    synced: Terminal, compare_settings: Settings
) -> None:
    ids = op_ids(synced)
    held = ask_held(compare_settings, synced.identity, "ventas", [*ids, "not-an-op"], timeout=20)
    assert sorted(held) == ids
    assert {op.status for op in held.values()} == {"applied"}


def test_compare_answers_while_the_till_consumes_its_own_queue(
    synced: Terminal, compare_settings: Settings
) -> None:
    loop = synced.run()
    try:
        result = compare(synced.engine, compare_settings, ["ventas"], Period(), timeout=20)
        assert result.equal
    finally:
        synced.finish(loop)


def test_the_compare_command_exits_1_and_prints_json_when_something_differs(
    server: Server, synced: Terminal, compare_url: str
) -> None:
    from cli.main import cli

    inject_differences(server, synced)
    db = str(synced.engine.url.database)
    result = CliRunner().invoke(
        cli, ["compare", "--db", db, "--topic", "ventas", "--json", "--broker-url", compare_url]
    )
    assert result.exit_code == 1, result.output
    assert '"topic":"ventas"' in result.output
    assert '"equal":false' in result.output


def test_the_sales_view_shows_what_the_server_holds_of_each_sale(
    server: Server, synced: Terminal, compare_url: str
) -> None:
    import json

    from cli.main import cli

    gone = inject_differences(server, synced)["sale"]
    db = str(synced.engine.url.database)
    result = CliRunner().invoke(cli, ["ventas", "--db", db, "--json", "--broker-url", compare_url])
    assert result.exit_code == 0, result.output
    rows = {row["op_id"]: row for row in json.loads(result.output)["rows"]}
    assert len(rows) == SALES
    assert rows[gone]["server"] is None
    held = [row["server"] for op_id, row in rows.items() if op_id != gone]
    assert all(h is not None and h["version"] == 1 and h["status"] == "applied" for h in held)

    local = CliRunner().invoke(cli, ["ventas", "--db", db, "--local", "--json"])
    assert all(row["server"] is None for row in json.loads(local.output)["rows"])


def test_a_prune_of_confirmed_keys_deletes_only_those_still_gone_from_the_server(
    server: Server, synced: Terminal, compare_settings: Settings
) -> None:
    inject_differences(server, synced)

    done = prune(
        synced.engine,
        compare_settings,
        "productos",
        apply=True,
        keys=["ZZ-STRAY", "P000"],  # P000 is on the server: never pruned
        timeout=20,
    )

    assert (done.keys, done.pruned) == (["ZZ-STRAY"], 1)
    assert SqlReplicaStore(synced.engine).record("productos", "P000") is not None
    kept = prune(synced.engine, compare_settings, "productos", apply=True, keys=[], timeout=20)
    assert (kept.keys, kept.pruned) == ([], 0)


def test_diff_show_opens_a_key_on_both_sides(
    server: Server, synced: Terminal, compare_url: str
) -> None:
    import json

    from cli.main import cli

    gone = inject_differences(server, synced)["sale"]
    db = str(synced.engine.url.database)

    def show(topic: str, key: str) -> tuple[int, dict[str, object]]:
        args = ["diff", "--db", db, topic, "--show", key, "--json", "--broker-url", compare_url]
        result = CliRunner().invoke(cli, args)
        return result.exit_code, json.loads(result.output)

    code, behind = show("productos", "P002")
    assert code == 1
    assert (behind["terminal"]["version"], behind["server"]["version"]) == (1, 2)  # type: ignore[index]
    assert behind["server"]["data"]["price"] == "12.50"  # type: ignore[index]
    code, same = show("ventas", op_ids(synced)[-1])
    assert (code, same["same"]) == (0, True)
    assert same["server"]["status"] == "applied"  # type: ignore[index]
    assert same["server"]["data"]["number"] == same["terminal"]["data"]["number"]  # type: ignore[index]
    code, missing = show("ventas", str(gone))
    assert code == 1
    assert (missing["terminal"]["status"], missing["server"]["status"]) == ("acked", "absent")  # type: ignore[index]
    code, stray = show("products", "ZZ-STRAY")
    assert (stray["terminal"]["status"], stray["server"]["status"]) == ("live", "absent")  # type: ignore[index]
