"""Seqs a rebuilt till will never send: recorded *lost*, so contiguity moves past them.

When a till's database is lost and `terminal init` (or `terminal recover`) registers a new
incarnation, it continues after a *restart point* S (inbox/server_store/incarnations.py). Seqs at
or below S that the server never received were on the lost disk: the new till has nothing
to send for them. They are not given up at once: operations of the old database may still
be in flight in the broker queue, and a till recovered from a backup may hold some of them
and publish them. Once a restart point has been registered for `lost_after_s` (a setting,
an hour by default), every seq still missing at or below it, with something held above it,
is recorded lost with the incarnation that continued after it: contiguity moves past them
and the server stops asking the till to replay them.

A lost seq is not forbidden: a real operation that still arrives for it takes it back (its
range is split) and is applied as usual. A hole above every restart point is never lost:
a normal till's gap is always waited for.

Pure rules over plain values; the stores keep the ranges (sql_lost.py, MemoryServerStore).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from inbox.server_store.base import LostRange
from inbox.server_store.incarnations import CURRENT, SUPERSEDED, Incarnation


@dataclass(frozen=True, slots=True, order=True)
class RestartPoint:
    """A seq a registered incarnation continued after."""

    seq: int
    incarnation: str


def restart_points(
    lineage: Iterable[Incarnation], registered_before: dt.datetime
) -> list[RestartPoint]:
    """The restart points of a terminal registered before `registered_before`, lowest first."""
    return sorted(
        RestartPoint(row.start_seq, row.incarnation)
        for row in lineage
        if row.status in (CURRENT, SUPERSEDED)
        and row.start_seq > 0
        and row.registered_at is not None
        and _aware(row.registered_at) < registered_before
    )


def next_lost(
    terminal: str,
    contiguous: int,
    next_held: int | None,
    points: Sequence[RestartPoint],
    now: dt.datetime,
) -> LostRange | None:
    """The missing seqs right after `contiguous` to record lost, or None when there are none.

    `next_held` is the lowest seq held above `contiguous` (None: nothing is, so there is no
    gap). The range stops at the lowest restart point at or above it, so each range names
    the incarnation whose restart left it behind; a hole above every point is not lost.
    """
    start = contiguous + 1
    point = next((p for p in points if p.seq >= start), None)
    if point is None or next_held is None or next_held <= start:
        return None
    end = min(next_held - 1, point.seq)
    return LostRange(terminal, start, end, point.seq, point.incarnation, now)


def reclaimed(held: LostRange, taken: Iterable[int]) -> list[LostRange]:
    """What is left of a lost range once real operations took the seqs `taken` back."""
    left: list[LostRange] = []
    start = held.from_seq
    for seq in sorted({s for s in taken if held.from_seq <= s <= held.to_seq}):
        if seq > start:
            left.append(dataclasses.replace(held, from_seq=start, to_seq=seq - 1))
        start = seq + 1
    if start <= held.to_seq:
        left.append(dataclasses.replace(held, from_seq=start))
    return left


def _aware(moment: dt.datetime) -> dt.datetime:
    """SQLite hands back naive datetimes; every stored one is UTC."""
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=dt.UTC)
