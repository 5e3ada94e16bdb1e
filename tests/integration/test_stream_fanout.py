"""The shared scopes' changes by stream (docs/design-scale.md, "Fan-out"): every till reads
`cajasync.s.all` and its location's stream from its own stored offset, on the real RabbitMQ.

Each test counts what it checks record by record against the catalog; no test measures
time (every wait polls a condition with a generous timeout).
"""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal

import pytest

from cajasync.broker.management import Management
from cajasync.core import topology
from cajasync.core.settings import Settings
from cajasync.processes.server_init import init_server
from cajasync.samples.seed import seed_catalog
from inbox.stream_offsets import stored_offsets
from outbox import catalog
from schemas.records import PaymentMethod, Product, Table
from tests.integration.down_support import Server, Terminal, differences, live
from tests.integration.relay_support import blocking_channel
from tests.waiting import wait_for

pytestmark = pytest.mark.rabbitmq

PRODUCTS = "productos"
Terminals = Callable[[str, str, str], Terminal]


def product(key: str, price: str) -> Product:
    return Product(key=key, name=f"Producto {key}", price=Decimal(price), tax_rate=Decimal(21))


def same_products(server: Server, till: Terminal) -> bool:
    want, got = server.state(till.identity, [PRODUCTS]), till.state([PRODUCTS])
    return not differences(want, got)


def offsets(till: Terminal) -> dict[str, int]:
    with till.engine.connect() as connection:
        return stored_offsets(connection)


def test_a_till_reads_on_from_its_stored_offset_after_a_stop_without_asking_a_catch_up(
    server: Server, terminals: Terminals
) -> None:
    seed_catalog(server.engine, products=20, locations=())
    serving = server.start()
    wait_for(lambda: server.unpublished() == 0, "the seed's changes published", serving)
    till = terminals("L1", "PV1", "retail")
    till.pull([PRODUCTS])
    running = till.run()
    with server.engine.begin() as connection:
        for n in range(1, 11):
            catalog.upsert(connection, product(f"{n:06d}", "1.10"))
    wait_for(lambda: same_products(server, till), "the first changes applied", running, serving)
    Terminal.finish(running)
    first = offsets(till)[topology.scope_stream("all")]

    with server.engine.begin() as connection:  # while the till is off
        for n in range(5, 21):
            catalog.upsert(connection, product(f"{n:06d}", "2.20"))
        catalog.delete(connection, PRODUCTS, "000003")
    wait_for(lambda: server.unpublished() == 0, "the changes published", serving)
    assert not same_products(server, till)

    running = till.run()
    wait_for(lambda: same_products(server, till), "the missed changes applied", running, serving)
    stats = Terminal.finish(running)

    assert offsets(till)[topology.scope_stream("all")] > first
    assert stats.requests == 0  # read from the stream: no gap, no catch-up asked
    assert till.positions()["productos:all"] == server.heads()["productos:all"]


def test_a_retail_till_skips_the_tables_the_chains_stream_carries_a_restaurant_applies_them(
    server: Server, terminals: Terminals
) -> None:
    serving = server.start()
    shop, restaurant = terminals("L1", "PV1", "retail"), terminals("L1", "PV2", "restaurant")
    shop_run, restaurant_run = shop.run(), restaurant.run()
    with server.engine.begin() as connection:
        catalog.upsert(connection, Table(key="M1", name="Mesa 1", area="Sala", seats=4))
        catalog.upsert(connection, Table(key="M2", name="Mesa 2", area="Sala", seats=2))
        marker = catalog.upsert(connection, product("000001", "3.30"))
    wait_for(
        lambda: {k for _t, k in live(restaurant.state(), "mesas")} == {"M1", "M2"},
        "the restaurant to hold both tables",
        restaurant_run,
        serving,
    )
    wait_for(  # published after the tables on one channel: they reached the shop before it
        lambda: ("productos", "000001") in live(shop.state(), PRODUCTS),
        "the shop to apply the product change",
        shop_run,
        serving,
    )
    Terminal.finish(shop_run), Terminal.finish(restaurant_run)

    assert marker is not None
    assert [key for topic, key in shop.state() if topic == "mesas"] == []
    assert not [stream for stream in shop.positions() if stream.startswith("mesas:")]


def test_a_till_whose_location_stream_is_missing_goes_on_with_its_queue(
    server: Server, terminals: Terminals, down_url: str
) -> None:
    serving = server.start()
    till = terminals("L9", "PV9", "retail")
    with blocking_channel(down_url) as channel:  # a server not yet at the streams' step
        channel.queue_delete(topology.scope_stream("loc.L9"))
    running = till.run()
    with server.engine.begin() as connection:  # by the till's queue: its point of sale's
        method = PaymentMethod(key="PV9/vale", name="Vale", kind="voucher")
        catalog.upsert(connection, method, scope="pos.PV9")
    wait_for(
        lambda: ("formas-de-pago", "PV9/vale") in live(till.state(), "formas-de-pago"),
        "the point of sale's change by the queue",
        running,
        serving,
    )
    stats = Terminal.finish(running)

    assert stats.reconnects == 0  # the missing stream closed its channel, not the session


def test_migrating_the_fanout_unbinds_the_shared_keys_from_tills_bound_the_old_way(
    server: Server, terminals: Terminals, down_url: str, down_settings: Settings
) -> None:
    till = terminals("L1", "PV1", "retail")
    queue = topology.terminal_queue(till.id)
    old = topology.shared_scope_keys("L1")  # what the queue was bound to before the streams
    with blocking_channel(down_url) as channel:
        for key in old:
            channel.queue_bind(queue, topology.DOWN_EXCHANGE, routing_key=key)
    management = Management(down_settings)
    assert set(old) <= set(management.bound_keys(queue, topology.DOWN_EXCHANGE))

    store = server.engine.url.render_as_string(hide_password=False)
    done = init_server(store, down_settings, migrate_fanout=True)

    bound = management.bound_keys(queue, topology.DOWN_EXCHANGE)
    assert done.unbound[queue] == len(old)
    assert set(old).isdisjoint(bound)
    assert set(topology.change_bindings(till.id, "L1", "PV1", "retail")) <= set(bound)
    assert topology.scope_stream("all") in done.streams
    again = init_server(store, down_settings, migrate_fanout=True)
    assert queue not in again.unbound  # idempotent
