"""The terminal's apply rules for the down feed, on a real SQLite terminal database."""

from __future__ import annotations

import hashlib
import json
import logging
import random
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import msgspec
import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy.engine import Engine

from cajasync.core.db import make_engine
from cajasync.core.identity import TerminalIdentity
from cajasync.core.terminal_tables import images, metadata, pulls, replica, streams
from cajasync.processes.pull import pull_topics, stream_positions
from inbox.replica import (
    DONE,
    FETCHING_IMAGES,
    FeedMemory,
    apply_down,
    coalesce,
    start_pull,
)
from inbox.replica_api import Replica
from schemas.codec import encode
from schemas.feed import (
    CatchUpRequest,
    Change,
    ChangeEvent,
    ImageData,
    ImageRequest,
    ImagesDone,
    RawSnapshotPage,
    SnapshotDone,
    SnapshotPage,
)
from schemas.records import Customer, Product
from schemas.unions import Request

IDENTITY = TerminalIdentity("T001", "L1", "PV1", "retail")
PRODUCTS = "productos:all"


class Clock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def product(key: str, version: int = 1, *, image: str | None = None) -> Product:
    return Product(
        key=key,
        version=version,
        name=f"Producto {key} v{version}",
        price=Decimal(100 + version),
        tax_rate=Decimal(21),
        image=image,
    )


def change(
    seq: int, key: str, version: int, *, deleted: bool = False, image: str | None = None
) -> Change:
    """The change of product `key` to `version` (a tombstone when deleted), at `seq`."""
    record = None if deleted else product(key, version, image=image)
    return Change(
        stream=PRODUCTS, seq=seq, topic="productos", key=key, version=version, record=record
    )


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def fresh_engine(path: str = "") -> Engine:
    """A terminal database with every cajasync table (in memory unless a path is given)."""
    engine = make_engine(path) if path else sa.create_engine("sqlite://")
    metadata.create_all(engine)
    return engine


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Engine]:
    engine = fresh_engine(str(tmp_path / "caja.db"))
    yield engine
    engine.dispose()


class Feed:
    """Applies messages the way the relay does: one transaction each, one shared memory."""

    def __init__(self, engine: Engine, clock: Clock | None = None) -> None:
        self.engine = engine
        self.memory = FeedMemory(retry_after_s=30.0, clock=clock or Clock())

    def __call__(self, *messages: Any) -> list[Request]:
        requests: list[Request] = []
        for message in messages:
            with self.engine.begin() as connection:
                requests += apply_down(connection, message, IDENTITY, memory=self.memory)
        return requests

    def live(self, *changes: Change) -> list[Request]:
        """Each change as its own ChangeEvent, in the order given."""
        return self(*(ChangeEvent(changes=[c]) for c in changes))


def gaps(requests: list[Request]) -> list[tuple[str, int]]:
    """(stream, from_seq) of each request, all of which must be catch-ups."""
    assert all(isinstance(r, CatchUpRequest) for r in requests)
    return [(r.stream, r.from_seq) for r in requests if isinstance(r, CatchUpRequest)]


def held(engine: Engine) -> dict[str, tuple[int, bool]]:
    """key -> (version, deleted) of every replica row."""
    with engine.connect() as connection:
        rows = connection.execute(sa.select(replica.c.key, replica.c.version, replica.c.deleted))
        return {row.key: (row.version, row.deleted) for row in rows}


def position(engine: Engine, stream: str = PRODUCTS) -> int:
    with engine.connect() as connection:
        return (
            connection.execute(
                sa.select(streams.c.position).where(streams.c.stream == stream)
            ).scalar()
            or 0
        )


def pull_row(engine: Engine, request_id: str) -> Any:
    with engine.connect() as connection:
        return connection.execute(sa.select(pulls).where(pulls.c.request_id == request_id)).one()


def begin_pull(engine: Engine, request_id: str, *, want_images: bool = False) -> None:
    with engine.begin() as connection:
        start_pull(connection, request_id, ["productos"], full=True, images=want_images)


# -- the version rule -----------------------------------------------------------------------


