"""The server catalog and its change log, on SQLite and PostgreSQL."""

from __future__ import annotations

import base64
import hashlib
import random
import threading
from collections.abc import Iterator
from decimal import Decimal

import msgspec
import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from cajasync.core.db import make_engine
from cajasync.core.server_tables import catalog_images, catalog_records, change_log, stream_heads
from cajasync.errors import CatalogError, ConfigError
from cajasync.samples.seed import PNG_SIGNATURE, seed_catalog
from outbox import catalog
from schemas.feed import Change
from schemas.records import Combo, Offer, PaymentMethod, Product, StockLevel, User
from schemas.topics import DOWN_TOPIC_SCOPES


@pytest.fixture
def engine(server_db_url: str) -> Iterator[Engine]:
    engine = make_engine(server_db_url)
    yield engine
    engine.dispose()


def product(key: str, price: str = "100.00", **fields: object) -> Product:
    fields.setdefault("tax_rate", Decimal(21))
    return Product(key=key, name=f"Producto {key}", price=Decimal(price), **fields)  # type: ignore[arg-type]


def stock(location: str, product_key: str, quantity: int = 5) -> StockLevel:
    return StockLevel(
        key=f"{location}/{product_key}", product=product_key, quantity=Decimal(quantity)
    )


def log_rows(engine: Engine, stream: str | None = None) -> list[sa.Row[tuple[object, ...]]]:
    query = sa.select(change_log).order_by(change_log.c.id)
    if stream is not None:
        query = query.where(change_log.c.stream == stream)
    with engine.connect() as connection:
        return list(connection.execute(query))


def record_row(engine: Engine, topic: str, scope: str, key: str) -> sa.Row[tuple[object, ...]]:
    with engine.connect() as connection:
        return connection.execute(
            sa.select(catalog_records).where(
                catalog_records.c.topic == topic,
                catalog_records.c.scope == scope,
                catalog_records.c.key == key,
            )
        ).one()


# -- versions and seqs ---------------------------------------------------------------------


def test_each_change_of_a_record_raises_its_version_by_one(engine: Engine) -> None:
    with engine.begin() as connection:
        first = catalog.upsert(connection, product("000001", "100.00"))
        second = catalog.upsert(connection, product("000001", "110.00"))
    with engine.begin() as connection:
        third = catalog.upsert(connection, product("000001", "120.00"))
        current = catalog.get(connection, "productos", "000001")

    assert [first.version, second.version, third.version] == [1, 2, 3]
    assert current == product("000001", "120.00", version=3)


def test_a_version_given_on_the_input_record_is_ignored(engine: Engine) -> None:
    with engine.begin() as connection:
        change = catalog.upsert(connection, product("000001", version=57))

    assert change.version == 1
    assert change.record is not None
    assert change.record.version == 1


def test_stream_seqs_are_contiguous_per_stream_and_the_log_holds_each_change(
    engine: Engine,
) -> None:
    with engine.begin() as connection:
        catalog.upsert_many(connection, [product(f"{n:06d}") for n in range(1, 6)])
        catalog.upsert_many(
            connection, [stock("L1", f"{n:06d}") for n in range(1, 4)], scope="loc.L1"
        )
        catalog.upsert_many(
            connection, [stock("L2", f"{n:06d}") for n in range(1, 3)], scope="loc.L2"
        )
    with engine.begin() as connection:
        catalog.upsert(connection, product("000002", "5.00"))
        catalog.delete(connection, "stock", "L1/000003", scope="loc.L1")

    seqs: dict[str, list[int]] = {}
    for row in log_rows(engine):
        seqs.setdefault(row.stream, []).append(row.seq)
        change = msgspec.msgpack.decode(row.body, type=Change)
        assert (change.stream, change.seq, change.key, change.version) == (
            row.stream, row.seq, row.key, row.version,
        )  # fmt: skip
        assert row.published_at is None
    assert seqs == {
        "productos:all": [1, 2, 3, 4, 5, 6],
        "stock:loc.L1": [1, 2, 3, 4],
        "stock:loc.L2": [1, 2],
    }
    with engine.connect() as connection:
        heads = dict(connection.execute(sa.select(stream_heads.c.stream, stream_heads.c.seq)).all())
    assert heads == {"productos:all": 6, "stock:loc.L1": 4, "stock:loc.L2": 2}


