"""The window's views, Comparar registros and Herramientas, driven with Textual's pilot over
real tills (SQLite), the real RabbitMQ and a running server: what each shows is what the
CLI's library functions return, and what each changes is changed by them."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import msgspec
import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine
from textual.widgets import Button, Input, Select

from cajasync.core import topology
from cajasync.core.db import make_engine, upgrade
from cajasync.core.identity import TerminalIdentity
from cajasync.core.settings import Settings
from cajasync.core.terminal_tables import ACKED, outbox, purges
from cajasync.samples.seed import Sample
from cli.window.context import CONFIG, PENDING
from cli.window.operations import OperationsView, PendingView
from cli.window.records import (
    MISSING_ON_SERVER,
    MISSING_ON_TERMINAL,
    VERSION_DIFFERS,
    DiffScreen,
    RecordScreen,
)
from cli.window.table import Confirm, VirtualTable
from cli.window.tools import PruneScreen, PurgeScreen
from cli.window.views import RecordSource, RecordView, make_view
from inbox.replica_store.sql import SqlReplicaStore
from outbox import catalog
from outbox.purge import purge_log
from outbox.record import record
from schemas.feed import Change
from schemas.records import Product
from tests.integration.down_support import (
    Server,
    Terminal,
    make_server,
    make_terminal,
    purge,
)
from tests.integration.relay_support import sale
from tests.integration.test_compare_diff import inject_differences, op_ids
from tests.integration.views_support import FILE_NAME, SALES, Till, open_till, set_state, stock_till
from tests.waiting import wait_for
from tests.window.support import SIZE, PartApp, context, rows_of, settle

pytestmark = pytest.mark.rabbitmq

NOWHERE = "amqp://guest:guest@127.0.0.1:1/%2F"  # a broker that is not there
MANY = 100_000
PRODUCTS = 40
SYNCED_SALES = 6


def run(coroutine: Any) -> Any:
    return asyncio.run(coroutine)


# -- a till on its own (the broker away) ---------------------------------------------------


@pytest.fixture
def till(tmp_path: Path) -> Iterator[Till]:
    engine = open_till(tmp_path / "caja.db", "CAJA-01")
    yield stock_till(engine)
    engine.dispose()


@pytest.fixture
def away() -> Settings:
    """Settings whose broker does not answer: the server's column cannot be filled."""
    return Settings(broker_url=NOWHERE, retry_initial_s=0.01, retry_max_s=0.05)


def many_products(engine: Engine, count: int) -> None:
    """`count` products in the replica, written in one executemany (a pull is slower)."""
    encode = msgspec.msgpack.Encoder().encode
    rows = [
        ("productos", key, 1, False, encode(product(key)), None, 1.0, "all", index + 1)
        for index in range(count)
        if (key := f"P{index:06d}")
    ]
    with engine.begin() as connection:
        connection.exec_driver_sql(
            "INSERT INTO cajasync_replica (topic, key, version, deleted, body, image, "
            "applied_at, scope, seq) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            rows,
        )


def product(key: str, price: str = "10.00") -> Product:
    return Product(
        key=key, version=1, name=f"Producto {key}", price=Decimal(price), tax_rate=Decimal(21)
    )


