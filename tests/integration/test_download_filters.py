"""Download filters end to end (catalog -> request handler / feed relay -> broker -> replica,
the real loops in threads, on the real RabbitMQ and both server stores): some customers
by key, another location's stock, tables for restaurants and rooms for hotels, a changed
image brought by its live change, and a whole snapshot that leaves no stray behind.

Fixtures (`server`, `terminals`, a private vhost per module) are in conftest.py.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from decimal import Decimal

import msgspec
import pytest
from click.testing import CliRunner

from cajasync.samples.seed import fake_png, seed_catalog
from cli.main import cli
from inbox.replica_api import ALL_LOCATIONS, Replica
from outbox import catalog
from schemas.feed import Change
from schemas.records import Customer, Product, StockLevel, Table
from tests.integration.down_support import (
    Server,
    Terminal,
    differences,
    live,
    purge_terminal_queue,
)
from tests.waiting import wait_for

pytestmark = pytest.mark.rabbitmq

CUSTOMERS = "clientes"
PRODUCTS = "productos"


def test_a_pull_of_some_customers_brings_only_those_and_names_the_ones_the_server_lacks(
    server: Server, terminals: Callable[[str, str, str], Terminal], down_url: str
) -> None:
    seed_catalog(server.engine, products=5, customers=30)
    serving = server.start()
    till = terminals("L1", "PV1", "retail")
    till.pull([CUSTOMERS])
    position = till.positions()["clientes:all"]
    with server.engine.begin() as connection:
        for key in ("C000001", "C000002"):
            current = catalog.get(connection, CUSTOMERS, key)
            assert isinstance(current, Customer)
            catalog.upsert(connection, msgspec.structs.replace(current, phone="555-0101"))
    wait_for(lambda: server.unpublished() == 0, "the changes in the till's queue", serving)
    assert purge_terminal_queue(down_url, till) >= 1  # lost: only a refresh brings them

    result = till.pull([CUSTOMERS], keys=["C000001", "NOBODY"])

    assert (result.records, result.missing_keys, result.keys) == (
        1,
        ["NOBODY"],
        ["C000001", "NOBODY"],
    )
    replica = Replica(till.engine)
    one, two = replica.get(Customer, "C000001"), replica.get(Customer, "C000002")
    assert one is not None
    assert two is not None
    assert (one.phone, two.phone == "555-0101") == ("555-0101", False)  # C000002 not asked
    assert till.positions()["clientes:all"] == position  # the refresh still owes C000002
    refresh = till.pull([CUSTOMERS])
    assert refresh.records == 2  # both changes since the position
    assert differences(server.state(till.identity, [CUSTOMERS]), till.state([CUSTOMERS])) == []


def test_another_locations_stock_is_pulled_beside_the_own_which_stays_the_live_one(
    server: Server, terminals: Callable[[str, str, str], Terminal]
) -> None:
    seed_catalog(server.engine, products=10, customers=1, locations=("L1", "L2"))
    serving = server.start()
    till = terminals("L1", "PV1", "retail")
    till.pull(["stock"])

    there = till.pull(["stock"], location="L2")

    assert (there.location, there.records) == ("L2", 10)
    replica = Replica(till.engine)
    assert {level.key[:3] for level in replica.query(StockLevel)} == {"L1/"}
    assert len(replica.query(StockLevel, location="L2")) == 10
    assert {where for where, _ in replica.located("stock", location=ALL_LOCATIONS)} == {"L1", "L2"}
    assert "stock:loc.L2" in till.positions()

    running = till.run()
    with server.engine.begin() as connection:
        theirs = StockLevel(key="L2/000001", product="000001", quantity=Decimal(-3))
        catalog.upsert(connection, theirs, scope="loc.L2")
        mine = catalog.upsert(
            connection,
            StockLevel(key="L1/000001", product="000001", quantity=Decimal(42)),
            scope="loc.L1",
        )
    wait_for(
        lambda: replica.get(StockLevel, "L1/000001") == mine.record,
        "the own location's change to arrive live",
        running,
        serving,
    )
    Terminal.finish(running)
    old = replica.get(StockLevel, "L2/000001", location="L2")
    assert old is not None
    assert old.quantity != Decimal(-3)  # not followed live

    assert till.pull(["stock"]).status == "done"  # a refresh of the own stock still answers
    again = till.pull(["stock"], location="L2")  # and of the other, from its position
    assert again.records == 1
    fresh = replica.get(StockLevel, "L2/000001", location="L2")
    assert fresh is not None
    assert fresh.quantity == Decimal(-3)

    db = str(till.engine.url.database)
    shown = CliRunner().invoke(cli, ["replica", "show", "--db", db, "stock", "L2/000001", "--json"])
    assert shown.exit_code == 0, shown.output
    assert json.loads(shown.output)["location"] == "L2"
    listed = CliRunner().invoke(
        cli, ["replica", "list", "--db", db, "stock", "--location", "*", "--json"]
    )
    assert listed.exit_code == 0, listed.output
    assert {row["location"] for row in json.loads(listed.output)} == {"L1", "L2"}


def test_a_restaurant_gets_tables_and_a_hotel_rooms_in_snapshots_and_live(
    server: Server, terminals: Callable[[str, str, str], Terminal]
) -> None:
    seed_catalog(server.engine, products=5, customers=1)
    serving = server.start()
    restaurant = terminals("L1", "PV1", "restaurant")
    hotel = terminals("L1", "PV2", "hotel")
    restaurant.pull(["mesas"])
    hotel.pull(["mesas"])
    assert {t.kind for t in Replica(restaurant.engine).query(Table)} == {"table"}
    assert {t.kind for t in Replica(hotel.engine).query(Table)} == {"room"}
    assert len(Replica(restaurant.engine).query(Table)) == 20
    assert len(Replica(hotel.engine).query(Table)) == 8

    runs = restaurant.run(), hotel.run()
    with server.engine.begin() as connection:
        catalog.upsert(connection, Table(key="M50", name="Mesa 50"))
        catalog.upsert(connection, Table(key="H301", name="Habitación 301", kind="room"))
        catalog.upsert(connection, Table(key="M01", name="Suite 1", kind="room"))  # turned room
    for till, loop in zip((restaurant, hotel), runs, strict=True):
        wait_for(
            lambda till=till: (
                not differences(
                    server.state(till.identity, ["mesas"]),
                    till.state(["mesas"]),
                    tombstones=False,
                )
            ),
            f"the {till.identity.kind} to hold its kind of mesas",
            loop,
            serving,
        )
        Terminal.finish(loop)
    tables = {t.key for t in Replica(restaurant.engine).query(Table)}
    rooms = {t.key for t in Replica(hotel.engine).query(Table)}
    assert ({"M50", "M01", "H301"} & tables) == {"M50"}
    assert ({"M50", "M01", "H301"} & rooms) == {"M01", "H301"}


def test_a_live_change_of_a_products_image_brings_the_image_to_a_till_that_keeps_images(
    server: Server, terminals: Callable[[str, str, str], Terminal]
) -> None:
    seed_catalog(server.engine, products=10, images=True)
    serving = server.start()
    keeper = terminals("L1", "PV1", "retail")
    plain = terminals("L1", "PV2", "retail")
    keeper.pull([PRODUCTS], images=True)
    plain.pull([PRODUCTS])
    runs = keeper.run(), plain.run()

    png = fake_png("a new photo of 000004", random.Random(4))
    with server.engine.begin() as connection:
        current = catalog.get(connection, PRODUCTS, "000004")
        assert isinstance(current, Product)
        sha256 = catalog.put_image(connection, png)
        changed = catalog.upsert(connection, msgspec.structs.replace(current, image=sha256))

    wait_for(
        lambda: Replica(keeper.engine).image(sha256) == png,
        "the new image without another pull",
        runs[0],
        serving,
    )
    wait_for(
        lambda: Replica(plain.engine).get(Product, "000004") == changed.record,
        "the change at the till without images",
        runs[1],
        serving,
    )
    for loop in runs:
        Terminal.finish(loop)
    assert Replica(keeper.engine).get(Product, "000004") == changed.record
    assert Replica(plain.engine).image(sha256) is None  # it keeps no images


def test_a_stray_product_does_not_survive_a_full_pull(
    server: Server, terminals: Callable[[str, str, str], Terminal]
) -> None:
    seed_catalog(server.engine, products=12)
    server.start()
    till = terminals("L1", "PV1", "retail")
    till.pull([PRODUCTS])
    stray = Product(
        key="STRAY", version=1, name="Nunca existió", price=Decimal(1), tax_rate=Decimal(21)
    )
    Replica(till.engine).store.apply(
        [
            Change(
                stream="productos:all", seq=1, topic=PRODUCTS, key="STRAY", version=1, record=stray
            )
        ],
        0.0,
    )
    assert till.pull([PRODUCTS]).removed == 0  # a refresh sends only changes: it stays
    assert Replica(till.engine).get(Product, "STRAY") is not None

    result = till.pull([PRODUCTS], full=True)

    assert result.removed == 1
    assert Replica(till.engine).get(Product, "STRAY") is None
    want, got = server.state(till.identity, [PRODUCTS]), till.state([PRODUCTS])
    assert live(got) == live(want)
