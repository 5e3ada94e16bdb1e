"""The replica contract (inbox/replica_store/base.py) and the POS's reads through `Replica`,
written once for every adapter. A subclass named Test... gives `store`, an empty replica."""

from __future__ import annotations

import hashlib
from decimal import Decimal

from inbox.replica_api import Replica
from inbox.replica_store import ReplicaStore
from schemas.feed import Change, ImageData
from schemas.records import (
    Company,
    Customer,
    Product,
    Record,
    Seller,
    Setting,
    StockLevel,
    User,
)

YERBA = Product(
    key="7790001000011",
    version=3,
    name="Yerba 1kg",
    barcodes=["7790001000011"],
    price=Decimal("3150.00"),
    prices={"mayorista": Decimal("2900.00")},
    tax_rate=Decimal(21),
)
COMPANY = Company(key="empresa", version=1, name="Almacén Don Pepe", tax_id="30-12345678-9")
ADMIN = User(
    key="u1",
    version=2,
    name="Ana",
    role="ADMIN",
    password_hash="$scrypt$ln=15,r=8,p=1$c2FsdA$aGFzaA",
)
CURRENCY = Setting(key="moneda", version=1, value="ARS")
PNG = b"\x89PNG\r\n\x1a\n fake"


def change(record: Record, *, seq: int = 1) -> Change:
    """The change that brings `record` as it is."""
    return Change(
        stream=f"{record.topic}:all",
        seq=seq,
        topic=record.topic,
        key=record.key,
        version=record.version,
        record=record,
    )


def tombstone(record: Record, version: int) -> Change:
    """The change that deletes `record` at `version`."""
    return Change(
        stream=f"{record.topic}:all", seq=1, topic=record.topic, key=record.key, version=version
    )


def product(key: str, version: int, price: str = "1.00") -> Product:
    return Product(
        key=key, version=version, name=f"P {key}", price=Decimal(price), tax_rate=Decimal(21)
    )


