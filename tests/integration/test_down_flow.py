"""The down flow end to end: catalog -> feed relay / request handler -> broker -> terminal
relay -> replica, through the real loops (`serve`, `run_terminal`, `pull`) in threads, on
the real RabbitMQ and both server stores.

Each module run gets a private vhost (nothing else on the broker answers our requests or
publishes into our terminals' queues); each test purges its shared queues first and
deletes its terminals' queues afterwards. No test measures time: every wait polls a
condition with a generous timeout.
"""

from __future__ import annotations

import random
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import msgspec
import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from cajasync.core.terminal_tables import images as replica_images
from cajasync.core.terminal_tables import pulls
from cajasync.errors import PullCancelled
from cajasync.processes.pull import pull
from cajasync.samples.seed import fake_png, seed_catalog
from inbox.replica import ABANDONED
from inbox.replica_api import Replica
from inbox.requests import RequestStats
from outbox import catalog
from schemas.records import PaymentMethod, Product, ReceiptBook, StockLevel, Table, image_of
from schemas.topics import DOWN_TOPICS
from tests.integration.down_support import (
    Loop,
    Server,
    State,
    Terminal,
    differences,
    live,
    purge_terminal_queue,
)
from tests.waiting import wait_for

pytestmark = pytest.mark.rabbitmq

PRODUCTS = "productos"
SNAPSHOT_PRODUCTS = 20_000  # pages keep streaming while the writer changes what they hold


# -- helpers ---------------------------------------------------------------------------------


def product(key: str, price: Decimal, image: str | None = None) -> Product:
    return Product(key=key, name=f"Producto {key}", price=price, tax_rate=Decimal(21), image=image)


def products_of(server: Server, terminal: Terminal) -> tuple[State, State]:
    return server.state(terminal.identity, [PRODUCTS]), terminal.state([PRODUCTS])


def identical(server: Server, terminal: Terminal, topics: list[str] | None = None) -> bool:
    topics = topics or [PRODUCTS]
    return not differences(server.state(terminal.identity, topics), terminal.state(topics))


def wait_identical(
    server: Server, terminal: Terminal, *loops: Loop, topics: list[str] | None = None
) -> None:
    """Wait until the replica holds exactly what the catalog holds (tombstones included)."""
    topics = topics or [PRODUCTS]
    try:
        wait_for(lambda: identical(server, terminal, topics), "replica == catalog", *loops)
    except AssertionError:
        diff = differences(server.state(terminal.identity, topics), terminal.state(topics))
        raise AssertionError(f"replica != catalog ({len(diff)}): {diff[:10]}") from None


def churn(engine: Engine, keys: list[str], changes: int, *, seed: int, batch: int = 50) -> int:
    """`changes` product changes (price updates, new products, deletes, re-creations) in
    transactions of `batch`; returns how many were logged."""
    rng = random.Random(seed)
    alive, gone = sorted(keys), list[str]()
    made = 0
    serial = 0
    while made < changes:
        with engine.begin() as connection:
            for _ in range(min(batch, changes - made)):
                serial += 1
                roll = rng.random()
                if roll < 0.15 and len(alive) > 1:
                    key = alive.pop(rng.randrange(len(alive)))
                    assert catalog.delete(connection, PRODUCTS, key) is not None
                    gone.append(key)
                else:
                    if roll < 0.25 and gone:
                        key = gone.pop(rng.randrange(len(gone)))
                        alive.append(key)
                    elif roll < 0.35:
                        key = f"N{serial:06d}"
                        alive.append(key)
                    else:
                        key = alive[rng.randrange(len(alive))]
                    catalog.upsert(connection, product(key, Decimal(serial) / 100 + 1))
                made += 1
    return made


def image_rows(terminal: Terminal) -> dict[str, float]:
    """sha256 -> stored_at of every image the terminal holds."""
    with terminal.engine.connect() as connection:
        rows = connection.execute(sa.select(replica_images.c.sha256, replica_images.c.stored_at))
        return {row.sha256: row.stored_at for row in rows}


