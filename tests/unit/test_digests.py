"""The record-level diff finds exactly the keys that differ, by digests, in few bytes."""

from __future__ import annotations

import msgspec
from hypothesis import given, settings
from hypothesis import strategies as st

from cajasync.core.digests import ROOT, EntrySet, LocalSide, first_fanout, reconcile
from schemas.digests import Bucket

keys = st.text(alphabet="0123456789ABCDEF-", min_size=1, max_size=12)
sides = st.dictionaries(keys, st.integers(min_value=1, max_value=5), max_size=300)


def expected(
    here: dict[str, int], there: dict[str, int]
) -> tuple[list[str], list[str], list[tuple[str, int, int]]]:
    return (
        sorted(k for k in here if k not in there),
        sorted(k for k in there if k not in here),
        sorted((k, v, there[k]) for k, v in here.items() if k in there and there[k] != v),
    )


@settings(max_examples=150, deadline=None)
@given(sides, sides, st.integers(min_value=1, max_value=8))
def test_reconcile_finds_exactly_the_keys_that_differ(
    here: dict[str, int], there: dict[str, int], leaf: int
) -> None:
    found = reconcile(EntrySet(here.items()), LocalSide(EntrySet(there.items())), leaf=leaf)
    assert (found.missing_remote, found.missing_local, found.version_differs) == expected(
        here, there
    )
    assert found.equal == (here == there)


def test_equal_sides_settle_in_one_round_without_listing_keys() -> None:
    entries = [(f"P{i:06d}", 1 + i % 3) for i in range(20_000)]
    remote = LocalSide(EntrySet(entries))
    found = reconcile(EntrySet(entries), remote)
    assert found.equal
    assert found.rounds == 1
    assert found.local_count == found.remote_count == 20_000


def test_a_handful_of_differences_in_100000_moves_a_few_kilobytes() -> None:
    server = {f"{7790000000000 + i}": 1 + i % 7 for i in range(100_000)}
    till = dict(server)
    del till["7790000000010"]
    till["7790000000020"] += 1
    del server["7790000000030"]
    till["STRAY"] = 4
    remote = LocalSide(EntrySet(server.items()))
    found = reconcile(EntrySet(till.items()), remote)
    assert found.missing_local == ["7790000000010"]
    assert found.missing_remote == ["7790000000030", "STRAY"]
    assert found.version_differs == [("7790000000020", 1 + 20 % 7 + 1, 1 + 20 % 7)]
    full = len(msgspec.msgpack.encode(EntrySet(server.items()).all_entries()))
    assert found.bytes_moved < full * 0.05


def test_an_empty_side_is_listed_without_splitting_forever() -> None:
    remote = LocalSide(EntrySet([(f"K{i}", 1) for i in range(5_000)]))
    found = reconcile(EntrySet([]), remote)
    assert len(found.missing_local) == 5_000
    assert not found.missing_remote


def test_children_of_a_bucket_partition_it() -> None:
    entries = EntrySet((f"K{i}", 1) for i in range(1_000))
    top = entries.children(ROOT, 4)
    assert sum(top.counts) == 1_000
    assert len(top.digests) == 16 * 8
    for index, count in enumerate(top.counts):
        assert len(entries.entries(Bucket(4, index)).keys) == count


def test_first_fanout_grows_with_the_set_and_is_capped() -> None:
    assert first_fanout(0) == 1
    assert first_fanout(100_000) == 8
    assert first_fanout(10**9) == 12
