"""The store rules on the in-memory store: order, batching and duplicates never matter."""

from __future__ import annotations

import datetime as dt
import itertools
import uuid
from decimal import Decimal
from random import Random

from hypothesis import given
from hypothesis import strategies as st

from inbox.server_store import Accepted, Gap, Incoming, Invalid, MemoryServerStore, Rejection
from schemas import CashPayment, OpEnvelope

NOW = dt.datetime(2026, 3, 2, 12, 30, tzinfo=dt.UTC)
OP_IDS = [uuid.UUID(int=n) for n in range(1, 6)]


def payment(amount: int) -> CashPayment:
    return CashPayment(
        kind="transfer",
        payee_kind="employee",
        payee="E1",
        amount=Decimal(amount),
        method="cash",
        date=NOW,
    )


def history(versions: list[int]) -> list[Incoming]:
    """One terminal's outbox: entry N is the op (by index) that got a new version at seq N+1."""
    seen: dict[int, int] = {}
    rows: list[Incoming] = []
    for seq, which in enumerate(versions, start=1):
        seen[which] = seen.get(which, 0) + 1
        envelope = OpEnvelope(
            terminal="T1",
            seq=seq,
            op_id=OP_IDS[which],
            version=seen[which],
            recorded_at=NOW,
            op=payment(seen[which]),
        )
        rows.append(Accepted(envelope))
    return rows


def apply_in_batches(store: MemoryServerStore, items: list[Incoming], cuts: list[int]) -> int:
    """Apply `items` cut at `cuts`; returns how many verdicts came back."""
    bounds = [0, *sorted(c % (len(items) + 1) for c in cuts), len(items)]
    answered = 0
    for start, end in itertools.pairwise(bounds):
        answered += len(store.apply(items[start:end]))
    return answered


histories = st.lists(st.integers(0, len(OP_IDS) - 1), min_size=1, max_size=30)


@given(histories, st.randoms(use_true_random=False), st.lists(st.integers(0, 60), max_size=4))
def test_highest_version_wins_whatever_the_order_and_duplicates(
    versions: list[int], rng: Random, cuts: list[int]
) -> None:
    items = history(versions)
    delivered = items + rng.sample(items, k=len(items) // 2)
    rng.shuffle(delivered)
    store = MemoryServerStore()
    assert apply_in_batches(store, delivered, cuts) == len(delivered)
    for which in set(versions):
        current = store.current(str(OP_IDS[which]))
        assert current is not None
        assert current.version == versions.count(which)
    [stats] = store.stats()
    assert (stats.contiguous_seq, stats.max_seq) == (len(items), len(items))
    assert stats.topics == {"pagos": len(set(versions))}


@given(histories, st.randoms(use_true_random=False))
def test_every_version_is_applied_or_stale_exactly_once(versions: list[int], rng: Random) -> None:
    items = history(versions)
    delivered = items * 2
    rng.shuffle(delivered)
    outcomes = [v.outcome for v in MemoryServerStore().apply(delivered)]
    assert outcomes.count("duplicate") == len(items)
    assert outcomes.count("applied") + outcomes.count("stale") == len(items)
    assert outcomes.count("applied") >= len(set(versions))


@given(st.sets(st.integers(1, 40), min_size=1), st.sets(st.integers(1, 40)))
def test_contiguity_and_first_gap_follow_the_held_seqs(
    accepted: set[int], rejected: set[int]
) -> None:
    store = MemoryServerStore()
    ops = [h for h in history(list(range(5)) * 8) if isinstance(h, Accepted)]
    batch: list[Incoming] = [
        Invalid(h.envelope, "bad") for h in ops if h.envelope.seq in rejected - accepted
    ]
    batch += [h for h in ops if h.envelope.seq in accepted]
    store.apply(batch)
    held = accepted | rejected
    contiguous = next(n for n in range(len(held) + 1) if n + 1 not in held)
    [stats] = store.stats()
    assert (stats.contiguous_seq, stats.max_seq) == (contiguous, max(held))
    if max(held) > contiguous:
        next_held = min(s for s in held if s > contiguous)
        assert store.gaps() == [Gap("T1", contiguous + 1, next_held - 1)]
    else:
        assert store.gaps() == []


strays = st.builds(
    Rejection,
    terminal=st.sampled_from(["T1", "T2", None]),
    seq=st.none() | st.integers(1, 40),
    op_id=st.none() | st.sampled_from([str(op_id) for op_id in OP_IDS]),
    version=st.none() | st.integers(1, 5),
    topic=st.just("pagos"),
    reason=st.just("undecodable"),
)


@given(histories, st.lists(strays, max_size=20), st.randoms(use_true_random=False))
def test_rejections_mixed_in_change_nothing_and_are_all_dead_lettered(
    versions: list[int], rejections: list[Rejection], rng: Random
) -> None:
    items = history(versions)
    mixed: list[Incoming] = [*items, *rejections]
    rng.shuffle(mixed)
    alone, together = MemoryServerStore(), MemoryServerStore()
    alone.apply(sorted(items, key=mixed.index))
    verdicts = together.apply(mixed)
    assert together.stats() == alone.stats()
    for op_id in OP_IDS:
        assert together.current(str(op_id)) == alone.current(str(op_id))
    dead = [v for v in verdicts if v.dead_letter]
    assert len(dead) == len(rejections)
    assert {v.outcome for v in dead} <= {"rejected"}


def test_verdicts_keep_the_batch_order() -> None:
    items = history([0, 1, 2])
    verdicts = MemoryServerStore().apply([items[2], items[0], items[1]])
    assert [v.seq for v in verdicts] == [3, 1, 2]