# -- the tests -------------------------------------------------------------------------------


def test_every_down_topic_round_trips_from_the_catalog_to_the_replica(
    server: Server, terminals: Callable[[str, str, str], Terminal]
) -> None:
    seed_catalog(server.engine, products=50, customers=20, images=True)
    server.start()
    till = terminals("L1", "PV1", "restaurant")

    result = till.pull(None, images=True)

    want, got = server.state(till.identity), till.state()
    for topic in DOWN_TOPICS:
        expected = live(want, topic)
        assert expected, f"the seed wrote nothing of {topic} for this terminal"
        assert live(got, topic) == expected, f"{topic} differs"
    assert differences(want, got) == []
    assert result.records == len(live(want))
    replica = Replica(till.engine)
    assert replica.count() == {topic: len(live(want, topic)) for topic in DOWN_TOPICS}
    product_images = {image_of(record) for record in live(want, PRODUCTS).values()}
    assert None not in product_images
    assert len(product_images) == 50  # one image per product
    hashes = {sha for record in live(want).values() if (sha := image_of(record)) is not None}
    assert hashes > product_images  # and the news' images
    with server.engine.connect() as connection:
        for sha256 in hashes:
            assert replica.image(sha256) == catalog.get_image(connection, sha256), sha256
    assert result.images == len(hashes)


def test_a_shop_elsewhere_never_gets_another_locations_stock_pos_books_methods_or_tables(
    server: Server, terminals: Callable[[str, str, str], Terminal]
) -> None:
    seed_catalog(server.engine, products=20, customers=5)
    serving = server.start()
    restaurant = terminals("L1", "PV1", "restaurant")
    shop = terminals("L2", "PV2", "retail")
    restaurant.pull(None)
    shop.pull(None)

    def foreign(terminal: Terminal) -> list[tuple[str, str]]:
        return [
            (topic, key)
            for topic, key in live(terminal.state())
            if topic == "mesas"
            or (topic == "stock" and key.startswith("L1/"))
            or (topic in ("talonarios", "formas-de-pago") and key.startswith("PV1/"))
        ]

    assert foreign(shop) == []
    assert differences(server.state(shop.identity), shop.state()) == []
    shop_stock = live(shop.state(), "stock")
    assert len(shop_stock) == 20
    assert all(key.startswith("L2/") for _t, key in shop_stock)
    assert live(shop.state(), "talonarios")
    assert all(key.startswith("PV2/") for _t, key in live(shop.state(), "talonarios"))
    assert len(foreign(restaurant)) == 20 + 20 + 5 + 7  # stock, tables (no rooms), books, methods

    restaurant_run, shop_run = restaurant.run(), shop.run()
    with server.engine.begin() as connection:
        level = StockLevel(key="L1/000001", product="000001", quantity=Decimal(777))
        catalog.upsert(connection, level, scope="loc.L1")
        catalog.upsert(connection, Table(key="M99", name="Mesa 99", area="Patio", seats=8))
        book = ReceiptBook(key="PV1/FX", name="Factura X PV1", voucher_type="factura")
        catalog.upsert(connection, book, scope="pos.PV1")
        method = PaymentMethod(key="PV1/cripto", name="Cripto", kind="transfer")
        catalog.upsert(connection, method, scope="pos.PV1")
        # tables scoped to one terminal: the restaurant's reaches it, the shop's goes nowhere
        catalog.upsert(connection, Table(key="M97", name="Barra"), scope=f"term.{restaurant.id}")
        catalog.upsert(connection, Table(key="M98", name="Mostrador"), scope=f"term.{shop.id}")
    news = {("stock", "L1/000001"), ("mesas", "M99"), ("talonarios", "PV1/FX")}
    news |= {("formas-de-pago", "PV1/cripto"), ("mesas", "M97")}
    topics = ["stock", "mesas", "talonarios", "formas-de-pago"]
    wait_identical(server, restaurant, restaurant_run, serving, topics=topics)
    # A later change the shop does receive: once it is applied, everything published before
    # it on the feed relay's one channel has reached the shop's queue, if it was routed there.
    with server.engine.begin() as connection:
        marker = catalog.upsert(connection, product("000001", Decimal("1.23")))
    wait_for(
        lambda: Replica(shop.engine).get(Product, "000001") == marker.record,
        "the shop to apply a product change published after them",
        shop_run,
    )
    Terminal.finish(restaurant_run), Terminal.finish(shop_run)

    assert news <= set(live(restaurant.state()))
    assert ("mesas", "M98") not in restaurant.state()
    assert news.isdisjoint(shop.state())
    assert ("mesas", "M98") not in shop.state()
    assert foreign(shop) == []
    assert not [
        stream
        for stream in shop.positions()
        if stream.startswith("mesas:") or stream.endswith((":loc.L1", ":pos.PV1"))
    ]
    assert differences(server.state(shop.identity), shop.state()) == []