def test_the_virtual_table_reads_only_the_pages_it_shows_of_100000_products(
    tmp_path: Path, away: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine = open_till(tmp_path / "caja.db", "CAJA-01")
    many_products(engine, MANY)
    asked: list[tuple[int, int]] = []
    fetch = RecordSource.fetch

    def counting(self: RecordSource, offset: int, limit: int) -> Any:
        page = fetch(self, offset, limit)
        asked.append((offset, len(page.rows)))
        return page

    monkeypatch.setattr(RecordSource, "fetch", counting)
    ctx = context(engine, away)

    async def scenario() -> None:
        app = PartApp(view=lambda: make_view(ctx, "productos"))
        async with app.run_test(size=SIZE) as pilot:
            view = app.query_one(RecordView)
            table = view.table
            table.focus()
            await settle(pilot)
            assert (table.row_count, asked) == (MANY, [(0, 100)])
            assert table.current_row is not None
            assert table.current_row.cells[:3] == ("P000000", "Producto P000000", "10.00")
            assert "100.000 registros" in view.message

            await pilot.press("end")
            await settle(pilot)
            assert table.cursor == MANY - 1
            assert table.current_row is not None
            assert table.current_row.key == "P099999"
            assert asked == [(0, 100), (MANY - 100, 100)]  # never the pages in between
            last_line = table.render_line(table.size.height - 1).text
            assert "P099999" in last_line

            await pilot.press("pageup", "pageup", "up")
            await settle(pilot)
            assert table.cursor == MANY - 1 - 2 * (table.size.height - 1) - 1
            await pilot.press("home")
            await settle(pilot)
            assert table.cursor == 0
            assert sum(rows for _offset, rows in asked) == table.fetched_rows <= 300

    run(scenario())
    engine.dispose()


def test_every_download_topic_and_configuracion_show_their_records(
    tmp_path: Path, away: Settings
) -> None:
    engine = open_till(tmp_path / "caja.db", "CAJA-01")
    pull_config(engine)
    with_image = msgspec.structs.replace(product("P1"), image="ab" * 32)
    SqlReplicaStore(engine).apply(
        [
            Change(
                stream="productos:all",
                seq=1,
                topic="productos",
                key="P1",
                version=3,
                record=with_image,
            )
        ],
        now=1.0,
    )
    ctx = context(engine, away)

    async def scenario() -> None:
        app = PartApp(view=lambda: make_view(ctx, CONFIG))
        async with app.run_test(size=SIZE) as pilot:
            await settle(pilot)
            config = app.query_one(RecordView)
            kinds = {cells[1] for cells in rows_of(config.table)}
            assert {"company", "user", "permission", "tax"} <= kinds
            assert ("cajero1", "user") in {cells[:2] for cells in rows_of(config.table)}
            await config.remove()
            await app.mount(make_view(ctx, "productos"))
            await settle(pilot)
            products = app.query_one(RecordView)
            [row] = rows_of(products.table)
            titles = [column.title for column in products.table.columns]
            assert dict(zip(titles, row, strict=True)) == {
                "Clave": "P1",
                "Nombre": "Producto P1",
                "Precio": "10.00",
                "IVA %": "21",
                "Marca": "",
                "Familia": "",
                "Activo": "sí",
                "Imagen": "falta",  # referred to, not downloaded (Incluir Imágenes was off)
                "Versión": "3",
            }

    run(scenario())
    engine.dispose()


def pull_config(engine: Engine) -> None:
    """The seeded configuration (users master, admin, supervisor, cajero1..3, each with
    their key as password), as a pull of `configuracion` leaves it."""
    config = Sample(0, 0, 0, False, ["L1"], ["PV1"]).config
    SqlReplicaStore(engine).apply(
        [
            Change(
                stream="configuracion:all",
                seq=index,
                topic="configuracion",
                key=item.key,
                version=1,
                record=item,
            )
            for index, item in enumerate(config, 1)
        ],
        now=0.0,
    )


def test_the_sales_view_shows_business_columns_filters_by_state_and_number_and_replays(
    till: Till, away: Settings
) -> None:
    set_state(till.engine, [till.sales[1], till.sales[2]], ACKED)
    set_state(till.engine, [till.sales[5]], "rejected", "total does not add up")
    ctx = context(till.engine, away)

    async def scenario() -> None:
        app = PartApp(view=lambda: make_view(ctx, "ventas"))
        async with app.run_test(size=SIZE) as pilot:
            await settle(pilot)
            view = app.query_one(OperationsView)
            table = view.table
            rows = {cells[0]: cells for cells in rows_of(table)}
            assert table.row_count == SALES
            # ticket, date, total, customer, state, attempts, last error, server, received
            assert rows["A-12"] == (
                "A-12", "2026-03-03 09:12", "145.20", "C2", "pendiente", "0", "", "", "",
            )  # fmt: skip
            assert rows["A-3 VOID"][4] == "pendiente"
            assert rows["A-5"][4:7] == ("rechazada", "0", "total does not add up")
            assert "Servidor no consultado" in view.message  # the broker is away: said so

            view.query_one("#state", Select).value = ACKED
            await settle(pilot)
            assert sorted(cells[0] for cells in rows_of(table)) == ["A-1", "A-2"]

            view.query_one("#state", Select).value = "*"
            number = view.query_one("#number", Input)
            number.focus()
            await pilot.press("7", "enter")
            await settle(pilot)
            assert [cells[0] for cells in rows_of(table)] == ["A-7"]

            number.value = ""
            number.focus()
            await pilot.press("enter")
            view.query_one("#state", Select).value = "rejected"
            await settle(pilot)
            assert [cells[0] for cells in rows_of(table)] == ["A-5"]
            table.focus()
            await pilot.press("space")
            assert view.selected_op_ids() == [till.sales[5]]
            await pilot.press("r")
            await settle(pilot)
            assert isinstance(app.screen, Confirm)
            await pilot.click("#yes")
            await settle(pilot)
            assert "1 operación(es) en cola para reenviar (1 filas)" in view.message
            assert rows_of(table) == []  # no longer rejected

    run(scenario())
    assert state_of(till.engine, till.sales[5]) == "pending"
    assert state_of(till.engine, till.sales[1]) == ACKED


def state_of(engine: Engine, op_id: uuid.UUID) -> str:
    with engine.connect() as connection:
        query = sa.select(outbox.c.state).where(outbox.c.op_id == str(op_id))
        return str(connection.execute(query).scalar_one())


def test_a_corrupt_row_shows_as_undecodable_and_a_weekly_file_as_one_row(
    till: Till, away: Settings
) -> None:
    with till.engine.begin() as connection:
        connection.execute(
            outbox.update().where(outbox.c.op_id == str(till.sales[4])).values(body=b"\xc1bad")
        )
    ctx = context(till.engine, away)

    async def scenario() -> None:
        app = PartApp(view=lambda: make_view(ctx, "ventas"))
        async with app.run_test(size=SIZE) as pilot:
            await settle(pilot)
            sales = app.query_one(OperationsView)
            broken = [c for c in rows_of(sales.table) if c[0].startswith("<undecodable")]
            assert len(broken) == 1
            assert sales.table.row_count == SALES
            await sales.remove()
            await app.mount(make_view(ctx, "archivos-semanales"))
            await settle(pilot)
            files = app.query_one(OperationsView)
            [row] = rows_of(files.table)
            assert row[:6] == (FILE_NAME, "2026-W10", "600.000 B", "3/3", "pendiente", row[5])
            await files.remove()
            await app.mount(make_view(ctx, PENDING))
            await settle(pilot)
            pending = app.query_one(PendingView)
            references = [cells[1] for cells in rows_of(pending.table)]
            assert "<undecodable>" in references
            assert f"{FILE_NAME} [1/3]" in references

    run(scenario())


def test_operaciones_pendientes_lists_what_pending_list_lists_and_opens_a_row(
    till: Till, away: Settings
) -> None:
    set_state(till.engine, list(till.sales.values())[:10], ACKED)
    set_state(till.engine, [till.sales[11]], "rejected", "unknown customer C1")
    ctx = context(till.engine, away)

    async def scenario() -> None:
        app = PartApp(view=lambda: make_view(ctx, PENDING))
        async with app.run_test(size=SIZE) as pilot:
            await settle(pilot)
            view = app.query_one(PendingView)
            rows = rows_of(view.table)
            assert [c[1] for c in rows if c[0] == "Ventas"] == ["A-11", "A-12"]
            assert {c[0] for c in rows} == {"Ventas", "Pagos", "Cierre Z", "Archivo Semanal"}
            view.query_one("#state", Select).value = "rejected"
            await settle(pilot)
            [rejected] = rows_of(view.table)
            assert rejected[:6] == ("Ventas", "A-11", "133.10", "C1", "1", "rechazada")
            assert rejected[8] == "unknown customer C1"

            view.table.focus()
            await pilot.press("enter")
            await settle(pilot)
            screen = app.screen
            assert isinstance(screen, RecordScreen)
            assert screen.terminal is not None
            assert screen.terminal.status == "rejected"
            assert screen.terminal.reason == "unknown customer C1"
            assert screen.terminal.data is not None
            assert screen.terminal.data["number"] == 11
            assert "No se pudo leer en el servidor" in screen.message  # broker away: said

    run(scenario())


# -- Herramientas: purge -------------------------------------------------------------------


@pytest.fixture
def configured(till: Till) -> Till:
    pull_config(till.engine)
    set_state(till.engine, [till.sales[n] for n in (1, 2, 4)], ACKED)
    return till


def outbox_rows(engine: Engine) -> list[tuple[str, int, str]]:
    with engine.connect() as connection:
        query = sa.select(outbox.c.op_id, outbox.c.version, outbox.c.state).order_by(outbox.c.seq)
        return [tuple(row) for row in connection.execute(query)]  # type: ignore[misc]


async def fill_purge(pilot: Any, user: str, password: str) -> PurgeScreen:
    await settle(pilot)
    screen = pilot.app.screen
    assert isinstance(screen, PurgeScreen)
    screen.query_one("#user", Input).value = user
    screen.query_one("#password", Input).value = password
    await pilot.click("#check")
    await settle(pilot)
    return screen


@pytest.mark.parametrize(
    ("user", "password", "said"),
    [
        ("cajero1", "cajero1", "user cajero1 (CASHIER) may not tools.delete-synced"),
        ("admin", "wrong", "wrong password for user admin"),
    ],
)
def test_the_purge_screen_refuses_a_cashier_or_a_wrong_password_and_deletes_nothing(
    configured: Till, away: Settings, user: str, password: str, said: str
) -> None:
    before = outbox_rows(configured.engine)
    ctx = context(configured.engine, away)

    async def scenario() -> None:
        app = PartApp(screen=lambda: PurgeScreen(ctx))
        async with app.run_test(size=SIZE) as pilot:
            screen = await fill_purge(pilot, user, password)
            assert screen.message.startswith("No autorizado, nada se elimina: ")
            assert said in screen.message
            assert screen.query_one("#purge", Button).disabled
            assert screen.query_one("#password", Input).value == ""
            await pilot.click("#purge")  # disabled: nothing happens
            await pilot.press("escape")
            await settle(pilot)
            assert app.results == [None]

    run(scenario())
    assert outbox_rows(configured.engine) == before
    assert purge_log(configured.engine) == []


def test_an_admin_purge_shows_the_plan_then_deletes_only_acknowledged_operations_and_logs_it(
    configured: Till, away: Settings
) -> None:
    before = outbox_rows(configured.engine)
    acked = {str(configured.sales[n]) for n in (1, 2, 4)}
    ctx = context(configured.engine, away)

    async def scenario() -> None:
        app = PartApp(screen=lambda: PurgeScreen(ctx))
        async with app.run_test(size=SIZE) as pilot:
            screen = await fill_purge(pilot, "admin", "admin")
            assert screen.plan is not None
            assert screen.plan.rows == 3
            assert "admin (ADMIN) puede eliminar 3 operaciones" in screen.message
            assert outbox_rows(configured.engine) == before  # shown, not done
            await pilot.click("#purge")
            await settle(pilot)
            assert app.results == [3]

    run(scenario())
    assert outbox_rows(configured.engine) == [row for row in before if row[0] not in acked]
    [logged] = purge_log(configured.engine)
    assert (logged.user, logged.role, logged.rows) == ("admin", "ADMIN", 3)
    assert [(span.topic, span.rows) for span in logged.topics] == [("ventas", 3)]
    with configured.engine.connect() as connection:
        assert connection.execute(sa.select(sa.func.count()).select_from(purges)).scalar() == 1


# -- against the server: the server's column, Comparar registros, Depurar -----------------


@pytest.fixture
def server(tmp_path: Path, window_settings: Settings, window_url: str) -> Iterator[Server]:
    """A running server on an SQLite store (the diff itself is tested on both stores in
    tests/integration/test_compare_diff.py)."""
    purge(window_url, topology.OPS_QUEUE, topology.REQUESTS_QUEUE, topology.DEAD_QUEUE)
    url = f"sqlite:///{tmp_path / 'server.db'}"
    engine = make_engine(url)
    upgrade(engine, "server")
    engine.dispose()
    server = make_server(url, window_settings)
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
    window_settings: Settings,
    new_terminal_id: Callable[[], str],
) -> Iterator[Terminal]:
    """A till whose sales the server acknowledged and whose products it pulled, with a
    sale deleted on the server, a product missing on the till, a stray one on the till
    and one a version behind (test_compare_diff.inject_differences)."""
    with server.engine.begin() as connection:
        for index in range(PRODUCTS):
            catalog.upsert(connection, product(f"P{index:03d}"))
    identity = TerminalIdentity(new_terminal_id(), "L1", "PV1", "retail")
    till = make_terminal(str(tmp_path / f"{identity.terminal}.db"), identity, window_settings)
    with till.engine.begin() as connection:
        for number in range(1, SYNCED_SALES + 1):
            record(connection, sale(number))
    loop = till.run()
    wait_for(lambda: acked(till) == SYNCED_SALES, "sales acknowledged", loop, server.loop)  # type: ignore[arg-type]
    till.finish(loop)
    till.pull(["productos"])
    try:
        yield till
    finally:
        till.stop_all()
        till.engine.dispose()