def test_the_catalog_row_keeps_the_latest_version_seq_and_image(engine: Engine) -> None:
    with engine.begin() as connection:
        sha = catalog.put_image(connection, PNG_SIGNATURE + b"pixels")
        catalog.upsert(connection, product("000001"))
        catalog.upsert(connection, product("000001", image=sha))

    row = record_row(engine, "productos", "all", "000001")
    assert (row.version, row.seq, row.deleted, row.image) == (2, 2, False, sha)
    assert msgspec.msgpack.decode(row.body, type=Product) == product("000001", image=sha, version=2)


def test_an_identical_upsert_is_skipped_and_returns_the_current_change(engine: Engine) -> None:
    with engine.begin() as connection:
        first = catalog.upsert(connection, product("000001"))
    with engine.begin() as connection:
        again = catalog.upsert(connection, product("000001", version=9))

    assert again == first
    assert len(log_rows(engine)) == 1


def test_a_key_given_twice_in_one_batch_gets_two_versions_in_order(engine: Engine) -> None:
    with engine.begin() as connection:
        changes = catalog.upsert_many(
            connection, [product("000001", "1.00"), product("000002"), product("000001", "2.00")]
        )

    assert [(c.key, c.version, c.seq) for c in changes] == [
        ("000001", 1, 1),
        ("000002", 1, 2),
        ("000001", 2, 3),
    ]
    row = record_row(engine, "productos", "all", "000001")
    assert (row.version, row.seq) == (2, 3)


def test_a_large_batch_spans_statement_chunks_with_contiguous_seqs(engine: Engine) -> None:
    count = catalog.CHUNK + 7
    with engine.begin() as connection:
        changes = catalog.upsert_many(connection, [product(f"{n:06d}") for n in range(count)])

    assert [c.seq for c in changes] == list(range(1, count + 1))
    with engine.connect() as connection:
        assert (
            connection.execute(sa.select(sa.func.count()).select_from(change_log)).scalar() == count
        )


# -- tombstones ----------------------------------------------------------------------------


def test_a_delete_leaves_a_tombstone_with_a_raised_version_and_no_body(engine: Engine) -> None:
    with engine.begin() as connection:
        catalog.upsert(connection, product("000001"))
        tombstone = catalog.delete(connection, "products", "000001")
        gone = catalog.get(connection, "productos", "000001")

    assert tombstone is not None
    assert (tombstone.version, tombstone.seq, tombstone.deleted) == (2, 2, True)
    assert gone is None
    row = record_row(engine, "productos", "all", "000001")
    assert (row.deleted, row.version, row.body, row.image) == (True, 2, None, None)
    logged = msgspec.msgpack.decode(log_rows(engine)[-1].body, type=Change)
    assert logged.deleted
    assert logged.version == 2


def test_a_record_created_again_after_a_delete_gets_a_higher_version(engine: Engine) -> None:
    with engine.begin() as connection:
        catalog.upsert(connection, product("000001"))
        catalog.delete(connection, "productos", "000001")
        again = catalog.upsert(connection, product("000001"))

    assert (again.version, again.seq) == (3, 3)


def test_deleting_a_missing_or_already_deleted_record_changes_nothing(engine: Engine) -> None:
    with engine.begin() as connection:
        assert catalog.delete(connection, "productos", "nope") is None
        catalog.upsert(connection, product("000001"))
        assert catalog.delete(connection, "productos", "000001") is not None
        assert catalog.delete(connection, "productos", "000001") is None

    assert len(log_rows(engine)) == 2