def test_a_terminal_offline_during_1000_changes_catches_up_exactly(
    server: Server, terminals: Callable[[str, str, str], Terminal]
) -> None:
    seed_catalog(server.engine, products=200)
    serving = server.start()
    till = terminals("L1", "PV1", "retail")
    till.pull([PRODUCTS])
    online = till.run()
    with server.engine.begin() as connection:
        catalog.upsert(connection, product("000001", Decimal("5.00")))
    wait_identical(server, till, online, serving)
    Terminal.finish(online)
    logged = server.changes()

    made = churn(server.engine, [f"{n:06d}" for n in range(1, 201)], 1000, seed=3)
    wait_for(lambda: server.unpublished() == 0, "the feed relay to publish them", serving)
    assert made == 1000
    assert server.changes() - logged == 1000
    assert not identical(server, till)

    back = till.run()
    wait_identical(server, till, back, serving)
    stats = Terminal.finish(back)

    want, got = products_of(server, till)
    assert got == want  # every key, version, record and tombstone
    assert sum(entry.deleted for entry in got.values()) > 20  # tombstones kept too
    assert till.positions()["productos:all"] == server.heads()["productos:all"]
    assert stats.requests == 0  # the queue kept every event: nothing had to be asked for


def test_a_snapshot_taken_while_changes_keep_flowing_ends_identical_to_the_server(
    server: Server, terminals: Callable[[str, str, str], Terminal]
) -> None:
    seed_catalog(server.engine, products=SNAPSHOT_PRODUCTS, locations=())  # 20 pages
    serving = server.start()
    written: list[int] = []

    def write(stop: threading.Event) -> int:
        rng = random.Random(4)
        serial = 0
        while not stop.is_set():
            serial += 1
            keys = [f"{rng.randrange(1, SNAPSHOT_PRODUCTS + 1):06d}" for _ in range(3)]
            if serial % 5 == 0:
                keys.append(f"N{serial:06d}")  # a new product
            with server.engine.begin() as connection:
                catalog.upsert_many(
                    connection, [product(k, Decimal(serial) / 100 + i) for i, k in enumerate(keys)]
                )
            written.append(serial)
            stop.wait(0.005)
        return serial

    writer = Loop("writer", write)
    wait_for(lambda: len(written) >= 20, "the writer to get going", writer)
    till = terminals("L2", "PV3", "retail")
    running = till.run()
    before = len(written)
    result = till.pull([PRODUCTS], full=True)
    during = len(written) - before
    wait_for(lambda: len(written) >= before + during + 30, "more changes after it", writer)
    writer.finish()
    wait_for(lambda: server.unpublished() == 0, "the feed relay to publish everything", serving)

    wait_identical(server, till, running, serving)
    Terminal.finish(running)

    assert during > 0, "no change was written while the snapshot streamed"
    assert result.full
    # `running` shares the queue: the pull is done only once every page either took is applied.
    assert result.records >= SNAPSHOT_PRODUCTS
    want, got = products_of(server, till)
    assert got == want
    assert len(live(got)) > SNAPSHOT_PRODUCTS  # the writer's new products too