def acked(till: Terminal) -> int:
    with till.engine.connect() as connection:
        query = sa.select(sa.func.count()).where(outbox.c.state == ACKED).select_from(outbox)
        return int(connection.execute(query).scalar_one())


def test_the_sales_view_shows_what_the_server_holds_of_each_sale(
    server: Server, synced: Terminal, window_settings: Settings
) -> None:
    gone = str(inject_differences(server, synced)["sale"])
    ctx = context(synced.engine, window_settings)

    async def scenario() -> None:
        app = PartApp(view=lambda: make_view(ctx, "ventas"))
        async with app.run_test(size=SIZE) as pilot:
            await settle(pilot)
            table = app.query_one(OperationsView).table
            rows = {row.key: row.cells for i in range(table.row_count) if (row := table._cached(i))}
            assert len(rows) == SYNCED_SALES
            assert rows[gone][4] == "confirmada"
            assert rows[gone][7:] == ("no", "")
            held = [cells for key, cells in rows.items() if key != gone]
            assert all(cells[7] == "v1" and cells[8] for cells in held)

    run(scenario())


def test_comparar_registros_lists_the_exact_keys_and_opens_each_on_both_sides(
    server: Server, synced: Terminal, window_settings: Settings
) -> None:
    gone = str(inject_differences(server, synced)["sale"])
    ctx = context(synced.engine, window_settings)

    async def products() -> None:
        app = PartApp(screen=lambda: DiffScreen(ctx, "productos"))
        async with app.run_test(size=SIZE) as pilot:
            await settle(pilot)
            screen = app.screen
            assert isinstance(screen, DiffScreen)
            assert rows_of(screen.table) == [
                (MISSING_ON_SERVER, "ZZ-STRAY", "", ""),
                (MISSING_ON_TERMINAL, "P001", "", ""),
                (VERSION_DIFFERS, "P002", "v1", "v2"),
            ]
            assert f"{PRODUCTS} registros en la terminal, {PRODUCTS} en el servidor" in (
                screen.message
            )
            screen.table.focus()
            await pilot.press("end", "enter")
            await settle(pilot)
            record_screen = app.screen
            assert isinstance(record_screen, RecordScreen)
            assert record_screen.terminal is not None
            assert record_screen.server is not None
            assert (record_screen.terminal.version, record_screen.server.version) == (1, 2)
            assert record_screen.server.data is not None
            assert record_screen.server.data["price"] == "12.50"
            assert record_screen.message == "Versiones distintas: terminal v1, servidor v2"
            await pilot.press("escape", "home", "enter")
            await settle(pilot)
            stray = app.screen
            assert isinstance(stray, RecordScreen)
            assert stray.key == "ZZ-STRAY"
            assert stray.message == "El servidor no lo tiene (no lo tiene)"

    async def sales() -> None:
        app = PartApp(screen=lambda: DiffScreen(ctx, "ventas"))
        async with app.run_test(size=SIZE) as pilot:
            await settle(pilot)
            screen = app.screen
            assert isinstance(screen, DiffScreen)
            assert rows_of(screen.table) == [(MISSING_ON_SERVER, gone, "confirmada", "")]
            screen.table.focus()
            await pilot.press("enter")
            await settle(pilot)
            opened = app.screen
            assert isinstance(opened, RecordScreen)
            assert opened.terminal is not None
            assert opened.terminal.status == ACKED
            assert opened.server is not None
            assert opened.server.status == "absent"
            await pilot.press("escape")
            await settle(pilot)
            await pilot.press("space", "r")
            await settle(pilot)
            await pilot.click("#yes")
            await settle(pilot)
            assert screen.message == "1 operación(es) en cola para reenviar (1 filas)"

    run(products())
    run(sales())
    assert state_of(synced.engine, uuid.UUID(gone)) == "pending"
    held = {op for op in op_ids(synced) if op != gone}
    assert all(state_of(synced.engine, uuid.UUID(op)) == ACKED for op in held)