# -- scopes --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("record", "scope", "expected"),
    [
        (stock("L1", "000001"), "all", "stock records need a scope loc.<location>"),
        (
            PaymentMethod(key="PV1/efectivo", name="Efectivo", kind="cash"),
            "all",
            "formas-de-pago records need a scope pos.<point of sale>",
        ),
        (
            PaymentMethod(key="PV1/efectivo", name="Efectivo", kind="cash"),
            "loc.L1",
            "formas-de-pago records need a scope pos.<point of sale>",
        ),
        (product("000001"), "pos.PV1", "productos records need a scope all"),
        (product("000001"), "loc.bad id", "invalid scope 'loc.bad id'"),
        (product("000001"), "term.", "invalid scope 'term.'"),
        (product("000001"), "store.L1", "invalid scope 'store.L1'"),
        (product("000001"), "term." + "T" * 33, "invalid scope"),
    ],
)
def test_a_record_outside_its_topics_scopes_is_refused_saying_what_to_pass(
    engine: Engine, record: Product | StockLevel | PaymentMethod, scope: str, expected: str
) -> None:
    with (
        engine.begin() as connection,
        pytest.raises(CatalogError, match=expected.replace(".", r"\.")),
    ):
        catalog.upsert(connection, record, scope=scope)


def test_every_topic_takes_its_natural_scope_or_one_terminals(engine: Engine) -> None:
    with engine.begin() as connection:
        catalog.upsert(connection, stock("L1", "000001"), scope="loc.L1")
        catalog.upsert(
            connection,
            PaymentMethod(key="PV1/efectivo", name="Efectivo", kind="cash"),
            scope="pos.PV1",
        )
        catalog.upsert(connection, product("000001"), scope="all")
        catalog.upsert(connection, product("T001-special"), scope="term.T001")
        catalog.upsert(connection, stock("T001", "000001"), scope="term.T001")

    assert {row.stream for row in log_rows(engine)} == {
        "stock:loc.L1",
        "formas-de-pago:pos.PV1",
        "productos:all",
        "productos:term.T001",
        "stock:term.T001",
    }


def test_a_key_that_lives_in_another_scope_is_refused_naming_both_scopes(engine: Engine) -> None:
    level = StockLevel(key="000001", product="000001", quantity=Decimal(3))
    with engine.begin() as connection:
        catalog.upsert(connection, level, scope="loc.L1")
    with (
        engine.begin() as connection,
        pytest.raises(CatalogError, match=r"lives in scope loc\.L1.*also be in loc\.L2"),
    ):
        catalog.upsert(connection, level, scope="loc.L2")
    with (
        engine.begin() as connection,
        pytest.raises(CatalogError, match=r"scope loc\.L1, not loc\.L2"),
    ):
        catalog.delete(connection, "stock", "000001", scope="loc.L2")


def test_a_deleted_key_may_move_to_another_scope_with_a_higher_version(engine: Engine) -> None:
    level = StockLevel(key="000001", product="000001", quantity=Decimal(3))
    with engine.begin() as connection:
        catalog.upsert(connection, level, scope="loc.L1")
        catalog.delete(connection, "stock", "000001", scope="loc.L1")
        moved = catalog.upsert(connection, level, scope="loc.L2")

    assert (moved.stream, moved.seq, moved.version) == ("stock:loc.L2", 1, 3)


def test_an_unknown_topic_is_refused_with_the_list_of_topics(engine: Engine) -> None:
    with engine.begin() as connection, pytest.raises(ConfigError, match=r"productos \(products\)"):
        catalog.delete(connection, "prods", "1")


def test_a_record_that_breaks_its_schema_is_refused_naming_the_field(engine: Engine) -> None:
    with engine.begin() as connection, pytest.raises(CatalogError, match=r"record 1 .*\$\.image"):
        catalog.upsert_many(connection, [product("000001"), product("000002", image="not-a-sha")])
    with engine.begin() as connection, pytest.raises(CatalogError, match=r"\$\.key"):
        catalog.upsert(connection, product("x" * 65))


# -- images --------------------------------------------------------------------------------


def test_an_image_is_stored_once_by_its_sha256(engine: Engine) -> None:
    data = PNG_SIGNATURE + bytes(range(256)) * 20
    with engine.begin() as connection:
        first = catalog.put_image(connection, data)
        again = catalog.put_image(connection, data)
        both = catalog.put_images(connection, [data, PNG_SIGNATURE + b"other"])
        stored = catalog.get_image(connection, first)

    assert first == again == both[0] == hashlib.sha256(data).hexdigest()
    assert stored == data
    with engine.connect() as connection:
        rows = connection.execute(sa.select(catalog_images.c.sha256, catalog_images.c.size)).all()
    assert sorted(rows) == sorted([(first, len(data)), (both[1], len(PNG_SIGNATURE) + 5)])


