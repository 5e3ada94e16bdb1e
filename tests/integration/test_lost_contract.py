"""Seqs a rebuilt till will never send are recorded lost, long enough after its restart;
a real operation that still arrives for one takes it back.

One contract, run on the in-memory store and the SQL store on SQLite and PostgreSQL.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator, Sequence
from typing import Protocol

import pytest
import sqlalchemy as sa

from cajasync.core.db import make_engine
from inbox.server_store import Gap, Incoming, Invalid, MemoryServerStore, SqlServerStore, Verdict
from inbox.server_store.base import LostRange, TerminalStats
from schemas.feed import HighWaterMark, HighWaterRequest
from tests.integration.test_incarnation_contract import NEW, NEWER, OLD, ask, op

LATER = dt.datetime.now(dt.UTC) + dt.timedelta(days=1)  # every registration is older
EARLIER = dt.datetime(2000, 1, 1, tzinfo=dt.UTC)  # no registration is older


class Store(Protocol):
    def apply(self, batch: Sequence[Incoming]) -> list[Verdict]: ...
    def register(self, request: HighWaterRequest) -> HighWaterMark: ...
    def mark_lost(self, registered_before: dt.datetime) -> list[LostRange]: ...
    def lost(self) -> list[LostRange]: ...
    def stats(self) -> list[TerminalStats]: ...
    def gaps(self) -> list[Gap]: ...


def ranges(lost: list[LostRange]) -> list[tuple[str, int, int, int, str]]:
    return [(r.terminal, r.from_seq, r.to_seq, r.restart_seq, r.incarnation) for r in lost]


def progress(store: Store) -> dict[str, tuple[int, int, int]]:
    """terminal -> (contiguous seq, max seq, seqs lost)."""
    return {s.terminal: (s.contiguous_seq, s.max_seq, s.lost) for s in store.stats()}


class LostContract:
    """Every store that registers incarnations records lost seqs by these rules."""

    def test_a_hole_below_the_restart_point_is_lost_once_the_restart_is_old_enough(
        self, store: Store
    ) -> None:
        store.apply([op(seq, OLD) for seq in (1, 2, 5)])  # 3 and 4 died with the old disk
        store.register(ask(NEW))
        store.apply([op(6, NEW), op(7, NEW)])
        assert store.gaps() == [Gap("T1", 3, 4)]
        assert store.mark_lost(EARLIER) == []  # registered too recently: still waited for
        assert progress(store) == {"T1": (2, 7, 0)}

        recorded = store.mark_lost(LATER)

        assert ranges(recorded) == [("T1", 3, 4, 5, str(NEW))]
        assert recorded[0].count == 2
        assert store.gaps() == []
        assert progress(store) == {"T1": (7, 7, 2)}
        assert ranges(store.lost()) == ranges(recorded)
        assert store.mark_lost(LATER) == []

    def test_every_hole_below_the_restart_point_is_lost_at_once(self, store: Store) -> None:
        store.apply([op(seq, OLD) for seq in (1, 3, 5, 7)])
        store.register(ask(NEW))
        store.apply([op(8, NEW)])
        assert ranges(store.mark_lost(LATER)) == [
            ("T1", 2, 2, 7, str(NEW)),
            ("T1", 4, 4, 7, str(NEW)),
            ("T1", 6, 6, 7, str(NEW)),
        ]
        assert progress(store) == {"T1": (8, 8, 3)}

    def test_a_hole_above_every_restart_point_is_never_lost(self, store: Store) -> None:
        store.apply([op(seq, OLD) for seq in (1, 2)])
        store.register(ask(NEW))
        store.apply([op(3, NEW), op(6, NEW)])  # 4 and 5: the rebuilt till's own, in flight
        assert store.mark_lost(LATER) == []
        assert store.gaps() == [Gap("T1", 4, 5)]
        assert progress(store) == {"T1": (3, 6, 0)}

    def test_a_hole_across_the_restart_point_is_lost_only_up_to_it(self, store: Store) -> None:
        store.apply([op(seq, OLD) for seq in (1, 2)])
        store.register(ask(NEW, last_seq=6))  # the till had recorded up to 6
        store.apply([op(9, NEW)])
        assert ranges(store.mark_lost(LATER)) == [("T1", 3, 6, 6, str(NEW))]
        assert store.gaps() == [Gap("T1", 7, 8)]
        assert progress(store) == {"T1": (6, 9, 4)}

    def test_holes_below_two_restarts_name_the_incarnation_that_continued_after_each(
        self, store: Store
    ) -> None:
        store.apply([op(1, OLD), op(3, OLD)])
        store.register(ask(NEW))  # continues after 3
        store.apply([op(5, NEW), op(6, NEW)])
        store.register(ask(NEWER))  # continues after 6
        store.apply([op(7, NEWER)])
        assert ranges(store.mark_lost(LATER)) == [
            ("T1", 2, 2, 3, str(NEW)),
            ("T1", 4, 4, 6, str(NEWER)),
        ]
        assert progress(store) == {"T1": (7, 7, 2)}

    def test_an_operation_that_still_arrives_for_a_lost_seq_takes_it_and_is_applied(
        self, store: Store
    ) -> None:
        store.apply([op(seq, OLD) for seq in (1, 2, 6)])
        store.register(ask(NEW))
        store.apply([op(7, NEW)])
        store.mark_lost(LATER)
        assert ranges(store.lost()) == [("T1", 3, 5, 6, str(NEW))]

        late = op(4, OLD)  # in flight all along, or sent by a till recovered from a backup
        [verdict] = store.apply([late])

        assert (verdict.status, verdict.outcome, verdict.seq) == ("acked", "applied", 4)
        assert ranges(store.lost()) == [("T1", 3, 3, 6, str(NEW)), ("T1", 5, 5, 6, str(NEW))]
        assert progress(store) == {"T1": (7, 7, 2)}
        [again] = store.apply([late])
        assert again.outcome == "duplicate"
        [claim] = store.apply([op(4, None)])  # the seq is held now, by the late operation
        assert claim.outcome == "conflict"
        invalid = Invalid(op(5, OLD).envelope, "totals wrong")
        [rejected] = store.apply([invalid])  # its own terminal's: it takes the seq too
        assert (rejected.status, rejected.outcome) == ("rejected", "rejected")
        assert ranges(store.lost()) == [("T1", 3, 3, 6, str(NEW))]
        assert progress(store) == {"T1": (7, 7, 1)}

    def test_lost_seqs_taken_back_in_one_batch_split_the_range_once(self, store: Store) -> None:
        store.apply([op(1, OLD), op(10, OLD)])
        store.register(ask(NEW))
        store.apply([op(11, NEW)])
        store.mark_lost(LATER)
        store.apply([op(seq, OLD) for seq in (2, 5, 6, 9)])
        assert ranges(store.lost()) == [
            ("T1", 3, 4, 10, str(NEW)),
            ("T1", 7, 8, 10, str(NEW)),
        ]
        assert progress(store) == {"T1": (11, 11, 4)}

    def test_without_a_restart_nothing_is_lost(self, store: Store) -> None:
        store.apply([op(1, None), op(3, None)])
        store.register(ask(NEW, terminal="T2"))  # another terminal's, at 0
        store.apply([op(2, NEW, terminal="T2")])
        assert store.mark_lost(LATER) == []
        assert store.gaps() == [Gap("T1", 2, 2), Gap("T2", 1, 1)]

    def test_each_terminal_loses_only_its_own_seqs(self, store: Store) -> None:
        store.apply([op(1, OLD, terminal="T1"), op(3, OLD, terminal="T1")])
        store.apply([op(1, OLD, terminal="T2"), op(3, OLD, terminal="T2")])
        store.register(ask(NEW, terminal="T1"))
        store.apply([op(4, NEW, terminal="T1")])
        assert ranges(store.mark_lost(LATER)) == [("T1", 2, 2, 3, str(NEW))]
        assert progress(store) == {"T1": (4, 4, 1), "T2": (1, 3, 0)}


class TestMemoryStore(LostContract):
    @pytest.fixture
    def store(self) -> Store:
        return MemoryServerStore()


class TestSqlStore(LostContract):
    @pytest.fixture
    def engine(self, server_db_url: str) -> Iterator[sa.Engine]:
        engine = make_engine(server_db_url)
        yield engine
        engine.dispose()

    @pytest.fixture
    def store(self, engine: sa.Engine) -> Store:
        return SqlServerStore(engine)