def test_a_live_change_lands_in_the_replica_as_the_record_it_carries(engine: Engine) -> None:
    Feed(engine).live(change(1, "A", 1))

    assert Replica(engine).get(Product, "A") == product("A", 1)
    assert held(engine) == {"A": (1, False)}


def test_an_older_version_never_overwrites_a_newer_one(engine: Engine) -> None:
    feed = Feed(engine)
    feed(SnapshotPage(request_id="r", stream=PRODUCTS, changes=[change(2, "A", 5)]))
    feed(SnapshotPage(request_id="r", stream=PRODUCTS, changes=[change(1, "A", 3)]))

    assert Replica(engine).get(Product, "A") == product("A", 5)


def test_a_delete_keeps_its_version_so_an_older_upsert_does_not_resurrect_it(
    engine: Engine,
) -> None:
    feed = Feed(engine)
    feed.live(change(1, "A", 1), change(2, "A", 2, deleted=True))
    feed(SnapshotPage(request_id="r", stream=PRODUCTS, changes=[change(1, "A", 1)]))

    assert held(engine) == {"A": (2, True)}
    assert Replica(engine).get(Product, "A") is None
    assert Replica(engine).count("productos") == {"productos": 0}


def test_a_newer_upsert_brings_a_deleted_record_back(engine: Engine) -> None:
    Feed(engine).live(change(1, "A", 1, deleted=True), change(2, "A", 2))

    assert Replica(engine).get(Product, "A") == product("A", 2)


def test_the_stored_record_carries_the_version_of_its_change(engine: Engine) -> None:
    unstamped = Change(
        stream=PRODUCTS, seq=1, topic="productos", key="A", version=7, record=product("A", 0)
    )
    Feed(engine).live(unstamped)

    stored = Replica(engine).get(Product, "A")
    assert stored is not None
    assert stored.version == 7


def test_a_page_of_many_records_is_applied_whole(engine: Engine) -> None:
    changes = [change(i, f"K{i:05d}", 1) for i in range(1, 1001)]

    Feed(engine)(SnapshotPage(request_id="r", stream=PRODUCTS, changes=changes))

    assert Replica(engine).count("productos") == {"productos": 1000}


# -- records that break the record rules ----------------------------------------------------


def nan_priced(seq: int, key: str, version: int) -> Change:
    """A change whose product costs NaN (what a forged event, or a record stored before the
    catalog checked its records, could carry)."""
    bad = msgspec.structs.replace(product(key, version), price=Decimal("NaN"))
    return Change(stream=PRODUCTS, seq=seq, topic="productos", key=key, version=version, record=bad)


def test_a_live_record_with_a_nan_price_is_refused_and_its_seq_still_counts(
    engine: Engine, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.ERROR, logger="inbox.replica"):
        requests = Feed(engine).live(change(1, "A", 1), nan_priced(2, "B", 1), change(3, "C", 1))

    assert held(engine) == {"A": (1, False), "C": (1, False)}
    assert position(engine) == 3
    assert requests == []  # asking again would only bring the same record back
    assert "refusing productos 'B' v1 (productos:all seq 2)" in caplog.text
    assert "price: NaN is not a finite number" in caplog.text


def test_a_refused_new_version_leaves_the_previous_one_in_the_replica(engine: Engine) -> None:
    feed = Feed(engine)
    feed.live(change(1, "A", 1))

    feed(ChangeEvent(changes=[nan_priced(2, "A", 2)]))

    assert Replica(engine).get(Product, "A") == product("A", 1)
    assert position(engine) == 2


def test_a_record_of_another_topic_in_a_change_is_refused(
    engine: Engine, caplog: pytest.LogCaptureFixture
) -> None:
    stray = Change(
        stream=PRODUCTS,
        seq=1,
        topic="productos",
        key="C1",
        version=1,
        record=Customer(key="C1", version=1, name="Ana"),
    )
    with caplog.at_level(logging.ERROR, logger="inbox.replica"):
        Feed(engine).live(stray)

    assert held(engine) == {}
    assert "a clientes record in a productos change" in caplog.text