def test_the_prune_screen_shows_the_list_and_deletes_only_after_the_confirmation(
    server: Server, synced: Terminal, window_settings: Settings
) -> None:
    inject_differences(server, synced)
    ctx = context(synced.engine, window_settings)
    store = SqlReplicaStore(synced.engine)

    async def cancelled() -> None:
        app = PartApp(screen=lambda: PruneScreen(ctx, "productos"))
        async with app.run_test(size=SIZE) as pilot:
            await settle(pilot)
            screen = app.screen
            assert isinstance(screen, PruneScreen)
            assert rows_of(screen.table) == [("ZZ-STRAY",)]
            assert not screen.query_one("#prune", Button).disabled
            assert store.record("productos", "ZZ-STRAY") is not None  # listed, not deleted
            await pilot.click("#cancel")
            await settle(pilot)
            assert app.results == [None]

    async def confirmed() -> None:
        app = PartApp(screen=lambda: PruneScreen(ctx, "productos"))
        async with app.run_test(size=SIZE) as pilot:
            await settle(pilot)
            await pilot.click("#prune")
            await settle(pilot)
            assert app.results == [1]

    run(cancelled())
    assert store.record("productos", "ZZ-STRAY") is not None
    run(confirmed())
    assert store.record("productos", "ZZ-STRAY") is None
    assert store.record("productos", "P000") is not None
    assert store.counts("productos") == {"productos": PRODUCTS - 1}  # P001 was missing already


def test_a_screen_says_when_the_server_does_not_answer(
    tmp_path: Path, window_settings: Settings, till: Till
) -> None:
    """No server runs on this vhost: Comparar registros says so and the window lives on."""
    ctx = context(till.engine, window_settings.with_overrides(broker_url=NOWHERE))

    async def scenario() -> None:
        app = PartApp(screen=lambda: DiffScreen(ctx, "ventas"))
        async with app.run_test(size=SIZE) as pilot:
            await settle(pilot)
            screen = app.screen
            assert isinstance(screen, DiffScreen)
            assert screen.message.startswith("No se pudo comparar: ")
            assert "RabbitMQ" in screen.message or "broker" in screen.message
            assert screen.query_one(VirtualTable).row_count == 0

    run(scenario())
