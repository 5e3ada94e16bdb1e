"""The demo's back office: a seeded catalog, tills stocked from empty, and prices and
offers that change while the tills sell."""

from __future__ import annotations

import datetime as dt
import random
import threading
from collections.abc import Callable
from decimal import Decimal

import msgspec
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from cajasync.core.settings import Settings
from schemas.records import Offer, Product


class ReplicaRow(msgspec.Struct, frozen=True):
    terminal: str
    topic: str
    server: int  # records the server holds for this terminal
    terminal_has: int
    changes_seen: str  # "8/8": back-office changes of the day already on this till


def seed(server: Engine) -> dict[str, int]:
    """A small store: every down topic filled, one location, three points of sale."""
    from cajasync.samples.seed import seed_catalog

    return seed_catalog(server, products=300, customers=40, images=True, locations=("L1",), seed=42)


def stock_terminal(engine: Engine, settings: Settings) -> str:
    """Obtener datos on an empty till; a line for the event log."""
    from cajasync.processes.pull import pull

    result = pull(engine, settings, None, images=True, timeout=120)
    size = (result.bytes + result.image_bytes) / 1e6
    return (
        f"{result.records} records, {result.images} images ({size:.1f} MB) in {result.seconds:.1f}s"
    )


class BackOffice:
    """Changes prices and publishes offers at a steady pace until stopped."""

    def __init__(self, server: Engine, note: Callable[[str], None], pace_s: float = 1.5) -> None:
        self.server, self.note, self.pace_s = server, note, pace_s
        self.random = random.Random(7)
        self.changed: dict[tuple[str, str], int] = {}  # (topic, key) -> version
        self.stop = threading.Event()

    def run(self) -> None:
        from outbox import catalog

        products = self._products()
        turn = 0
        while not self.stop.wait(self.pace_s):
            product = self.random.choice(products)
            record: Offer | Product
            if turn % 3 == 2:
                record = self._offer(product, turn)
                self.note(f"back office: offer on {product.name} at {record.price}")
            else:
                record = msgspec.structs.replace(product, price=_raise(product.price))
                self.note(f"back office: {product.name} now {record.price}")
            with self.server.begin() as connection:
                change = catalog.upsert(connection, record)
            self.changed[(change.topic, change.key)] = change.version
            turn += 1

    def _products(self) -> list[Product]:
        from cajasync.core.server_tables import catalog_records

        with self.server.connect() as connection:
            bodies = connection.execute(
                sa.select(catalog_records.c.body)
                .where(catalog_records.c.topic == "productos", catalog_records.c.deleted.is_(False))
                .limit(50)
            ).scalars()
            return [msgspec.msgpack.decode(body, type=Product) for body in bodies]

    def _offer(self, product: Product, turn: int) -> Offer:
        now = dt.datetime.now(dt.UTC)
        return Offer(
            key=f"DEMO-{turn:03d}",
            product=product.key,
            price=(product.price * Decimal("0.8")).quantize(Decimal("0.01")),
            valid_from=now,
            valid_to=now + dt.timedelta(days=7),
        )

    def seen_by(self, engine: Engine) -> int:
        """How many of today's changes this till holds at their version or newer."""
        from cajasync.core.terminal_tables import replica

        with engine.connect() as connection:
            rows = connection.execute(
                sa.select(replica.c.topic, replica.c.key, replica.c.version)
            ).all()
        held: dict[tuple[str, str], int] = {(r.topic, r.key): r.version for r in rows}
        return sum(1 for key, version in self.changed.items() if held.get(key, 0) >= version)


def _raise(price: Decimal) -> Decimal:
    return (price * Decimal("1.05")).quantize(Decimal("0.01"))


def replica_rows(
    server: Engine, terminals: list[tuple[str, Engine]], office: BackOffice
) -> list[ReplicaRow]:
    """Per till: products and offers on the server vs on the till, and changes seen."""
    from cajasync.core.server_tables import catalog_records
    from inbox.replica_api import Replica

    with server.connect() as connection:
        held: dict[str, int] = dict(
            connection.execute(
                sa.select(catalog_records.c.topic, sa.func.count())
                .where(catalog_records.c.scope == "all", catalog_records.c.deleted.is_(False))
                .group_by(catalog_records.c.topic)
            ).all()
        )
    rows = []
    for terminal, engine in terminals:
        counts = Replica(engine).count()
        seen = f"{office.seen_by(engine)}/{len(office.changed)}"
        for topic in ("productos", "ofertas", "clientes"):
            rows.append(
                ReplicaRow(terminal, topic, int(held.get(topic, 0)), counts.get(topic, 0), seen)
            )
    return rows
