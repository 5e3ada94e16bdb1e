"""The lost seq ranges and saved gap states of the SQL server store; inbox/server_store/lost.py and
inbox/gaps.py have the rules.

Recording lost seqs and taking them back both run under the terminal's progress row lock
(FOR UPDATE on PostgreSQL, taken in terminal order like every batch does; SQLite write
transactions are serial), so no two transactions split or record a terminal's ranges at
once, and a seq a batch inserted but did not commit yet, taken for missing and recorded
lost meanwhile, is taken back by that batch when it gets the lock.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence
from typing import Any

import sqlalchemy as sa

from cajasync.core.server_tables import gaps, incarnations, lost, progress, received
from inbox.server_store import incarnations as rows
from inbox.server_store.base import GapState, LostRange
from inbox.server_store.lost import reclaimed

REGISTERED = (rows.CURRENT, rows.SUPERSEDED)


def candidates(connection: sa.Connection, registered_before: dt.datetime) -> list[str]:
    """Terminals with a gap below a restart point registered before `registered_before`."""
    p, i = progress.c, incarnations.c
    query = (
        sa.select(p.terminal)
        .distinct()
        .join(incarnations, i.terminal == p.terminal)
        .where(p.max_seq > p.contiguous_seq)
        .where(i.status.in_(REGISTERED), i.start_seq > p.contiguous_seq)
        .where(i.registered_at < registered_before)
        .order_by(p.terminal)
    )
    return list(connection.execute(query).scalars())


def next_held(connection: sa.Connection, terminal: str, after: int) -> int | None:
    """The lowest seq of `terminal` held above `after`, or None."""
    r = received.c
    query = sa.select(sa.func.min(r.seq)).where(r.terminal == terminal, r.seq > after)
    held: int | None = connection.execute(query).scalar_one()
    return held


def record(connection: sa.Connection, ranges: Sequence[LostRange]) -> None:
    """Insert lost ranges."""
    if ranges:
        connection.execute(lost.insert(), [_values(r) for r in ranges])


def reclaim(connection: sa.Connection, taken: dict[str, set[int]]) -> None:
    """Split the lost ranges of each terminal around the seqs real operations took back."""
    if not taken:
        return
    query = _select().where(lost.c.terminal.in_(sorted(taken)))
    for held in _ranges(connection.execute(query)):
        seqs = {s for s in taken[held.terminal] if held.from_seq <= s <= held.to_seq}
        if not seqs:
            continue
        connection.execute(
            lost.delete().where(lost.c.terminal == held.terminal, lost.c.from_seq == held.from_seq)
        )
        record(connection, reclaimed(held, seqs))


def counts(connection: sa.Connection) -> dict[str, int]:
    """How many seqs each terminal has recorded lost."""
    c = lost.c
    query = sa.select(c.terminal, sa.func.sum(c.to_seq - c.from_seq + 1)).group_by(c.terminal)
    return {terminal: int(count) for terminal, count in connection.execute(query)}


def ranges(connection: sa.Connection) -> list[LostRange]:
    """Every lost range, by terminal and seq."""
    return _ranges(connection.execute(_select()))


# -- saved gap states --------------------------------------------------------------------


def gap_states(connection: sa.Connection) -> list[GapState]:
    """The saved gap states, by terminal."""
    c = gaps.c
    query = sa.select(c.terminal, c.from_seq, c.to_seq, c.opened_at, c.asked, c.asked_at)
    return [
        GapState(t, f, to, _epoch(opened), asked, None if at is None else _epoch(at))
        for t, f, to, opened, asked, at in connection.execute(query.order_by(c.terminal))
    ]


def save_gap_states(connection: sa.Connection, states: Sequence[GapState]) -> None:
    """Make the saved gap states `states` (one per terminal), writing only what changed."""
    saved = {state.terminal: state for state in gap_states(connection)}
    wanted = {state.terminal: state for state in states}
    gone = sorted(set(saved) - set(wanted))
    if gone:
        connection.execute(gaps.delete().where(gaps.c.terminal.in_(gone)))
    changed = sorted(t for t, state in wanted.items() if saved.get(t) != state)
    if changed:
        connection.execute(gaps.delete().where(gaps.c.terminal.in_(changed)))
        connection.execute(gaps.insert(), [_gap_values(wanted[t]) for t in changed])


def _gap_values(state: GapState) -> dict[str, Any]:
    return {
        "terminal": state.terminal,
        "from_seq": state.from_seq,
        "to_seq": state.to_seq,
        "opened_at": _moment(state.opened_at),
        "asked": state.asked,
        "asked_at": None if state.asked_at is None else _moment(state.asked_at),
    }


def _moment(epoch: float) -> dt.datetime:
    return dt.datetime.fromtimestamp(epoch, dt.UTC)


def _epoch(moment: dt.datetime) -> float:
    return _aware(moment).timestamp()


def _aware(moment: dt.datetime) -> dt.datetime:
    """A stored moment with its time zone (SQLite hands back naive ones: UTC)."""
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=dt.UTC)


def _select() -> sa.Select[Any]:
    c = lost.c
    return sa.select(
        c.terminal, c.from_seq, c.to_seq, c.restart_seq, c.incarnation, c.lost_at
    ).order_by(c.terminal, c.from_seq)


def _ranges(result: Iterable[Any]) -> list[LostRange]:
    return [
        LostRange(terminal, first, last, restart, incarnation, _aware(at))
        for terminal, first, last, restart, incarnation, at in result
    ]


def _values(held: LostRange) -> dict[str, Any]:
    return {
        "terminal": held.terminal,
        "from_seq": held.from_seq,
        "to_seq": held.to_seq,
        "restart_seq": held.restart_seq,
        "incarnation": held.incarnation,
        "lost_at": held.lost_at,
    }