def test_a_cancelled_pull_keeps_what_arrived_and_the_next_pull_completes_it(
    server: Server, terminals: Callable[[str, str, str], Terminal], monkeypatch: Any
) -> None:
    # Each page the server sends takes 0.1 s more, so the 20-page pull is still streaming
    # when it is cancelled however fast the machine is (a slow machine only widens that).
    import inbox.answers as answers

    paged = answers._page

    def slow_page(*args: Any, **kwargs: Any) -> Any:
        time.sleep(0.1)
        return paged(*args, **kwargs)

    monkeypatch.setattr(answers, "_page", slow_page)
    seed_catalog(server.engine, products=SNAPSHOT_PRODUCTS, locations=())  # 20 pages
    serving = server.start()
    # the seed's changes out before the till exists: only the snapshot's pages bring products
    wait_for(lambda: server.unpublished() == 0, "the seed's changes published", serving)
    till = terminals("L1", "PV1", "retail")
    cancel = threading.Event()

    def on_progress(records: int, *_sizes: int) -> None:
        if records > 0:
            cancel.set()  # the first page is in: "Cancelar"

    with pytest.raises(PullCancelled, match="what arrived is applied"):
        pull(till.engine, till.settings, [PRODUCTS], on_progress=on_progress, cancel=cancel)
    kept = Replica(till.engine).count(PRODUCTS)[PRODUCTS]
    assert 0 < kept < SNAPSHOT_PRODUCTS
    with till.engine.connect() as connection:
        assert connection.execute(sa.select(pulls.c.status)).scalars().all() == [ABANDONED]

    till.pull([PRODUCTS])
    wait_identical(server, till, serving)


def test_the_pull_command_stops_on_ctrl_c_keeping_what_arrived(
    terminals: Callable[[str, str, str], Terminal], down_url: str
) -> None:
    till = terminals("L1", "PV1", "retail")  # no server answers: the pull waits
    command = [sys.executable, "-m", "cli.main", "pull", "--db", str(till.engine.url.database)]
    with subprocess.Popen(
        [*command, PRODUCTS, "--broker-url", down_url],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    ) as running:

        def asked() -> bool:
            with till.engine.connect() as connection:
                return connection.execute(sa.select(pulls.c.status)).first() is not None

        wait_for(asked, "the pull's request sent")
        running.send_signal(signal.SIGINT)
        output, _ = running.communicate(timeout=60)
    assert running.returncode == 130, output
    assert "cancelled after 0 records" in output
    assert "what arrived is applied" in output
    with till.engine.connect() as connection:
        assert connection.execute(sa.select(pulls.c.status)).scalars().all() == [ABANDONED]


def test_a_deleted_product_disappears_from_a_running_terminals_replica(
    server: Server, terminals: Callable[[str, str, str], Terminal]
) -> None:
    seed_catalog(server.engine, products=30)
    serving = server.start()
    till = terminals("L1", "PV2", "retail")
    till.pull([PRODUCTS])
    replica = Replica(till.engine)
    assert replica.get(Product, "000003") is not None
    running = till.run()

    with server.engine.begin() as connection:
        deleted = catalog.delete(connection, PRODUCTS, "000003")
    assert deleted is not None
    wait_for(
        lambda: replica.get(Product, "000003") is None,
        "the product to leave the replica",
        running,
        serving,
    )
    Terminal.finish(running)

    assert replica.get_record(PRODUCTS, "000003") is None
    assert "000003" not in {p.key for p in replica.query(Product)}
    assert replica.count(PRODUCTS) == {PRODUCTS: 29}
    tombstone = till.state([PRODUCTS])[PRODUCTS, "000003"]
    assert (tombstone.deleted, tombstone.version, tombstone.record) == (True, deleted.version, None)
    want, got = products_of(server, till)
    assert got == want