# -- concurrency ---------------------------------------------------------------------------


def test_concurrent_writers_on_one_stream_never_take_the_same_seq(engine: Engine) -> None:
    writers, transactions = 4, 25
    barrier = threading.Barrier(writers)
    errors: list[BaseException] = []

    def write(writer: int) -> None:
        rng = random.Random(writer)
        try:
            barrier.wait()
            for n in range(transactions):
                keys = rng.sample(range(10), 3)  # writers share keys: versions contend too
                with engine.begin() as connection:
                    catalog.upsert_many(
                        connection, [product(f"{k:06d}", f"{writer}.{n:02d}") for k in keys]
                    )
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(w,)) for w in range(writers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)

    assert not errors
    rows = log_rows(engine, "productos:all")
    assert sorted(row.seq for row in rows) == list(range(1, writers * transactions * 3 + 1))
    versions: dict[str, list[int]] = {}
    for row in sorted(rows, key=lambda r: r.seq):
        versions.setdefault(row.key, []).append(row.version)
    for key, seen in versions.items():
        assert seen == list(range(1, len(seen) + 1)), key
        assert record_row(engine, "productos", "all", key).version == len(seen)


def test_a_nan_or_negative_price_or_a_250_percent_tax_is_refused_and_nothing_is_written(
    engine: Engine,
) -> None:
    records = [
        product("000001"),
        product("000002", price="NaN"),
        product("000003", price="-5"),
        product("000004", tax_rate=Decimal(250)),
        product("000005"),
    ]

    with engine.begin() as connection, pytest.raises(CatalogError) as refused:
        catalog.upsert_many(connection, records)

    assert str(refused.value).splitlines() == [
        "3 of 5 records are invalid; nothing was written:",
        "  record 1 ('000002'): price: NaN is not a finite number",
        "  record 2 ('000003'): price: -5 is negative",
        "  record 3 ('000004'): tax_rate: 250 is not within 0..100",
    ]
    assert log_rows(engine) == []
    with engine.connect() as connection:
        assert connection.execute(sa.select(catalog_records)).all() == []


def test_a_record_built_with_the_wrong_python_types_is_checked_as_a_terminal_decodes_it(
    engine: Engine,
) -> None:
    level = StockLevel(key="L1/1", product="1", quantity=float("nan"))  # type: ignore[arg-type]
    with (
        engine.begin() as connection,
        pytest.raises(CatalogError, match="quantity: nan is a float"),
    ):
        catalog.upsert(connection, level, scope="loc.L1")
    level = StockLevel(key="L1/1", product="1", quantity=Decimal("NaN"))
    with engine.begin() as connection, pytest.raises(CatalogError, match="quantity: NaN is not"):
        catalog.upsert(connection, level, scope="loc.L1")


# -- JSON input ----------------------------------------------------------------------------


def test_json_records_may_leave_out_the_type_of_a_single_kind_topic() -> None:
    records = catalog.records_from_json(
        "products", b'[{"key": "1", "name": "Yerba", "price": 10.5, "tax_rate": "21"}]'
    )
    assert records == [Product(key="1", name="Yerba", price=Decimal("10.5"), tax_rate=Decimal(21))]


def test_json_records_of_a_several_kind_topic_need_their_type() -> None:
    with pytest.raises(
        CatalogError,
        match=r"record 0 \('x'\): configuracion records need a type .*configuracion/user",
    ):
        catalog.records_from_json("config", b'{"key": "x", "value": "1"}')


def test_a_malformed_json_record_names_its_index_and_field() -> None:
    data = (
        b'[{"key": "1", "name": "a", "price": 1, "tax_rate": 21},'
        b' {"key": "2", "name": "b", "price": "cheap", "tax_rate": 21}]'
    )
    with pytest.raises(CatalogError, match=r"record 1 \('2'\): .*\$\.price"):
        catalog.records_from_json("productos", data)