@pytest.mark.parametrize("encoded", [False, True], ids=["decoded", "encoded"])
def test_a_snapshot_page_stores_its_good_records_and_refuses_the_bad_one(
    engine: Engine, encoded: bool
) -> None:
    begin_pull(engine, "r1")
    page = SnapshotPage(
        request_id="r1",
        stream=PRODUCTS,
        changes=[change(1, "A", 1), nan_priced(2, "B", 1), change(3, "C", 1)],
    )
    message: Any = msgspec.msgpack.decode(encode(page), type=RawSnapshotPage) if encoded else page

    Feed(engine)(message, SnapshotDone(request_id="r1", high_water={PRODUCTS: 3}, records=3))

    assert held(engine) == {"A": (1, False), "C": (1, False)}
    assert pull_row(engine, "r1").status == DONE  # the pull is not left waiting for it


# A history: each key's versions in order, some of them deletes. Seqs number the history.
histories = st.dictionaries(
    st.sampled_from([f"K{i}" for i in range(8)]),
    st.lists(st.booleans(), min_size=1, max_size=4),  # True: that version is a delete
    min_size=1,
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(histories, st.randoms(use_true_random=False), st.integers(min_value=0, max_value=10))
def test_shuffled_and_duplicated_events_end_as_the_newest_version_of_every_record(
    history: dict[str, list[bool]], rnd: random.Random, duplicates: int
) -> None:
    log = [
        (key, version, deleted)
        for key, ds in history.items()
        for version, deleted in enumerate(ds, 1)
    ]
    rnd.shuffle(log)  # interleave the keys' histories
    events = [change(seq, key, v, deleted=d) for seq, (key, v, d) in enumerate(log, 1)]
    delivered = events + [rnd.choice(events) for _ in range(duplicates)]
    rnd.shuffle(delivered)
    engine = fresh_engine()
    feed = Feed(engine)

    feed.live(*delivered)

    assert held(engine) == {key: (len(ds), ds[-1]) for key, ds in history.items()}
    feed.live(*events[position(engine) :])  # the catch-up a gap asks for, in order
    assert position(engine) == len(events)
    assert held(engine) == {key: (len(ds), ds[-1]) for key, ds in history.items()}


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(histories, st.randoms(use_true_random=False), st.integers(min_value=1, max_value=6))
def test_coalescing_a_ticks_change_events_changes_nothing(
    history: dict[str, list[bool]], rnd: random.Random, ticks: int
) -> None:
    log = [(key, v, d) for key, ds in history.items() for v, d in enumerate(ds, 1)]
    events = [
        ChangeEvent(changes=[change(seq, key, v, deleted=d)])
        for seq, (key, v, d) in enumerate(log, 1)
    ]
    rnd.shuffle(events)
    one_by_one, batched = fresh_engine(), fresh_engine()
    Feed(one_by_one)(*events)

    feed = Feed(batched)
    cuts = sorted(rnd.randrange(len(events) + 1) for _ in range(ticks - 1))
    for start, end in zip([0, *cuts], [*cuts, len(events)], strict=True):
        tick = coalesce((event, 10) for event in events[start:end])
        assert sum(size for _message, size in tick) == 10 * (end - start)
        feed(*(message for message, _size in tick))

    assert held(batched) == held(one_by_one)
    assert position(batched) == position(one_by_one)


def test_coalescing_keeps_other_messages_in_place_between_change_runs() -> None:
    a, b, c = (ChangeEvent(changes=[change(seq, "A", seq)]) for seq in (1, 2, 3))
    done = SnapshotDone(request_id="r", high_water={}, records=0)

    merged = coalesce([(a, 1), (b, 2), (done, 4), (c, 8)])

    assert merged == [
        (ChangeEvent(changes=[*a.changes, *b.changes]), 3),
        (done, 4),
        (c, 8),
    ]


# -- stream positions and gaps --------------------------------------------------------------


def test_a_change_at_position_plus_one_advances_the_stream(engine: Engine) -> None:
    requests = Feed(engine).live(change(1, "A", 1), change(2, "B", 1), change(3, "A", 2))

    assert requests == []
    assert position(engine) == 3


def test_a_change_at_or_below_the_position_is_skipped(engine: Engine) -> None:
    feed = Feed(engine)
    feed.live(change(1, "A", 1), change(2, "A", 2))
    with engine.begin() as connection:  # the replica lost A; the position says seq 1 is in
        connection.execute(replica.delete())

    feed.live(change(1, "A", 1))

    assert held(engine) == {}
    assert position(engine) == 2


def test_a_gap_asks_once_for_a_catch_up_from_the_first_missing_seq(engine: Engine) -> None:
    feed = Feed(engine)
    requests = feed.live(change(1, "A", 1), change(2, "B", 1), change(5, "C", 1))
    requests += feed.live(change(6, "D", 1), change(7, "E", 1))

    assert requests == [
        CatchUpRequest(
            terminal="T001",
            location="L1",
            pos="PV1",
            terminal_kind="retail",
            stream=PRODUCTS,
            from_seq=3,
        )
    ]
    assert position(engine) == 2
    assert set(held(engine)) == {"A", "B", "C", "D", "E"}  # applied anyway


def test_filling_the_gap_moves_the_position_over_what_came_after_it(engine: Engine) -> None:
    feed = Feed(engine)
    feed.live(change(1, "A", 1), change(4, "D", 1), change(5, "E", 1))

    requests = feed.live(change(2, "B", 1), change(3, "C", 1))

    assert requests == []
    assert position(engine) == 5


def test_a_catch_up_replaying_the_stream_from_the_gap_closes_it(engine: Engine) -> None:
    feed = Feed(engine)
    feed.live(change(1, "A", 1), change(3, "C", 1))

    requests = feed(ChangeEvent(changes=[change(2, "B", 1), change(3, "C", 1), change(4, "A", 2)]))

    assert requests == []
    assert position(engine) == 4
    assert held(engine) == {"A": (2, False), "B": (1, False), "C": (1, False)}


def test_a_gap_still_open_after_the_retry_interval_is_asked_for_again(engine: Engine) -> None:
    clock = Clock()
    feed = Feed(engine, clock)
    first = feed.live(change(2, "B", 1))
    clock.now += 5
    quiet = feed.live(change(3, "C", 1))
    clock.now += 30
    again = feed.live(change(4, "D", 1))

    assert gaps(first + again) == [(PRODUCTS, 1), (PRODUCTS, 1)]
    assert quiet == []


def test_a_stream_never_seen_asks_for_its_events_from_seq_one(engine: Engine) -> None:
    requests = Feed(engine).live(change(41, "A", 9))

    assert gaps(requests) == [(PRODUCTS, 1)]


def test_gaps_in_two_streams_ask_for_two_catch_ups(engine: Engine) -> None:
    stock = "stock:loc.L1"
    level = Change(stream=stock, seq=3, topic="stock", key="S1", version=1, record=None)

    requests = Feed(engine)(ChangeEvent(changes=[change(2, "A", 1), level]))

    assert sorted(gaps(requests)) == [(PRODUCTS, 1), (stock, 1)]


# -- stream heads ---------------------------------------------------------------------------


def heads(**by_stream: int) -> ChangeEvent:
    """What the feed relay sends periodically: no changes, the heads of some streams."""
    return ChangeEvent(changes=[], heads={s.replace("_", ":", 1): n for s, n in by_stream.items()})


def pulled(engine: Engine, topics: list[str]) -> None:
    """A finished pull of `topics` whose streams were empty (no position was set)."""
    with engine.begin() as connection:
        start_pull(connection, "done", topics, full=True, images=False)
        connection.execute(pulls.update().values(status=DONE))


def test_a_head_past_the_position_asks_for_the_lost_last_changes(engine: Engine) -> None:
    feed = Feed(engine)
    feed.live(change(1, "A", 1), change(2, "B", 1))  # seq 3, the last change, was lost

    requests = feed(heads(productos_all=3))

    assert gaps(requests) == [(PRODUCTS, 3)]


def test_a_head_at_the_position_asks_for_nothing(engine: Engine) -> None:
    feed = Feed(engine)
    feed.live(change(1, "A", 1), change(2, "B", 1))

    assert feed(heads(productos_all=2)) == []
    assert feed(heads(productos_all=1)) == []  # an old head, overtaken


def test_a_lost_change_is_asked_for_once_per_retry_interval_while_the_heads_keep_coming(
    engine: Engine,
) -> None:
    clock = Clock()
    feed = Feed(engine, clock)
    feed.live(change(1, "A", 1))

    first = feed(heads(productos_all=2))
    clock.now += 10
    quiet = feed(heads(productos_all=2))
    clock.now += 30
    again = feed(heads(productos_all=2))

    assert gaps(first + again) == [(PRODUCTS, 2), (PRODUCTS, 2)]
    assert quiet == []


def test_the_catch_up_answer_closes_what_the_head_showed(engine: Engine) -> None:
    feed = Feed(engine)
    feed.live(change(1, "A", 1))
    feed(heads(productos_all=2))

    feed.live(change(2, "B", 1))

    assert position(engine) == 2
    assert feed(heads(productos_all=2)) == []


def test_heads_of_streams_never_pulled_nor_seen_ask_for_nothing(engine: Engine) -> None:
    assert Feed(engine)(heads(productos_all=900, clientes_all=40, mesas_all=3)) == []


def test_a_stream_empty_when_its_topic_was_pulled_is_caught_up_from_seq_one(
    engine: Engine,
) -> None:
    pulled(engine, ["clientes"])

    requests = Feed(engine)(heads(clientes_all=1, noticias_all=5))

    assert gaps(requests) == [("clientes:all", 1)]


def test_heads_ask_nothing_of_a_topic_being_pulled(engine: Engine) -> None:
    feed = Feed(engine)
    feed.live(change(1, "A", 1))
    begin_pull(engine, "r1")

    assert feed(heads(productos_all=5)) == []


def test_coalesced_events_keep_their_heads_and_check_them_after_the_changes(
    engine: Engine,
) -> None:
    feed = Feed(engine)
    feed.live(change(1, "A", 1))
    run = [(heads(productos_all=2), 10), (ChangeEvent(changes=[change(2, "B", 1)]), 20)]

    (merged,) = coalesce(run)
    requests = feed(merged[0])

    assert merged == (ChangeEvent(changes=[change(2, "B", 1)], heads={PRODUCTS: 2}), 30)
    assert requests == []
    assert position(engine) == 2


# -- snapshots ------------------------------------------------------------------------------


def test_live_events_at_or_below_the_high_water_are_dropped_and_later_ones_applied(
    engine: Engine,
) -> None:
    feed = Feed(engine)
    begin_pull(engine, "r1")
    feed(
        SnapshotPage(request_id="r1", stream=PRODUCTS, changes=[change(9, "A", 4)]),
        SnapshotDone(request_id="r1", high_water={PRODUCTS: 10}, records=1),
    )

    late = feed.live(change(10, "A", 5))  # already in the snapshot (by seq)
    later = feed.live(change(11, "B", 1))

    assert (late, later) == ([], [])
    assert held(engine) == {"A": (4, False), "B": (1, False)}
    assert position(engine) == 11


def test_live_events_during_a_snapshot_ask_for_no_catch_up_and_are_kept(engine: Engine) -> None:
    feed = Feed(engine)
    begin_pull(engine, "r1")
    during = feed.live(change(11, "B", 1), change(12, "B", 2))  # beyond the high water
    feed(SnapshotPage(request_id="r1", stream=PRODUCTS, changes=[change(10, "A", 3)]))

    after = feed(SnapshotDone(request_id="r1", high_water={PRODUCTS: 10}, records=1))

    assert (during, after) == ([], [])
    assert position(engine) == 12
    assert held(engine) == {"A": (3, False), "B": (2, False)}


def test_a_snapshot_never_moves_a_position_back(engine: Engine) -> None:
    feed = Feed(engine)
    feed.live(*(change(seq, "A", seq) for seq in range(1, 6)))
    begin_pull(engine, "r1")

    feed(SnapshotDone(request_id="r1", high_water={PRODUCTS: 3}, records=0))

    assert position(engine) == 5


def test_a_pull_row_counts_records_and_bytes_and_ends_done_with_the_high_water(
    engine: Engine,
) -> None:
    begin_pull(engine, "r1")
    pages = [
        SnapshotPage(request_id="r1", stream=PRODUCTS, changes=[change(1, "A", 1)]),
        SnapshotPage(request_id="r1", stream=PRODUCTS, changes=[change(2, "B", 1)]),
    ]
    done = SnapshotDone(request_id="r1", high_water={PRODUCTS: 2}, records=2)

    requests = Feed(engine)(*pages, done)

    row = pull_row(engine, "r1")
    assert requests == []
    assert (row.status, row.records) == (DONE, 2)
    assert row.bytes == sum(len(encode(message)) for message in (*pages, done))
    assert json.loads(row.high_water) == {PRODUCTS: 2}
    assert row.finished_at is not None


def test_the_body_size_given_is_what_a_pull_counts(engine: Engine) -> None:
    begin_pull(engine, "r1")
    with engine.begin() as connection:
        apply_down(
            connection,
            SnapshotPage(request_id="r1", stream=PRODUCTS, changes=[change(1, "A", 1)]),
            IDENTITY,
            size=1234,
        )

    assert pull_row(engine, "r1").bytes == 1234


def test_a_refresh_sends_the_positions_of_the_streams_of_its_topics(engine: Engine) -> None:
    feed = Feed(engine)
    feed.live(change(1, "A", 1), change(2, "A", 2))
    feed(
        ChangeEvent(
            changes=[Change(stream="stock:loc.L1", seq=1, topic="stock", key="S", version=1)]
        )
    )

    with engine.connect() as connection:
        assert stream_positions(connection, ["productos"]) == {PRODUCTS: 2}
        assert stream_positions(connection, ["productos", "stock"]) == {
            PRODUCTS: 2,
            "stock:loc.L1": 1,
        }
        assert stream_positions(connection, ["clientes"]) == {}


def test_a_shop_pulls_every_topic_but_tables_and_aliases_name_topics() -> None:
    shop = pull_topics(IDENTITY, None)
    restaurant = TerminalIdentity("T002", "L1", "PV1", "restaurant")

    assert "mesas" not in shop
    assert len(shop) == 13
    assert "mesas" in pull_topics(restaurant, None)
    assert pull_topics(IDENTITY, ["customers", "products"]) == ["productos", "clientes"]


# -- images ---------------------------------------------------------------------------------

PNG_A, PNG_B, PNG_C = b"\x89PNG a", b"\x89PNG b", b"\x89PNG c"


def test_a_snapshot_with_images_asks_once_for_only_the_images_the_terminal_lacks(
    engine: Engine,
) -> None:
    feed = Feed(engine)
    with engine.begin() as connection:
        connection.execute(
            images.insert().values(sha256=sha(PNG_A), size=6, data=PNG_A, stored_at=0.0)
        )
    begin_pull(engine, "r1", want_images=True)
    page = SnapshotPage(
        request_id="r1",
        stream=PRODUCTS,
        changes=[change(1, "A", 1, image=sha(PNG_A)), change(2, "B", 1, image=sha(PNG_B))],
    )

    requests = feed(
        page,
        SnapshotDone(
            request_id="r1", high_water={PRODUCTS: 2}, records=2, images=[sha(PNG_A), sha(PNG_C)]
        ),
    )

    assert requests == [
        ImageRequest(terminal="T001", request_id="r1", hashes=sorted([sha(PNG_B), sha(PNG_C)]))
    ]
    assert pull_row(engine, "r1").status == FETCHING_IMAGES


def test_images_are_stored_once_and_only_when_their_hash_matches(
    engine: Engine, caplog: pytest.LogCaptureFixture
) -> None:
    feed = Feed(engine)
    begin_pull(engine, "r1", want_images=True)
    good = ImageData(request_id="r1", sha256=sha(PNG_B), data=PNG_B)
    forged = ImageData(request_id="r1", sha256=sha(PNG_C), data=b"something else")

    with caplog.at_level(logging.WARNING, logger="inbox.replica"):
        feed(good, good, forged, ImagesDone(request_id="r1", sent=3))

    replica_view = Replica(engine)
    assert replica_view.image(sha(PNG_B)) == PNG_B
    assert replica_view.image(sha(PNG_C)) is None
    assert "does not match" in caplog.text
    with engine.connect() as connection:
        assert connection.execute(sa.select(sa.func.count()).select_from(images)).scalar() == 1
    row = pull_row(engine, "r1")
    assert (row.status, row.image_count) == (DONE, 3)
    assert row.image_bytes > len(PNG_B)


def test_a_snapshot_with_images_and_none_missing_is_done_at_once(engine: Engine) -> None:
    begin_pull(engine, "r1", want_images=True)

    requests = Feed(engine)(
        SnapshotPage(request_id="r1", stream=PRODUCTS, changes=[change(1, "A", 1)]),
        SnapshotDone(request_id="r1", high_water={PRODUCTS: 1}, records=1),
    )

    assert requests == []
    assert pull_row(engine, "r1").status == DONE


def test_a_snapshot_without_images_asked_fetches_none(engine: Engine) -> None:
    begin_pull(engine, "r1")

    requests = Feed(engine)(
        SnapshotPage(
            request_id="r1", stream=PRODUCTS, changes=[change(1, "A", 1, image=sha(PNG_A))]
        ),
        SnapshotDone(request_id="r1", high_water={PRODUCTS: 1}, records=1, images=[sha(PNG_A)]),
    )

    assert requests == []
    assert pull_row(engine, "r1").status == DONE


def test_deleted_records_need_no_image(engine: Engine) -> None:
    feed = Feed(engine)
    feed.live(change(1, "A", 1, image=sha(PNG_A)), change(2, "A", 2, deleted=True))
    begin_pull(engine, "r1", want_images=True)

    requests = feed(SnapshotDone(request_id="r1", high_water={PRODUCTS: 2}, records=0))

    assert requests == []


def test_a_pull_whose_done_overtakes_its_last_page_finishes_only_with_that_page(
    engine: Engine,
) -> None:
    begin_pull(engine, "r1")
    feed = Feed(engine)

    feed(
        SnapshotPage(request_id="r1", stream=PRODUCTS, changes=[change(1, "A", 1)]),
        SnapshotDone(request_id="r1", high_water={PRODUCTS: 2}, records=2),
    )
    assert pull_row(engine, "r1").status == "requested"  # the other consumer holds a page

    feed(SnapshotPage(request_id="r1", stream=PRODUCTS, changes=[change(2, "B", 1)]))
    row = pull_row(engine, "r1")
    assert (row.status, row.records) == (DONE, 2)


def test_a_page_received_with_encoded_records_stores_them_as_they_came(engine: Engine) -> None:
    import msgspec

    from schemas.feed import RawSnapshotPage

    begin_pull(engine, "r1")
    image = hashlib.sha256(b"png").hexdigest()
    page = SnapshotPage(
        request_id="r1",
        stream=PRODUCTS,
        changes=[change(1, "A", 3, image=image), change(2, "B", 2, deleted=True)],
    )
    raw_page = msgspec.msgpack.decode(encode(page), type=RawSnapshotPage)

    Feed(engine)(raw_page, SnapshotDone(request_id="r1", high_water={PRODUCTS: 2}, records=2))

    with engine.connect() as connection:
        rows = {
            r.key: r
            for r in connection.execute(sa.select(replica).where(replica.c.topic == "productos"))
        }
    assert rows["A"].body == encode(page.changes[0].record)
    assert (rows["A"].version, rows["A"].image, rows["A"].deleted) == (3, image, False)
    assert (rows["B"].version, rows["B"].deleted, rows["B"].body) == (2, True, None)
    assert Replica(engine).get(Product, "A") == page.changes[0].record
    assert pull_row(engine, "r1").status == DONE


def test_an_encoded_record_that_is_no_record_is_skipped_not_stored(
    engine: Engine, caplog: pytest.LogCaptureFixture
) -> None:
    import msgspec

    from schemas.feed import RawChange, RawSnapshotPage

    begin_pull(engine, "r1")
    bogus = RawChange(
        stream=PRODUCTS,
        seq=1,
        topic="productos",
        key="A",
        version=1,
        record=msgspec.Raw(msgspec.msgpack.encode({"type": "clientes", "key": "A"})),
    )
    with caplog.at_level(logging.ERROR, logger="inbox.replica"):
        Feed(engine)(RawSnapshotPage(request_id="r1", stream=PRODUCTS, changes=[bogus]))

    assert Replica(engine).get_record("productos", "A") is None
    assert "not a record" in caplog.text