def test_a_lost_stream_segment_is_detected_and_recovered_by_a_catch_up(
    server: Server, terminals: Callable[[str, str, str], Terminal], down_url: str
) -> None:
    seed_catalog(server.engine, products=100)
    serving = server.start()
    till = terminals("L1", "PV1", "retail")
    till.pull([PRODUCTS])
    keys = [f"{n:06d}" for n in range(1, 101)]

    churn(server.engine, keys, 60, seed=6, batch=20)
    wait_for(lambda: server.unpublished() == 0, "the first changes in the queue", serving)
    lost = purge_terminal_queue(down_url, till)
    assert lost > 0
    churn(server.engine, keys[50:], 10, seed=7, batch=5)
    wait_for(lambda: server.unpublished() == 0, "the later changes in the queue", serving)
    assert not identical(server, till)

    running = till.run()
    wait_identical(server, till, running, serving)
    wait_for(
        lambda: till.positions()["productos:all"] == server.heads()["productos:all"],
        "the stream position to reach the head",
        running,
    )
    stats = Terminal.finish(running)
    requests = server.finish().loops["requests"]

    assert stats.requests >= 1  # the catch-up
    assert isinstance(requests, RequestStats)
    assert requests.catch_ups >= 1
    want, got = products_of(server, till)
    assert got == want


def test_a_lost_last_change_is_caught_up_from_the_heads_with_no_later_change(
    server: Server, terminals: Callable[[str, str, str], Terminal], down_url: str
) -> None:
    server.settings = server.settings.with_overrides(head_interval_s=0.3)
    seed_catalog(server.engine, products=30)
    serving = server.start()
    till = terminals("L1", "PV1", "retail")
    till.pull([PRODUCTS])
    running = till.run()
    churn(server.engine, [f"{n:06d}" for n in range(1, 31)], 10, seed=8, batch=5)
    wait_identical(server, till, running, serving)
    Terminal.finish(running)

    with server.engine.begin() as connection:  # the stream's last change: nothing follows it
        last = catalog.upsert(connection, product("000007", Decimal("777.77")))
    wait_for(lambda: server.unpublished() == 0, "the last change in the queue", serving)
    assert purge_terminal_queue(down_url, till) >= 1
    assert not identical(server, till)

    running = till.run()
    wait_identical(server, till, running, serving)
    wait_for(
        lambda: till.positions()["productos:all"] == last.seq,
        "the stream position to reach the head",
        running,
    )
    stats = Terminal.finish(running)
    requests = server.finish().loops["requests"]

    assert stats.requests >= 1  # the catch-up the heads asked for
    assert isinstance(requests, RequestStats)
    assert requests.catch_ups >= 1
    want, got = products_of(server, till)
    assert got == want


def test_a_changed_image_is_fetched_again_and_unchanged_ones_are_not(
    server: Server, terminals: Callable[[str, str, str], Terminal]
) -> None:
    seed_catalog(server.engine, products=30, images=True)
    server.start()
    till = terminals("L1", "PV1", "retail")
    first = till.pull([PRODUCTS], images=True)
    held = image_rows(till)
    assert first.images == 30
    assert len(held) == 30

    png = fake_png("a new photo of 000007", random.Random(7))
    with server.engine.begin() as connection:
        current = catalog.get(connection, PRODUCTS, "000007")
        assert isinstance(current, Product)
        assert current.image is not None
        sha256 = catalog.put_image(connection, png)
        changed = catalog.upsert(connection, msgspec.structs.replace(current, image=sha256))
    again = till.pull([PRODUCTS], images=True)

    assert (again.images, again.full) == (1, False)
    assert len(png) <= again.image_bytes < len(png) + 1024
    assert again.image_bytes * 10 < first.image_bytes
    replica = Replica(till.engine)
    assert replica.get(Product, "000007") == changed.record
    assert replica.image(sha256) == png
    now = image_rows(till)
    assert set(now) == set(held) | {sha256}
    assert {sha: now[sha] for sha in held} == held  # not one old image stored again
    want, got = products_of(server, till)
    assert got == want