def test_a_json_record_of_another_topic_is_refused() -> None:
    with pytest.raises(CatalogError, match=r"record 0 is a clientes record, not productos"):
        catalog.records_from_json("productos", b'{"type": "clientes", "key": "C1", "name": "Ana"}')


# -- seed ----------------------------------------------------------------------------------


def test_the_seed_fills_every_down_topic(engine: Engine) -> None:
    counts = seed_catalog(engine, products=40, customers=5, images=True)

    assert set(DOWN_TOPIC_SCOPES) <= set(counts)
    assert all(counts[topic] > 0 for topic in DOWN_TOPIC_SCOPES)
    assert counts["productos"] == 40
    assert counts["clientes"] == 6
    assert counts["stock"] == 80
    assert counts["images"] == 45  # one per product, one per news item
    with engine.connect() as connection:
        streams = set(connection.execute(sa.select(stream_heads.c.stream)).scalars())
        live = connection.execute(
            sa.select(catalog_records.c.topic, sa.func.count()).group_by(catalog_records.c.topic)
        ).all()
    assert {
        "stock:loc.L1",
        "stock:loc.L2",
        "formas-de-pago:pos.PV3",
        "talonarios:pos.PV1",
    } <= streams
    assert dict(live) == {topic: n for topic, n in counts.items() if topic != "images"}


def test_seeded_products_have_valid_barcodes_and_distinct_png_images(engine: Engine) -> None:
    seed_catalog(engine, products=30, images=True)

    with engine.connect() as connection:
        products = [catalog.get(connection, "productos", f"{n:06d}") for n in range(1, 31)]
        images = [
            catalog.get_image(connection, p.image)
            for p in products
            if isinstance(p, Product) and p.image
        ]
    assert all(isinstance(p, Product) for p in products)
    for item in products:
        assert isinstance(item, Product)
        for barcode in item.barcodes:
            digits = [int(d) for d in barcode]
            assert len(digits) == 13
            assert sum(d * (3 if i % 2 else 1) for i, d in enumerate(digits)) % 10 == 0
    assert len(images) == 30
    assert len({*images}) == 30
    assert all(
        i is not None and i.startswith(PNG_SIGNATURE) and 2048 <= len(i) <= 20480 for i in images
    )


def test_seeded_users_carry_verifiable_scrypt_hashes_for_every_role(engine: Engine) -> None:
    seed_catalog(engine, products=5)

    with engine.connect() as connection:
        bodies = connection.execute(
            sa.select(catalog_records.c.body).where(catalog_records.c.topic == "configuracion")
        ).scalars()
        users = [
            r for r in (catalog._record_decoder.decode(b) for b in bodies) if isinstance(r, User)
        ]
    assert {u.role for u in users} == {"MASTER", "ADMIN", "SUPERVISOR", "CASHIER"}
    for user in users:
        _, scheme, params, salt, digest = user.password_hash.split("$")
        assert (scheme, params) == ("scrypt", "n=16384,r=8,p=1")
        computed = hashlib.scrypt(user.key.encode(), salt=_unb64(salt), n=16384, r=8, p=1, dklen=32)
        assert computed == _unb64(digest)


def test_seeded_combos_and_offers_refer_to_seeded_products(engine: Engine) -> None:
    seed_catalog(engine, products=60)

    with engine.connect() as connection:
        rows = connection.execute(
            sa.select(catalog_records.c.body).where(
                catalog_records.c.topic.in_(["combos", "ofertas"])
            )
        ).scalars()
        records = [catalog._record_decoder.decode(body) for body in rows]
        referenced = {item.product for r in records if isinstance(r, Combo) for item in r.items}
        referenced |= {r.product for r in records if isinstance(r, Offer)}
        found = [catalog.get(connection, "productos", key) for key in referenced]
    assert referenced
    assert all(found)


def test_the_seed_is_deterministic_so_seeding_again_changes_nothing(engine: Engine) -> None:
    seed_catalog(engine, products=25, customers=3)
    before = len(log_rows(engine))
    seed_catalog(engine, products=25, customers=3)

    assert len(log_rows(engine)) == before


def _unb64(text: str) -> bytes:
    return base64.b64decode(text + "=" * (-len(text) % 4))