class ReplicaContract:
    """Every replica adapter keeps these rules."""

    def test_an_applied_record_reads_back_equal(self, store: ReplicaStore) -> None:
        store.apply([change(YERBA), change(COMPANY)], now=1.0)

        assert store.record("productos", YERBA.key) == YERBA
        assert store.record("configuracion", "empresa") == COMPANY
        assert store.record("productos", "nope") is None

    def test_only_a_newer_version_replaces_what_is_held(self, store: ReplicaStore) -> None:
        store.apply([change(product("A", 2, "2.00"))], now=1.0)
        store.apply([change(product("A", 1, "1.00")), change(product("A", 2, "9.99"))], now=2.0)

        assert store.record("productos", "A") == product("A", 2, "2.00")

        store.apply([change(product("A", 3, "3.00"))], now=3.0)

        assert store.record("productos", "A") == product("A", 3, "3.00")

    def test_a_tombstone_hides_the_record_and_an_older_upsert_does_not_bring_it_back(
        self, store: ReplicaStore
    ) -> None:
        store.apply([change(product("A", 1)), change(product("B", 1))], now=1.0)
        store.apply([tombstone(product("A", 1), version=2)], now=2.0)
        store.apply([change(product("A", 1))], now=3.0)

        assert store.record("productos", "A") is None
        assert store.records("productos") == [product("B", 1)]
        assert store.counts() == {"productos": 1}

    def test_a_record_is_held_under_its_changes_key_and_version(self, store: ReplicaStore) -> None:
        odd = Change(
            stream="productos:all",
            seq=1,
            topic="productos",
            key="K",
            version=7,
            record=product("other", 1),
        )
        store.apply([odd], now=1.0)

        assert store.record("productos", "K") == Product(
            key="K", version=7, name="P other", price=Decimal("1.00"), tax_rate=Decimal(21)
        )
        assert store.record("productos", "other") is None

    def test_a_record_of_another_topic_or_breaking_the_rules_is_refused(
        self, store: ReplicaStore
    ) -> None:
        store.apply([change(product("A", 1, "1.00"))], now=1.0)
        wrong_topic = Change(
            stream="clientes:all",
            seq=1,
            topic="clientes",
            key="A",
            version=2,
            record=product("A", 2),
        )
        blank_name = change(
            Product(key="A", version=3, name=" ", price=Decimal(1), tax_rate=Decimal(21))
        )

        store.apply([wrong_topic, blank_name], now=2.0)

        assert store.record("productos", "A") == product("A", 1, "1.00")
        assert store.record("clientes", "A") is None

    def test_records_are_listed_by_key_up_to_a_limit(self, store: ReplicaStore) -> None:
        store.apply([change(product(key, 1)) for key in ("C", "A", "B")], now=1.0)

        assert [r.key for r in store.records("productos")] == ["A", "B", "C"]
        assert [r.key for r in store.records("productos", limit=2)] == ["A", "B"]
        assert store.records("clientes") == []

    def test_entries_are_paged_from_an_offset(self, store: ReplicaStore) -> None:
        store.apply([change(product(key, 1)) for key in ("D", "C", "A", "B")], now=1.0)

        assert [r.key for _s, r in store.entries("productos", 2, offset=1)] == ["B", "C"]
        assert [r.key for _s, r in store.entries("productos", offset=3)] == ["D"]
        assert store.entries("productos", 2, offset=4) == []

    def test_counts_live_records_per_topic(self, store: ReplicaStore) -> None:
        seller = Seller(key="V01", version=1, name="Vero")
        customer = Customer(key="C1", version=1, name="Juan")
        store.apply([change(YERBA), change(seller), change(customer)], now=1.0)
        store.apply([tombstone(seller, version=2)], now=2.0)

        assert store.counts() == {"productos": 1, "clientes": 1}
        assert store.counts("clientes") == {"clientes": 1}
        assert store.counts("vendedores") == {}

    def test_a_record_keeps_the_scope_of_its_stream_and_reads_filter_by_scope(
        self, store: ReplicaStore
    ) -> None:
        mine = StockLevel(key="L1/P1", version=1, product="P1", quantity=Decimal(4))
        theirs = StockLevel(key="L2/P1", version=1, product="P1", quantity=Decimal(8))
        for level, scope in ((mine, "loc.L1"), (theirs, "loc.L2")):
            stream = f"stock:{scope}"
            store.apply([Change(stream=stream, seq=1, topic="stock", key=level.key,
                                version=1, record=level)], now=1.0)  # fmt: skip

        assert store.entry("stock", "L2/P1") == ("loc.L2", theirs)
        assert store.entries("stock") == [("loc.L1", mine), ("loc.L2", theirs)]
        assert store.records("stock", scope="loc.L2") == [theirs]
        assert store.counts("stock", scope="loc.L1") == {"stock": 1}
        assert store.counts("stock") == {"stock": 2}
        assert store.entry("stock", "L3/P1") is None

    def test_an_image_is_stored_once_only_when_its_bytes_match_its_sha256(
        self, store: ReplicaStore
    ) -> None:
        sha = hashlib.sha256(PNG).hexdigest()
        liar = hashlib.sha256(b"other").hexdigest()

        assert store.store_image(ImageData(request_id="r", sha256=sha, data=PNG), now=1.0)
        assert store.store_image(ImageData(request_id="r", sha256=sha, data=PNG), now=2.0)
        assert not store.store_image(ImageData(request_id="r", sha256=liar, data=PNG), now=3.0)

        assert store.image(sha) == PNG
        assert store.image(liar) is None
        assert store.held_images([sha, liar]) == {sha}
        assert store.held_images([]) == set()

    # -- the POS's reads (inbox/replica_api.py) on this adapter ---------------------------

    def test_get_returns_the_record_of_the_kind_asked_for(self, store: ReplicaStore) -> None:
        store.apply([change(YERBA), change(COMPANY)], now=1.0)
        replica = Replica(store)

        assert replica.get(Product, YERBA.key) == YERBA
        assert replica.get(Company, "empresa") == COMPANY
        assert replica.get(User, "empresa") is None  # same topic, another kind
        assert replica.get(Product, "nope") is None

    def test_query_by_kind_filters_a_topic_that_holds_several_kinds(
        self, store: ReplicaStore
    ) -> None:
        store.apply([change(COMPANY), change(ADMIN), change(CURRENCY)], now=1.0)
        replica = Replica(store)

        assert replica.query(User) == [ADMIN]
        assert replica.query(Setting, limit=1) == [CURRENCY]
        assert replica.query("configuracion") == [COMPANY, CURRENCY, ADMIN]  # by key
        assert replica.query("configuracion", limit=2) == [COMPANY, CURRENCY]

    def test_count_lists_every_down_topic_with_its_live_records(self, store: ReplicaStore) -> None:
        seller = Seller(key="V01", version=1, name="Vero")
        store.apply([change(YERBA), change(seller)], now=1.0)
        store.apply([tombstone(seller, version=2)], now=2.0)
        counts = Replica(store).count()

        assert counts["productos"] == 1
        assert counts["vendedores"] == 0
        assert counts["stock"] == 0
        assert Replica(store).count("productos") == {"productos": 1}

    def test_an_unknown_image_is_none(self, store: ReplicaStore) -> None:
        assert Replica(store).image("0" * 64) is None
